"""Ray engine: shard a certify job's inputs across Ray actors (``rs-plugin certify --engine ray``).

One actor per GPU (when the job runs on CUDA) or per CPU slot; each loads the model and data once
(:meth:`CertifyJob.load`) and certifies shards of input indices. A shard whose actor dies (the
actor is replaced) or that raises is split into its inputs, each retried on its own, so one input
that always fails (or kills its worker) costs only itself: after ``max_retries`` further attempts
it is reported by index (:class:`InputsFailed`) and every other input's record is kept. Because
every input's noise is derived from (seed, index), a retried input reproduces the same counts and
the records equal those of the in-process engine; they reach ``on_record`` (the result store) as
shards finish, so their order in the file follows completion, not index.

``address`` names a running cluster; one that does not answer within ``connect_timeout`` seconds,
or answers but does not speak Ray's protocol, is refused (Ray itself would retry for ever). A
run that makes no progress for ``stall_timeout`` seconds, or whose local Ray loses its GCS
server or raylet, ends with one line saying what is missing and how to resume
(:mod:`rs_plugin.adapters.ray_health`).

A local Ray this module starts is shut down on exit, and if the driver is killed (``kill -9``),
a small reaper process it started ends the Ray processes it leaves behind (Ray's dashboard and
runtime-env agents otherwise outlive their raylet).

Needs the optional extra: ``pip install 'rs-plugin[ray]'``. Only this module imports Ray.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from rs_plugin._validation import (
    MAX_WORKERS,
    MissingExtraError,
    RSValueError,
    check_int,
    check_positive,
)
from rs_plugin.adapters.ray_health import (
    STALL_TIMEOUT,
    Watchdog,
    check_ray_protocol,
    control_plane,
)
from rs_plugin.certification.batching import nominal_batch_size
from rs_plugin.runs import CertifyJob, iter_records

try:
    import ray
    from ray.exceptions import RayError, RayTaskError
except ImportError as error:
    raise MissingExtraError("the Ray engine", "ray", error.name or "ray") from error

__all__ = ["InputsFailed", "RayCertifier", "certify_on_ray"]


class InputsFailed(RuntimeError):
    """Inputs that failed every attempt; every other input's record was delivered.

    Attributes:
        failed: input index -> the last error it raised (or how its worker died).
    """

    def __init__(self, failed: dict[int, str], attempts: int) -> None:
        self.failed = dict(sorted(failed.items()))
        shown = "; ".join(f"input {i}: {error}" for i, error in self.failed.items())
        super().__init__(
            f"{len(self.failed)} input(s) failed {attempts} times each and have no record "
            f"(indices {list(self.failed)}); every other record is stored, and --resume retries "
            f"only these. {shown}"
        )


# The reaper: reads "pid starttime" lines from its stdin; at end of input (the driver exited or
# was killed) it SIGKILLs each process still alive with that start time, unless the driver said
# "done" first (a clean ray.shutdown). Its own session, so a Ctrl-C on the terminal spares it.
# It is given the processes that appeared below the driver while Ray started, not those the
# caller had started before.
_REAPER = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
pids = []
for line in sys.stdin:
    if line.strip() == "done":
        sys.exit(0)
    pid, start = line.split()
    pids.append((int(pid), start))
for pid, start in pids:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            alive = handle.read().rpartition(")")[2].split()[19] == start
        if alive:
            os.kill(pid, signal.SIGKILL)
    except (OSError, IndexError):
        pass
"""


def _descendants(root: int) -> list[tuple[int, str]]:
    """(pid, start time) of every process below ``root``, read from /proc (Linux)."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append((int(entry), fields[19]))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def _check_reachable(address: str, timeout: float) -> None:
    """Refuse a ``host:port`` (or ``ray://host:port``) nothing answers on within ``timeout``."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RSValueError("address", "HOST:PORT of a running Ray cluster, or auto", address)
    check_ray_protocol(host, int(port), timeout, address)


class _Worker:
    """Holds one loaded copy of the job; certifies shards of indices."""

    def __init__(self, job: CertifyJob, threads: int) -> None:
        torch.set_num_threads(threads)
        self.job = job
        self.smoothed, self.x, self.y, data_sha256, _ = job.load()
        # What this worker loaded (model identity, data hash, noise definition, smoothing),
        # sent with every shard: the driver writes no record of another configuration.
        self.config = job.config(self.smoothed, data_sha256)

    def pid(self) -> int:
        return os.getpid()

    def certify(self, indices: list[int]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return self.config, list(iter_records(self.job, self.smoothed, self.x, self.y, indices))


def _shard_size(job: CertifyJob) -> int:
    """Inputs per shard: about eight batches of samples, so a shard amortises its scheduling
    (``"auto"`` plans with the largest CPU candidate; each worker measures its own size and
    keeps it for the shards it certifies after)."""
    batch = nominal_batch_size(job.batch_size)
    return max(1, min(64, math.ceil(8 * batch / (job.n0 + job.n))))


class RayCertifier:
    """Actors for one job; use as a context manager, then :meth:`run`.

    Args:
        job: what to certify.
        workers: number of actors (default: the cluster's GPUs for CUDA jobs, else its CPUs).
        address: an existing cluster's address; None starts a local Ray (shut down on exit).
        max_retries: attempts after the first for each input before it is reported failed.
        shard_size: inputs per shard (default: about eight batches of samples).
        connect_timeout: seconds to wait for ``address`` to answer.
        stall_timeout: seconds without a finished shard before the run is declared stalled
            (the process then exits with status 3 after saying what is missing).
        hint: the sentence a stalled run ends with (where the records are, how to resume).
        expected_config: the driver's run configuration (``CertifyJob.config``); every worker
            must have loaded the same (model identity, data hash, noise definition, ...), else
            :meth:`run` raises :class:`RSValueError` before writing its records. None: the
            workers must agree with the first one.
    """

    def __init__(
        self,
        job: CertifyJob,
        *,
        workers: int | None = None,
        address: str | None = None,
        max_retries: int = 3,
        shard_size: int | None = None,
        connect_timeout: float = 10.0,
        stall_timeout: float = STALL_TIMEOUT,
        hint: str | None = None,
        expected_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.job = job
        self.expected_config = None if expected_config is None else dict(expected_config)
        self.workers = None if workers is None else check_int("workers", workers, 1, MAX_WORKERS)
        self.address = address
        self.max_retries = max_retries
        self.shard_size = shard_size if shard_size is not None else _shard_size(job)
        self.connect_timeout = connect_timeout
        self.stall_timeout = check_positive("stall_timeout", stall_timeout)
        self.hint = (
            hint or "Every record delivered so far is kept; rerun with --resume for the rest."
        )
        self._control_plane: list[tuple[int, str, str]] = []
        self._started_ray = False
        self._reaper: subprocess.Popen[str] | None = None
        self._preexisting: set[tuple[int, str]] = set()
        self._actors: list[Any] = []
        self._actor_class: Any = None

    def __enter__(self) -> RayCertifier:
        if self.address is not None:
            _check_reachable(self.address, self.connect_timeout)
        # Processes below the driver before Ray starts are the caller's: the reaper spares them.
        self._preexisting = set(_descendants(os.getpid())) if os.path.isdir("/proc") else set()
        if not ray.is_initialized():
            if self.address is not None:
                ray.init(address=self.address, log_to_driver=False)
            else:
                ray.init(
                    num_cpus=self.workers or os.cpu_count(),
                    include_dashboard=False,
                    log_to_driver=False,
                )
            self._started_ray = True
        gpu = self.job.device.startswith("cuda")
        resources = ray.cluster_resources()
        count = self.workers or max(1, int(resources.get("GPU" if gpu else "CPU", 1)))
        threads = 1 if gpu else max(1, int(resources.get("CPU", 1)) // count)
        self._actor_class = ray.remote(num_gpus=1 if gpu else 0, num_cpus=0 if gpu else 1)(_Worker)
        self._threads = threads
        self._actors = [self._new_actor() for _ in range(count)]
        if self._started_ray and os.path.isdir("/proc"):
            self.worker_pids()  # every Ray process of this node is up once the actors answer
            self._start_reaper()
        return self

    def _start_reaper(self) -> None:
        self._reaper = subprocess.Popen(
            [sys.executable, "-c", _REAPER],
            stdin=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self._reaper.stdin is not None
        processes = [p for p in _descendants(os.getpid()) if p not in self._preexisting]
        for pid, start in processes:
            if pid != self._reaper.pid:
                self._reaper.stdin.write(f"{pid} {start}\n")
        self._reaper.stdin.flush()
        self._control_plane = control_plane(processes)

    def _new_actor(self) -> Any:
        return self._actor_class.remote(self.job, self._threads)

    def worker_pids(self) -> list[int]:
        """Process ids of the current actors (for monitoring, and for tests that kill one)."""
        return list(ray.get([actor.pid.remote() for actor in self._actors]))

    def run(self, indices: Sequence[int], on_record: Callable[[dict[str, Any]], None]) -> None:
        """Certify ``indices``; call ``on_record`` for each record as its shard finishes.

        Raises :class:`InputsFailed` at the end when some inputs failed every attempt, and
        :class:`RSValueError` for repeated ``indices`` or a worker of another configuration.
        A shard whose records are not exactly its inputs' counts as a failed attempt.
        """
        repeated = sorted(i for i, k in Counter(int(i) for i in indices).items() if k > 1)
        if repeated:
            raise RSValueError("indices", "distinct input indices", f"repeated: {repeated[:10]}")
        # (indices, failed attempts so far); a failed shard comes back as one shard per input.
        shards: deque[tuple[list[int], int]] = deque(
            ([int(i) for i in indices[s : s + self.shard_size]], 0)
            for s in range(0, len(indices), self.shard_size)
        )
        failed: dict[int, str] = {}
        idle = list(self._actors)
        running: dict[Any, tuple[Any, list[int], int]] = {}
        left = {int(i) for i in indices}
        watchdog = Watchdog(
            stall_timeout=self.stall_timeout,
            missing=lambda: f"{len(left)} of {len(indices)} inputs have no record yet",
            hint=self.hint,
            watched=self._control_plane,
        )
        with watchdog:
            self._loop(shards, failed, idle, running, left, on_record, watchdog)
        if failed:
            raise InputsFailed(failed, self.max_retries + 1)

    def _loop(
        self,
        shards: deque[tuple[list[int], int]],
        failed: dict[int, str],
        idle: list[Any],
        running: dict[Any, tuple[Any, list[int], int]],
        left: set[int],
        on_record: Callable[[dict[str, Any]], None],
        watchdog: Watchdog,
    ) -> None:
        while shards or running:
            while idle and shards:
                actor = idle.pop()
                shard, attempts = shards.popleft()
                running[actor.certify.remote(shard)] = (actor, shard, attempts)
            (ref,), _ = ray.wait(list(running), num_returns=1)
            watchdog.progress()
            actor, shard, attempts = running.pop(ref)
            problem: str | None = None
            try:
                config, records = ray.get(ref)
            except RayError as error:
                # A task that raised leaves its actor usable; any other Ray failure (the actor
                # died, its result was lost with a node or an owner, a worker crashed) may not:
                # it is replaced. Either way the shard counts as one failed attempt.
                if not isinstance(error, RayTaskError):
                    self._actors.remove(actor)
                    ray.kill(actor, no_restart=True)
                    actor = self._new_actor()
                    self._actors.append(actor)
                problem = _summary(error)
            else:
                self._check_config(config)
                returned = sorted(int(record["index"]) for record in records)
                if returned != sorted(shard):
                    problem = f"the worker returned records of inputs {returned[:10]}"
            if problem is not None:
                idle.append(actor)
                if len(shard) == 1 and attempts >= self.max_retries:
                    failed[shard[0]] = problem
                    continue
                # Retried first, each input on its own: the others are not held back by one
                # that keeps failing.
                shards.extendleft(([index], attempts + 1) for index in reversed(shard))
                continue
            for record in records:
                on_record(record)
                left.discard(int(record["index"]))
            idle.append(actor)

    def _check_config(self, config: Mapping[str, Any]) -> None:
        """Refuse a worker that loaded another configuration than the driver's (or, with none
        given, than the first worker's): its records would carry the driver's."""
        if self.expected_config is None:
            self.expected_config = dict(config)
            return
        differing = sorted(
            key
            for key in set(config) | set(self.expected_config)
            if config.get(key) != self.expected_config.get(key)
        )
        if differing:
            shown = ", ".join(
                f"{key} {config.get(key)!r} (driver: {self.expected_config.get(key)!r})"
                for key in differing
            )
            raise RSValueError(
                "--engine",
                "Ray workers that load the driver's model, data and settings",
                f"a worker with {shown}",
            )

    def __exit__(self, *exc: object) -> None:
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
        if self._reaper is not None:
            assert self._reaper.stdin is not None
            self._reaper.stdin.write("done\n")
            self._reaper.stdin.close()
            self._reaper.wait()
            self._reaper = None


def _summary(error: Exception) -> str:
    """The last line of a Ray error (the remote exception, or how the actor died)."""
    if isinstance(error, RayTaskError):
        cause = error.cause
        if cause is not None:
            return f"{type(cause).__name__}: {cause}"
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def certify_on_ray(
    job: CertifyJob,
    indices: Sequence[int],
    on_record: Callable[[dict[str, Any]], None],
    *,
    workers: int | None = None,
    address: str | None = None,
    progress: bool = False,
    hint: str | None = None,
    expected_config: Mapping[str, Any] | None = None,
    stall_timeout: float = STALL_TIMEOUT,
) -> None:
    """Certify ``indices`` of ``job`` on Ray, streaming records to ``on_record``; ``hint`` is
    what a stalled run tells the user to do, ``expected_config`` the driver's configuration the
    workers must have loaded, ``stall_timeout`` the seconds without a finished shard before the
    run is declared stalled (see :class:`RayCertifier`)."""
    from rs_plugin.auditing.progress import Progress

    with (
        RayCertifier(
            job,
            workers=workers,
            address=address,
            hint=hint,
            expected_config=expected_config,
            stall_timeout=stall_timeout,
        ) as certifier,
        Progress("certify", len(indices), "input", enabled=progress) as bar,
    ):

        def record_and_count(record: dict[str, Any]) -> None:
            on_record(record)
            bar.update(1)

        certifier.run(indices, record_and_count)
