"""The batch size the engine runs: a fixed integer, or ``"auto"``, measured on the model.

``batch_size="auto"`` (the default of every certifier, the command line, the ART adapter's
sampling and Ray) finds the fastest batch size of the actual model on the actual device with a
short probe that is part of the run itself, in two phases.

*Sweep.* The engine's first batches take the candidate sizes in turn (powers of two from 16 to
1024 on a CPU, to 4096 on a GPU, no more than the inputs' total samples and, at an estimated
:data:`ACTIVATION_FACTOR` times the input's bytes per sample, no more than half the device's
free memory). Each batch is timed from the end of the previous forward pass to the end of its
own (noise, forward, counting). A *visit* to a size runs one batch that is not scored (it
allocates the new shapes), then scored batches until they cover at least ``TRIES - 1``
batches, :data:`SCORED_SAMPLES` samples (whole noise blocks, which a batch smaller than a block
draws only now and then) and :data:`MIN_SECONDS` of time (:func:`batches_per_size` gives the
count without the time); the size's rate is its scored samples over their summed time. The
sweep stops after the last candidate, or once two sizes in a row fall below
:data:`STOP_FRACTION` of the best rate.

*Confirmation.* On a machine whose speed changes from moment to moment (other processes on the
same cores), sizes measured one after another are measured on different machines. The
:data:`FINALISTS` best sizes of the sweep within :data:`FINALIST_FRACTION` of the best are
therefore visited again, interleaved, :data:`ROUNDS` rounds (each round in a rotated order), and
the probe settles on the size with the best rate over its confirmation visits alone. A sweep
with one clear winner settles at once.

The probe's samples are votes like any other: noise depends only on (seed, stream, key,
position) (:mod:`rs_plugin.certification.engine`), never on where batches begin, so the counts,
and every certificate, are those of a fixed batch size. Nothing is drawn twice.

The result is cached for the process per model object and per (input shape, dtype, device,
torch threads, the vote runner's precision, layout and compilation); a probe that a small run
leaves unfinished continues in the next call on the same key (a run with fewer samples than
the next candidate runs them in one batch and leaves that candidate to a larger run).
"""

from __future__ import annotations

import contextlib
import numbers
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from rs_plugin._validation import RSValueError
from rs_plugin.certification.model_runner import VoteRunner

__all__ = [
    "ACTIVATION_FACTOR",
    "AUTO",
    "FINALISTS",
    "FINALIST_FRACTION",
    "MIN_SECONDS",
    "ROUNDS",
    "SCORED_SAMPLES",
    "STOP_FRACTION",
    "TRIES",
    "AutoBatch",
    "Clock",
    "auto_batch",
    "batch_size_in_use",
    "batches_per_size",
    "candidates_for",
    "check_batch_size",
    "forget",
    "nominal_batch_size",
]

AUTO = "auto"
TRIES = 3
SCORED_SAMPLES = 2 * 256  # two noise blocks (engine.NOISE_BLOCK) at least per scored size
STOP_FRACTION = 0.5
MIN_SECONDS = 0.3  # scored time per visit at least: a short window is one moment of a busy machine
FINALISTS = 3
FINALIST_FRACTION = 0.7
ROUNDS = 3
ACTIVATION_FACTOR = 64
_CPU_LARGEST = 1024
_CUDA_LARGEST = 4096
_SMALLEST = 16
_ACCEPTED = "'auto' or an integer >= 1"


def check_batch_size(value: Any, name: str = "batch_size") -> int | str:
    """``value`` as ``"auto"`` or an int >= 1; anything else is one :class:`RSValueError`."""
    if isinstance(value, str) and value == AUTO:
        return AUTO
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= 1:
        return int(value)
    raise RSValueError(name, _ACCEPTED, value)


def nominal_batch_size(batch_size: int | str) -> int:
    """A batch size to plan with before the probe has run (the largest CPU candidate for
    ``"auto"``): how Ray sizes its shards."""
    return _CPU_LARGEST if batch_size == AUTO else int(batch_size)


def _free_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (``MemAvailable`` for a CPU), None where unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def candidates_for(sample_bytes: int, device: torch.device) -> tuple[int, ...]:
    """The sizes the probe tries: powers of two from 16 to the device's largest, within half
    the free memory at ``ACTIVATION_FACTOR × sample_bytes`` per sample (at least one size)."""
    largest = _CUDA_LARGEST if device.type == "cuda" else _CPU_LARGEST
    free = _free_bytes(device)
    sizes = []
    size = _SMALLEST
    while size <= largest:
        if free is None or size * ACTIVATION_FACTOR * sample_bytes <= free // 2:
            sizes.append(size)
        size *= 2
    return tuple(sizes) or (_SMALLEST,)


def batches_per_size(size: int) -> int:
    """Batches a visit of the probe runs at ``size`` at least: one that allocates (not
    scored), then enough to cover at least :data:`SCORED_SAMPLES` samples, and at least
    ``TRIES - 1`` (more while their time is under :data:`MIN_SECONDS`)."""
    return 1 + max(TRIES - 1, -(-SCORED_SAMPLES // size))


@dataclass
class AutoBatch:
    """The probe's state for one cache key: time measured per size, and the settled size.

    ``times[size]`` lists the seconds of the sweep's batches of that size and ``confirmed[size]``
    the scored seconds of its confirmation visits; a rate is scored samples over summed seconds
    (the first batch of every visit excluded), so a small size whose batches only sometimes draw
    a noise block is charged for the blocks it draws. ``visits`` lists every finished visit as
    (size, batches), in the order run.
    """

    candidates: tuple[int, ...]
    times: dict[int, list[float]] = field(default_factory=dict)
    confirmed: dict[int, list[float]] = field(default_factory=dict)
    visits: list[tuple[int, int]] = field(default_factory=list)
    chosen: int | None = None
    last: int | None = None  # the size of the latest batches the engine ran
    _index: int = 0
    _declines: int = 0
    _schedule: list[int] = field(default_factory=list)  # confirmation visits still to run
    _visit: list[float] = field(default_factory=list)  # the batches of the visit under way

    @property
    def settled(self) -> bool:
        return self.chosen is not None

    def next_size(self) -> int:
        """The size of the next batch: the settled one, or the size being measured."""
        if self.chosen is not None:
            return self.chosen
        return self._schedule[0] if self._schedule else self.candidates[self._index]

    def current(self) -> int:
        """The size of the latest batches run (the settled size, once a run is large enough
        for it)."""
        return self.last if self.last is not None else self.next_size()

    def rate(self, size: int) -> float:
        """Samples per second of the sweep's scored batches of ``size`` (0 before any)."""
        return _rate(size, self.times.get(size, [])[1:])

    def confirmed_rate(self, size: int) -> float:
        """Samples per second of the scored batches of ``size``'s confirmation visits."""
        return _rate(size, self.confirmed.get(size, []))

    def record(self, size: int, seconds: float) -> None:
        """One full batch of ``size`` took ``seconds`` (ignored unless it is being measured)."""
        if self.chosen is not None or size != self.next_size():
            return
        self._visit.append(seconds)
        scored = self._visit[1:]
        if len(scored) < batches_per_size(size) - 1 or sum(scored) < MIN_SECONDS:
            return
        visit, self._visit = self._visit, []
        self.visits.append((size, len(visit)))
        if self._schedule:
            self.confirmed.setdefault(size, []).extend(visit[1:])
            self._schedule.pop(0)
            if not self._schedule:
                self.chosen = max(self.confirmed, key=self.confirmed_rate)
            return
        self.times[size] = visit
        best = max(self.rate(s) for s in self.times)
        self._declines = self._declines + 1 if self.rate(size) < STOP_FRACTION * best else 0
        self._index += 1
        if self._index == len(self.candidates) or self._declines >= 2:
            self._confirm()

    def _confirm(self) -> None:
        """After the sweep: the finalists' interleaved rounds, or the winner at once."""
        ranked = sorted(self.times, key=self.rate, reverse=True)
        best = self.rate(ranked[0])
        finalists = [s for s in ranked[:FINALISTS] if self.rate(s) >= FINALIST_FRACTION * best]
        if len(finalists) < 2:
            self.chosen = ranked[0]
            return
        # Each round in a rotated order: no size always runs first (right after another size's
        # visit) or last.
        self._schedule = [
            finalists[(start + i) % len(finalists)]
            for start in range(ROUNDS)
            for i in range(len(finalists))
        ]


def _rate(size: int, scored: list[float]) -> float:
    total = sum(scored)
    return size * len(scored) / total if scored and total > 0 else 0.0


# model object -> {(shape, dtype, device, threads, runner options): AutoBatch}; a model that is
# garbage-collected takes its entries with it.
_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], AutoBatch]] = (
    weakref.WeakKeyDictionary()
)
_LAST: weakref.WeakKeyDictionary[Any, AutoBatch] = weakref.WeakKeyDictionary()


def _owner_and_options(model: Any) -> tuple[Any, tuple[Any, ...]]:
    if isinstance(model, VoteRunner):
        return model.model, (model.precision, model.channels_last, model.compile_model)
    return model, ()


def auto_batch(model: Any, x: torch.Tensor) -> AutoBatch:
    """The probe state of ``model`` (a callable or :class:`VoteRunner`) on inputs like ``x``
    with the current torch thread count: cached, or new."""
    owner, options = _owner_and_options(model)
    key = (tuple(x.shape[1:]), x.dtype, x.device, torch.get_num_threads(), options)
    sample_bytes = x[0].numel() * x.element_size()
    try:
        entries = _CACHE.setdefault(owner, {})
    except TypeError:  # not weakly referenceable: probe on every call
        return AutoBatch(candidates_for(sample_bytes, x.device))
    state = entries.get(key)
    if state is None:
        state = entries[key] = AutoBatch(candidates_for(sample_bytes, x.device))
    _LAST[owner] = state
    return state


def batch_size_in_use(model: Any) -> int | None:
    """The size of the batches the latest ``"auto"`` run of ``model`` ran last (the settled
    size once the probe is done, unless the run had fewer samples); None when it never ran
    with ``"auto"``."""
    owner, _ = _owner_and_options(model)
    try:
        state = _LAST.get(owner)
    except TypeError:
        return None
    return None if state is None else state.current()


def forget(model: Any) -> None:
    """Drop every cached probe of ``model``: its next ``"auto"`` run probes afresh (how the
    bench times a first run in a process)."""
    owner, _ = _owner_and_options(model)
    try:
        _CACHE.pop(owner, None)
        _LAST.pop(owner, None)
    except TypeError:
        return


@contextlib.contextmanager
def probing_afresh(model: Any) -> Iterator[None]:
    """Inside: ``model``'s ``"auto"`` runs probe afresh, as in a new process; after: its
    cached probes are what they were before (how the bench times a first run between settled
    runs without leaving them a half-done probe to finish)."""
    owner, _ = _owner_and_options(model)
    try:
        saved, last = _CACHE.get(owner), _LAST.get(owner)
    except TypeError:  # not weakly referenceable: every run probes anyway
        yield
        return
    forget(model)
    try:
        yield
    finally:
        forget(model)
        if saved is not None:
            _CACHE[owner] = saved
        if last is not None:
            _LAST[owner] = last


class Clock:
    """Time from the end of one forward pass to the end of the next (device-synchronised)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.last: float | None = None

    def lap(self) -> float | None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        previous, self.last = self.last, now
        return None if previous is None else now - previous
