"""The sound mode through the Ray engine: the same records as in-process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _records(path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {
        r["index"]: {k: v for k, v in r.items() if k not in ("seconds", "batch_size")} for r in rows
    }


def test_cli_ray_engine_certifies_the_sound_mode_like_the_local_engine(tmp_path):
    base = [sys.executable, "-m", "rs_plugin.cli", "certify", "--smoothing", "gaussian"]
    base += ["--sound", "--grid", "1/16", "--limit", "4", "-n", "500", "--seed", "3"]
    local, distributed = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    subprocess.run([*base, "--out", str(local)], check=True, capture_output=True)
    subprocess.run(
        [*base, "--out", str(distributed), "--engine", "ray", "--workers", "2"],
        check=True,
        capture_output=True,
    )
    read, read_ray = _records(local), _records(distributed)
    assert len(read_ray) == 4 and read_ray == read
    assert all(r["smoothing"]["sound_fp"] is True for r in read_ray.values())
