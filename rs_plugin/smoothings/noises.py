"""Additive noise families for ℓ1 and ℓ∞ (Yang et al. 2020, "Randomized smoothing of all shapes
and sizes"): Laplace, uniform on a cube, and the ℓ∞-exponential family with cube level sets.

Every family is parametrised by ``sigma``, the standard deviation of one noise coordinate, so
that families compare at equal noise power (Yang et al.'s convention). Each radius below is the
largest ‖δ‖ for which the worst-case probability of the top class after the shift δ stays above
1/2 given only p_A ≥ p_lower (the runner-up bounded by 1 − p_lower), i.e. the radius holds with
probability at least 1 − α over the sampling when p_lower is a 1 − α lower confidence bound.

Two facts do the work:

* Neyman–Pearson in one coordinate: for i.i.d. noise with symmetric CDF F, a shift by r along
  one axis keeps the worst-case set's probability above 1/2 iff r < F⁻¹(p_lower). For Laplace
  and the uniform cube the axis is the worst direction of the ℓ1 ball (Teng et al. 2020;
  Yang et al. 2020, Lee et al. 2019), giving their ℓ1 radii.
* Total variation: for any set A, P[x + δ + ε ∈ A] ≥ P[x + ε ∈ A] − TV(ε, ε + δ). For a uniform
  cube of half-width t, TV = 1 − ∏ᵢ (1 − |δᵢ|/2t)₊ ≤ ‖δ‖₁/2t; a mixture of cubes has at most
  the mixture of the cubes' TVs. The certificate is the largest ‖δ‖ with TV < p_lower − 1/2.
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import stats

from rs_plugin._validation import check_positive
from rs_plugin.smoothings.base import AdditiveNoise

__all__ = ["ExpInf", "Laplace", "Uniform"]


def _above_half(p: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """``radius`` where p > 1/2, else 0 (also clears the NaNs some formulas give below 1/2)."""
    return torch.where(p > 0.5, radius, torch.zeros_like(radius)).clamp(min=0.0)


class Laplace(AdditiveNoise):
    """I.i.d. Laplace noise with scale b = σ/√2 (standard deviation σ), certifying ℓ1.

    Radius ‖δ‖₁ < −b · log(2(1 − p_lower)) for p_lower > 1/2 (Teng et al. 2020, Theorem 1 with
    p_B = 1 − p_A; Yang et al. 2020, Table 1). Derivation: the worst set for a shift r·e_i is the
    half-space {ε_i > −a} with P = 1 − e^{−a/b}/2 = p_lower; it keeps probability above 1/2
    while r < a = −b log(2(1 − p_lower)) = F⁻¹(p_lower).

    Args:
        sigma: per-coordinate standard deviation (> 0), in input units.
    """

    name: ClassVar[str] = "laplace"
    norm: ClassVar[str] = "l1"

    def __init__(self, sigma: float) -> None:
        self.sigma = check_positive("sigma", sigma)

    @property
    def scale(self) -> float:
        """The Laplace scale b = σ/√2."""
        return self.sigma / math.sqrt(2.0)

    def noise_(self, out: torch.Tensor, generator: torch.Generator) -> None:
        # Inverse CDF of a uniform u on (−1/2, 1/2): sign(u) · (−b log(1 − 2|u|)).
        u = out.uniform_(generator=generator).sub_(0.5)
        sign = torch.sign(u)
        u.abs_().mul_(-2.0).log1p_().mul_(sign).mul_(-self.scale)

    def radius(self, p_lower: torch.Tensor, dim: int) -> torch.Tensor:
        p = p_lower.to(torch.float64)
        return _above_half(p, -self.scale * torch.log(2.0 * (1.0 - p)))

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma}


class Uniform(AdditiveNoise):
    """Uniform noise on the cube [−λ, λ]^d with λ = σ√3, certifying ℓ1 and ℓ∞ directly.

    With TV(ε, ε + δ) = 1 − ∏ᵢ (1 − |δᵢ|/2λ)₊ (the cubes' non-overlap):

    * ℓ1: TV ≤ ‖δ‖₁/2λ, so ‖δ‖₁ < 2λ(p_lower − 1/2) (Lee et al. 2019; Yang et al. 2020,
      who show this beats Laplace at equal σ for ℓ1 on CIFAR-10 and ImageNet); tight for a shift
      along one axis.
    * ℓ∞: the worst δ in the ℓ∞ ball moves every coordinate by r, TV = 1 − (1 − r/2λ)^d, so
      ‖δ‖∞ < 2λ(1 − (3/2 − p_lower)^{1/d}) — better than the ℓ1 radius divided by d.

    Args:
        sigma: per-coordinate standard deviation (> 0), in input units.
    """

    name: ClassVar[str] = "uniform"
    norm: ClassVar[str] = "l1"

    def __init__(self, sigma: float) -> None:
        self.sigma = check_positive("sigma", sigma)

    @property
    def half_width(self) -> float:
        """λ = σ√3, the half-width of the cube."""
        return self.sigma * math.sqrt(3.0)

    def noise_(self, out: torch.Tensor, generator: torch.Generator) -> None:
        out.uniform_(generator=generator).mul_(2.0).sub_(1.0).mul_(self.half_width)

    def radius(self, p_lower: torch.Tensor, dim: int) -> torch.Tensor:
        p = p_lower.to(torch.float64)
        return _above_half(p, 2.0 * self.half_width * (p - 0.5))

    def certified_radii(self, p_lower: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
        p = p_lower.to(torch.float64)
        shrink = torch.pow((1.5 - p).clamp(min=0.5, max=1.0), 1.0 / dim)
        linf = _above_half(p, 2.0 * self.half_width * (1.0 - shrink))
        return {"l1": self.radius(p_lower, dim), "linf": linf}

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma}


# Quantiles of the cube half-width and grid of ℓ∞ radii for ExpInf's numerical ℓ∞ radius.
_QUANTILES = 2048
_GRID_STEP = 0.005  # in units of λ
_GRID_MAX = 20.0


@functools.lru_cache(maxsize=16)
def _exp_inf_linf_table(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(radius grid / λ, upper bound on TV at each radius) for ExpInf in dimension ``dim``.

    TV(r) = E_t[h_r(t)] with h_r(t) = 1 − (1 − r/2t)₊^d decreasing in t, t ~ Gamma(d + 1, λ).
    Splitting t at its K-quantiles q_0 = 0 < q_1 < … < q_{K−1} (each slice of mass 1/K) and
    taking h at each slice's left end gives an upper bound, at most 1/K above the exact value.
    """
    edges = stats.gamma.ppf(np.arange(1, _QUANTILES) / _QUANTILES, dim + 1.0)
    grid = np.arange(0.0, _GRID_MAX + _GRID_STEP / 2, _GRID_STEP)
    tv_upper = np.empty_like(grid)
    for start in range(0, grid.size, 256):  # bounded memory: 256 radii at a time
        rows = grid[start : start + 256, None]
        kept = np.clip(1.0 - rows / (2.0 * edges[None, :]), 0.0, 1.0) ** dim
        # The first slice [0, q_1) is bounded by h(0) = 1.
        tv_upper[start : start + 256] = (1.0 + np.sum(1.0 - kept, axis=1)) / _QUANTILES
    return grid, tv_upper


class ExpInf(AdditiveNoise):
    """ℓ∞-exponential noise, density ∝ exp(−‖ε‖∞/λ): level sets are cubes, certifying ℓ1 and ℓ∞.

    Yang et al. 2020 show the optimal smoothing distributions for a norm have the level sets of
    its Wulff crystal — the cube for ℓ1 — and that such distributions beat Laplace (whose level
    sets are ℓ1 balls) for ℓ1. This family is the exponential one with cube level sets. Writing
    exp(−s/λ) = ∫_s^∞ e^{−t/λ} dt/λ shows ε is a mixture of uniform cubes [−t, t]^d with
    half-width t ~ Gamma(d + 1, λ) (how it is sampled). Per coordinate Var = E[t²]/3 =
    λ²(d + 1)(d + 2)/3, so λ = σ√3/√((d + 1)(d + 2)) for standard deviation σ.

    * ℓ1: TV ≤ E[‖δ‖₁/2t] = ‖δ‖₁/(2λd), so ‖δ‖₁ < 2λd(p_lower − 1/2) (Yang et al. 2020).
    * ℓ∞: TV ≤ E_t[1 − (1 − r/2t)₊^d] with no closed form; computed numerically as an upper
      bound on TV (quantile slices, see ``_exp_inf_linf_table``) on a grid of radii, taking the
      largest grid radius whose bound stays below p_lower − 1/2. Tolerance, on the safe side:
      the result is at most one grid step (0.005 λ) below the exact radius of a TV bound
      tightened by at most 1/2048 in probability; it is never above the exact value.

    Args:
        sigma: per-coordinate standard deviation (> 0), in input units.
    """

    name: ClassVar[str] = "exp_inf"
    norm: ClassVar[str] = "l1"

    def __init__(self, sigma: float) -> None:
        self.sigma = check_positive("sigma", sigma)

    def scale(self, dim: int) -> float:
        """λ for inputs of ``dim`` coordinates."""
        return self.sigma * math.sqrt(3.0 / ((dim + 1.0) * (dim + 2.0)))

    def noise_(self, out: torch.Tensor, generator: torch.Generator) -> None:
        flat = out.view(out.shape[0], -1)
        dim = flat.shape[1]
        # Gamma(d + 1, λ) as a sum of d + 1 standard exponentials (−log of uniforms).
        u = torch.rand(
            (flat.shape[0], dim + 1), generator=generator, device=out.device, dtype=torch.float64
        )
        half_width = -self.scale(dim) * torch.log1p(-u).sum(dim=1, keepdim=True)
        flat.uniform_(generator=generator).mul_(2.0).sub_(1.0).mul_(half_width.to(out.dtype))

    def radius(self, p_lower: torch.Tensor, dim: int) -> torch.Tensor:
        p = p_lower.to(torch.float64)
        return _above_half(p, 2.0 * self.scale(dim) * dim * (p - 0.5))

    def certified_radii(self, p_lower: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
        grid, tv_upper = _exp_inf_linf_table(dim)
        budget = (p_lower.to(torch.float64) - 0.5).cpu().numpy()
        # Largest grid radius whose TV bound is <= the budget (tv_upper is non-decreasing).
        index = np.searchsorted(tv_upper, budget, side="right") - 1
        linf = np.where(index >= 0, grid[np.clip(index, 0, None)], 0.0) * self.scale(dim)
        linf_t = torch.from_numpy(linf).to(p_lower.device)
        return {
            "l1": self.radius(p_lower, dim),
            "linf": _above_half(p_lower.to(torch.float64), linf_t),
        }

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma}
