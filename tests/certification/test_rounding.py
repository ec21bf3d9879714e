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
from rs_plugin.certification.stats import (
    ROUNDING_MARGIN,
    clopper_pearson_lower,
    clopper_pearson_upper,
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
