"""How the bench takes its timings: interleaved repeats in one process, torch thread counts, a
busy-loop process of its own beside it for the loaded conditions, and the load each condition
actually ran under.

Interleaving (repeat 1 of every method, then repeat 2, ...) exposes every method to the same
changes of the machine's speed, so ratios of medians compare like with like; the min–max range
says how much the machine moved during the run.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from rs_plugin.certification.threads import available_cores, cpu_times, torch_threads

__all__ = ["IDLE_BELOW", "LoadMeter", "busy_loop", "interleaved", "summary", "torch_threads"]

# A condition is labelled idle when other processes kept fewer cores than this busy on average.
IDLE_BELOW = 0.5

# The busy loop exits on its own when the bench process is gone (its parent changes), so a
# killed bench never leaves it spinning.
_BUSY = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass\n"


@contextmanager
def busy_loop(active: bool) -> Iterator[subprocess.Popen[bytes] | None]:
    """One single-threaded process spinning beside the bench while the block runs (yielded;
    None when not ``active``)."""
    if not active:
        yield None
        return
    process = subprocess.Popen([sys.executable, "-c", _BUSY])
    try:
        time.sleep(0.5)  # let the scheduler place it before timing starts
        yield process
    finally:
        process.terminate()
        process.wait()


def interleaved(
    methods: dict[str, Callable[[], object]],
    repeats: int,
    *,
    device: torch.device,
    warm_up: bool,
) -> dict[str, list[float]]:
    """Seconds of each run of each method: ``repeats`` rounds, every method once per round."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if warm_up:  # first calls pay for allocation, kernel selection and compilation
        for method in methods.values():
            method()
        sync()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, method in methods.items():
            sync()
            start = time.perf_counter()
            method()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def summary(runs: list[float]) -> dict[str, Any]:
    """Median, min and max of a method's runs (seconds), and the runs themselves."""
    return {
        "median": statistics.median(runs),
        "min": min(runs),
        "max": max(runs),
        "runs": list(runs),
    }


class LoadMeter:
    """The load a block of timings ran under, measured, never assumed.

    ``other_cores`` is the average number of cores kept busy by processes other than the bench
    and its own busy loop during the block: all CPUs' busy time from ``/proc/stat`` minus this
    process's and its waited-for children's CPU time (``os.times``), over the block's wall time.
    The one-minute load average before and after is kept beside it (it lags by a minute and
    counts the bench itself, so it does not decide the label). The label is ``busy`` when the
    bench ran its own busy loop or others kept at least :data:`IDLE_BELOW` cores busy, else
    ``idle``; where ``/proc/stat`` cannot be read, the load average (less the bench's threads)
    stands in for ``other_cores``.
    """

    def __init__(self, own_busy_loop: bool, threads: int) -> None:
        self.own_busy_loop = own_busy_loop
        self.threads = threads
        self.cores = os.cpu_count() or available_cores()  # /proc/stat counts every CPU

    def __enter__(self) -> LoadMeter:
        self.load_before = os.getloadavg()[0]
        self.jiffies = cpu_times()
        self.own = _own_cpu_seconds()
        self.wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.load_after = os.getloadavg()[0]
        jiffies, own = cpu_times(), _own_cpu_seconds()
        wall = max(time.perf_counter() - self.wall, 1e-9)
        if self.jiffies is None or jiffies is None or jiffies[1] <= self.jiffies[1]:
            own_cores = self.threads + self.own_busy_loop
            self.other_cores = max(0.0, max(self.load_before, self.load_after) - own_cores)
            return
        busy, total = jiffies[0] - self.jiffies[0], jiffies[1] - self.jiffies[1]
        cpu_seconds = self.cores * wall * busy / total  # busy CPU-seconds of every process
        self.other_cores = max(0.0, (cpu_seconds - (own - self.own)) / wall)

    def report(self) -> dict[str, Any]:
        """``label``, ``other_cores``, ``own_busy_loop`` and the load averages, for the JSON."""
        busy = self.own_busy_loop or self.other_cores >= IDLE_BELOW
        return {
            "label": "busy" if busy else "idle",
            "other_cores": self.other_cores,
            "own_busy_loop": self.own_busy_loop,
            "load_average_before": self.load_before,
            "load_average_after": self.load_after,
        }


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have been waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system
