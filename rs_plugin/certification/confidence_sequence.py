"""Anytime-valid confidence bounds for a Bernoulli probability: one-sided mixture martingales.

After t trials with S successes (F = t − S failures), test each candidate m ∈ (0, 1) with

    M_t(m) = ∫_0^1 (1 + u(1 − m)/m)^S (1 − u)^F du,

the likelihood ratio of θ = m + (1 − m)u against m, averaged over u uniform on [0, 1] (a uniform
prior on the alternatives θ ∈ [m, 1] above m). Under p = m each factor has mean 1, so M_t(p) is
a non-negative martingale with M_0 = 1 and Ville's inequality gives P[∃t: M_t(p) ≥ 1/α] ≤ α
(Robbins 1970's mixture method; one-sided conjugate mixtures as in Howard et al. 2021,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", Section 3, and the betting
view of Waudby-Smith & Ramdas 2023).

The integrand is non-increasing in m (1 + u(1 − m)/m falls as m grows), so the rejected
candidates {m : M_t(m) ≥ 1/α} form an interval from 0 up to L_t, and

    P[∃t: p < L_t] ≤ α:

**L_t is a 1 − α lower bound at every t at once**, hence at any data-dependent stopping time —
checked after every batch, whatever rule decides to stop. Integrating gives the closed form

    M_t(m) = B(S + 1, F + 1) · I_{1−m}(F + 1, S + 1) / ((1 − m)^{F+1} m^S)

(I the regularised incomplete beta function). Swapping successes and failures gives the upper
bound U_t(S, F) = 1 − L_t(F, S), with P[∃t: p > U_t] ≤ α.

L_t is found by bisection in y = −log(1 − m) (1 − m spans many orders of magnitude near 1), and
the returned value is always a point verified to be rejected (M_t ≥ 1/α), hence at most the
exact L_t: rounding can only make the bound smaller. Its relative error in 1 − m is below 1e-11.
"""

from __future__ import annotations

import numpy as np
from scipy import special

__all__ = ["mixture_lower", "mixture_upper"]

_ITERATIONS = 44
_Y_MAX = 50.0  # 1 − m ≥ e^{−50}: far below any bound n ≤ 10^15 trials can give


def _log_mixture(successes: np.ndarray, failures: np.ndarray, y: np.ndarray) -> np.ndarray:
    """log M_t(m) at 1 − m = e^{−y}."""
    tail = special.betainc(failures + 1.0, successes + 1.0, np.exp(-y))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_m = np.where(successes > 0, successes * np.log1p(-np.exp(-y)), 0.0)
        return (
            special.betaln(successes + 1.0, failures + 1.0)
            + np.log(tail)
            + (failures + 1.0) * y
            - log_m
        )


def _lower_unique(successes: np.ndarray, failures: np.ndarray, alpha: float) -> np.ndarray:
    threshold = np.log(1.0 / alpha)
    trials = successes + failures
    # Bracket: m = 0 is rejected when S > 0 (M → ∞); the frequency S/t (or 1 − e^{−50} when
    # S = t) is not, since there every alternative above m is less likely than m itself.
    low = np.zeros_like(successes, dtype=np.float64)
    with np.errstate(divide="ignore"):
        high = np.minimum(-np.log1p(-successes / np.maximum(trials, 1.0)), _Y_MAX)
    for _ in range(_ITERATIONS):
        middle = 0.5 * (low + high)
        rejected = _log_mixture(successes, failures, middle) >= threshold
        low = np.where(rejected, middle, low)
        high = np.where(rejected, high, middle)
    return np.where(successes > 0, -np.expm1(-low), 0.0)


def mixture_lower(successes: np.ndarray, trials: np.ndarray | int, alpha: float) -> np.ndarray:
    """L_t: with probability ≥ 1 − α, p ≥ L_t at every t simultaneously (elementwise)."""
    k = np.asarray(successes, dtype=np.int64)
    t = np.broadcast_to(np.asarray(trials, dtype=np.int64), k.shape)
    # Many inputs share counts (every vote for the top class, say): solve each pair once.
    key = t.ravel() * (int(t.max(initial=0)) + 1) + k.ravel()
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    pair_k = k.ravel()[first].astype(np.float64)
    pair_t = t.ravel()[first].astype(np.float64)
    lower = _lower_unique(pair_k, pair_t - pair_k, alpha)
    return lower[inverse].reshape(k.shape)


def mixture_upper(successes: np.ndarray, trials: np.ndarray | int, alpha: float) -> np.ndarray:
    """U_t: with probability ≥ 1 − α, p ≤ U_t at every t simultaneously (elementwise)."""
    k = np.asarray(successes, dtype=np.int64)
    t = np.broadcast_to(np.asarray(trials, dtype=np.int64), k.shape)
    return 1.0 - mixture_lower(t - k, t, alpha)
