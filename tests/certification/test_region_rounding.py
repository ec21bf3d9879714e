"""The memory's regions and the ellipsoid's radii are never above the exact ones in float64.

Near a region's boundary the memory's radii are small differences of large numbers (R minus a
whitened distance; a distance minus another region's reach); the exact values here come from
the same points in 60-digit arithmetic (mpmath). Points within 1e-15 … 1e-6 of a boundary are
where computing the differences directly went wrong (by up to 16 % of the radius).
"""

from __future__ import annotations

import random

import mpmath
import pytest
import torch

from rs_plugin.certification.regions import RegionStore
from rs_plugin.smoothings.anisotropic import ellipsoid_summary

DIM = 3072
TRIALS = 40


def _norm(values: list[float]) -> mpmath.mpf:
    return mpmath.sqrt(mpmath.fsum(mpmath.mpf(v) ** 2 for v in values))


def _near_boundary(rng: random.Random, center: torch.Tensor, reach: float) -> torch.Tensor:
    """A point at distance reach·(1 ± 10^-u) from ``center``, u uniform in [6, 15]."""
    direction = torch.randn(
        DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(rng.randrange(2**31))
    )
    direction /= direction.norm()
    side = rng.choice((-1.0, 1.0))
    return center + direction * reach * (1.0 + side * 10 ** -rng.uniform(6, 15))


def test_a_lookup_near_the_boundary_gives_at_most_the_exact_inner_radius():
    rng = random.Random(0)
    found = 0
    with mpmath.workdps(60):
        for _ in range(TRIALS):
            center = torch.rand(
                DIM,
                dtype=torch.float64,
                generator=torch.Generator().manual_seed(rng.randrange(2**31)),
            )
            sigma, whitened = 0.25, 2.0 + rng.random()
            store = RegionStore()
            store.add(center, torch.full((DIM,), sigma, dtype=torch.float64), whitened, 3)
            point = _near_boundary(rng, center, whitened * sigma)
            hit = store.lookup(point)
            offset = [
                mpmath.mpf(p) - mpmath.mpf(c)
                for p, c in zip(point.tolist(), center.tolist(), strict=True)
            ]
            exact = (mpmath.mpf(whitened) - _norm(offset) / mpmath.mpf(sigma)) * mpmath.mpf(sigma)
            if hit is None:
                continue
            found += 1
            assert hit[0] == 3 and exact > 0 and hit[1] <= exact, (hit, exact)
    assert found >= TRIALS // 4  # the inside points are found


def test_a_new_region_is_shrunk_to_at_most_the_exact_gap_to_another_class():
    rng = random.Random(1)
    with mpmath.workdps(60):
        for _ in range(TRIALS):
            other = torch.rand(
                DIM,
                dtype=torch.float64,
                generator=torch.Generator().manual_seed(rng.randrange(2**31)),
            )
            other_sigma, other_whitened = 0.25, 2.0 + rng.random()
            store = RegionStore()
            store.add(
                other, torch.full((DIM,), other_sigma, dtype=torch.float64), other_whitened, 3
            )
            point = _near_boundary(rng, other, other_whitened * other_sigma)
            own_sigma = 0.5
            kept = store.shrink(point, torch.full((DIM,), own_sigma, dtype=torch.float64), 3.0, 1)
            offset = [
                mpmath.mpf(a) - mpmath.mpf(b)
                for a, b in zip(other.tolist(), point.tolist(), strict=True)
            ]
            gap = _norm(offset) - mpmath.mpf(other_whitened) * mpmath.mpf(other_sigma)
            exact = min(max(gap / mpmath.mpf(own_sigma), mpmath.mpf(0)), mpmath.mpf(3))
            assert kept <= exact, (kept, exact)


@pytest.mark.parametrize("dim", [150_528, 786_432])
@pytest.mark.parametrize("sigma", [0.12, 0.3])
def test_the_largest_cube_inside_an_ellipsoid_is_at_most_the_exact_one(dim, sigma):
    """R/‖1/σ‖₂ over d equal σ is Rσ/√d; float64's sum of d squares erred by 1.3e-12 of it
    at d = 786 432, above the records' rounding margin, until the norm was rounded up."""
    whitened = torch.tensor([2.326347874040841, 0.5], dtype=torch.float64)
    summary = ellipsoid_summary(whitened, torch.full((2, dim), sigma, dtype=torch.float64))
    with mpmath.workdps(40):
        for i, r in enumerate(whitened.tolist()):
            exact = mpmath.mpf(r) * mpmath.mpf(sigma) / mpmath.sqrt(dim)
            assert float(summary["linf"][i]) <= exact
            assert float(summary["linf"][i]) >= exact * (1 - 1e-9)  # and still tight
