"""Bounds and radii computed in float64 are never above the exact ones.

The exact one-sided Clopper–Pearson bound solves P[Binomial(n, p) ≥ k] = α; here it comes from
binomial sums in 40-digit arithmetic (mpmath) and Newton steps, and Φ⁻¹ from mpmath's erfinv.
scipy's beta quantile lands a few ulps above the exact bound on some of these cases, which
:data:`~rs_plugin.certification.stats.ROUNDING_MARGIN` absorbs.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import torch

from rs_plugin import Gaussian, pack_certificates
from rs_plugin.certification.confidence_sequence import _WEIGHTS, _WIDTHS, mixture_lower
from rs_plugin.certification.stats import (
    ROUNDING_MARGIN,
    clopper_pearson_lower,
    clopper_pearson_upper,
    round_down,
    round_lower,
)

CASES = [
    (n, k, alpha)
    for n in (10, 37, 100, 1000)
    for k in sorted({n // 2 + 1, (3 * n) // 5, (9 * n) // 10, n - 1, n})
    for alpha in (0.05, 0.001, 2.0**-10, 1e-10)
]


def _tail(n: int, k: int, p: mpmath.mpf) -> mpmath.mpf:
    """P[Binomial(n, p) >= k], summed on the shorter side."""

    def term(j: int) -> mpmath.mpf:
        return mpmath.binomial(n, j) * p**j * (1 - p) ** (n - j)

    if n - k <= k:
        return mpmath.fsum(term(j) for j in range(k, n + 1))
    return 1 - mpmath.fsum(term(j) for j in range(k))


def _exact_lower(n: int, k: int, alpha: float, start: float) -> mpmath.mpf:
    with mpmath.workdps(40):
        if k == n:
            return mpmath.mpf(alpha) ** (mpmath.mpf(1) / n)
        p = mpmath.mpf(start)
        log_beta = mpmath.log(mpmath.beta(k, n - k + 1))
        for _ in range(4):  # d/dp P[X >= k] is the Beta(k, n - k + 1) density
            density = mpmath.exp((k - 1) * mpmath.log(p) + (n - k) * mpmath.log(1 - p) - log_beta)
            p = p - (_tail(n, k, p) - alpha) / density
        return p


def test_clopper_pearson_bounds_are_on_the_safe_side_of_the_exact_ones():
    over = 0
    for n, k, alpha in CASES:
        computed = float(clopper_pearson_lower(np.array([k]), n, alpha)[0])
        exact = _exact_lower(n, k, alpha, computed)
        with mpmath.workdps(40):
            assert computed <= exact, (n, k, alpha, computed, exact)
            # ... and close to it: the margin, not a cruder bound
            assert (exact - computed) / exact < 4 * ROUNDING_MARGIN, (n, k, alpha)
            # the unrounded quantile is above the exact bound on some cases (this is why)
            over += computed / (1 - ROUNDING_MARGIN) > exact
    assert over > 0
    # the upper bound: by symmetry, 1 − (the lower bound on the failures' probability)
    for n, k, alpha in CASES[:20]:
        upper = float(clopper_pearson_upper(np.array([n - k]), n, alpha)[0])
        exact = 1 - _exact_lower(n, k, alpha, 1 - upper) if k > 0 else 1
        with mpmath.workdps(40):
            assert upper >= exact, (n, k, alpha)


@pytest.mark.parametrize("sigma", [0.25, 1.0])
def test_gaussian_radii_are_at_most_sigma_times_the_exact_quantile_of_the_exact_bound(sigma):
    ks = [(n, k, alpha) for n, k, alpha in CASES if k > n // 2]
    for n, k, alpha in ks:
        p = clopper_pearson_lower(np.array([k]), n, alpha)
        votes = torch.tensor([[k, n - k]])
        record = pack_certificates(
            Gaussian(sigma), [0], torch.tensor([0]), torch.from_numpy(p), votes, votes, n, n,
            alpha, dim=4,
        )  # fmt: skip
        exact_p = _exact_lower(n, k, alpha, float(p[0]))
        with mpmath.workdps(40):
            exact = sigma * mpmath.sqrt(2) * mpmath.erfinv(2 * exact_p - 1) if exact_p > 0.5 else 0
            assert float(record.radius[0]) <= exact, (n, k, alpha)
            for norm, radius in record.radii.items():
                bound = exact if norm != "linf" else exact / 2  # ℓ∞ radius r/√d, d = 4
                assert float(radius[0]) <= bound, (norm, n, k, alpha)


def _exact_log_mixture(successes: int, failures: int, m: float) -> mpmath.mpf:
    """log M_t(m) of rs_plugin.certification.confidence_sequence, by quadrature in 30 digits:
    Σ_j w_j (1/h_j) ∫_0^{h_j} (1 + u(1 − m)/m)^S (1 − u)^F du, the integrand log-concave in u and
    integrated around its peak (no incomplete beta function, no log-beta)."""
    with mpmath.workdps(30):
        m = mpmath.mpf(m)
        r = (1 - m) / m

        def log_f(u: mpmath.mpf) -> mpmath.mpf:
            return successes * mpmath.log1p(u * r) + (
                failures * mpmath.log1p(-u) if failures else 0
            )

        total_r = (successes + failures) * r
        peak = (successes * r - failures) / total_r if successes * r > failures else mpmath.mpf(0)
        peak = min(peak, 1 - mpmath.mpf(10) ** -25)
        width = 1 / mpmath.sqrt(successes * (r / (1 + peak * r)) ** 2 + failures / (1 - peak) ** 2)
        top = log_f(peak)
        total = mpmath.mpf(0)
        for weight, h in zip(_WEIGHTS, _WIDTHS, strict=True):
            h = mpmath.mpf(float(h))
            cuts = {min(max(peak + k * width, 0), h) for k in (-40, -10, -3, 0, 3, 10, 40)}
            points = sorted(cuts | {mpmath.mpf(0), h})
            part = mpmath.quad(lambda u: mpmath.exp(log_f(u) - top), points)
            total += mpmath.mpf(float(weight)) * part / h
        return top + mpmath.log(total)


@pytest.mark.parametrize("trials", [100, 10**5, 10**7, 10**8, 10**9])
def test_anytime_lower_bounds_are_rejected_by_the_exact_mixture(trials):
    """L_t is a 1 − α bound because M_t(L_t) ≥ 1/α; in float64 the log-beta term is off by up to
    an ulp of ln Γ(t + 2), which let L_t pass the exact bound at t = 10⁷ … 10⁹ (0.99, 0.9 and
    0.999 of the votes) before the margin grew with it."""
    alpha = 0.001
    for share in (0.5005, 0.6, 0.9, 0.99, 0.999, 0.9999, 1.0):
        successes = round(trials * share)
        lower = float(mixture_lower(np.array([successes]), trials, alpha)[0])
        exact = _exact_log_mixture(successes, trials - successes, lower)
        with mpmath.workdps(30):
            assert exact >= mpmath.log(1 / mpmath.mpf(alpha)), (successes, trials, lower)


def _exact_log_beta_cdf(k: int, n: int, p: float) -> mpmath.mpf:
    """log P[Beta(k, n − k + 1) ≤ p] by quadrature in 40 digits over the left tail (the density is
    log-concave; the integral runs from 0 to p with nodes at multiples of its local scale)."""
    with mpmath.workdps(40):
        a, b, p = k, n - k + 1, mpmath.mpf(p)

        def log_f(t: mpmath.mpf) -> mpmath.mpf:
            return (a - 1) * mpmath.log(t) + (b - 1) * mpmath.log1p(-t)

        slope = (a - 1) / p - (b - 1) / (1 - p)
        width = min(1 / abs(slope), 1 / mpmath.sqrt((a - 1) / p**2 + (b - 1) / (1 - p) ** 2))
        nodes = {max(mpmath.mpf(0), p - c * width) for c in (0, 0.3, 1, 3, 10, 40, 200, 1000)}
        top = log_f(p)
        part = mpmath.quad(lambda t: mpmath.exp(log_f(t) - top), sorted(nodes | {0}))
        log_beta = mpmath.loggamma(a) + mpmath.loggamma(b) - mpmath.loggamma(a + b)
        return top + mpmath.log(part) - log_beta


@pytest.mark.parametrize("n", [10**5, 10**7, 10**9])
def test_clopper_pearson_lower_bounds_stay_below_the_exact_quantile_at_large_n(n):
    """P[Beta(k, n − k + 1) ≤ p_lower] ≤ α, so p_lower is at most the exact α-quantile; the
    unrounded quantile exceeds it at some of these (n, k): its log-CDF by up to 1.2e-10."""
    for alpha in (0.001, 1e-10):
        for share in (0.5005, 0.9, 0.999, 0.9999):
            k = round(n * share)
            lower = float(clopper_pearson_lower(np.array([k]), n, alpha)[0])
            with mpmath.workdps(40):
                assert _exact_log_beta_cdf(k, n, lower) <= mpmath.log(alpha), (n, k, alpha)


def test_round_lower_moves_values_of_either_sign_down():
    values = torch.tensor([-1e6, -2.5, -1e-300, 0.0, 1e-300, 3.0, 1e6], dtype=torch.float64)
    lowered = round_lower(values)
    assert torch.all(lowered <= values) and torch.all(lowered[values != 0] < values[values != 0])
    positive = values >= 0
    assert torch.equal(lowered[positive], round_down(values[positive]))
    assert float(round_lower(torch.tensor(-2.5, dtype=torch.float64))) == -2.5 * (
        1 + ROUNDING_MARGIN
    )
