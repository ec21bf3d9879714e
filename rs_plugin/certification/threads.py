"""How many threads torch runs on beside the machine's other work (``/proc/stat`` sampling).

torch starts one intra-op thread per core, and every parallel operation waits for all of them;
:func:`threads_for_load` sizes the count to the cores other work leaves free, and
:func:`torch_threads` sets it for a block. How the model itself is run for votes is
:mod:`rs_plugin.certification.model_runner`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import torch

__all__ = [
    "available_cores",
    "busy_cores",
    "cpu_times",
    "threads_for_load",
    "torch_threads",
]


def cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs from ``/proc/stat``; None where there is none."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [float(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    total = sum(fields[:8])  # guest time is already counted in user and nice
    return total - fields[3] - fields[4], total  # minus idle and iowait


def busy_cores(cores: int, window: float = 0.1) -> float:
    """Cores kept busy by other work now: CPU use over ``window`` seconds (``/proc/stat``; the
    caller sleeps meanwhile), or the one-minute load average where that cannot be read."""
    first = cpu_times()
    if first is None:
        return os.getloadavg()[0]
    time.sleep(window)
    second = cpu_times()
    if second is None or second[1] <= first[1]:
        return os.getloadavg()[0]
    return cores * (second[0] - first[0]) / (second[1] - first[1])


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform has one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def threads_for_load(*, cores: int | None = None, load: float | None = None) -> int:
    """torch intra-op threads that fit beside the machine's other work.

    torch starts one thread per core, and every parallel operation waits for all of them. When
    another process keeps a core busy, the thread that shares it runs only in the scheduler's
    time slices, so each operation waits milliseconds for it: small operations (a digits CNN,
    attack steps on a few inputs) become many times slower than on one thread. This returns the
    number of cores not busy with other work (``load``; by default measured now, see
    :func:`busy_cores`: the one-minute load average lags by a minute and counts this process's
    own recent work), rounded, at least 1 and at most torch's current setting.
    """
    if cores is None:
        cores = available_cores()
    if load is None:
        load = busy_cores(cores)
    return max(1, min(torch.get_num_threads(), round(cores - load)))


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``count`` for the block, then restored."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
