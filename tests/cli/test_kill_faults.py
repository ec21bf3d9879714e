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

# Sequential decisions and DDRS's memory write their records in bursts (many inputs end in the
# same batch; DDRS writes after its memory pass), so each run is long enough that records are
# still to come after the first ones appear, on a fast CPU too.
RUNS = {
    "cohen": ["--limit", "8", "-n", "6000", "--n0", "100"],
    "sequential": ["--certifier", "sequential", "--radius", "0.3", "--limit", "40", "-n", "6000"],
    "ddrs": ["--certifier", "ddrs", "--limit", "12", "-n", "500", "--n0", "50"],
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


def _kill(args: list[str], out: Path, after: int, delay: float, cwd: Path) -> int:
    """Start ``rs-plugin certify``, SIGKILL it ``delay`` seconds after ``after`` records exist;
    return the number of complete lines it left."""
    process = subprocess.Popen(
        [sys.executable, "-m", "rs_plugin.cli", *args, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=cwd,
    )
    try:
        deadline = time.monotonic() + 180
        while _lines(out) < after and process.poll() is None:
            assert time.monotonic() < deadline, "no records appeared"
            time.sleep(0.002)
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    return _lines(out)


@pytest.mark.parametrize("certifier", list(RUNS))
def test_sigkill_at_a_random_moment_then_resume_gives_the_uninterrupted_records(
    tmp_path, certifier
):
    rng = np.random.default_rng(list(RUNS).index(certifier) + 11)
    args = ["certify", *RUNS[certifier], "--seed", "1"]
    limit = int(args[args.index("--limit") + 1])
    after, delay = int(rng.integers(0, limit // 4)), float(rng.uniform(0.0, 0.02))
    out = tmp_path / "killed.jsonl"
    # A CPU fast enough to finish between two polls gets another try at an earlier moment; the
    # last try kills as soon as the process exists, which is always before its first record.
    for attempt in range(3):
        out.unlink(missing_ok=True)
        written = _kill(args, out, after, delay, tmp_path)
        if written < limit:
            break
        after, delay = after // 4 if attempt == 0 else 0, 0.0
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
