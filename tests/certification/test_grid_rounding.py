"""The grid certifier's radius and rounding allowance against what it actually checks.

The radius must not exceed the parameters whose fine cells were checked (computed in float64,
the grid's own rounding included), and the allowance for the model's dtype must cover the gap
between an image transformed in float32 and the same image transformed in float64.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from rs_plugin.certification.grid import covered_range, rounding_allowance
from rs_plugin.smoothings.geometric import Rotation, Scaling

SETTINGS = [(Rotation, 30.0, 0.3), (Rotation, 10.0, 0.1), (Scaling, 0.25, 0.003)]


@pytest.mark.parametrize(("family", "limit", "step"), SETTINGS)
def test_the_grid_is_exactly_symmetric_about_an_exact_zero_inside_the_range(family, limit, step):
    grid = family(semantics="input", input_range=limit, grid_step=step).grid()
    assert float(grid[grid.shape[0] // 2]) == 0.0
    assert torch.equal(grid, -grid.flip(0))
    assert float(grid.abs().max()) <= limit and float(grid[-1]) == limit


@pytest.mark.parametrize(("family", "limit", "step"), SETTINGS)
def test_the_radius_never_exceeds_the_parameters_checked(family, limit, step):
    """All covered: R ≤ input_range (it was 30.00000000000007 for a range of 30); covered up to
    the third grid point right of 0: R ≤ that point, exactly."""
    smoothing = family(semantics="input", input_range=limit, grid_step=step)
    grid = smoothing.grid()
    k = grid.shape[0]
    x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0))
    classes = torch.zeros(k, dtype=torch.int64)
    radii = torch.full((k,), 100.0, dtype=torch.float64)
    full, _, _ = covered_range(smoothing, x, classes, radii)
    assert limit * (1 - 1e-9) <= full <= limit
    classes[k // 2 + 3 : k // 2 + 5] = 1  # another class at two grid points
    partial, _, _ = covered_range(smoothing, x, classes, radii)
    third = float(grid[k // 2 + 3])
    assert Fraction(partial) <= Fraction(third) and partial >= third * (1 - 1e-9)


@pytest.mark.parametrize("family", [Rotation, Scaling])
@pytest.mark.parametrize("side", [28, 224, 448])
def test_the_allowance_covers_float32_against_float64_transforms(family, side):
    """Random textures (the steepest interpolants) at the far end of the range: the float32
    image stays within the allowance of the float64 one (at 448 px the per-pixel allowance
    alone was 1.5 times too small)."""
    smoothing = family(semantics="input")
    x = torch.rand(3, side, side, generator=torch.Generator().manual_seed(side))
    allowance = rounding_allowance(x)
    for phi in (0.93 * smoothing.input_range, -0.61 * smoothing.input_range):
        parameter = torch.tensor([[phi]], dtype=torch.float64)
        exact = smoothing.apply(x.double()[None], parameter)
        computed = smoothing.apply(x[None], parameter.float()).double()
        gap = float(torch.linalg.vector_norm((computed - exact).flatten()))
        assert gap <= allowance / 2, (phi, gap, allowance)
