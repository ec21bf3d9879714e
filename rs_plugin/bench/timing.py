"""How the bench takes its timings: interleaved repeats in one process, torch thread counts, and a
busy-loop process of its own beside it for the loaded conditions.

Interleaving (repeat 1 of every method, then repeat 2, ...) exposes every method to the same
changes of the machine's speed, so ratios of medians compare like with like; the min–max range
says how much the machine moved during the run.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from rs_plugin.certification.threads import torch_threads

__all__ = ["busy_loop", "interleaved", "summary", "torch_threads"]

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
