"""SIGKILL at random moments of ``rs-plugin certify`` with each kind of certifier (fixed-n CERTIFY,
sequential, DDRS through its memory), possibly leaving a record cut short; ``--resume`` must
finish the file to exactly the records of an uninterrupted run. (The Ray engine's driver is
killed in tests/adapters/test_ray.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rs_plugin.cli import main

RUNS = {
    "cohen": ["--limit", "8", "-n", "6000", "--n0", "100"],
    "sequential": ["--certifier", "sequential", "--radius", "0.3", "--limit", "8", "-n", "6000"],
    "ddrs": ["--certifier", "ddrs", "--limit", "4", "-n", "500", "--n0", "50"],
}


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _by_index(path: Path) -> dict[int, dict]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    by_index = {r["index"]: {k: v for k, v in r.items() if k != "seconds"} for r in records}
    assert len(by_index) == len(records), "duplicate index"
    return by_index


@pytest.mark.parametrize("certifier", list(RUNS))
def test_sigkill_at_a_random_moment_then_resume_gives_the_uninterrupted_records(
    tmp_path, certifier
):
    rng = np.random.default_rng(list(RUNS).index(certifier) + 11)
    args = ["certify", *RUNS[certifier], "--seed", "1"]
    limit = int(args[args.index("--limit") + 1])
    after, delay = int(rng.integers(0, limit // 2)), float(rng.uniform(0.0, 0.05))
    out = tmp_path / "killed.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "rs_plugin.cli", *args, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 180
        while _lines(out) < after and process.poll() is None:
            assert time.monotonic() < deadline, "no records appeared"
            time.sleep(0.005)
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    written = _lines(out)
    assert written < limit, "the run finished before it was killed"
    if rng.uniform() < 0.5 and out.exists():  # the write in flight when it died, cut short
        with open(out, "ab") as handle:
            handle.write(
                json.dumps({"index": written, "prediction": 1})[: int(rng.integers(1, 25))].encode()
            )

    assert main([*args, "--out", str(out), "--resume"]) == 0
    assert main([*args, "--out", str(tmp_path / "reference.jsonl")]) == 0
    resumed = _by_index(out)
    assert sorted(resumed) == list(range(limit))
    assert resumed == _by_index(tmp_path / "reference.jsonl")
    if certifier == "ddrs":
        assert all("memory" in r for r in resumed.values())
