"""SIGKILL at random moments of ``rs-plugin certify`` with each kind of certifier (fixed-n CERTIFY,
sequential, DDRS through its memory), possibly leaving a record cut short; ``--resume`` must
finish the file to exactly the records of an uninterrupted run. (The Ray engine's driver is
killed in tests/adapters/test_ray.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rs_plugin.cli import main
from tests.kill import kill_before_the_end

# Sequential decisions and DDRS's memory write their records in bursts (many inputs end in the
# same batch; DDRS writes after its memory pass), so each run is long enough that records are
# still to come after the first ones appear, on a fast CPU too.
RUNS = {
    "cohen": ["--limit", "8", "-n", "6000", "--n0", "100"],
    "sequential": ["--certifier", "sequential", "--radius", "0.3", "--limit", "40", "-n", "6000"],
    "ddrs": ["--certifier", "ddrs", "--limit", "12", "-n", "500", "--n0", "50"],
}


def _by_index(path: Path) -> dict[int, dict]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    by_index = {
        r["index"]: {k: v for k, v in r.items() if k not in ("seconds", "batch_size")}
        for r in records
    }
    assert len(by_index) == len(records), "duplicate index"
    return by_index


@pytest.mark.slow
@pytest.mark.parametrize("certifier", list(RUNS))
def test_sigkill_at_a_random_moment_then_resume_gives_the_uninterrupted_records(
    tmp_path, certifier
):
    rng = np.random.default_rng(list(RUNS).index(certifier) + 11)
    args = ["certify", *RUNS[certifier], "--seed", "1"]
    limit = int(args[args.index("--limit") + 1])
    after, delay = int(rng.integers(0, limit // 4)), float(rng.uniform(0.0, 0.02))
    out = tmp_path / "killed.jsonl"
    written, _ = kill_before_the_end(args, out, limit, after, delay, tmp_path)
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
