"""How the engine runs the base model on noisy batches: precision, memory format, compilation.

How many threads torch runs on is the other lever (:func:`threads_for_load`, :func:`torch_threads`).

These options change only how the votes of CERTIFY and PREDICT are computed. With a reduced
``precision`` the smoothed classifier being certified is the one whose base classifier is the
model run under autocast in that precision (its votes can differ from float32's on inputs near a
decision boundary); the certificate is exact for that classifier. ``channels_last`` and
``compile`` change kernels, not the function, up to floating-point rounding.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from rs_plugin._validation import RSValueError

__all__ = ["PRECISIONS", "VoteRunner", "threads_for_load", "torch_threads"]

PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


class VoteRunner:
    """Calls the base model for vote counting (a plain callable, not a submodule, so the
    smoothed classifier's state dict holds the model once).

    Args:
        model: the base classifier.
        precision: ``"float32"`` (no autocast), ``"bfloat16"`` or ``"float16"`` (autocast on the
            inputs' device type).
        channels_last: run 4-D batches in the channels-last memory format (and the model too).
        compile: compile the model with ``torch.compile`` on first use.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        precision: str = "float32",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise RSValueError("precision", f"one of {sorted(PRECISIONS)}", precision)
        self.model = model
        self.precision = precision
        self.channels_last = bool(channels_last)
        self.compile_model = bool(compile)
        self._compiled: Any = None
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def _callable(self) -> Any:
        if not self.compile_model:
            return self.model
        if self._compiled is None:
            self._compiled = torch.compile(self.model)
        return self._compiled

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = PRECISIONS[self.precision]
        context = (
            torch.autocast(device_type=x.device.type, dtype=dtype)
            if dtype is not None
            else contextlib.nullcontext()
        )
        with context:
            logits = self._callable()(x)
        return logits.float()

    def is_plain(self) -> bool:
        """True when the runner is the model itself (float32, default layout, not compiled)."""
        return self.precision == "float32" and not self.channels_last and not self.compile_model


def _cpu_times() -> tuple[float, float] | None:
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
    first = _cpu_times()
    if first is None:
        return os.getloadavg()[0]
    time.sleep(window)
    second = _cpu_times()
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
