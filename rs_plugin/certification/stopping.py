"""When sequential certification stops: schedules of checks with their bounds on p_A, and rules.

Everything here is a function of vote counts, so the certifiers of
:mod:`rs_plugin.certification.sequential` and the statistical soundness tests run the very same
stopping rule: the tests feed it Bernoulli draws, the certifiers the model's votes
(:func:`run_checks`).

Two schedules, each valid whatever rule decides to stop, because each gives a bound that holds
at all its checks at once with probability at least 1 − α:

* :class:`StagedBounds`: doubling stages 256, 512, …, n, one-sided Clopper–Pearson bounds at
  α_k = α · 2^{k − K} (Σ α_k < α, a union bound).
* :class:`AnytimeBounds`: a check after every batch of samples (256, then 1/16 of those drawn so
  far, rounded to blocks of 256), with the mixture confidence sequence of
  :mod:`rs_plugin.certification.confidence_sequence` at level α: valid at every check at once
  without splitting α, so checks are nearly free.

Two rules:

* :class:`DecisionRule` ("certified at radius r?"): stop when the lower bound certifies r, or the
  upper bound shows it cannot; with ``futility``, also when the budget is not expected to
  certify r (decided before the first sample where even n votes out of n would not do).
  Answers "not certified" are always sound.
* :class:`RadiusRule` (tolerance t): stop when the radius the budget would give, were the
  frequency so far to continue, exceeds the current radius by at most t.

And one procedure without checks, :func:`run_pilot` (the anytime certifier's radius mode): a
pilot fixes each input's sample size, and the bound uses the samples after the pilot only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

import numpy as np
import torch

from rs_plugin._validation import MAX_SAMPLES, check_int, check_open_unit
from rs_plugin.certification.confidence_sequence import mixture_lower, mixture_upper
from rs_plugin.certification.engine import NOISE_BLOCK
from rs_plugin.certification.stats import (
    clopper_pearson_lower,
    clopper_pearson_upper,
    round_down,
)
from rs_plugin.smoothings.base import Smoothing

__all__ = [
    "PILOT",
    "AnytimeBounds",
    "Bounds",
    "DecisionRule",
    "RadiusRule",
    "StagedBounds",
    "Stop",
    "pilot_plan",
    "pilot_size",
    "run_checks",
    "run_pilot",
]


class Bounds(Protocol):
    """Check sizes (samples drawn so far at each check) and bounds valid at all of them."""

    n: int
    alpha: float
    sizes: list[int]

    def bounds(self, successes: np.ndarray, stage: int) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) bounds on p_A after ``sizes[stage]`` samples."""
        ...

    def final_lower(self, successes: np.ndarray) -> np.ndarray:
        """The lower bound the last check gives with ``successes`` votes out of n."""
        ...


class StagedBounds:
    """Stage sizes n_k and their levels α_k (Σ α_k < α), with the bounds after each stage.

    Args:
        n: the budget, the size of the last stage (≥ 1).
        alpha: total failure probability, shared by all stages.
        first: size of the first stage (a multiple of NOISE_BLOCK for the engine).
    """

    def __init__(self, n: int, alpha: float, first: int = NOISE_BLOCK) -> None:
        self.n = check_int("n", n, 1, MAX_SAMPLES)
        self.alpha = check_open_unit("alpha", alpha)
        sizes = [first]
        while sizes[-1] < n:
            sizes.append(sizes[-1] * 2)
        sizes[-1] = n
        self.sizes = sizes
        stages = len(sizes)
        # Geometric spending: α/2 for the last stage, α/4 for the one before, … (measured on the
        # digits model: giving the last stage 0.9 α instead cost the early stages more than the
        # last one gained, in both modes).
        self.alphas = [alpha * 2.0 ** (k - stages) for k in range(stages)]

    def __len__(self) -> int:
        return len(self.sizes)

    def bounds(self, successes: np.ndarray, stage: int) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) Clopper–Pearson bounds at level α_stage after ``sizes[stage]`` trials."""
        trials, level = self.sizes[stage], self.alphas[stage]
        return (
            clopper_pearson_lower(successes, trials, level),
            clopper_pearson_upper(successes, trials, level),
        )

    def final_lower(self, successes: np.ndarray) -> np.ndarray:
        return clopper_pearson_lower(successes, self.n, self.alphas[-1])


def anytime_sizes(n: int) -> list[int]:
    """Checks after 256 samples, then after every further 256 · max(1, ⌊t/4096⌋) (about 1/16 of
    the t drawn so far: few checks, each at most 6.25% past the sample where stopping became
    possible), the last at n."""
    sizes: list[int] = []
    drawn = 0
    while drawn < n:
        drawn = min(n, drawn + NOISE_BLOCK * max(1, drawn // (16 * NOISE_BLOCK)))
        sizes.append(drawn)
    return sizes


class AnytimeBounds:
    """The mixture confidence sequence at level α at every check of :func:`anytime_sizes`.

    Args:
        n: the budget (≥ 1).
        alpha: failure probability, for all checks at once.
    """

    def __init__(self, n: int, alpha: float) -> None:
        self.n = check_int("n", n, 1, MAX_SAMPLES)
        self.alpha = check_open_unit("alpha", alpha)
        self.sizes = anytime_sizes(n)

    def __len__(self) -> int:
        return len(self.sizes)

    def bounds(self, successes: np.ndarray, stage: int) -> tuple[np.ndarray, np.ndarray]:
        trials = self.sizes[stage]
        return (
            mixture_lower(successes, trials, self.alpha),
            mixture_upper(successes, trials, self.alpha),
        )

    def final_lower(self, successes: np.ndarray) -> np.ndarray:
        return mixture_lower(successes, self.n, self.alpha)


def _radius(smoothing: Smoothing, p: np.ndarray, dim: int) -> np.ndarray:
    """The smoothing's radius at ``p``, rounded down as records' radii are."""
    return round_down(
        smoothing.radius(torch.from_numpy(np.asarray(p, dtype=np.float64)), dim).numpy()
    )


class DecisionRule:
    """Decision mode: is the input certified at ``radius`` (in the smoothing's norm)?

    Stops when the lower bound certifies ``radius`` or the upper bound shows it cannot. With
    ``futility`` = β it also stops, not certified, where the budget's lower bound would miss
    ``radius`` even if the remaining samples voted for the top class at the rate of a level-β
    upper confidence bound on p_A (the mixture bound; before the first sample, at rate 1: the
    budget could not certify even with every vote). A "not certified" answer is always sound;
    β trades samples against the chance (about β) of giving up on an input the budget would
    have certified.
    """

    def __init__(
        self, smoothing: Smoothing, dim: int, radius: float, *, futility: float | None
    ) -> None:
        if futility is not None:
            check_open_unit("futility", futility)
        self.smoothing, self.dim, self.radius, self.futility = smoothing, dim, radius, futility

    def hopeless(self, bounds: Bounds, successes: np.ndarray, trials: int) -> np.ndarray:
        """Where the budget is not expected to certify (only with ``futility``)."""
        if self.futility is None:
            return np.zeros(successes.shape, dtype=bool)
        rate = mixture_upper(successes, trials, self.futility) if trials else 1.0
        expected = successes + np.floor((bounds.n - trials) * rate)
        best = bounds.final_lower(np.minimum(expected, bounds.n))
        return _radius(self.smoothing, best, self.dim) < self.radius

    def __call__(
        self,
        bounds: Bounds,
        trials: int,
        successes: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(stop, certified) after ``trials`` samples."""
        certified = _radius(self.smoothing, lower, self.dim) >= self.radius
        cannot = _radius(self.smoothing, upper, self.dim) < self.radius
        return certified | cannot | self.hopeless(bounds, successes, trials), certified


class RadiusRule:
    """Radius mode: stop where the budget is expected to add at most ``tolerance`` to the radius.

    "Expected": the radius the last check gives if the frequency of the top class so far
    continues. Any rule is sound here (the bounds are); this one trades samples against the
    radius the full budget would give.
    """

    def __init__(self, smoothing: Smoothing, dim: int, tolerance: float) -> None:
        self.smoothing, self.dim, self.tolerance = smoothing, dim, tolerance

    def hopeless(self, bounds: Bounds, successes: np.ndarray, trials: int) -> np.ndarray:
        return np.zeros(successes.shape, dtype=bool)

    def __call__(
        self,
        bounds: Bounds,
        trials: int,
        successes: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        current = _radius(self.smoothing, lower, self.dim)
        expected = np.floor(successes / trials * bounds.n)
        attainable = _radius(self.smoothing, bounds.final_lower(expected), self.dim)
        stop = (attainable - current <= self.tolerance) | (upper < 0.5)
        return stop, np.zeros(successes.shape, dtype=bool)


class Stop(NamedTuple):
    """Inputs that stopped at one check: their rows, lower bounds, samples and decisions; where
    the bound is computed from a part of the samples only (:func:`run_pilot`), that part's
    size and each row's top-class votes in it."""

    rows: np.ndarray
    lower: np.ndarray
    samples: int
    certified: np.ndarray
    bound_samples: int | None = None
    bound_count: np.ndarray | None = None


Draw = Callable[[np.ndarray, int, int], np.ndarray]


def run_checks(
    bounds: Bounds, rule: DecisionRule | RadiusRule, draw: Draw, rows: int
) -> Iterator[Stop]:
    """Sample ``rows`` inputs check by check until each stops, yielding them as they stop.

    ``draw(active, done, size)`` returns, for the rows ``active``, the top-class votes among
    their samples ``done … done + size − 1``. Every row stops at the last check at the latest.
    """
    active = np.arange(rows)
    successes = np.zeros(rows, dtype=np.int64)
    hopeless = rule.hopeless(bounds, successes, 0)
    if hopeless.any():
        count = int(hopeless.sum())
        yield Stop(active[hopeless], np.zeros(count), 0, np.zeros(count, dtype=bool))
        active = active[~hopeless]
    done = 0
    last = len(bounds.sizes) - 1
    for stage, size in enumerate(bounds.sizes):
        if not len(active):
            return
        successes[active] += draw(active, done, size - done)
        done = size
        current = successes[active]
        lower, upper = bounds.bounds(current, stage)
        stop, certified = rule(bounds, size, current, lower, upper)
        if stage == last:
            stop = np.ones(len(active), dtype=bool)
        if stop.any():
            yield Stop(active[stop], lower[stop], size, certified[stop])
        active = active[~stop]


PILOT = 1024


def pilot_size(n: int) -> int:
    """Samples of the pilot: 1024, or a quarter of a small budget in whole noise blocks (0 when
    n < 1024: then every input gets all n samples)."""
    return min(PILOT, NOISE_BLOCK * (n // (4 * NOISE_BLOCK)))


def pilot_plan(
    pilot_successes: np.ndarray,
    *,
    pilot: int,
    n: int,
    alpha: float,
    smoothing: Smoothing,
    dim: int,
    tolerance: float,
) -> np.ndarray:
    """Further samples T per input: the fewest (on the checks of :func:`anytime_sizes`) whose
    expected radius is within ``tolerance`` of the expected radius with all n − pilot, the top
    class's frequency taken as the pilot's (S + 1/2)/(pilot + 1)."""
    sizes = np.array(anytime_sizes(n - pilot))
    unique, inverse = np.unique(pilot_successes, return_inverse=True)
    rate = (unique + 0.5) / (pilot + 1.0)
    expected = np.stack(
        [
            _radius(smoothing, clopper_pearson_lower(np.floor(rate * t), t, alpha), dim)
            for t in sizes
        ],
        axis=1,
    )
    close = expected >= expected[:, -1:] - tolerance
    return sizes[np.argmax(close, axis=1)][inverse.ravel()]


def run_pilot(
    *,
    n: int,
    alpha: float,
    smoothing: Smoothing,
    dim: int,
    tolerance: float,
    draw: Draw,
    rows: int,
) -> Iterator[Stop]:
    """Radius mode with the sample size fixed by a pilot (:class:`AnytimeCertifier`).

    A pilot of :func:`pilot_size` samples estimates p_A; :func:`pilot_plan` fixes the number T
    of further samples; the lower bound is one-sided Clopper–Pearson at level α on those T
    samples alone. Valid at level α with no union bound: T is a function of the pilot, which is
    independent of the T fresh samples, so given T they are T i.i.d. votes with the same p_A.
    """
    pilot = pilot_size(n)
    active = np.arange(rows)
    first = draw(active, 0, pilot) if pilot else np.zeros(rows, dtype=np.int64)
    plan = (
        pilot_plan(
            first,
            pilot=pilot,
            n=n,
            alpha=alpha,
            smoothing=smoothing,
            dim=dim,
            tolerance=tolerance,
        )
        if pilot
        else np.full(rows, n)
    )
    fresh = np.zeros(rows, dtype=np.int64)
    done = 0
    for size in np.unique(plan):
        fresh[active] += draw(active, pilot + done, int(size) - done)
        done = int(size)
        stop = plan[active] == size
        stopped = active[stop]
        lower = clopper_pearson_lower(fresh[stopped], done, alpha)
        no_decision = np.zeros(len(stopped), dtype=bool)
        yield Stop(stopped, lower, pilot + done, no_decision, done, fresh[stopped])
        active = active[~stop]
