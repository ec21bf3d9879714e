"""Nothing handed to the command line is trusted: forged certificate files, stored records that
claim the impossible, models that write their input or share another's weights, outputs that
are not regular files. Each case gets one error naming what is wrong, or the certificate the
model earns, never a certificate it does not.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from rs_plugin.cli import main
from rs_plugin.data import load_digits

FAST = ["-n", "100", "--n0", "10"]
AUDIT_FAST = ["--attacks", "deepfool", "--budgets", "0.5", "--predict-n", "100"]
AUDIT_FAST += ["--noise-samples", "4", "--n0", "10"]
_FRESH = itertools.count()


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _refused(capsys, argv: list[str], parameter: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{parameter}: expected" in err, err
    return err


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _forged(index: int, **fields) -> dict:
    return {
        "index": index,
        "prediction": 8 if index == 0 else 2,
        "radius": 0.1,
        "alpha": 0.001,
        "n0": 10,
        "n": 200,
        "smoothing": {"name": "gaussian", "sigma": 0.25},
        **fields,
    }


def _audit(tmp_path: Path, records: list[dict], *flags: str) -> tuple[int, dict, str]:
    path = _write(tmp_path / f"forged{next(_FRESH)}.jsonl", records)
    out = tmp_path / f"o{next(_FRESH)}"
    code = main(["audit", "--certificates", str(path), *AUDIT_FAST, *flags, "--out", str(out)])
    return code, json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


# --- forged certificate files -------------------------------------------------------------------


def test_a_radius_beyond_its_sampling_cap_is_a_violation_that_cannot_hold(tmp_path):
    cap = 0.25 * stats.norm.ppf(0.001 ** (1 / 200))
    assert cap == pytest.approx(0.456, abs=1e-3)
    code, report, markdown = _audit(tmp_path, [_forged(0, radius=5.0), _forged(1)])
    assert code == 1
    assert report["verdict"]["significantly_violated"] is True
    [entry] = report["verdict"]["impossible"]
    assert entry["index"] == 0 and "radius 5 exceeds 0.456" in entry["reason"]
    assert "cannot hold for any model" in markdown
    assert "HOLDS" not in report["verdict"]["summary"].split(";")[0]


@pytest.mark.filterwarnings("default::rs_plugin.RSWarning")
def test_a_prediction_outside_the_classes_cannot_hold(tmp_path, capsys):
    code, report, markdown = _audit(tmp_path, [_forged(0, prediction=42), _forged(1)])
    assert "class-count mismatch" in capsys.readouterr().err
    assert code == 1
    [entry] = report["verdict"]["impossible"]
    assert "prediction 42 is not a class of a 10-class model" in entry["reason"]
    assert "prediction 42" in markdown


def test_certificates_in_another_semantics_than_their_smoothing_are_refused(tmp_path, capsys):
    """Gaussian noise certifies pixels: a file claiming parameter-space certificates for it
    would have the audit attack the wrong space."""
    path = _write(tmp_path / "f.jsonl", [_forged(i, semantics="parametric") for i in (0, 1)])
    err = _refused(capsys, ["audit", "--certificates", str(path), "--out", "o"], "--certificates")
    assert "semantics of their smoothing ('input')" in err and "'parametric'" in err, err


def test_the_files_smoothing_is_used_and_a_contradicting_flag_refused(tmp_path, capsys):
    records = [
        {**_forged(i), "smoothing": "laplace", "sigma": 0.5, "norm": "l1", "radius": 0.05}
        for i in (0, 1)
    ]
    code, report, _ = _audit(tmp_path, records)
    assert code in (0, 1)
    assert report["settings"]["smoothing"] == {"name": "laplace", "sigma": 0.5}
    path = _write(tmp_path / "laplace.jsonl", records)
    for flag, says in (
        (["--smoothing", "gaussian"], "'laplace'"),
        (["--sigma", "0.25"], "sigma (0.5)"),
    ):
        argv = ["audit", "--certificates", str(path), *flag, "--out", "o"]
        err = _refused(capsys, argv, flag[0])
        assert says in err and flag[1] in err
    assert not Path("o").exists()


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"radius": "NaN"}, "a radius"),
        ({"n": 1.5}, "n: an integer"),
        ({"n": "200"}, "n: an integer"),
        ({"p_lower": 2}, "p_lower"),
        ({"count": -1}, "count"),
        ({"radii": {"l2": "x"}}, "radii"),
        ({"smoothing": 7}, "a smoothing"),
        ({"smoothing": "gaussian", "sigma": -1}, "sigma"),
    ],
)
def test_non_numeric_fields_are_refused_with_their_line(tmp_path, capsys, fields, says):
    # The smoothing is the run's (equal on every line): read from the first.
    line = 1 if "smoothing" in fields else 2
    records = [_forged(0, **fields)] if line == 1 else [_forged(0), _forged(1, **fields)]
    path = _write(tmp_path / "bad.jsonl", records)
    err = _refused(capsys, ["audit", "--certificates", str(path), "--out", "o"], "--certificates")
    assert says in err and f"line {line}" in err, err


# --- --resume checks every stored record --------------------------------------------------------


@pytest.fixture
def certified(tmp_path) -> Path:
    out = tmp_path / "r.jsonl"
    assert main(["certify", "--limit", "2", *FAST, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"radius": math.nan}, "a radius: a finite number"),
        ({"prediction": 77}, "prediction 77 is not a class"),
        ({"radius": 5.0}, "radius 5 exceeds 0.375"),
        ({"radius": math.nan, "prediction": 77}, "line 1"),
        # What the summary counts as stored: an abstention claiming a radius and a correct
        # answer, or a sample count that would lift the cap, is refused.
        ({"prediction": -1, "radius": 1e29}, "an abstention (prediction -1) with radius 1e+29"),
        ({"abstain": True}, "abstain True with prediction"),
        ({"label": 99}, "label 99, where the data's label is"),
        ({"samples": 10**20}, "samples: an integer in [0, 2147483648]"),
        # a run of fixed n records no more samples than n (a larger one would lift the cap)
        ({"samples": 2**31}, "2147483648 samples recorded by a run of n = 100"),
        # radii beyond what the record's own p_lower certifies
        ({"radius": 0.37, "p_lower": 0.7}, "l2 radius 0.37 above 0.131"),
        ({"radii": {"linf": 5.0}}, "linf radius 5 above"),
    ],
)
def test_resume_refuses_a_stored_record_that_cannot_hold(certified, capsys, change, says):
    lines = certified.read_text().splitlines()
    first = {**json.loads(lines[0]), **change}
    lines[0] = json.dumps(first)  # NaN is written as the bare word NaN, as a forger would
    certified.write_text("\n".join(lines[:1]) + "\n")
    before = certified.read_bytes()
    err = _refused(
        capsys, ["certify", "--limit", "3", *FAST, "--out", str(certified), "--resume"], "--resume"
    )
    assert says in err and "line 1" in err, err
    assert certified.read_bytes() == before  # nothing is changed


def test_resume_refuses_a_stored_correctness_the_data_contradicts(certified, capsys):
    lines = certified.read_text().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "correct": not first["correct"]})
    certified.write_text(lines[0] + "\n")
    before = certified.read_bytes()
    err = _refused(
        capsys, ["certify", "--limit", "3", *FAST, "--out", str(certified), "--resume"], "--resume"
    )
    assert f"correct {not first['correct']} for prediction" in err and "line 1" in err, err
    assert certified.read_bytes() == before


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"p_lower": 0.999999}, "above"),  # more than its own votes give
        ({"bound_count": 10**6}, "bound_count 1000000 of bound_samples"),
        ({"bound_samples": None}, "bound_count"),
        ({"bound_samples": 5000}, "samples drawn (both"),
    ],
)
def test_resume_refuses_an_anytime_record_whose_bound_its_votes_contradict(
    tmp_path, capsys, change, says
):
    out = tmp_path / "anytime.jsonl"
    argv = ["certify", "--certifier", "anytime", "--tolerance", "0.05", "-n", "2048"]
    argv += ["--n0", "10", "--out", str(out)]
    assert main([*argv, "--limit", "2"]) == 0
    lines = out.read_text().splitlines()
    first = json.loads(lines[0])
    assert first["bound_samples"] + 512 == first["samples"]  # a quarter of n is the pilot
    lines[0] = json.dumps({k: v for k, v in {**first, **change}.items() if v is not None})
    out.write_text("\n".join(lines) + "\n")
    before = out.read_bytes()
    err = _refused(capsys, [*argv, "--limit", "3", "--resume"], "--resume")
    assert says in err and "line 1" in err, err
    assert out.read_bytes() == before


def test_resume_refuses_a_record_of_an_input_the_data_does_not_have(certified, capsys):
    # The digits test split has 360 inputs; a record of input 5 000 would be counted by the
    # summary although no input of the data is behind it.
    lines = certified.read_text().splitlines()
    forged = {**json.loads(lines[0]), "index": 5000}
    certified.write_text("\n".join([*lines, json.dumps(forged)]) + "\n")
    before = certified.read_bytes()
    err = _refused(
        capsys, ["certify", "--limit", "3", *FAST, "--out", str(certified), "--resume"], "--resume"
    )
    assert "index 5000, beyond the data's 360 inputs" in err and "line 3" in err, err
    assert certified.read_bytes() == before


def test_resume_refuses_a_labelled_record_stripped_of_its_correctness(certified, capsys):
    # Without `correct` in every record the summary counts each unabstained prediction as
    # correct: a wrong prediction would enter the certified accuracy.
    lines = certified.read_text().splitlines()
    first = json.loads(lines[0])
    stripped = {k: v for k, v in first.items() if k not in ("label", "correct")}
    certified.write_text("\n".join([json.dumps(stripped), *lines[1:]]) + "\n")
    err = _refused(
        capsys, ["certify", "--limit", "2", *FAST, "--out", str(certified), "--resume"], "--resume"
    )
    assert "no label and correctness for an input labelled" in err and "line 1" in err, err


def test_resume_refuses_correctness_on_inputs_the_data_leaves_unlabelled(tmp_path, capsys):
    x = load_digits("test")[0][:2].numpy()
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "u.jsonl"
    args = ["certify", "--data", str(tmp_path / "x.npy"), "--limit", "2", *FAST]
    assert main([*args, "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    forged = {**json.loads(lines[0]), "label": 3, "correct": True}
    out.write_text("\n".join([json.dumps(forged), *lines[1:]]) + "\n")
    before = out.read_bytes()
    err = _refused(capsys, [*args, "--out", str(out), "--resume"], "--resume")
    assert "label 3 for an input the data leaves unlabeled" in err and "line 1" in err, err
    assert out.read_bytes() == before


def test_resume_with_a_smaller_limit_keeps_the_records_beyond_it(certified, capsys):
    # Inputs of the data beyond this run's --limit are checked against the data's labels, not
    # refused: an earlier run certified them.
    before = certified.read_bytes()
    assert main(["certify", "--limit", "1", *FAST, "--out", str(certified), "--resume"]) == 0
    assert certified.read_bytes() == before
    lines = certified.read_text().splitlines()
    second = json.loads(lines[1])
    assert second["index"] == 1
    lines[1] = json.dumps({**second, "correct": not second["correct"]})
    certified.write_text("\n".join(lines) + "\n")
    err = _refused(
        capsys, ["certify", "--limit", "1", *FAST, "--out", str(certified), "--resume"], "--resume"
    )
    assert "correct" in err and "line 2" in err, err


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"memory": {"whitened_radius": 1e6, "sigma": 0.25}}, "whitened radius <= 1.50048"),
        ({"memory": {"whitened_radius": 0.5, "sigma": 1e6}}, "σ in [0.125, 0.5]"),
        # the record's own radius: at most Φ⁻¹(α^{1/n}) times the largest σ the search reaches
        ({"radius": 5.0}, "radius 5 exceeds 0.750238"),
    ],
)
def test_resume_refuses_a_memory_entry_no_certification_could_store(tmp_path, capsys, change, says):
    """A DDRS file's memory entries become regions later inputs are certified against: a forged
    entry larger than the record's samples certify (Φ⁻¹(α^{1/n}) in σ units), or with a σ the
    search cannot reach, is refused before anything is certified; so is a record's radius
    beyond that region's reach."""
    out = tmp_path / "ddrs.jsonl"
    args = ["certify", "--certifier", "ddrs", *FAST, "--out", str(out)]
    assert main([*args, "--limit", "2"]) == 0
    lines = out.read_text().splitlines()
    first = json.loads(lines[0])
    assert first["memory"] is not None and first["prediction"] >= 0, first
    lines[0] = json.dumps({**first, **change})
    out.write_text("\n".join(lines) + "\n")
    before = out.read_bytes()
    err = _refused(capsys, [*args, "--limit", "4", "--resume"], "--resume")
    assert says in err and ("input 0" in err or "line 1" in err), err
    assert out.read_bytes() == before


# --- the model's identity -----------------------------------------------------------------------

_PARAMETERLESS = """
import torch
from torch import nn

class Bright(nn.Module):
    def __init__(self, sign):
        super().__init__()
        self.sign = sign
    def forward(self, x):
        m = x.flatten(1).mean(dim=1, keepdim=True) * self.sign
        return torch.cat([m * k for k in torch.linspace(-1, 1, 10).tolist()], dim=1)

def up(): return Bright(1.0).eval()
def down(): return Bright(-1.0).eval()
"""


def test_resume_and_audit_refuse_another_parameterless_model(tmp_path, capsys):
    name = f"parameterless_{next(_FRESH)}"
    (tmp_path / f"{name}.py").write_text(_PARAMETERLESS)
    out = tmp_path / "p.jsonl"
    assert main(["certify", "--model", f"{name}:up", "--limit", "1", *FAST, "--out", str(out)]) == 0
    stored = json.loads(out.read_text())["model_sha256"]
    assert stored != "e3b0c44298fc1c14"
    argv = ["certify", "--model", f"{name}:down", "--limit", "2", *FAST, "--out", str(out)]
    err = _refused(capsys, [*argv, "--resume"], "--resume")
    assert f"model_sha256: stored {stored!r}" in err
    err = _refused(
        capsys,
        ["audit", "--certificates", str(out), "--model", f"{name}:down", "--out", "o"],
        "--model",
    )
    assert stored in err and err.count("sha256") >= 2


_WRITES_INPUT = """
from rs_plugin.data import load_demo_model

class Zeroes:
    pass

import torch
from torch import nn

class ZeroesItsInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = load_demo_model()
    def forward(self, x):
        out = self.f(x.clone())
        x.zero_()
        return out

class NormalisesInPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = load_demo_model()
    def forward(self, x):
        x -= 0.25
        x /= 0.5
        return self.f(x * 0.5 + 0.25)

def zeroes(): return ZeroesItsInput().eval()
def normalises(): return NormalisesInPlace().eval()
"""


def _results(path: Path) -> list[tuple]:
    return [
        (r["prediction"], r["radius"], r["p_lower"], r["count"])
        for r in map(json.loads, path.read_text().splitlines())
    ]


def test_a_model_that_writes_its_input_gets_the_certificates_of_its_function(tmp_path):
    name = f"writes_input_{next(_FRESH)}"
    (tmp_path / f"{name}.py").write_text(_WRITES_INPUT)
    args = ["--limit", "3", "-n", "300", "--n0", "20", "--batch-size", "200"]
    assert main(["certify", *args, "--out", "demo.jsonl"]) == 0
    expected = _results(tmp_path / "demo.jsonl")
    for factory in ("zeroes", "normalises"):
        out = tmp_path / f"{factory}.jsonl"
        assert main(["certify", "--model", f"{name}:{factory}", *args, "--out", str(out)]) == 0
        got = _results(out)
        assert [g[0] for g in got] == [e[0] for e in expected]
        for g, e in zip(got, expected, strict=True):
            assert g[1] == pytest.approx(e[1], rel=1e-6, abs=1e-9)


# --- outputs that are not regular files ---------------------------------------------------------


def test_an_out_that_is_not_a_regular_file_is_refused_up_front(tmp_path, capsys):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    err = _refused(capsys, ["certify", "--limit", "1", *FAST, "--out", str(fifo)], "--out")
    assert "FIFO" in err
    err = _refused(capsys, ["certify", "--limit", "1", *FAST, "--out", "/dev/null"], "--out")
    assert "character device" in err


def test_audit_refuses_an_out_whose_report_would_overwrite_the_certificates(
    tmp_path, capsys, certified
):
    folder = tmp_path / "same"
    folder.mkdir()
    inside = folder / "report.json"
    inside.write_bytes(certified.read_bytes())
    argv = ["audit", "--certificates", str(inside), *AUDIT_FAST, "--out", str(folder)]
    err = _refused(capsys, argv, "--out")
    assert "would overwrite it" in err
    assert inside.read_bytes() == certified.read_bytes()
    argv = ["audit", "--certificates", str(certified), *AUDIT_FAST, "--limit", "0"]
    _refused(capsys, [*argv, "--out", str(tmp_path / "o")], "--limit")


def test_sigma_is_set_one_way_not_also_as_a_smoothing_param(capsys):
    argv = ["certify", "--limit", "2", *FAST, "--smoothing-param", "sigma=0.5"]
    err = _refused(capsys, argv, "--smoothing-param")
    assert "--sigma" in err and not Path("results.jsonl").exists()


def test_audit_out_is_checked_before_the_first_attack(tmp_path, capsys, certified):
    taken = tmp_path / "taken"
    taken.write_text("a file, not a folder")
    argv = ["audit", "--certificates", str(certified), *AUDIT_FAST, "--out", str(taken)]
    err = _refused(capsys, argv, "--out")
    assert "which is a file" in err
    folder = tmp_path / "folder"
    folder.mkdir()
    os.mkfifo(folder / "report.md")
    argv = ["audit", "--certificates", str(certified), *AUDIT_FAST, "--out", str(folder)]
    err = _refused(capsys, argv, "--out")
    assert "FIFO" in err
    assert sorted(p.name for p in folder.iterdir()) == ["report.md"]


# --- one line, never a traceback, and no record lost -------------------------------------------

_FAILING = """
import sys
from pathlib import Path
from rs_plugin.data import load_demo_model
import torch
from torch import nn

class FailsWhileMarked(nn.Module):
    def __init__(self):
        super().__init__()
        self.f, self.calls = load_demo_model(), 0
    def forward(self, x):
        self.calls += 1
        if self.calls > 5 and Path("FAIL").exists():
            raise RuntimeError("boom on a noisy batch")
        return self.f(x)

def fails(): return FailsWhileMarked().eval()
def exits(): sys.exit(0)
"""


def _records(path: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {
        r["index"]: {k: v for k, v in r.items() if k not in ("seconds", "batch_size")} for r in rows
    }


def test_a_model_that_raises_mid_run_is_one_line_and_its_records_are_kept(tmp_path, capsys):
    name = f"failing_{next(_FRESH)}"
    (tmp_path / f"{name}.py").write_text(_FAILING)
    args = ["certify", "--model", f"{name}:fails", "--limit", "5", *FAST, "--batch-size", "110"]
    assert main([*args, "--out", "clean.jsonl"]) == 0
    (tmp_path / "FAIL").write_text("")
    assert main([*args, "--out", "r.jsonl"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1, err
    kept = _records(tmp_path / "r.jsonl")
    assert "the model raised RuntimeError: boom on a noisy batch while certifying input" in err
    assert f"{len(kept)} records are kept in r.jsonl" in err and "--resume" in err
    assert 0 < len(kept) < 5
    (tmp_path / "FAIL").unlink()
    assert main([*args, "--out", "r.jsonl", "--resume"]) == 0
    assert _records(tmp_path / "r.jsonl") == _records(tmp_path / "clean.jsonl")


def test_an_audit_whose_model_raises_is_one_line_and_keeps_its_certificates(tmp_path, capsys):
    """The audit certifies into its folder first, then attacks: a model raising in either
    phase ends in one line naming the phase, the certificates written are kept, and the same
    command finishes the audit once the model is fixed."""
    name = f"failing_{next(_FRESH)}"
    (tmp_path / f"{name}.py").write_text(_FAILING)
    args = ["audit", "--model", f"{name}:fails", "--limit", "4", *AUDIT_FAST, "-n", "100"]
    args += ["--batch-size", "110", "--out", "a"]
    (tmp_path / "FAIL").write_text("")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1, err
    kept = _records(tmp_path / "a" / "certificates.jsonl")
    assert "the model raised RuntimeError: boom on a noisy batch while certifying input" in err
    assert f"{len(kept)} records are kept in" in err and "run the same command again" in err
    assert 0 < len(kept) < 4
    (tmp_path / "FAIL").unlink()
    assert main(args) in (0, 1)  # finished: the verdict's exit status
    assert sorted(_records(tmp_path / "a" / "certificates.jsonl")) == [0, 1, 2, 3]
    assert (tmp_path / "a" / "report.md").exists()
    capsys.readouterr()
    # Certificates complete, the model fails under attack: one line, the file untouched.
    before = (tmp_path / "a" / "certificates.jsonl").read_bytes()
    (tmp_path / "FAIL").write_text("")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "during the audit's attacks" in err, err
    assert (tmp_path / "a" / "certificates.jsonl").read_bytes() == before


def test_a_factory_that_calls_sys_exit_is_reported_as_such(tmp_path, capsys):
    name = f"failing_{next(_FRESH)}"
    (tmp_path / f"{name}.py").write_text(_FAILING)
    err = _refused(capsys, ["certify", "--model", f"{name}:exits", "--out", "r.jsonl"], "model")
    assert "called sys.exit(0)" in err
    (tmp_path / f"{name}_exits.py").write_text("import sys\nsys.exit(3)\n")
    err = _refused(
        capsys, ["certify", "--model", f"{name}_exits:make", "--out", "r.jsonl"], "model"
    )
    assert "SystemExit: 3" in err
    assert not (tmp_path / "r.jsonl").exists()


_LIMITED = """
import resource, sys
from rs_plugin.cli import main
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("limit", [700, 1500])
def test_a_file_size_limit_keeps_every_record_and_says_how_to_resume(tmp_path, limit):
    import subprocess
    import sys

    args = ["certify", "--limit", "5", *FAST, "--batch-size", "110"]
    assert main([*args, "--out", "clean.jsonl"]) == 0
    run = subprocess.run(
        [sys.executable, "-c", _LIMITED, str(limit), *args, "--out", "r.jsonl"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert "writing r.jsonl failed: File too large" in run.stderr, run.stderr
    assert "ulimit -f" in run.stderr and "--resume" in run.stderr
    assert main([*args, "--out", "r.jsonl", "--resume"]) == 0
    assert _records(tmp_path / "r.jsonl") == _records(tmp_path / "clean.jsonl")


# The peak resident set of this process's own memory (VmHWM starts afresh at exec; ru_maxrss
# would include the parent's memory at fork, here the whole pytest process).
_PEAK = """
import re, sys
from rs_plugin.cli import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read()
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024, code)
"""


def test_a_huge_garbage_certificate_file_is_refused_in_memory_of_one_line(tmp_path):
    """2 GiB without a newline (a sparse file: no disk used): refused after 16 MiB are read,
    the process's peak memory far below the file's size."""
    import subprocess
    import sys

    huge = tmp_path / "huge.jsonl"
    with huge.open("wb") as handle:
        handle.truncate(2 << 30)
    run = subprocess.run(
        [sys.executable, "-c", _PEAK, "audit", "--certificates", str(huge), "--out", "o"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    peak, code = map(int, run.stdout.split())
    assert code == 2, run.stderr
    assert "line 1: longer than 16777216 bytes" in run.stderr
    assert "Traceback" not in run.stderr
    assert peak < 1 << 30, peak


_GRADIENT_FREE = """
import torch
from torch import nn
from rs_plugin.data import load_demo_model

class NoGrad(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = load_demo_model()
    def forward(self, x):
        with torch.no_grad():
            return self.f(x)

def make(): return NoGrad().eval()
"""


@pytest.mark.parametrize("attack", ["deepfool", "pgd"])
def test_a_gradient_free_model_is_refused_before_any_attack(tmp_path, capsys, attack):
    name = f"gradient_free_{next(_FRESH)}"
    (tmp_path / f"{name}.py").write_text(_GRADIENT_FREE)
    flags = [a if a != "deepfool" else attack for a in AUDIT_FAST]
    argv = ["audit", "--model", f"{name}:make", "--limit", "3", "-n", "100", *flags, "--out", "o"]
    err = _refused(capsys, argv, "model")
    assert "no gradient with respect to its input at all" in err
    assert not (tmp_path / "o" / "report.json").exists()


def test_radii_and_budgets_near_the_float_maximum_are_one_error(tmp_path, capsys):
    path = _write(tmp_path / "huge_radius.jsonl", [_forged(0, radius=1.7e308), _forged(1)])
    err = _refused(capsys, ["audit", "--certificates", str(path), "--out", "o"], "--certificates")
    assert "<= 1e+30" in err and "line 1" in err
    path = _write(tmp_path / "fine.jsonl", [_forged(0), _forged(1)])
    flags = [*AUDIT_FAST[:2], "--budgets", "1e308", *AUDIT_FAST[4:]]
    err = _refused(capsys, ["audit", "--certificates", str(path), *flags, "--out", "o"], "budgets")
    assert "<= 1e+06" in err
    assert not Path("o").exists()


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('{"index": 0, "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "RecursionError"),
        ('{"index": ' + "9" * 5000 + "}", "ValueError"),
        ('{"index": ' + str(10**30) + ', "prediction": 1}', "'index' in [0, 2**63)"),
    ],
)
def test_a_record_file_python_cannot_hold_is_one_error(tmp_path, capsys, line, says):
    """Nesting too deep for the parser, an integer too long to convert, an index beyond 64 bits:
    one line naming the flag and the line (they were tracebacks), the file untouched."""
    path = tmp_path / "odd.jsonl"
    path.write_text(line + "\n")
    before = path.read_bytes()
    err = _refused(
        capsys, ["certify", "--limit", "2", *FAST, "--out", str(path), "--resume"], "--out"
    )
    assert says in err and "line 1" in err
    argv = ["audit", "--certificates", str(path), *AUDIT_FAST, "--out", str(tmp_path / "o")]
    assert says in _refused(capsys, argv, "--certificates")
    assert path.read_bytes() == before


@pytest.mark.parametrize("grid", ["1e400", "1e-400", "1/99999999999999999999999999"])
def test_a_sound_grid_too_fine_or_too_coarse_is_refused_at_once(capsys, grid):
    """These overflowed, or built a noise table for minutes, before."""
    argv = ["certify", "--sound", "--grid", grid, "--limit", "2", *FAST]
    assert "sigma/grid in [" in _refused(capsys, argv, "--grid")
    assert not Path("results.jsonl").exists()


def test_audit_refuses_a_file_whose_sigma_varies_or_names_no_smoothing(tmp_path, capsys, certified):
    """A σ of 5.0 on some lines was audited at the first line's 0.25, and a top-level σ without
    a smoothing at the flags' default, each without a word."""
    lines = [json.loads(line) for line in certified.read_text().splitlines()]
    assert lines[0].get("smoothing") is not None
    mixed = [dict(lines[0], sigma=0.25), *(dict(r, sigma=5.0) for r in lines[1:])]
    bare = [{k: v for k, v in r.items() if k != "smoothing"} | {"sigma": 0.5} for r in lines]
    for records, says in ((mixed, "differ in sigma"), (bare, "sigma 0.5 without a smoothing")):
        path = _write(tmp_path / f"f{next(_FRESH)}.jsonl", records)
        argv = ["audit", "--certificates", str(path), *AUDIT_FAST, "--out", str(tmp_path / "o")]
        assert says in _refused(capsys, argv, "--certificates")


def test_an_audit_rerun_with_a_smaller_limit_audits_those_inputs_and_keeps_the_rest(tmp_path):
    args = ["audit", *AUDIT_FAST, "-n", "100", "--out", str(tmp_path / "a")]
    assert main([*args, "--limit", "3"]) in (0, 1)  # the verdict's exit status
    stored = (tmp_path / "a" / "certificates.jsonl").read_bytes()
    assert main([*args, "--limit", "2"]) in (0, 1)
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert sorted(row["index"] for row in report["inputs"]) == [0, 1]
    assert (tmp_path / "a" / "certificates.jsonl").read_bytes() == stored
