"""The differential-method radii (Laplace ℓ2/ℓ∞, ExpInf ℓ1/ℓ2/ℓ∞) against the worst case itself.

For a shift δ and a top-class set of mass ρ, Neyman–Pearson says the smallest mass left after
the shift is E_q[ℓ · 1{ℓ ≤ κ}] with ℓ(z) = q(z − δ)/q(z) and κ the ρ-quantile of ℓ. Here it is
estimated by Monte Carlo from noise drawn with numpy (not the package's samplers) and the
densities written out, independently of how the radii are computed. A sound radius keeps that
mass at or above 1/2 in every direction; where the bound is tight, a radius 25% too large must
push it below 1/2 (so the check can fail).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from rs_plugin._registry import load_smoothing

DIM = 16
SIGMA = 0.5
SAMPLES = 100_000
ORDER = {"l1": 1, "l2": 2, "linf": math.inf}
DIRECTIONS = {
    "axis": np.eye(DIM)[0],
    "two axes": np.r_[1.0, 1.0, np.zeros(DIM - 2)],
    "diagonal": np.ones(DIM),
    "random": np.random.default_rng(0).standard_normal(DIM),
}


@functools.cache
def _noise(name: str) -> tuple[np.ndarray, float]:
    """(samples, scale) of the family: Laplace with b = σ/√2; ExpInf as a uniform cube whose
    half-width is Gamma(d + 1, λ), λ = σ√(3/((d + 1)(d + 2)))."""
    rng = np.random.default_rng(7)
    if name == "laplace":
        scale = SIGMA / math.sqrt(2)
        return rng.laplace(scale=scale, size=(SAMPLES, DIM)), scale
    scale = SIGMA * math.sqrt(3 / ((DIM + 1) * (DIM + 2)))
    half_width = rng.gamma(DIM + 1, scale, size=(SAMPLES, 1))
    return half_width * (2 * rng.random((SAMPLES, DIM)) - 1), scale


def _log_density(name: str, z: np.ndarray, scale: float) -> np.ndarray:
    norm = np.abs(z).sum(axis=1) if name == "laplace" else np.abs(z).max(axis=1)
    return -norm / scale


def _worst_mass(name: str, delta: np.ndarray, rho: float) -> tuple[float, float]:
    """(estimate, standard error) of the least mass left after the shift ``delta``."""
    z, scale = _noise(name)
    log_ratio = _log_density(name, z - delta, scale) - _log_density(name, z, scale)
    kept = round(rho * SAMPLES)
    contribution = np.zeros(SAMPLES)
    contribution[:kept] = np.exp(np.partition(log_ratio, kept)[:kept])
    return float(contribution.mean()), float(contribution.std() / math.sqrt(SAMPLES))


def _radius(name: str, norm: str, rho: float) -> float:
    smoothing = load_smoothing(name, sigma=SIGMA)
    p = torch.tensor([rho], dtype=torch.float64)
    return float(smoothing.certified_radii(p, DIM)[norm][0])


def _shift(direction: str, norm: str, radius: float) -> np.ndarray:
    v = DIRECTIONS[direction]
    return radius * v / np.linalg.norm(v, ord=ORDER[norm])


BOUNDS = [("laplace", "l2"), ("laplace", "linf"), ("exp_inf", "l1"), ("exp_inf", "l2")]
BOUNDS.append(("exp_inf", "linf"))


@pytest.mark.parametrize(("name", "norm"), BOUNDS)
def test_worst_case_set_keeps_half_its_mass_at_the_radius(name, norm):
    for rho in (0.6, 0.99):
        radius = _radius(name, norm, rho)
        assert radius > 0
        for direction in DIRECTIONS:
            mass, error = _worst_mass(name, _shift(direction, norm, radius), rho)
            # 6 standard errors: the quantile is estimated from the same samples.
            assert mass >= 0.5 - 6 * error, (direction, rho, mass, error)


@pytest.mark.parametrize(
    ("name", "norm", "direction", "rho"),
    [
        ("laplace", "l2", "axis", 0.6),  # rate 1/2 at p = 1/2, the axis's
        ("laplace", "linf", "diagonal", 0.6),
        ("exp_inf", "l1", "axis", 0.99),  # beyond 1 − 1/(2d): the log branch, exact on an axis
        ("exp_inf", "l2", "diagonal", 0.6),  # rate 1/(2√d) at p = 1/2, the diagonal's
        ("exp_inf", "linf", "diagonal", 0.99),  # exact: one-dimensional Laplace of the mid-range
    ],
)
def test_a_radius_a_quarter_too_large_is_caught_where_the_bound_is_tight(
    name, norm, direction, rho
):
    radius = _radius(name, norm, rho)
    mass, error = _worst_mass(name, _shift(direction, norm, 1.25 * radius), rho)
    assert mass < 0.5 - 6 * error, (mass, error)
    mass, error = _worst_mass(name, _shift(direction, norm, radius), rho)
    assert abs(mass - 0.5) < 0.03, mass  # and the radius itself is within a few % of tight
