"""The package tree is the map: layers import downwards only, no module imports one that imports it
back, and docs/architecture.md names only modules that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rs_plugin"
ADAPTERS = ROOT / "adapters"

# What each part may import of the package (besides itself); `_validation` and `_registry` are the
# foundation every part may use.
ALLOWED = {
    "smoothings": {"_validation"},
    "certification": {"_validation", "smoothings"},
    "auditing": {"_validation", "_registry", "smoothings", "certification"},
    "training": {"_validation", "smoothings", "certification"},
    "denoising": {"_validation", "smoothings"},
    "data": {"_validation", "smoothings", "training", "denoising"},
    "runs": {"_validation", "_registry", "smoothings", "certification", "data", "denoising"},
    "adapters": {
        *("_validation", "_registry", "smoothings", "certification", "auditing", "training"),
        *("runs", "denoising"),
    },
    "cli": {
        *("_validation", "_registry", "smoothings", "certification", "auditing", "data"),
        *("bench", "adapters", "training", "runs", "denoising"),
    },
    "bench": {"_validation", "smoothings", "certification", "data", "adapters", "training"},
    "_registry": {"_validation", "smoothings"},
    "_validation": set(),
}


def _module_name(path: Path) -> str:
    if path.is_relative_to(ADAPTERS):
        parts = ("rs_plugin", "adapters", *path.relative_to(ADAPTERS).with_suffix("").parts)
    else:
        parts = ("rs_plugin", *path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    files = [*PACKAGE.rglob("*.py"), *ADAPTERS.rglob("*.py")]
    return {_module_name(path): path for path in files}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports at run time (function-level imports too;
    imports only for the type checker are skipped)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for branch in node.orelse:
                visit(branch)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name for name in found if name in modules}


def _graph() -> dict[str, set[str]]:
    sources = _sources()
    modules = set(sources)
    return {name: _imports(path, modules) - {name} for name, path in sources.items()}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_core_modules_never_import_the_lazy_top_level_package():
    """``from rs_plugin import X`` inside the package would hide a dependency behind the lazy
    top-level namespace; modules import the defining module instead."""
    offenders = [
        name for name, edges in _graph().items() if name != "rs_plugin" and "rs_plugin" in edges
    ]
    assert offenders == []


def test_every_part_is_listed():
    """A new top-level part needs its line in ALLOWED (and in docs/architecture.md): an unlisted
    part would otherwise import anything unchecked."""
    parts = {_part(module) for module in _graph()} - {""}
    assert sorted(parts - set(ALLOWED)) == []


def test_every_part_imports_only_the_parts_below_it():
    violations = []
    for module, edges in _graph().items():
        part = _part(module)
        if not part:  # the lazy top-level namespace (see the test above)
            continue
        assert part in ALLOWED, f"{module}: part {part!r} is not listed in ALLOWED"
        for edge in edges:
            target = _part(edge)
            if target and target != part and target not in ALLOWED[part]:
                violations.append(f"{module} -> {edge}")
    assert violations == []


def test_no_import_circles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        for edge in sorted(graph[node]):
            if edge == "rs_plugin":
                continue
            if state.get(edge) == 1:
                cycles.append([*stack[stack.index(edge) :], edge])
            elif edge not in state:
                walk(edge, [*stack, edge])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    assert cycles == []


def test_adapters_never_import_the_command_line():
    """Layers point one way: core <- adapters <- command line."""
    offenders = [
        f"{module} -> {edge}"
        for module, edges in _graph().items()
        if _part(module) == "adapters"
        for edge in edges
        if _part(edge) == "cli"
    ]
    assert offenders == []
    assert "cli" not in ALLOWED["adapters"]


def test_the_core_never_imports_art_or_ray():
    sources = _sources()
    for name, path in sources.items():
        if name.startswith("rs_plugin.adapters") or name.startswith("rs_plugin.bench"):
            continue
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(from|import) (art|ray|pyautoattack)\b", text, re.M), name


def test_sub_packages_say_what_lives_there_and_what_they_may_import():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc, init
        if init.parent.name != "data":
            assert "may import" in doc.lower(), init


@pytest.mark.parametrize("doc", ["docs/architecture.md"])
def test_every_module_the_architecture_map_names_exists(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:rs_plugin|adapters)/[\w/]+\.py)`", text))
    assert len(named) >= 30  # the map names the modules, not just the folders
    missing = sorted(path for path in named if not (ROOT / path).is_file())
    assert missing == []
    every = {
        str(path.relative_to(ROOT))
        for path in [*PACKAGE.rglob("*.py"), *ADAPTERS.rglob("*.py")]
        if path.name != "__init__.py"
    }
    assert sorted(every - named) == [], "modules the map does not mention"


def test_autoattack_needs_no_art():
    """The AutoAttack adapter runs pyautoattack on a torch module of the core: no ART import,
    direct or through the ART adapter."""
    edges = _graph()["rs_plugin.adapters.autoattack"]
    assert sorted(e for e in edges if e.startswith("rs_plugin.adapters.art")) == []
    text = (ADAPTERS / "autoattack.py").read_text(encoding="utf-8")
    assert not re.search(r"^\s*(from|import) art\b", text, re.M)
