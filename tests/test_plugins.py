"""The entry-point registry: built-ins, an installed third-party plugin, duplicate names."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from rs_plugin import Attack, SmoothedClassifier, Smoothing, check_certifier
from rs_plugin._registry import GROUPS, discover, load_plugin
from rs_plugin.auditing.attack import load_attack
from rs_plugin.certification.grid import Cohen
from rs_plugin.runs import load_certifier
from tests.analytic import LinearModel

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin_package"
CONSOLE_SCRIPT = Path(sys.executable).parent / "rs-plugin"


def _install(source: Path, target: Path, work: Path) -> None:
    """pip-install a package directory into ``target`` (offline, built from a copy)."""
    copy = work / source.name
    shutil.copytree(source, copy)
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"),
            *("--no-index", "--target", str(target), str(copy)),
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    work = tmp_path_factory.mktemp("plugin")
    target = work / "site"
    _install(EXAMPLE, target, work)
    return target


def _run(args, pythonpath: Path, tmp_path: Path):
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *args], capture_output=True, text=True, env=env, cwd=tmp_path
    )


def test_builtins_are_registered_through_the_public_groups():
    assert GROUPS == ("rs_plugin.smoothings", "rs_plugin.attacks", "rs_plugin.certifiers")
    gaussian = discover("rs_plugin.smoothings")["gaussian"]
    assert gaussian.dist is not None and gaussian.dist.name == "rs-plugin"
    assert load_plugin("rs_plugin.certifiers", "cohen", "certifier") is Cohen
    assert issubclass(Cohen, SmoothedClassifier)
    attacks = discover("rs_plugin.attacks")
    assert set(attacks) == {
        "pgd",
        "autoattack",
        "art_autoattack",
        "deepfool",
        "cw_l2",
        "foolbox_pgd",
        "foolbox_fmn",
        "foolbox_ddn",
        "semantic_grid",
        "semantic_random",
    }
    for name in attacks:
        attack = load_attack(name)
        assert isinstance(attack, Attack) and attack.name == name


def test_installed_plugin_is_listed_with_its_provider_and_certifies(plugin_path, tmp_path):
    listed = _run(["plugins"], plugin_path, tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert [
        "rs_plugin.smoothings",
        "example_uniform",
        "rs_plugin_example:ExampleUniform",
        "rs-plugin-example",
    ] in rows
    assert ["rs_plugin.smoothings", "gaussian", "rs_plugin:Gaussian", "rs-plugin"] in rows

    out = tmp_path / "uniform.jsonl"
    args = ["certify", "--smoothing", "example_uniform", "--sigma", "0.25", "--limit", "3"]
    done = _run([*args, "-n", "300", "--n0", "30", "--out", str(out)], plugin_path, tmp_path)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3
    expected = {"name": "example_uniform", "sigma": 0.25}
    assert all(r["smoothing"] == expected for r in records)
    assert all(r["norm"] == "l1" for r in records)


def test_example_plugin_is_sound_on_a_linear_classifier(plugin_path, monkeypatch):
    """True ℓ1 radius of sign(w·x + b) under symmetric noise: |w·x + b| / ‖w‖∞."""
    monkeypatch.syspath_prepend(str(plugin_path))
    importlib.invalidate_caches()
    smoothing = load_plugin("rs_plugin.smoothings", "example_uniform", "smoothing")(sigma=0.5)
    assert isinstance(smoothing, Smoothing)
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(16, generator=generator)
    model = LinearModel(w, b=0.1).eval()
    x = torch.randn(200, 16, generator=generator) * 0.3
    certificates = SmoothedClassifier(model, smoothing, 2).certify(x, n0=50, n=2000, alpha=0.01)
    true_radius = (model.margin(x).abs() / w.abs().max()).double()
    violations = int((certificates.radius > true_radius + 1e-9).sum())
    # P[Binomial(200, 0.01) >= 8] < 0.001: a false alarm is that unlikely.
    assert violations < 8
    assert int((certificates.radius > 0).sum()) > 100


def test_a_clashing_name_is_reported_and_everything_else_keeps_working(plugin_path, tmp_path):
    clash = tmp_path / "clash_src" / "rs-plugin-clash"
    (clash / "rs_plugin_clash").mkdir(parents=True)
    (clash / "rs_plugin_clash" / "__init__.py").write_text("from rs_plugin import Gaussian\n")
    (clash / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools>=77"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "rs-plugin-clash"
            version = "0.1.0"
            [project.entry-points."rs_plugin.smoothings"]
            gaussian = "rs_plugin_clash:Gaussian"
            [tool.setuptools]
            packages = ["rs_plugin_clash"]
            """
        )
    )
    target = tmp_path / "site"
    _install(clash, target, tmp_path)
    listed = _run(["plugins"], target, tmp_path)
    assert listed.returncode == 0, listed.stderr
    # Both registrations are listed and marked; the built-ins that do not clash are all there.
    gaussian_rows = [row for row in listed.stdout.splitlines() if " gaussian " in row]
    assert len(gaussian_rows) == 2 and all(row.endswith("CLASH") for row in gaussian_rows)
    assert "rs_plugin:Gaussian" in listed.stdout and "rs_plugin_clash:Gaussian" in listed.stdout
    for name in ("laplace", "rotation", "pgd", "cohen", "sequential"):
        assert f" {name} " in listed.stdout
    assert "warning: rs_plugin.smoothings name 'gaussian' is registered by" in listed.stdout
    assert "rs-plugin-clash" in listed.stdout

    common = ["certify", "--limit", "2", "-n", "200", "--n0", "20"]
    ambiguous = _run([*common, "--out", str(tmp_path / "a.jsonl")], target, tmp_path)
    assert ambiguous.returncode == 2
    message = ambiguous.stderr
    assert "rs_plugin.smoothings name 'gaussian'" in message
    assert "rs-plugin-clash" in message and "from rs-plugin " in message
    assert not (tmp_path / "a.jsonl").exists()
    other = _run(
        [*common, "--smoothing", "laplace", "--out", str(tmp_path / "b.jsonl")], target, tmp_path
    )
    assert other.returncode == 0, other.stderr
    assert len((tmp_path / "b.jsonl").read_text().splitlines()) == 2


def test_example_certifier_passes_the_conformance_suite(plugin_path, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_path))
    importlib.invalidate_caches()
    torch.set_num_threads(1)
    factory = load_certifier("example_hoeffding")
    assert factory.__module__ == "rs_plugin_example.certifier"
    check_certifier(factory)


def _records(path: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {row["index"]: row for row in rows}


def _same(first: dict, second: dict) -> bool:
    close = abs(first["radius"] - second["radius"]) < 1e-9
    return close and all(first[k] == second[k] for k in ("prediction", "count", "p_lower"))


@pytest.mark.slow
def test_example_certifier_runs_through_certify_ray_resume_and_audit(plugin_path, tmp_path):
    """A third-party certifier goes through every door of the command line, which names no
    certifier of its own choosing."""
    for folder in ("cli", "runs"):
        for source in (ROOT / "rs_plugin" / folder).glob("*.py"):
            assert "hoeffding" not in source.read_text(encoding="utf-8").lower(), source
    common = ["certify", "--certifier", "example_hoeffding", "-n", "300", "--n0", "30"]

    whole = tmp_path / "whole.jsonl"
    done = _run([*common, "--limit", "6", "--out", str(whole)], plugin_path, tmp_path)
    assert done.returncode == 0, done.stderr
    expected = _records(whole)
    assert sorted(expected) == list(range(6))
    assert all(r["certifier"] == "example_hoeffding" for r in expected.values())
    assert any(r["prediction"] >= 0 and r["radius"] > 0 for r in expected.values())

    resumed = tmp_path / "resumed.jsonl"
    first = _run([*common, "--limit", "3", "--out", str(resumed)], plugin_path, tmp_path)
    assert first.returncode == 0, first.stderr
    rest = _run([*common, "--limit", "6", "--resume", "--out", str(resumed)], plugin_path, tmp_path)
    assert rest.returncode == 0, rest.stderr
    assert "3 certified now, 3 resumed" in rest.stdout
    got = _records(resumed)
    assert sorted(got) == list(range(6)) and all(_same(got[i], expected[i]) for i in range(6))

    on_ray = tmp_path / "ray.jsonl"
    ray_args = ["--engine", "ray", "--workers", "2", "--limit", "6", "--out", str(on_ray)]
    ray = _run([*common, *ray_args], plugin_path, tmp_path)
    assert ray.returncode == 0, ray.stderr
    got = _records(on_ray)
    assert sorted(got) == list(range(6)) and all(_same(got[i], expected[i]) for i in range(6))

    report = tmp_path / "audit"
    audit_args = ["audit", "--certificates", str(whole), "--attacks", "pgd"]
    # The file names a third-party certifier: the audit imports it only when the user does.
    unnamed = _run(
        [*audit_args, "--noise-samples", "8", "--out", str(report)], plugin_path, tmp_path
    )
    assert unnamed.returncode == 2 and "--certifier example_hoeffding" in unnamed.stderr
    assert not report.exists()
    audit_args += ["--certifier", "example_hoeffding"]
    audited = _run(
        [*audit_args, "--noise-samples", "8", "--out", str(report)], plugin_path, tmp_path
    )
    assert audited.returncode in (0, 1), audited.stderr
    data = json.loads((report / "report.json").read_text())
    assert data["settings"]["certificates"] == str(whole)


def _fake_distribution(site: Path, name: str, group: str, entry: str, module: str) -> None:
    """A minimal installed distribution (a .dist-info folder) registering ``entry`` in
    ``group``, and the module it names."""
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{entry}\n")
    (site / f"{module.split(':')[0]}.py").write_text(module.split(":", 1)[1])


def test_a_broken_plugin_is_one_error_and_a_file_never_imports_a_third_party_plugin(tmp_path):
    """A plugin that raises on import is one error naming it (exit 2, not the audit's 1 for
    violated certificates). A certificate file naming a third-party smoothing does not get it
    imported: the user must name it on the command line."""
    site = tmp_path / "site"
    marker = tmp_path / "IMPORTED"
    body = f"open({str(marker)!r}, 'w').close()\nraise RuntimeError('broken plugin')\n"
    _fake_distribution(
        site, "broken-plugin", "rs_plugin.smoothings", "broken = brokenmod:X", f"brokenmod:{body}"
    )
    args = ["certify", "--smoothing", "broken", "--limit", "1", "-n", "50", "--n0", "10"]
    broken = _run([*args, "--out", str(tmp_path / "b.jsonl")], site, tmp_path)
    assert broken.returncode == 2, broken.stderr
    assert "smoothing: expected a plugin that loads; received 'broken (brokenmod:X from" in (
        broken.stderr
    )
    assert "Traceback" not in broken.stderr
    marker.unlink()

    certified = tmp_path / "c.jsonl"
    done = _run(
        ["certify", "--limit", "1", "-n", "50", "--n0", "10", "--out", str(certified)],
        site,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(certified.read_text())
    record["smoothing"] = {"name": "broken", "sigma": 0.25}
    certified.write_text(json.dumps(record) + "\n")
    audit = ["audit", "--certificates", str(certified), "--attacks", "pgd"]
    refused = _run([*audit, "--out", str(tmp_path / "audit")], site, tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert "--smoothing broken to load the third-party plugin the file names" in refused.stderr
    assert not marker.exists()  # nothing the file named was imported


_BOASTFUL = """
from rs_plugin import SmoothedClassifier

class Boastful(SmoothedClassifier):
    # Cohen's certificates with every certified radius raised to 1000.
    def iter_certify(self, x, **settings):
        for part in super().iter_certify(x, **settings):
            part.radius[part.prediction >= 0] = 1000.0
            yield part
"""


def test_a_third_party_certifiers_impossible_record_is_never_written(tmp_path):
    """Records of a certifier the run did not write are checked as on --resume before they
    are written: a radius beyond what n samples can certify ends the run with one error."""
    site = tmp_path / "site"
    _fake_distribution(
        site, "boastful", "rs_plugin.certifiers", "boastful = boastfulmod:Boastful",
        f"boastfulmod:{_BOASTFUL}",
    )  # fmt: skip
    out = tmp_path / "b.jsonl"
    args = ["certify", "--certifier", "boastful", "--limit", "2", "-n", "100", "--n0", "10"]
    run = _run([*args, "--out", str(out)], site, tmp_path)
    assert run.returncode == 2, run.stderr
    assert "--certifier: expected records from certifier boastful" in run.stderr
    assert "radius 1000 exceeds" in run.stderr and "Traceback" not in run.stderr
    assert not out.exists() or out.read_text() == ""
