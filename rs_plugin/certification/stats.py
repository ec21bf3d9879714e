"""Binomial statistics behind CERTIFY and PREDICT (Cohen et al. 2019).

Computed on the host after sampling, never inside the sampling loop.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["binomial_p_value", "clopper_pearson_lower", "clopper_pearson_upper"]


def clopper_pearson_lower(
    successes: np.ndarray, trials: np.ndarray | int, alpha: float
) -> np.ndarray:
    """One-sided Clopper–Pearson lower bound at level 1 − α, elementwise.

    Returns p_lower with P[p ≥ p_lower] ≥ 1 − α for k ~ Binomial(trials, p): the α-quantile of
    Beta(k, trials − k + 1), and 0 when k = 0. (Cohen et al. obtain the same number from
    ``proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]``.)
    """
    k = np.asarray(successes, dtype=np.float64)
    lower = stats.beta.ppf(alpha, np.maximum(k, 1.0), trials - k + 1.0)
    return np.where(k > 0, lower, 0.0)


def clopper_pearson_upper(successes: np.ndarray, trials: int, alpha: float) -> np.ndarray:
    """One-sided Clopper–Pearson upper bound at level 1 − α: P[p ≤ p_upper] ≥ 1 − α.

    The (1 − α)-quantile of Beta(k + 1, trials − k), and 1 when k = trials.
    """
    k = np.asarray(successes, dtype=np.float64)
    upper = stats.beta.ppf(1.0 - alpha, k + 1.0, np.maximum(trials - k, 1.0))
    return np.where(k < trials, upper, 1.0)


def binomial_p_value(successes: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """Two-sided exact binomial test of H0: p = 1/2, elementwise (PREDICT's abstain test)."""
    k = np.asarray(successes, dtype=np.int64)
    n = np.asarray(trials, dtype=np.int64)
    out = np.ones(k.shape, dtype=np.float64)
    for i, (ki, ni) in enumerate(zip(k.ravel(), n.ravel(), strict=True)):
        if ni > 0:
            out.flat[i] = stats.binomtest(int(ki), int(ni), 0.5).pvalue
    return out
