"""examples/reproduce_fashion.py end to end on a tiny setting, its resumption, and a run killed
mid-training that resumes to the checkpoint of an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "reproduce_fashion.py"
TINY = ["--epochs", "2", "--train-size", "256", "--test-size", "6", "--acr-size", "4"]
TINY += ["--check-size", "4", "-n", "400", "--batch-size", "200"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


pytestmark = [pytest.mark.slow, pytest.mark.fashion_mnist]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=ENV
    )


def test_a_row_trains_certifies_and_tables_then_resumes_without_redoing_anything(tmp_path):
    args = ["--method", "consistency", "--sigma", "0.25", *TINY, "--workdir", str(tmp_path)]
    first = _run(*args)
    assert first.returncode == 0, first.stderr
    assert "epoch 2/2" in first.stdout
    row = json.loads((tmp_path / "table.json").read_text())
    assert row["published"]["acr"] == 0.744 and row["published"]["certified"]["0.5"] == 0.788
    assert sorted(row["published"]["certified"]) == ["0.25", "0.5", "0.75"]
    assert sorted(row["certified"]) == ["0.25", "0.5", "0.75"]
    assert all(entry["images"] == 6 for entry in row["certified"].values())
    assert all(100 <= entry["average_samples"] <= 500 for entry in row["certified"].values())
    assert row["acr"]["images"] == 4 and row["acr"]["ci95"][0] <= row["acr"]["value"]
    assert all(check["images"] == 4 for check in row["check_against_fixed_n"].values())
    assert row["training"]["epochs"] == 2 and row["training"]["cpu_seconds"] > 0
    assert set(row["certify_cpu_seconds"]) == {
        "cohen.jsonl", "anytime_r0.25.jsonl", "anytime_r0.5.jsonl", "anytime_r0.75.jsonl"
    }  # fmt: skip
    assert row["fixed_n_full_test_cpu_hours_projected"] > 0
    table = (tmp_path / "table.md").read_text()
    assert "| 0.25 | Consistency | published | 0.744 |" in table
    assert "| 0.25 | Consistency | ours |" in table
    lines = {p.name: p.read_text() for p in (tmp_path / "certify").iterdir()}
    again = _run(*args)
    assert again.returncode == 0, again.stderr
    assert "epoch" not in again.stdout  # nothing retrained
    assert {p.name: p.read_text() for p in (tmp_path / "certify").iterdir()} == lines
    assert json.loads((tmp_path / "table.json").read_text())["certified"] == row["certified"]
    # Certified a few images per run, the records are those of one run over all of them.
    sliced = tmp_path / "sliced"
    sliced.mkdir()
    shutil.copy(tmp_path / "model.ts", sliced / "model.ts")
    # Our own fixed-N records written as a published log: "published, our images" is our row.
    log = tmp_path / "published.tsv"
    cohen = _records(tmp_path / "certify" / "cohen.jsonl")
    log.write_text(
        "idx\tlabel\tpredict\tradius\tcorrect\n"
        + "".join(
            f"{i}\t{r['label']}\t{r['prediction']}\t{r['radius']!r}\t{int(r['correct'])}\n"
            for i, r in cohen.items()
        )
    )
    in_slices = _run(
        *args[:-1], str(sliced), "--stage", "certify", "--slice", "4", "--published-log", str(log)
    )
    assert in_slices.returncode == 0, in_slices.stderr
    assert "2 certified now, 4 resumed" in in_slices.stdout  # the second slice of each phase
    for name in lines:
        assert _records(sliced / "certify" / name) == _records(tmp_path / "certify" / name)
    times = json.loads((sliced / "cpu_seconds.json").read_text())
    assert set(times) == set(lines) and all(t > 0 for t in times.values())
    same = json.loads((sliced / "table.json").read_text())["published_same_images"]
    assert same["acr"]["value"] == pytest.approx(row["acr"]["value"])
    assert same["acr"]["images"] == 4 and same["acr"]["missing"] == 0
    assert all(e["images"] == 4 and e["missing"] == 2 for e in same["certified"].values())
    assert "| 0.25 | Consistency | published, our images |" in (sliced / "table.md").read_text()
    # The rows' tables collected: one table per σ, both rows in it, then their CPU times.
    collected = _run("--collect", str(tmp_path), str(sliced))
    assert collected.returncode == 0, collected.stderr
    tables = collected.stdout.strip().split("\n\n")
    assert len(tables) == 2 and tables[0].count("| 0.25 | Consistency | ours |") == 2
    assert "| 0.25 | Consistency | published, our images |" in tables[0]
    assert tables[1].startswith("| σ | method | training CPU-h |")
    assert len(tables[1].splitlines()) == 4  # header, rule, one line per row
    missing = _run("--collect", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "--collect: expected work folders" in missing.stderr
    no_row = _run("--sigma", "0.25", "--workdir", str(tmp_path / "none"))
    assert no_row.returncode != 0 and "--method and --sigma: expected both" in no_row.stderr
    # A log of other labels is refused before any work.
    log.write_text(log.read_text().replace("\n0\t", "\n0\t1", 1))
    refused = _run(*args[:-1], str(tmp_path / "refused"), "--published-log", str(log))
    assert refused.returncode == 2 and "--published-log: expected" in refused.stderr
    assert not (tmp_path / "refused").exists()
    other = _run(*[a if a != "256" else "128" for a in args])
    assert other.returncode != 0
    assert "workdir" in other.stderr and "train_size" in other.stderr


def _records(path: Path) -> dict[int, dict[str, Any]]:
    """The records of a certify file by index, without what depends on the run (timing, the
    batch size ``auto`` chose, the model file's path)."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return {
        r["index"]: {k: v for k, v in r.items() if k not in ("seconds", "batch_size", "model")}
        for r in records
        if "index" in r
    }


def _epoch(checkpoint: Path) -> int:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return int(state["epoch"])


def test_a_run_killed_mid_training_resumes_to_the_uninterrupted_checkpoint(tmp_path):
    args = ["--method", "gaussian", "--sigma", "0.5", "--epochs", "3", "--train-size", "1024"]
    args += ["--stage", "train"]
    whole = _run(*args, "--workdir", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args, "--workdir", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    checkpoint = killed / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    stopped_at = _epoch(checkpoint)
    if stopped_at == 3:
        pytest.fail("the run ended before it could be killed; give it more epochs")
    resumed = _run(*args, "--workdir", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    assert f"epoch {stopped_at + 1}/3" in resumed.stdout and "epoch 1/3" not in resumed.stdout
    first = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    second = torch.load(checkpoint, weights_only=True)
    assert first["epoch"] == second["epoch"] == 3
    for key, value in first["model"].items():
        torch.testing.assert_close(second["model"][key], value, rtol=1e-6, atol=1e-7)
    assert torch.equal(first["noise_rng"], second["noise_rng"])
    assert torch.equal(first["shuffle_rng"], second["shuffle_rng"])
    assert first["scheduler"] == second["scheduler"]


def test_given_weights_are_certified_without_training_and_other_weights_refused(tmp_path):
    shipped = Path(__file__).resolve().parent.parent / "rs_plugin" / "data"
    base = ["--method", "consistency", "--sigma", "0.25", "--stage", "certify", *TINY[4:]]
    args = [*base, "--workdir", str(tmp_path)]
    # Phases of one row run separately (or at once, in parallel processes)
    first = _run(*args, "--weights", str(shipped / "fashion_lenet_sigma0.25.pt"), "--phases", "0.5")
    assert first.returncode == 0, first.stderr
    assert [p.name for p in (tmp_path / "certify").iterdir()] == ["anytime_r0.5.jsonl"]
    run = _run(*args, "--phases", "fixed, 0.25,0.75")
    assert run.returncode == 0, run.stderr
    assert "epoch" not in run.stdout and not (tmp_path / "checkpoint.pt").exists()
    times = json.loads((tmp_path / "cpu_seconds.json").read_text())
    assert sorted(times) == [
        "anytime_r0.25.jsonl", "anytime_r0.5.jsonl", "anytime_r0.75.jsonl", "cohen.jsonl"
    ]  # fmt: skip
    wrong = _run(*args, "--phases", "1.5")
    assert (
        wrong.returncode == 2 and "--phases: expected a comma-separated subset of" in wrong.stderr
    )
    held = torch.load(tmp_path / "model.pt", weights_only=True)
    state = torch.load(shipped / "fashion_lenet_sigma0.25.pt", weights_only=True)
    assert all(torch.equal(held[k], state[k]) for k in state)
    row = json.loads((tmp_path / "table.json").read_text())
    assert all(entry["images"] == 6 for entry in row["certified"].values())
    (tmp_path / "table.json").unlink()
    records = {p.name: p.read_bytes() for p in (tmp_path / "certify").iterdir()}
    table = _run("--method", "consistency", "--sigma", "0.25", "--stage", "table",
                 "--workdir", str(tmp_path))  # fmt: skip
    assert table.returncode == 0, table.stderr  # the table of what the folder holds, no work
    assert json.loads((tmp_path / "table.json").read_text())["certified"] == row["certified"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "certify").iterdir()} == records
    other = _run(*args, "--weights", str(shipped / "fashion_lenet_sigma0.5.pt"))
    assert other.returncode == 2
    assert "--weights: expected the weights of the model in" in other.stderr
    weights = str(shipped / "fashion_lenet_sigma0.25.pt")
    training = _run(*args, "--stage", "all", "--weights", weights)
    assert training.returncode == 2 and "--weights: expected --stage certify" in training.stderr


def test_a_catrs_teacher_is_a_torchscript_file_or_a_lenet_state_dict(tmp_path):
    # A row's model.pt (tensors only) or its model.ts: the same teacher, the same training.
    weights = Path(__file__).resolve().parent.parent / "rs_plugin" / "data"
    weights = weights / "fashion_lenet_sigma0.25.pt"
    from rs_plugin.data import build_lenet

    lenet = build_lenet(0)
    lenet.load_state_dict(torch.load(weights, weights_only=True))
    scripted = tmp_path / "teacher.ts"
    torch.jit.script(lenet.eval()).save(str(scripted))
    base = ["--method", "catrs", "--sigma", "0.25", "--stage", "train", "--epochs", "1"]
    base += ["--train-size", "64", "--noise-draws", "2"]
    trained = {}
    for name, teacher in (("pt", weights), ("ts", scripted)):
        run = _run(*base, "--teacher", str(teacher), "--workdir", str(tmp_path / name))
        assert run.returncode == 0, run.stderr
        trained[name] = torch.load(tmp_path / name / "model.pt", weights_only=True)
    assert all(torch.allclose(trained["pt"][k], trained["ts"][k], atol=1e-6) for k in trained["pt"])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    pickled = tmp_path / "module.pt"
    torch.save(lenet, pickled)  # a whole module: code to unpickle, refused as tensors only
    for refused in (junk, pickled):
        run = _run(*base, "--teacher", str(refused), "--workdir", str(tmp_path / refused.stem))
        assert run.returncode == 2, run.stderr
        assert "--teacher: expected an existing TorchScript file or LeNet state dict" in run.stderr
