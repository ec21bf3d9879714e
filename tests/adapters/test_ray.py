"""The Ray engine on a local 2-CPU Ray: same records as in-process, retries after crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import ray

from rs_plugin.adapters.ray import RayCertifier
from rs_plugin.cli.job import CertifyJob, iter_records

TESTS = str(Path(__file__).resolve().parents[1])  # flaky_models.py, for the Ray workers


def _job(model: str = "demo", n: int = 3000) -> CertifyJob:
    return CertifyJob(
        model=model,
        data="digits",
        smoothing="gaussian",
        sigma=0.25,
        n0=50,
        n=n,
        alpha=0.001,
        batch_size=500,
        seed=4,
        limit=None,
        device="cpu",
    )


def _without_seconds(records):
    return {r["index"]: {k: v for k, v in r.items() if k != "seconds"} for r in records}


def _in_process(job: CertifyJob, indices):
    smoothed, x, y, _ = _job(n=job.n).load()
    return _without_seconds(iter_records(job, smoothed, x, y, indices))


@pytest.fixture(scope="module")
def local_ray():
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": TESTS}},
    )
    yield
    ray.shutdown()


def test_ray_records_equal_in_process_records(local_ray):
    job, indices = _job(), list(range(10))
    records: list[dict] = []
    with RayCertifier(job, workers=2, shard_size=2) as certifier:
        certifier.run(indices, records.append)
    assert sorted(r["index"] for r in records) == indices
    assert _without_seconds(records) == _in_process(job, indices)


def test_a_worker_killed_mid_shard_is_replaced_and_its_shard_retried(local_ray):
    job, indices = _job(n=20_000), list(range(8))
    records: list[dict] = []
    with RayCertifier(job, workers=2, shard_size=1) as certifier:
        before = certifier.worker_pids()
        killed: list[int] = []

        def kill_one_worker_then_record(record):
            if not killed:
                # Both actors are busy now (the pool refills at once): kill one mid-shard.
                os.kill(before[0], signal.SIGKILL)
                killed.append(before[0])
            records.append(record)

        certifier.run(indices, kill_one_worker_then_record)
        after = certifier.worker_pids()
    assert killed and killed[0] not in after and len(after) == 2
    assert sorted(r["index"] for r in records) == indices
    assert _without_seconds(records) == _in_process(job, indices)


def test_a_shard_that_raises_is_retried_with_identical_results(local_ray):
    job, indices = _job(model="flaky_models:fails_once"), list(range(6))
    records: list[dict] = []
    with RayCertifier(job, workers=2, shard_size=2) as certifier:
        certifier.run(indices, records.append)
    assert sorted(r["index"] for r in records) == indices
    assert _without_seconds(records) == _in_process(_job(), indices)


def test_a_shard_failing_every_retry_stops_the_run_with_a_clear_error(local_ray):
    job = _job(model="flaky_models:always_fails")
    with (
        RayCertifier(job, workers=1, shard_size=2, max_retries=1) as certifier,
        pytest.raises(RuntimeError, match="failed 2 times; records already stored are kept"),
    ):
        certifier.run([0, 1], lambda record: None)


def test_cli_ray_engine_writes_the_same_file_as_the_local_engine(tmp_path):
    base = [
        sys.executable,
        "-m",
        "rs_plugin.cli",
        "certify",
        "--limit",
        "6",
        "-n",
        "1000",
        "--seed",
        "2",
    ]
    local, distributed = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    subprocess.run([*base, "--out", str(local)], check=True, capture_output=True)
    subprocess.run(
        [*base, "--out", str(distributed), "--engine", "ray", "--workers", "2"],
        check=True,
        capture_output=True,
    )
    read = [json.loads(line) for line in local.read_text().splitlines()]
    read_ray = [json.loads(line) for line in distributed.read_text().splitlines()]
    assert len(read_ray) == 6
    assert _without_seconds(read_ray) == _without_seconds(read)
