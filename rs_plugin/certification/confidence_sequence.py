"""Anytime-valid confidence bounds for a Bernoulli probability: one-sided mixture martingales.

After t trials with S successes (F = t − S failures), test each candidate m ∈ (0, 1) with

    M_t(m) = E_u[(1 + u(1 − m)/m)^S (1 − u)^F],

the likelihood ratio of θ = m + (1 − m)u against m, averaged over a fixed prior on u ∈ [0, 1]
(the alternatives θ above m). Under p = m each factor has mean 1, so M_t(p) is a non-negative
martingale with M_0 = 1 and Ville's inequality gives P[∃t: M_t(p) ≥ 1/α] ≤ α (Robbins 1970's
mixture method; one-sided mixtures as in Howard et al. 2021, "Time-uniform, nonparametric,
nonasymptotic confidence sequences", and the betting view of Waudby-Smith & Ramdas 2023).

The integrand is non-increasing in m (1 + u(1 − m)/m falls as m grows), so the rejected
candidates {m : M_t(m) ≥ 1/α} form an interval from 0 up to L_t, and

    P[∃t: p < L_t] ≤ α:

**L_t is a 1 − α lower bound at every t at once**, hence at any data-dependent stopping time —
checked after every batch, whatever rule decides to stop.

The prior: u uniform on [0, h_j] with probability w_j, h_j = 4^{−j} (j = 0 … 8) and
w_j ∝ √h_j, a density ≈ u^{−1/2}: more weight on alternatives just above m, where the hard
inputs (p_A near a decision threshold, thousands of samples) are, at the price of a factor
Σ w_j ≈ 2 on easy ones. (On the digits model this halved the samples the hardest input needed
against u uniform on [0, 1].) Each component integrates in closed form,

    (1/h) ∫_0^h … du = B(S + 1, F + 1) [I_x(F + 1, S + 1) − I_{x(1−h)}(F + 1, S + 1)]
                        / (h m^S x^{F+1}),   x = 1 − m,

(I the regularised incomplete beta function). Swapping successes and failures gives the upper
bound U_t(S, F) = 1 − L_t(F, S), with P[∃t: p > U_t] ≤ α.

L_t is found in y = −log(1 − m) (1 − m spans many orders of magnitude near 1) by bisection, then
regula falsi (Illinois), keeping a bracket whose lower end is verified rejected and returning
that end: the result is never above the exact L_t, and within 1e-9 of it in y (relative error
1e-9 in 1 − m). "Verified" means log M_t ≥ log(1/α) plus a margin for rounding: 1e-9, plus
``_LGAMMA_ULPS`` ulps of ln Γ(S + 1) + ln Γ(F + 1) + ln Γ(t + 2). The log-beta term is a
difference of those log-gammas, and its error in float64 grows with them: against 40-digit
values it was off by up to 0.9 of an ulp of their sum, from t = 10⁵ (2e-10) to t = 10⁹ (3.5e-6),
where a margin of 1e-9 alone let the bound pass the exact one (at t = 10⁷, 10⁸ and 10⁹).
"""

from __future__ import annotations

import numpy as np
from scipy import special

__all__ = ["mixture_lower", "mixture_upper"]

_WIDTHS = 4.0 ** -np.arange(9)
_WEIGHTS = np.sqrt(_WIDTHS) / np.sqrt(_WIDTHS).sum()
_Y_MAX = 50.0  # 1 − m ≥ e^{−50}: far below any bound n ≤ 10^15 trials can give
_BISECTIONS = 8
_SECANTS = 40
_TOLERANCE = 1e-9
_MARGIN = np.log1p(1e-9)
_LGAMMA_ULPS = 64.0


def _log_mixture(successes: np.ndarray, failures: np.ndarray, y: np.ndarray) -> np.ndarray:
    """log M_t(m) at 1 − m = x = e^{−y}."""
    x = np.exp(-y)
    a, b = failures + 1.0, successes + 1.0
    whole = special.betainc(a, b, x)
    total = _WEIGHTS[0] * whole
    for weight, width in zip(_WEIGHTS[1:], _WIDTHS[1:], strict=True):
        part = np.maximum(whole - special.betainc(a, b, x * (1.0 - width)), 0.0)
        total = total + (weight / width) * part
    with np.errstate(divide="ignore", invalid="ignore"):
        log_m = np.where(successes > 0, successes * np.log1p(-x), 0.0)
        return special.betaln(b, a) + np.log(total) + a * y - log_m


def _lower_unique(successes: np.ndarray, failures: np.ndarray, alpha: float) -> np.ndarray:
    trials = successes + failures
    scale = special.gammaln(successes + 1.0) + special.gammaln(failures + 1.0)
    scale = scale + special.gammaln(trials + 2.0)
    threshold = np.log(1.0 / alpha) + _MARGIN + _LGAMMA_ULPS * np.finfo(np.float64).eps * scale
    # Bracket in y: m = 0 is rejected when S > 0 (M → ∞); the frequency S/t (or 1 − e^{−50}
    # when S = t) is not, since there no alternative above m is more likely than m itself.
    low = np.zeros_like(successes, dtype=np.float64)
    low_excess = np.full_like(low, np.inf)  # log M − threshold at low (≥ 0)
    with np.errstate(divide="ignore"):
        high = np.minimum(-np.log1p(-successes / np.maximum(trials, 1.0)), _Y_MAX)
    high_excess = np.full_like(low, -1.0)  # < 0 at high
    kept = np.zeros(low.shape, dtype=np.int64)  # Illinois: +1 low kept, −1 high kept
    for step in range(_BISECTIONS + _SECANTS):
        open_ = (high - low > _TOLERANCE) & (successes > 0)
        if not open_.any():
            break
        with np.errstate(invalid="ignore", divide="ignore"):
            secant = low - low_excess * (high - low) / (high_excess - low_excess)
        middle = 0.5 * (low + high)
        use_secant = (step >= _BISECTIONS) & np.isfinite(low_excess) & np.isfinite(secant)
        # Stay strictly inside the bracket so that it always shrinks.
        guard = 1e-3 * (high - low)
        trial = np.where(use_secant, np.clip(secant, low + guard, high - guard), middle)
        excess = np.full_like(low, -1.0)
        excess[open_] = (
            _log_mixture(successes[open_], failures[open_], trial[open_]) - threshold[open_]
        )
        rejected = open_ & (excess >= 0)
        accepted = open_ & (excess < 0)
        # Illinois: halve the excess kept at an end that survives twice in a row.
        low_excess = np.where(accepted & (kept == 1), 0.5 * low_excess, low_excess)
        high_excess = np.where(rejected & (kept == -1), 0.5 * high_excess, high_excess)
        low = np.where(rejected, trial, low)
        low_excess = np.where(rejected, excess, low_excess)
        high = np.where(accepted, trial, high)
        high_excess = np.where(accepted, excess, high_excess)
        kept = np.where(rejected, -1, np.where(accepted, 1, kept))
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
