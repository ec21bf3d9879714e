"""The ``rs-plugin`` command, in process and as a real program (module, console script, killed)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from rs_plugin.certification.engine import NOISE_VERSION
from rs_plugin.cli import main
from rs_plugin.data import load_digits
from tests.kill import kill_before_the_end

RECORD_KEYS = {
    "index",
    "label",
    "prediction",
    "radius",
    "norm",
    "p_lower",
    "n0",
    "n",
    "alpha",
    "correct",
    "abstain",
    "seconds",
}
FAST = ["-n", "200", "--n0", "20"]
CONSOLE_SCRIPT = Path(sys.executable).parent / "rs-plugin"


# Nothing a test does may land in the working tree (e.g. the default results.jsonl).
pytestmark = pytest.mark.usefixtures("in_tmp_path")


def _records(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n"), "the file ends with a partial line"
    return [json.loads(line) for line in text.splitlines()]


def _without_seconds(records: list[dict]) -> dict[int, dict]:
    by_index = {
        r["index"]: {k: v for k, v in r.items() if k not in ("seconds", "batch_size")}
        for r in records
    }
    assert len(by_index) == len(records), "duplicate index"
    return by_index


def _certify(out: Path, *args: str) -> int:
    return main(["certify", *args, "--out", str(out)])


def test_certify_defaults_writes_one_record_per_input(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert _certify(out, "--limit", "5", *FAST) == 0
    stdout = capsys.readouterr().out
    assert "certified accuracy" in stdout
    assert "5 certified now, 0 resumed" in stdout
    # The default batch size is measured; the summary and every record say which sizes ran
    # (a run this small ends while the probe is still trying sizes).
    used = re.search(r"batch_size=auto \(([0-9, ]+)\)", stdout)
    assert used is not None
    sizes = {int(size) for size in used.group(1).split(", ")}
    assert re.search(r"^inputs\s+5$", stdout, re.MULTILINE)

    records = _records(out)
    assert len(records) == 5
    _, labels = load_digits("test")
    for position, record in enumerate(records):
        assert RECORD_KEYS <= record.keys()
        assert record["index"] == position
        assert record["label"] == int(labels[position])
        assert record["norm"] == "l2"
        assert (record["n0"], record["n"], record["alpha"]) == (20, 200, 0.001)
        assert record["model"] == "demo"
        assert record["data"] == "digits"
        assert record["smoothing"] == {"name": "gaussian", "sigma": 0.25}
        assert record["correct"] == (record["prediction"] == record["label"])
        assert record["abstain"] == (record["prediction"] == -1)
        assert record["abstain"] == (record["p_lower"] < 0.5)
        assert 0.0 <= record["p_lower"] <= 1.0
        assert record["seconds"] >= 0.0
        assert isinstance(record["batch_size"], int) and record["batch_size"] in sizes
        expected_radius = 0.0 if record["abstain"] else 0.25 * norm.ppf(record["p_lower"])
        assert record["radius"] == pytest.approx(expected_radius, rel=1e-9, abs=1e-12)
    assert {record["batch_size"] for record in records} == sizes
    # The demo model gets these easy inputs right.
    assert sum(r["correct"] for r in records) >= 4


def test_resume_continues_and_matches_a_run_from_scratch(tmp_path, capsys):
    resumed = tmp_path / "resumed.jsonl"
    assert _certify(resumed, "--limit", "3", *FAST) == 0
    first = resumed.read_bytes()
    assert len(first.splitlines()) == 3

    assert _certify(resumed, "--limit", "6", *FAST, "--resume") == 0
    stdout = capsys.readouterr().out
    assert "3 certified now, 3 resumed" in stdout
    assert re.search(r"^inputs\s+6$", stdout, re.MULTILINE)
    after = resumed.read_bytes()
    assert after.startswith(first), "resuming changed the lines already written"
    records = _records(resumed)
    assert sorted(r["index"] for r in records) == list(range(6))

    scratch = tmp_path / "scratch.jsonl"
    assert _certify(scratch, "--limit", "6", *FAST) == 0
    # Per-input noise comes from (seed, index): how the run was split does not matter.
    assert _without_seconds(records) == _without_seconds(_records(scratch))

    # Resuming a finished file certifies nothing and leaves it as it is.
    capsys.readouterr()
    assert _certify(resumed, "--limit", "6", *FAST, "--resume") == 0
    assert "0 certified now, 6 resumed" in capsys.readouterr().out
    assert resumed.read_bytes() == after


def test_records_say_their_layout_and_a_resume_may_change_it(tmp_path, capsys):
    """Layout and compilation change kernels, not the classifier: stored per record, not
    compared on resume."""
    out = tmp_path / "mixed.jsonl"
    assert _certify(out, "--limit", "2", *FAST, "--channels-last") == 0
    assert _certify(out, "--limit", "4", *FAST, "--resume") == 0
    assert "2 certified now, 2 resumed" in capsys.readouterr().out
    records = sorted(_records(out), key=lambda r: r["index"])
    assert [r.get("channels_last") for r in records] == [True, True, None, None]
    assert all("compile" not in r for r in records)
    scratch = tmp_path / "scratch.jsonl"
    assert _certify(scratch, "--limit", "4", *FAST) == 0
    mixed = {
        i: {k: v for k, v in r.items() if k != "channels_last"}
        for i, r in _without_seconds(records).items()
    }
    assert mixed == _without_seconds(_records(scratch))


def test_records_of_an_earlier_noise_definition_are_not_resumed(tmp_path, capsys):
    """A file's records all come from one noise definition (a run from scratch gives them back):
    records without the current ``noise_version`` are refused, the file untouched."""
    out = tmp_path / "old.jsonl"
    assert _certify(out, "--limit", "2", *FAST) == 0
    records = _records(out)
    assert {r["noise_version"] for r in records} == {NOISE_VERSION}
    old = "".join(
        json.dumps({k: v for k, v in r.items() if k != "noise_version"}) + "\n" for r in records
    )
    out.write_text(old, encoding="utf-8")
    capsys.readouterr()
    assert _certify(out, "--limit", "4", *FAST, "--resume") == 2
    err = capsys.readouterr().err
    assert "differs in noise_version: stored None, requested 2" in err
    assert "another definition of the noise" in err
    assert out.read_text(encoding="utf-8") == old


def test_existing_output_without_resume_is_refused(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert _certify(out, "--limit", "2", *FAST) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert _certify(out, "--limit", "2", *FAST) == 2
    captured = capsys.readouterr()
    assert "error: --out:" in captured.err
    assert "--resume" in captured.err  # the message says how to continue
    assert captured.out == ""
    assert out.read_bytes() == before


@pytest.mark.parametrize(
    "changed", [["--sigma", "0.5"], ["--seed", "1"], ["--alpha", "0.01"], ["-n", "300"]]
)
def test_resume_with_a_different_configuration_is_refused(tmp_path, capsys, changed):
    out = tmp_path / "r.jsonl"
    assert _certify(out, "--limit", "2", *FAST) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert _certify(out, "--limit", "2", *FAST, *changed, "--resume") == 2
    captured = capsys.readouterr()
    assert "error: --resume:" in captured.err
    assert out.read_bytes() == before


@pytest.fixture
def labels_too_large(tmp_path) -> str:
    path = tmp_path / "labels.npz"
    np.savez(path, x=np.zeros((3, 1, 8, 8), np.float32), y=np.array([0, 10, 1]))
    return str(path)


BAD_INPUTS = [
    (["--sigma", "0"], "--sigma"),
    (["--sigma=-1"], "--sigma"),
    (["--sigma", "nan"], "--sigma"),
    (["--sigma", "inf"], "--sigma"),
    (["--alpha", "0"], "--alpha"),
    (["--alpha", "1.5"], "--alpha"),
    (["--alpha", "1"], "--alpha"),
    (["--n0", "0"], "--n0"),
    (["-n", "0"], "-n"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "fast"], "--batch-size"),
    (["--limit", "0"], "--limit"),
    (["--seed=-1"], "--seed"),
    (["--smoothing", "nonexistent"], "--smoothing"),
    (["--device", "cuda"], "--device"),  # the project pins torch's CPU build
    (["--device", "tpu"], "--device"),
    (["--data", "/nonexistent"], "--data"),
    (["--model", "no_colon_here"], "--model"),
    (["--data", "fashion-mnist", "--model", "rs_plugin.data:DemoCNN"], "--data"),  # 28×28 → 8×8
    (["--data", "LABELS_TOO_LARGE"], "--data"),  # labels beyond the model's 10 classes
]


@pytest.mark.parametrize(
    ("args", "parameter"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS]
)
def test_bad_inputs_exit_2_naming_the_parameter_before_writing(
    tmp_path, capsys, labels_too_large, args, parameter
):
    args = [labels_too_large if a == "LABELS_TOO_LARGE" else a for a in args]
    out = tmp_path / "sub" / "r.jsonl"
    assert _certify(out, "--limit", "2", *FAST, *args) == 2
    captured = capsys.readouterr()
    assert f"rs-plugin certify: error: {parameter}:" in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""
    assert not out.exists()
    assert not out.parent.exists()


def test_unparseable_number_is_an_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        _certify(tmp_path / "r.jsonl", "--sigma", "abc")
    assert info.value.code == 2
    assert "--sigma" in capsys.readouterr().err
    assert not (tmp_path / "r.jsonl").exists()


def test_plugins_lists_the_builtin_gaussian(capsys):
    assert main(["plugins"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["rs_plugin.smoothings", "gaussian", "rs_plugin:Gaussian", "rs-plugin"] in rows


@pytest.mark.slow
def test_module_and_console_script_run_like_the_in_process_command(tmp_path):
    args = ["certify", "--limit", "2", "-n", "100", "--n0", "10"]
    assert main([*args, "--out", str(tmp_path / "in_process.jsonl")]) == 0
    expected = _without_seconds(_records(tmp_path / "in_process.jsonl"))

    assert CONSOLE_SCRIPT.is_file()
    commands = {
        "module": [sys.executable, "-m", "rs_plugin.cli"],
        "script": [str(CONSOLE_SCRIPT)],
    }
    for name, command in commands.items():
        out = tmp_path / f"{name}.jsonl"
        done = subprocess.run(
            [*command, *args, "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        assert "certified accuracy" in done.stdout
        # stderr is not a terminal here: no progress bar.
        assert "it/s" not in done.stderr
        assert "%|" not in done.stderr
        assert _without_seconds(_records(out)) == expected

    # Errors exit with status 2 from the real program too.
    bad = subprocess.run(
        [str(CONSOLE_SCRIPT), *args, "--sigma", "0", "--out", str(tmp_path / "bad.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert bad.returncode == 2
    assert "error: --sigma:" in bad.stderr
    assert not (tmp_path / "bad.jsonl").exists()


@pytest.mark.slow
@pytest.mark.parametrize("trial", [0, 1, 2])
def test_killed_run_resumes_to_the_records_of_an_uninterrupted_run(tmp_path, trial):
    """SIGKILL at a random point (after 1-6 records plus a random delay), then resume."""
    rng = np.random.default_rng(trial)
    kill_after, extra_delay = int(rng.integers(1, 7)), float(rng.uniform(0.0, 0.3))
    limit = 10
    args = ["certify", "--limit", str(limit), "-n", "20000", "--n0", "100"]
    out = tmp_path / "killed.jsonl"
    written, after = kill_before_the_end(
        args, out, limit, kill_after, extra_delay, tmp_path, stderr=tmp_path / "stderr.txt"
    )
    assert after <= written < limit
    assert "it/s" not in (tmp_path / "stderr.txt").read_text()  # no bar outside a terminal

    # A crash in the middle of a write leaves a partial last line; resuming must drop it.
    with open(out, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"index": written, "prediction": 3, "radius": 0.5})[:30])

    assert main([*args, "--out", str(out), "--resume"]) == 0
    assert main([*args, "--out", str(tmp_path / "reference.jsonl")]) == 0

    resumed = _records(out)
    assert sorted(r["index"] for r in resumed) == list(range(limit))
    assert _without_seconds(resumed) == _without_seconds(_records(tmp_path / "reference.jsonl"))
