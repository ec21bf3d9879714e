"""Ray engine: shard a certify job's inputs across Ray actors (``rs-plugin certify --engine ray``).

One actor per GPU (when the job runs on CUDA) or per CPU slot; each loads the model and data once
(:meth:`CertifyJob.load`) and certifies shards of input indices. Shards are retried when their
actor dies (the actor is replaced) or when they raise, up to ``max_retries`` times each. Because
every input's noise is derived from (seed, index), a retried shard reproduces the same counts and
the records equal those of the in-process engine; they reach ``on_record`` (the result store) as
shards finish, so their order in the file follows completion, not index.

Needs the optional extra: ``pip install 'rs-plugin[ray]'``. Only this module imports Ray.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch

from rs_plugin._validation import RSValueError
from rs_plugin.cli.job import CertifyJob, iter_records

try:
    import ray
    from ray.exceptions import RayActorError, RayTaskError
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise RSValueError(
        "--engine", "ray installed (pip install 'rs-plugin[ray]')", "ray is not importable"
    ) from error

__all__ = ["RayCertifier", "certify_on_ray"]


class _Worker:
    """Holds one loaded copy of the job; certifies shards of indices."""

    def __init__(self, job: CertifyJob, threads: int) -> None:
        torch.set_num_threads(threads)
        self.job = job
        self.smoothed, self.x, self.y, _ = job.load()

    def pid(self) -> int:
        return os.getpid()

    def certify(self, indices: list[int]) -> list[dict[str, Any]]:
        return list(iter_records(self.job, self.smoothed, self.x, self.y, indices))


def _shard_size(job: CertifyJob) -> int:
    """Inputs per shard: about eight batches of samples, so a shard amortises its scheduling."""
    return max(1, min(64, math.ceil(8 * job.batch_size / (job.n0 + job.n))))


class RayCertifier:
    """Actors for one job; use as a context manager, then :meth:`run`.

    Args:
        job: what to certify.
        workers: number of actors (default: the cluster's GPUs for CUDA jobs, else its CPUs).
        address: an existing cluster's address; None starts a local Ray (shut down on exit).
        max_retries: attempts after the first for each shard before the run fails.
        shard_size: inputs per shard (default: about eight batches of samples).
    """

    def __init__(
        self,
        job: CertifyJob,
        *,
        workers: int | None = None,
        address: str | None = None,
        max_retries: int = 3,
        shard_size: int | None = None,
    ) -> None:
        self.job = job
        self.workers = workers
        self.address = address
        self.max_retries = max_retries
        self.shard_size = shard_size if shard_size is not None else _shard_size(job)
        self._started_ray = False
        self._actors: list[Any] = []
        self._actor_class: Any = None

    def __enter__(self) -> RayCertifier:
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
        return self

    def _new_actor(self) -> Any:
        return self._actor_class.remote(self.job, self._threads)

    def worker_pids(self) -> list[int]:
        """Process ids of the current actors (for monitoring, and for tests that kill one)."""
        return list(ray.get([actor.pid.remote() for actor in self._actors]))

    def run(self, indices: Sequence[int], on_record: Callable[[dict[str, Any]], None]) -> None:
        """Certify ``indices``; call ``on_record`` for each record as its shard finishes."""
        shards: deque[tuple[list[int], int]] = deque(
            ([int(i) for i in indices[s : s + self.shard_size]], 0)
            for s in range(0, len(indices), self.shard_size)
        )
        idle = list(self._actors)
        running: dict[Any, tuple[Any, list[int], int]] = {}
        while shards or running:
            while idle and shards:
                actor = idle.pop()
                shard, attempts = shards.popleft()
                running[actor.certify.remote(shard)] = (actor, shard, attempts)
            (ref,), _ = ray.wait(list(running), num_returns=1)
            actor, shard, attempts = running.pop(ref)
            try:
                records = ray.get(ref)
            except (RayActorError, RayTaskError) as error:
                if attempts >= self.max_retries:
                    raise RuntimeError(
                        f"shard {shard[0]}..{shard[-1]} failed {attempts + 1} times; "
                        f"records already stored are kept (resume to finish): {error}"
                    ) from error
                if isinstance(error, RayActorError):
                    self._actors.remove(actor)
                    actor = self._new_actor()
                    self._actors.append(actor)
                shards.appendleft((shard, attempts + 1))
                idle.append(actor)
                continue
            for record in records:
                on_record(record)
            idle.append(actor)

    def __exit__(self, *exc: object) -> None:
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False


def certify_on_ray(
    job: CertifyJob,
    indices: Sequence[int],
    on_record: Callable[[dict[str, Any]], None],
    *,
    workers: int | None = None,
    address: str | None = None,
    progress: bool = False,
) -> None:
    """Certify ``indices`` of ``job`` on Ray, streaming records to ``on_record``."""
    from tqdm import tqdm

    with (
        RayCertifier(job, workers=workers, address=address) as certifier,
        tqdm(total=len(indices), unit="input", disable=not progress, desc="certify") as bar,
    ):

        def record_and_count(record: dict[str, Any]) -> None:
            on_record(record)
            bar.update(1)

        certifier.run(indices, record_and_count)
