"""The Ray engine on a local 2-CPU Ray: same records as in-process, retries after crashes."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from rs_plugin import RSValueError
from rs_plugin.adapters.ray import InputsFailed, RayCertifier
from rs_plugin.cli import main
from rs_plugin.cli.models import load_model_for
from rs_plugin.runs import CertifyJob, iter_records

# Every test starts Ray or a program that does: seconds each.
pytestmark = pytest.mark.slow
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
        model_loader=load_model_for,
    )


def _without_seconds(records):
    return {
        r["index"]: {k: v for k, v in r.items() if k not in ("seconds", "batch_size")}
        for r in records
    }


def _in_process(job: CertifyJob, indices):
    smoothed, x, y, _, _ = _job(n=job.n).load()
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


def test_an_input_failing_every_retry_is_reported_by_index_and_the_rest_kept(local_ray):
    job = _job(model="flaky_models:always_fails")
    records: list[dict] = []
    with (
        RayCertifier(job, workers=1, shard_size=2, max_retries=1) as certifier,
        pytest.raises(InputsFailed, match=r"failed 2 times .*indices \[0, 1\]") as info,
    ):
        certifier.run([0, 1], records.append)
    assert records == []
    assert set(info.value.failed) == {0, 1}
    assert "transient failure injected by the test" in info.value.failed[0]


def test_an_input_that_kills_its_worker_costs_only_itself(local_ray, tmp_path):
    """Input 3 of a dark dataset is bright; the model's process dies on it. Its shard is split,
    the other inputs of the shard are certified, and input 3 is reported by index."""
    x = np.zeros((6, 1, 8, 8), np.float32)
    x[3] = 1.0
    data = tmp_path / "one_bright.npz"
    np.savez(data, x=x, y=np.full(6, 9))
    job = dataclasses.replace(_job(model="flaky_models:kills_on_bright"), data=str(data), n=200)
    records: list[dict] = []
    with (
        RayCertifier(job, workers=2, shard_size=3, max_retries=1) as certifier,
        pytest.raises(InputsFailed, match=r"indices \[3\]") as info,
    ):
        certifier.run(list(range(6)), records.append)
    assert sorted(r["index"] for r in records) == [0, 1, 2, 4, 5]
    assert all(r["prediction"] == 9 for r in records)
    assert list(info.value.failed) == [3]


def test_an_unreachable_address_is_refused_within_the_timeout():
    with socket.socket() as probe:  # a port nothing listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(RSValueError, match="^address: .*answers within 2 s"):
            RayCertifier(_job(), address=f"127.0.0.1:{port}", connect_timeout=2.0).__enter__()
        assert time.monotonic() - started < 30
    with pytest.raises(RSValueError, match="^address: expected HOST:PORT"):
        RayCertifier(_job(), address="no-port-here").__enter__()


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


def _alive(processes: list[tuple[int, str]]) -> list[int]:
    """Those of (pid, start time) still running (a reused pid has another start time)."""
    alive = []
    for pid, start in processes:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().rpartition(")")[2].split()[19] == start:
                    alive.append(pid)
        except OSError:
            pass
    return alive


def test_a_killed_ray_driver_resumes_and_leaves_no_ray_process(tmp_path):
    """SIGKILL the driver of --engine ray after its first records: no Ray process it started
    survives, and --resume completes the file to the records of an uninterrupted run."""
    from rs_plugin.adapters.ray import _descendants

    out, limit = tmp_path / "killed.jsonl", 10
    args = ["certify", "--limit", str(limit), "-n", "3000", "--n0", "50", "--seed", "3"]
    ray_args = ["--engine", "ray", "--workers", "2", "--out", str(out)]
    driver = subprocess.Popen(
        [sys.executable, "-m", "rs_plugin.cli", *args, *ray_args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    started: list[tuple[int, str]] = []
    try:
        deadline = time.monotonic() + 240
        while not (out.exists() and out.read_bytes().count(b"\n") >= 2):
            assert driver.poll() is None and time.monotonic() < deadline, "no records appeared"
            time.sleep(0.05)
        started = _descendants(driver.pid)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        deadline = time.monotonic() + 60
        while _alive(started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _alive(started) == [], "Ray processes outlived their killed driver"
    finally:
        driver.kill()
        for pid in _alive(started):  # only if the assertion above failed
            os.kill(pid, signal.SIGKILL)
    written = out.read_bytes().count(b"\n")
    assert 2 <= written < limit, "the run finished before it was killed"
    assert main([*args, "--out", str(out), "--resume"]) == 0
    reference = tmp_path / "reference.jsonl"
    assert main([*args, "--out", str(reference)]) == 0
    resumed = [json.loads(line) for line in out.read_text().splitlines()]
    expected = [json.loads(line) for line in reference.read_text().splitlines()]
    assert sorted(r["index"] for r in resumed) == list(range(limit))
    assert _without_seconds(resumed) == _without_seconds(expected)


_DRIVER_WITH_A_CHILD = """
import subprocess, sys, time
child = subprocess.Popen(["sleep", "600"])
print(child.pid, flush=True)
from rs_plugin.adapters.ray import RayCertifier
from rs_plugin.cli.models import load_model_for
from rs_plugin.runs import CertifyJob
job = CertifyJob(model="demo", data="digits", smoothing="gaussian", sigma=0.25, n0=50, n=100,
                 alpha=0.001, batch_size=100, seed=0, limit=None, device="cpu",
                 model_loader=load_model_for)
with RayCertifier(job, workers=1):
    print("ready", flush=True)
    time.sleep(600)
"""


def test_a_killed_driver_takes_its_ray_processes_but_not_its_callers_children():
    """The reaper kills what Ray started below the driver, not a process the library's caller
    had started before (it used to kill every process below the driver)."""
    from rs_plugin.adapters.ray import _descendants

    driver = subprocess.Popen(
        [sys.executable, "-c", _DRIVER_WITH_A_CHILD], stdout=subprocess.PIPE, text=True
    )
    assert driver.stdout is not None
    child = int(driver.stdout.readline())
    ray_processes: list[tuple[int, str]] = []
    try:
        assert driver.stdout.readline().strip() == "ready"
        ray_processes = [p for p in _descendants(driver.pid) if p[0] != child]
        assert ray_processes
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        deadline = time.monotonic() + 60
        while _alive(ray_processes) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _alive(ray_processes) == [], "Ray processes outlived their killed driver"
        assert os.path.exists(f"/proc/{child}") and _state(child) != "Z", "the caller's child died"
    finally:
        driver.kill()
        for pid in [child, *_alive(ray_processes)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rpartition(")")[2].split()[0]


def _serve_once(reply: bytes) -> tuple[socket.socket, int]:
    """A listening socket that answers each connection with ``reply`` (b"": says nothing)."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                if reply:
                    conn.sendall(reply)
                time.sleep(3)

    threading.Thread(target=answer, daemon=True).start()
    return server, server.getsockname()[1]


@pytest.mark.parametrize("reply", [b"", b"HTTP/1.1 400 Bad Request\r\n\r\n"])
def test_an_open_port_that_is_not_ray_is_refused_within_the_timeout(reply):
    server, port = _serve_once(reply)
    # The module's other tests may hold a local Ray (a module-scoped fixture): refusing the
    # address must leave that state as it was, neither connecting nor starting Ray.
    initialized = ray.is_initialized()
    with server, pytest.raises(RSValueError, match=r"^address: .*answer(s|ing) within 1 s"):
        RayCertifier(_job(), address=f"127.0.0.1:{port}", connect_timeout=1.0).__enter__()
    assert ray.is_initialized() == initialized


def test_a_killed_control_plane_ends_the_run_with_what_is_missing(tmp_path):
    """SIGKILL the GCS server of the driver's local Ray once records flow: the driver must end
    (exit 3) saying what is missing and how to resume, and keep every record delivered."""
    out = tmp_path / "r.jsonl"
    args = ["certify", "--engine", "ray", "--workers", "1", "--limit", "300", "-n", "3000"]
    driver = subprocess.Popen(
        [sys.executable, "-m", "rs_plugin.cli", *args, "--n0", "50", "--out", str(out)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 240
        while not (out.exists() and out.read_bytes().count(b"\n") >= 1):
            assert driver.poll() is None and time.monotonic() < deadline, driver.stderr
            time.sleep(0.5)
        gcs = [
            int(pid)
            for pid in os.listdir("/proc")
            if pid.isdigit()
            and _comm(int(pid)).startswith("gcs_server")
            and _below(int(pid), driver.pid)
        ]
        assert gcs
        os.kill(gcs[0], signal.SIGKILL)
        _, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 3, err
    assert "control plane lost gcs_server" in err and "--resume" in err, err
    assert "Traceback" not in err
    lines = out.read_text().splitlines()
    assert lines and all(json.loads(line)["index"] >= 0 for line in lines)
    assert f"{300 - len(lines)} of 300 inputs have no record yet" in err or "inputs have no" in err


def test_stall_timeout_sets_how_long_a_shard_may_take(tmp_path, capsys):
    """--stall-timeout 2 ends a run whose shards take 3 s with exit 3, saying so; 0 and the
    local engine are refused before any work."""
    out = tmp_path / "r.jsonl"
    args = ["certify", "--limit", "2", "-n", "200", "--n0", "10", "--out", str(out)]
    assert main([*args, "--engine", "ray", "--stall-timeout", "0"]) == 2
    assert "--stall-timeout: expected a finite number > 0" in capsys.readouterr().err
    assert main([*args, "--stall-timeout", "5"]) == 2
    assert "--engine: expected ray when" in capsys.readouterr().err
    assert not out.exists()
    slow = ["--model", "flaky_models:slow", "--engine", "ray", "--workers", "1"]
    driver = subprocess.run(
        [sys.executable, "-m", "rs_plugin.cli", *args, *slow, "--stall-timeout", "2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": TESTS},
        timeout=240,
    )
    assert driver.returncode == 3, driver.stderr
    assert "no shard finished for" in driver.stderr and "(limit 2 s)" in driver.stderr
    assert "Traceback" not in driver.stderr


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _below(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            return False
        if pid == ancestor:
            return True
    return False


def test_workers_of_another_configuration_and_repeated_indices_are_refused(local_ray, monkeypatch):
    """A worker that loaded other weights (here a factory without a seed; elsewhere another
    model file at the same path, or other data) would have its records stamped with the
    driver's model identity: it is refused before any of its records is delivered. Repeated
    indices are refused before any work, as the local engine refuses repeated keys."""
    monkeypatch.syspath_prepend(TESTS)
    job = _job(model="flaky_models:unseeded", n=200)
    smoothed, _, _, data_sha256, _ = job.load()  # the driver's own copy: other weights
    driver = job.config(smoothed, data_sha256)
    records: list[dict] = []
    with RayCertifier(job, workers=1, shard_size=2, expected_config=driver) as certifier:
        with pytest.raises(RSValueError, match="^--engine: expected Ray workers.*model_sha256"):
            certifier.run([0, 1], records.append)
        with pytest.raises(RSValueError, match="^indices: expected distinct"):
            certifier.run([0, 0, 1], records.append)
    assert records == []


def test_a_worker_count_beyond_any_machine_is_refused_before_ray_starts(tmp_path, capsys):
    # 10^20 actors: Ray itself refused it only after starting its processes, and the message
    # blamed the model.
    out = tmp_path / "never.jsonl"
    running = ray.is_initialized()  # another test's Ray may be up; this one starts none
    for value in ("0", "4097", "100000000000000000000"):
        args = ["certify", "--engine", "ray", "--workers", value, "--out", str(out)]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "--workers: expected an integer in [1, 4096]" in err and "Traceback" not in err
    assert not out.exists() and ray.is_initialized() == running
    with pytest.raises(RSValueError, match="^workers: expected an integer in"):
        RayCertifier(_job(), workers=10**20)
