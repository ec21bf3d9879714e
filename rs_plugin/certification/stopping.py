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
  without splitting α, so checks are nearly free. A part of α (``budget_share``) may go to a
  Clopper–Pearson bound at the budget n, used only when an input gets there (union bound).

Two rules:

* :class:`DecisionRule` ("certified at radius r?"): stop when the lower bound certifies r, or the
  upper bound shows it cannot; with ``futility``, also when the lower bound at the budget could
  not reach r even if every remaining sample voted for the top class (decided before the first
  sample where even n votes out of n would not do). Answers "not certified" are always sound.
* :class:`RadiusRule` (tolerance t): stop when the radius the budget would give, were the
  frequency so far to continue, exceeds the current radius by at most t.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

import numpy as np
import torch

from rs_plugin._validation import RSValueError, check_int, check_open_unit
from rs_plugin.certification.confidence_sequence import mixture_lower, mixture_upper
from rs_plugin.certification.engine import NOISE_BLOCK
from rs_plugin.certification.stats import clopper_pearson_lower, clopper_pearson_upper
from rs_plugin.smoothings.base import Smoothing

__all__ = [
    "AnytimeBounds",
    "Bounds",
    "DecisionRule",
    "RadiusRule",
    "StagedBounds",
    "Stop",
    "run_checks",
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
        self.n = check_int("n", n, 1)
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
    """The mixture confidence sequence at every check, and optionally a Clopper–Pearson bound at
    the budget: α − a at every check, a = ``budget_share`` · α at n only (union bound).

    Args:
        n: the budget (≥ 1).
        alpha: total failure probability.
        budget_share: the part of α spent on Clopper–Pearson at n, in [0, 1).
    """

    def __init__(self, n: int, alpha: float, budget_share: float = 0.0) -> None:
        self.n = check_int("n", n, 1)
        self.alpha = check_open_unit("alpha", alpha)
        if not 0.0 <= budget_share < 1.0:
            raise RSValueError("budget_share", "a fraction in [0, 1)", budget_share)
        self.budget_share = budget_share
        self.sizes = anytime_sizes(n)
        self._sequence_alpha = alpha * (1.0 - budget_share)

    def __len__(self) -> int:
        return len(self.sizes)

    def bounds(self, successes: np.ndarray, stage: int) -> tuple[np.ndarray, np.ndarray]:
        trials = self.sizes[stage]
        lower = mixture_lower(successes, trials, self._sequence_alpha)
        upper = mixture_upper(successes, trials, self._sequence_alpha)
        if trials == self.n and self.budget_share > 0:
            level = self.alpha * self.budget_share
            lower = np.maximum(lower, clopper_pearson_lower(successes, trials, level))
            upper = np.minimum(upper, clopper_pearson_upper(successes, trials, level))
        return lower, upper

    def final_lower(self, successes: np.ndarray) -> np.ndarray:
        return self.bounds(successes, len(self.sizes) - 1)[0]


def _radius(smoothing: Smoothing, p: np.ndarray, dim: int) -> np.ndarray:
    return smoothing.radius(torch.from_numpy(np.asarray(p, dtype=np.float64)), dim).numpy()


class DecisionRule:
    """Decision mode: is the input certified at ``radius`` (in the smoothing's norm)?"""

    def __init__(self, smoothing: Smoothing, dim: int, radius: float, *, futility: bool) -> None:
        self.smoothing, self.dim, self.radius, self.futility = smoothing, dim, radius, futility

    def hopeless(self, bounds: Bounds, successes: np.ndarray, trials: int) -> np.ndarray:
        """Where even all of the remaining n − trials samples voting for the top class would
        leave the budget's lower bound short of the radius (only with ``futility``)."""
        if not self.futility:
            return np.zeros(successes.shape, dtype=bool)
        best = bounds.final_lower(successes + (bounds.n - trials))
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
    """Inputs that stopped at one check: their rows, lower bounds, samples and decisions."""

    rows: np.ndarray
    lower: np.ndarray
    samples: int
    certified: np.ndarray


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
