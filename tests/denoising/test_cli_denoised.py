"""``rs-plugin certify --denoiser`` and ``rs-plugin audit --denoiser``: certificates of the
denoised model, audited with the same denoiser; what is refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rs_plugin.cli import main

TINY = "tests.denoising.tiny:denoiser"
FAST = ["--limit", "2", "--n0", "10", "-n", "100", "--threads", "1", "--device", "cpu"]
AUDIT_FAST = ["--attacks", "pgd", "--budgets", "0.5", "--predict-n", "100", "--noise-samples", "4"]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _refused(capsys, argv: list[str], parameter: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{parameter}: expected" in err, err
    return err


@pytest.fixture(scope="module")
def certified(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("denoised") / "certified.jsonl"
    assert main(["certify", "--denoiser", TINY, *FAST, "--out", str(out)]) == 0
    return out


def test_certify_records_the_denoiser_and_the_composed_models_fingerprint(certified, tmp_path):
    records = _records(certified)
    assert [r["index"] for r in records] == [0, 1]
    assert all(r["denoiser"] == TINY for r in records)
    plain = tmp_path / "plain.jsonl"
    assert main(["certify", *FAST, "--out", str(plain)]) == 0
    # The denoiser is part of the certified model: another fingerprint, no denoiser field.
    assert _records(plain)[0]["model_sha256"] != records[0]["model_sha256"]
    assert "denoiser" not in _records(plain)[0]


@pytest.mark.slow
def test_audit_with_the_same_denoiser_checks_the_certificates(certified, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["audit", "--certificates", str(certified), "--denoiser", TINY, *AUDIT_FAST]
    assert main([*argv, "--threads", "1", "--out", str(out)]) == 0  # honest certificates hold
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["denoiser"] == TINY
    certified_inputs = sum(r["prediction"] >= 0 for r in _records(certified))
    assert report["verdict"]["certified_inputs"] == certified_inputs


@pytest.mark.parametrize("denoiser", [None, "tests.denoising.tiny:narrow"])
def test_audit_refuses_another_denoiser_than_the_files(certified, tmp_path, capsys, denoiser):
    flags = [] if denoiser is None else ["--denoiser", denoiser]
    argv = ["audit", "--certificates", str(certified), *flags, *AUDIT_FAST]
    err = _refused(capsys, [*argv, "--out", str(tmp_path / "o")], "--denoiser")
    assert TINY in err
    assert not (tmp_path / "o" / "report.json").exists()


@pytest.mark.parametrize(
    ("flags", "shown"),
    [
        (["--denoiser", TINY, "--sigma", "1.5"], "Gaussian(sigma=1.5)"),
        (["--denoiser", "tests.denoising.tiny:narrow"], "[0.1, 0.3]"),
        (["--denoiser", TINY, "--smoothing", "laplace"], "Laplace"),
    ],
)
def test_a_smoothing_the_denoiser_was_not_trained_for_is_refused(tmp_path, capsys, flags, shown):
    out = tmp_path / "r.jsonl"
    sigma = [] if "--sigma" in flags else ["--sigma", "0.5"]
    err = _refused(capsys, ["certify", *flags, *sigma, *FAST, "--out", str(out)], "smoothing")
    assert shown in err
    assert not out.exists()


@pytest.mark.parametrize("certifier", ["ddrs", "ancer"])
def test_a_denoiser_with_a_certifier_that_chooses_sigma_per_input_is_refused(
    tmp_path, capsys, certifier
):
    """The denoiser is trained for the job's one σ; DDRS and ANCER sample with their own per
    input. Refused before any σ search, not after the first input's."""
    out = tmp_path / "r.jsonl"
    argv = ["certify", "--denoiser", TINY, "--sigma", "0.5", "--certifier", certifier, *FAST]
    err = _refused(capsys, [*argv, "--out", str(out)], "denoiser")
    assert f"with {certifier}" in err
    assert not out.exists()


def test_a_denoiser_that_is_not_a_model_is_refused(tmp_path, capsys):
    argv = ["certify", "--denoiser", "no_such_module:make", *FAST, "--out", str(tmp_path / "r")]
    assert "no_such_module" in _refused(capsys, argv, "denoiser")


def test_the_shipped_pair_certifies_fashion_mnist_out_of_the_box(tmp_path):
    out = tmp_path / "shipped.jsonl"
    argv = ["certify", "--data", "fashion-mnist", "--model", "clean", "--denoiser", "demo"]
    assert main([*argv, *FAST, "--out", str(out)]) == 0
    records = _records(out)
    assert len(records) == 2 and records[0]["denoiser"] == "demo"
