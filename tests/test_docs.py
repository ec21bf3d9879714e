"""The documentation points at things that exist: every repository path cited in docs/*.md,
README.md and the sources of rs_plugin/ and adapters/ exists, and every sub-package's docstring
names each of its modules."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A path of this repository: a top-level folder, then anything up to a word character or a glob
# star; not part of a longer path (another repository's tests/ or a URL's docs/).
CITED = re.compile(r"(?<![\w./-])((?:tests|rs_plugin|adapters|examples|docs)/[\w./*-]*[\w*])")
PACKAGES = [*sorted(ROOT.glob("rs_plugin/*/__init__.py")), ROOT / "adapters" / "__init__.py"]


def _citing_files() -> list[Path]:
    return [
        *sorted(ROOT.glob("docs/*.md")),
        ROOT / "README.md",
        *sorted(ROOT.glob("rs_plugin/**/*.py")),
        *sorted(ROOT.glob("adapters/*.py")),
    ]


def _exists(cited: str) -> bool:
    if "*" in cited:
        return any(ROOT.glob(cited))
    return (ROOT / cited).exists()


def test_the_citation_pattern_finds_paths_and_skips_other_repositories():
    text = "see `tests/cli/test_store.py`, rs_plugin/data/*.pt and art's x/tests/y.py or tests/…"
    assert CITED.findall(text) == ["tests/cli/test_store.py", "rs_plugin/data/*.pt"]


@pytest.mark.parametrize("path", _citing_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_cited_path_exists(path):
    cited = sorted(set(CITED.findall(path.read_text(encoding="utf-8"))))
    assert [c for c in cited if not _exists(c)] == []


@pytest.mark.parametrize("init", PACKAGES, ids=lambda p: p.parent.name)
def test_every_subpackage_docstring_names_each_of_its_modules(init):
    docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
    modules = sorted(p.stem for p in init.parent.glob("*.py") if not p.stem.startswith("__"))
    assert modules, f"{init.parent} has no modules"
    unnamed = [m for m in modules if not re.search(rf"(?<!\w){re.escape(m)}(?!\w)", docstring)]
    assert unnamed == []
