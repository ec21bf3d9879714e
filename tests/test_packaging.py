"""What ``pip install rs-plugin`` without extras can do, and what a missing extra says.

The optional packages are made unimportable in a fresh interpreter (a ``sys.meta_path`` finder
that finds none of them, as if they were not installed): the core must certify from
Python and from the command line, and each feature that needs an extra must fail with one line
naming the ``pip install 'rs-plugin[extra]'`` that installs it. Without ``fcntl`` (Windows) the
command line must import and certify, warning that its output file is not locked.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
from scipy.stats import norm

from rs_plugin._validation import MissingExtraError, import_extra

ROOT = Path(__file__).resolve().parents[1]
# Every optional dependency: what `pip install .` without extras does not install.
OPTIONAL = (
    "sklearn",
    "art",
    "pyautoattack",
    "tqdm",
    "matplotlib",
    "ray",
    "foolbox",
    "statsmodels",
    "multiprocess",
)

# Run with: python -c SCRIPT <comma-separated modules to block> <scenario> <folder>.
SCRIPT = r"""
import json, sys, warnings

class Uninstalled:
    # Stands in for every finder: a blocked name is found by none of them, as if not installed
    # (importlib.util.find_spec answers None, import raises ModuleNotFoundError).
    def __init__(self, names, finders):
        self.names, self.finders = names, finders

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            return None
        for finder in self.finders:
            find = getattr(finder, "find_spec", None)
            spec = None if find is None else find(name, path, target)
            if spec is not None:
                return spec
        return None

    def find_distributions(self, *args, **kwargs):  # entry points are read through this
        for finder in self.finders:
            yield from getattr(finder, "find_distributions", lambda *a, **k: [])(*args, **kwargs)

    def invalidate_caches(self):
        for finder in self.finders:
            getattr(finder, "invalidate_caches", lambda: None)()

blocked = set(sys.argv[1].split(","))
sys.meta_path[:] = [Uninstalled(blocked, list(sys.meta_path))]
scenario, folder = sys.argv[2], sys.argv[3]
result = {}

def cli(*args):
    import contextlib, io
    from rs_plugin.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(args))
    return [code, err.getvalue()]

def missing(action):
    try:
        action()
    except ImportError as error:
        return [type(error).__name__, str(error)]
    return None

if scenario == "certify":
    import torch
    from rs_plugin import Gaussian, SmoothedClassifier
    from rs_plugin.training import NoiseAugmentation, train

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))
        model[1].bias.zero_()
    certificates = SmoothedClassifier(model, Gaussian(0.25), 2).certify(
        torch.full((3, 1, 2, 2), 0.5), n0=50, n=1000, alpha=0.001, batch_size=400, seed=0
    )
    result["prediction"] = certificates.prediction.tolist()
    result["radius"] = certificates.radius.tolist()
    x, y = torch.rand(8, 1, 2, 2, generator=torch.Generator().manual_seed(0)), torch.zeros(8).long()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    train(model, NoiseAugmentation(Gaussian(0.25)), x, y, optimizer=optimizer, verbose=True)
    result["cli"] = cli(
        "certify", "--model", "demo", "--data", f"{folder}/digits.npz", "-n", "200",
        "--n0", "20", "--out", f"{folder}/out.jsonl",
    )
elif scenario == "messages":
    import importlib
    from rs_plugin._registry import load_plugin
    from rs_plugin.bench.methods import estimator
    from rs_plugin.data import load_digits

    result["digits"] = missing(lambda: load_digits("test"))
    result["art"] = missing(lambda: importlib.import_module("rs_plugin.adapters.art"))
    result["pgd"] = missing(lambda: load_plugin("rs_plugin.attacks", "pgd", "attacks"))
    result["autoattack"] = missing(
        lambda: load_plugin("rs_plugin.attacks", "autoattack", "attacks")
    )
    result["ray"] = missing(lambda: importlib.import_module("rs_plugin.adapters.ray"))
    if blocked >= {"art", "sklearn", "matplotlib"}:  # else these would run
        result["bench"] = missing(lambda: estimator("art", None, (1,), 2, 0.25, 10, None))
        result["cli_certify"] = cli("certify", "--limit", "1", "--out", f"{folder}/x.jsonl")
        result["cli_audit"] = cli("audit", "--limit", "1", "--out", f"{folder}/audit")
        result["cli_ray"] = cli("certify", "--engine", "ray", "--out", f"{folder}/ray.jsonl")
result["imported"] = sorted(m for m in sys.modules if m.split(".")[0] in blocked)
print(json.dumps(result))
"""


def _run(blocked: list[str], scenario: str, folder: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(blocked), scenario, str(folder)],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result.pop("imported") == [], "a blocked module was imported"
    return result


def _digits_file(folder: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (3, 1, 8, 8)).astype(np.float32)
    np.savez(folder / "digits.npz", x=x, y=np.array([0, 1, 2]))


@pytest.mark.slow  # a fresh interpreter imports torch and certifies
def test_the_core_certifies_without_any_extra(tmp_path):
    _digits_file(tmp_path)
    result = _run(list(OPTIONAL), "certify", tmp_path)
    # Every vote goes to class 0 (logit margin 4 against noise of standard deviation 1), so the
    # radius is σ Φ⁻¹(α^(1/n)), the one-sided Clopper–Pearson bound of n successes out of n.
    assert result["prediction"] == [0, 0, 0]
    expected = 0.25 * norm.ppf(0.001 ** (1 / 1000))
    np.testing.assert_allclose(result["radius"], [expected] * 3, rtol=1e-5)
    code, stderr = result["cli"]
    assert code == 0, stderr
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["index"] for line in lines] == [0, 1, 2]


def _one_line_naming(message: str | None, extra: str) -> None:
    assert message is not None, f"nothing was missing where the {extra} extra is needed"
    assert "\n" not in message.strip()
    assert f"pip install 'rs-plugin[{extra}]'" in message


@pytest.mark.slow  # a fresh interpreter imports torch and certifies
def test_a_missing_extra_names_the_pip_line_that_installs_it(tmp_path):
    result = _run(list(OPTIONAL), "messages", tmp_path)
    for key, extra in [
        ("digits", "digits"),
        ("art", "art"),
        ("pgd", "art"),
        ("autoattack", "audit"),  # pyautoattack; the adapter itself needs no ART
        ("ray", "ray"),
        ("bench", "bench"),
    ]:
        kind, message = result[key]
        assert kind == "MissingExtraError"
        _one_line_naming(message, extra)
    for key, extra in [("cli_certify", "digits"), ("cli_audit", "plots"), ("cli_ray", "ray")]:
        code, stderr = result[key]
        assert code == 2
        _one_line_naming(stderr, extra)
        command = "certify" if key == "cli_ray" else key[4:]
        assert stderr.startswith(f"rs-plugin {command}: error: ")
    assert not (tmp_path / "x.jsonl").exists()
    assert not (tmp_path / "ray.jsonl").exists()
    assert not (tmp_path / "audit").exists()


@pytest.mark.slow  # a fresh interpreter imports torch and certifies
def test_autoattack_without_pyautoattack_names_the_audit_extra(tmp_path):
    result = _run(["pyautoattack"], "messages", tmp_path)
    kind, message = result["autoattack"]
    assert kind == "MissingExtraError"
    _one_line_naming(message, "audit")
    assert result["pgd"] is None and result["digits"] is None  # the rest is installed


@pytest.mark.slow  # a fresh interpreter imports torch and certifies
def test_without_fcntl_the_command_line_certifies_and_warns_that_nothing_is_locked(tmp_path):
    _digits_file(tmp_path)
    result = _run(["fcntl"], "certify", tmp_path)
    code, stderr = result["cli"]
    assert code == 0, stderr
    assert re.search(r"rs-plugin certify: warning: .*out\.jsonl is not locked", stderr)
    assert len((tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()) == 3


def test_import_extra_returns_the_module_or_names_the_extra():
    assert import_extra("json", "plots", "x") is json
    with pytest.raises(
        MissingExtraError, match=r"^the plots: rs_plugin_no_such_module is not installed; "
    ):
        import_extra("rs_plugin_no_such_module", "plots", "the plots")
    with pytest.raises(ImportError, match=re.escape("pip install 'rs-plugin[plots]'")):
        import_extra("rs_plugin_no_such_module.sub", "plots", "the plots")


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[;\s]", requirement, maxsplit=1)[0]


def test_the_core_depends_on_torch_numpy_and_scipy_only():
    # mpmath (the sound samplers' exact thresholds) is declared because the core imports it, but
    # it is one of torch's own dependencies (through sympy): it installs nothing torch does not.
    core = sorted(_name(r) for r in _pyproject()["dependencies"])
    assert core == ["mpmath", "numpy", "scipy", "torch"]
    assert "mpmath" in (_torch_requirements() | _sympy_requirements())


def _requirements_of(distribution: str) -> set[str]:
    from importlib.metadata import requires

    return {_name(r.split(";")[0]) for r in requires(distribution) or []}


def _torch_requirements() -> set[str]:
    return _requirements_of("torch")


def _sympy_requirements() -> set[str]:
    return _requirements_of("sympy") if "sympy" in _torch_requirements() else set()


def _extras_named_in_the_code() -> set[str]:
    """The extra (second argument) of every import_extra / MissingExtraError call."""
    names = set()
    for path in [
        *ROOT.joinpath("rs_plugin").rglob("*.py"),
        *ROOT.joinpath("adapters").glob("*.py"),
    ]:
        if path.name == "_validation.py":  # where they are defined
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) in ("import_extra", "MissingExtraError")
                and len(node.args) >= 2
            ):
                extra = node.args[1]
                assert isinstance(extra, ast.Constant), f"{path}: the extra is not a literal"
                assert isinstance(extra.value, str)
                names.add(extra.value)
    return names


def test_every_extra_the_code_names_is_declared_and_all_installs_every_extra():
    extras = _pyproject()["optional-dependencies"]
    named = _extras_named_in_the_code()
    assert {"digits", "art", "plots", "audit", "ray", "bench"} <= named
    assert named <= extras.keys()
    (everything,) = extras["all"]
    listed = re.fullmatch(r"rs-plugin\[(.*)\]", everything)
    assert listed is not None, everything
    inside = set(listed.group(1).split(","))
    assert inside == extras.keys() - {"all", "dev"}
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    assert _pyproject()["license-files"] == ["LICENSE"]


def test_every_package_and_data_file_is_in_the_distribution():
    """A non-editable install ships only the packages pyproject.toml lists (and their listed
    data files): every folder with an __init__.py under rs_plugin/ and adapters/ must be one,
    and every non-Python file the packages hold must match a package-data pattern."""
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools = settings["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = {"rs_plugin.adapters"} | {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "rs_plugin").rglob("__init__.py")
    }
    assert found == listed
    patterns = setuptools["package-data"]["rs_plugin"]
    tracked = subprocess.run(
        ["git", "ls-files", "rs_plugin"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    data = [p for p in tracked if not p.endswith(".py")]
    assert data, "the package ships data files (weights): the check must see them"
    for path in data:
        inside = Path(path).relative_to("rs_plugin")
        assert any(inside.match(pattern) for pattern in patterns), path
