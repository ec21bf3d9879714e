"""Binomial statistics behind CERTIFY and PREDICT (Cohen et al. 2019).

Computed on the host after sampling, never inside the sampling loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np
from scipy import stats

if TYPE_CHECKING:
    import torch

__all__ = [
    "ROUNDING_MARGIN",
    "binomial_p_value",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "round_down",
    "round_lower",
]

# Relative margin by which bounds and radii computed in float64 are moved to the safe side.
# scipy's beta quantile (Boost's inverse incomplete beta) was within 1.4e-15 (≈ 6 ulps) of the
# exact Clopper–Pearson bound over 132 cases (n = 10 … 10^6, α = 0.05 … 1e-10, k from n/2 to n;
# the exact value from binomial sums in 40-digit arithmetic), and above it in 54 of them;
# torch's ndtri within 3.6e-16 of the exact Φ⁻¹ on p ∈ [0.5001, 1 − 1e-15]. 2^-40 ≈ 9.1e-13 is
# over 600 times those errors and changes a radius by at most ~1e-12 relative (~1e-5 at the
# steepest, p = α^{1/n} with n = 2^31).
ROUNDING_MARGIN = 2.0**-40
_Values = TypeVar("_Values", np.ndarray, "torch.Tensor")


def round_down(value: _Values) -> _Values:
    """``value`` (≥ 0, float64: an array or a tensor) moved towards 0 by
    :data:`ROUNDING_MARGIN`, relatively: a bound or a radius computed in float64 from a formula
    with errors of a few ulps, made no larger than the exact one."""
    return value * (1.0 - ROUNDING_MARGIN)


def round_lower(value: _Values) -> _Values:
    """``value`` (float64, of either sign: a log-volume, say) moved down by
    :data:`ROUNDING_MARGIN` of its size; :func:`round_down` for values ≥ 0."""
    return value - abs(value) * ROUNDING_MARGIN


def clopper_pearson_lower(
    successes: np.ndarray, trials: np.ndarray | int, alpha: float
) -> np.ndarray:
    """One-sided Clopper–Pearson lower bound at level 1 − α, elementwise.

    Returns p_lower with P[p ≥ p_lower] ≥ 1 − α for k ~ Binomial(trials, p): the α-quantile of
    Beta(k, trials − k + 1), and 0 when k = 0, rounded down by :data:`ROUNDING_MARGIN` (the
    quantile is computed with errors of a few ulps either way). (Cohen et al. obtain the same
    number, not rounded down, from ``proportion_confint(k, n, alpha=2 * alpha,
    method="beta")[0]``.)
    """
    k = np.asarray(successes, dtype=np.float64)
    lower = stats.beta.ppf(alpha, np.maximum(k, 1.0), trials - k + 1.0)
    return np.where(k > 0, round_down(np.asarray(lower, dtype=np.float64)), 0.0)


def clopper_pearson_upper(successes: np.ndarray, trials: int, alpha: float) -> np.ndarray:
    """One-sided Clopper–Pearson upper bound at level 1 − α: P[p ≤ p_upper] ≥ 1 − α.

    The (1 − α)-quantile of Beta(k + 1, trials − k), and 1 when k = trials; rounded up by
    :data:`ROUNDING_MARGIN` (at most 1). Computed as the quantile of the upper tail α, not as
    ``ppf(1 − α)``: 1 − α rounds in float64 (by up to ~1e-7 relative in α for α = 1e-10),
    which moved the bound by ~1e-10.
    """
    k = np.asarray(successes, dtype=np.float64)
    upper = stats.beta.isf(alpha, k + 1.0, np.maximum(trials - k, 1.0))
    return np.where(k < trials, np.minimum(upper * (1.0 + ROUNDING_MARGIN), 1.0), 1.0)


def binomial_p_value(successes: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """Two-sided exact binomial test of H0: p = 1/2, elementwise (PREDICT's abstain test)."""
    k = np.asarray(successes, dtype=np.int64)
    n = np.asarray(trials, dtype=np.int64)
    out = np.ones(k.shape, dtype=np.float64)
    for i, (ki, ni) in enumerate(zip(k.ravel(), n.ravel(), strict=True)):
        if ni > 0:
            out.flat[i] = stats.binomtest(int(ki), int(ni), 0.5).pvalue
    return out
