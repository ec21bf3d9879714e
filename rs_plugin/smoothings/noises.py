"""Additive noise families for ℓ1, ℓ2 and ℓ∞ (Yang et al. 2020, "Randomized smoothing of all
shapes and sizes"): Laplace, uniform on a cube, and the ℓ∞-exponential family with cube level sets.

Every family is parametrised by ``sigma``, the standard deviation of one noise coordinate, so
that families compare at equal noise power (Yang et al.'s convention). Each radius below is the
largest ‖δ‖ for which the worst-case probability of the top class after the shift δ stays above
1/2 given only p_A ≥ p_lower (the runner-up bounded by 1 − p_lower), i.e. the radius holds with
probability at least 1 − α over the sampling when p_lower is a 1 − α lower confidence bound.

Three facts do the work:

* Neyman–Pearson in one coordinate: for i.i.d. noise with symmetric CDF F, a shift by r along
  one axis keeps the worst-case set's probability above 1/2 iff r < F⁻¹(p_lower). For Laplace
  and the uniform cube the axis is the worst direction of the ℓ1 ball (Teng et al. 2020;
  Yang et al. 2020, Lee et al. 2019), giving their ℓ1 radii.
* Total variation (uniform noise): for any set A, P[x + δ + ε ∈ A] ≥ P[x + ε ∈ A] −
  TV(ε, ε + δ). For a uniform cube of half-width t, TV = 1 − ∏ᵢ (1 − |δᵢ|/2t)₊, which is exact
  for the cube (its likelihood ratio is 0, 1 or ∞).
* The differential method (Laplace and ExpInf, whose densities are Lipschitz): the radius is
  ∫_{1/2}^{p_lower} dp/Φ(p), Φ bounding how fast a set of mass p can lose mass per unit shift;
  :mod:`rs_plugin.smoothings.differential` derives Φ for each norm and integrates it.

Every family certifies ℓ1 and ℓ∞ (and Laplace and ExpInf ℓ2) directly;
:func:`~rs_plugin.smoothings.norms.complete_radii` adds the best conversion of the others.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from rs_plugin._validation import check_positive
from rs_plugin.smoothings.base import AdditiveNoise, sampled_scale
from rs_plugin.smoothings.differential import exp_inf_radii, laplace_radii

__all__ = ["ExpInf", "Laplace", "Uniform"]


def _above_half(p: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """``radius`` where p > 1/2, else 0 (also clears the NaNs some formulas give below 1/2)."""
    return torch.where(p > 0.5, radius, torch.zeros_like(radius)).clamp(min=0.0)


class Laplace(AdditiveNoise):
    """I.i.d. Laplace noise with scale b = σ/√2 (standard deviation σ), certifying ℓ1, ℓ2, ℓ∞.

    * ℓ1: ‖δ‖₁ < −b · log(2(1 − p_lower)) for p_lower > 1/2 (Teng et al. 2020, Theorem 1 with
      p_B = 1 − p_A; Yang et al. 2020, Table 1). Derivation: the worst set for a shift r·e_i is
      the half-space {ε_i > −a} with P = 1 − e^{−a/b}/2 = p_lower; it keeps probability above 1/2
      while r < a = −b log(2(1 − p_lower)) = F⁻¹(p_lower). Exact (tight along an axis).
    * ℓ∞: b ∫_{1/2}^{p} ds/T_d(1 − s), T_d the top-mass mean of a sum of d random signs: Yang et
      al.'s differential-method bound for ℓ∞, integrated numerically (their code ships the
      approximation bΦ⁻¹(p)/√d by default; the exact integral is slightly larger).
    * ℓ2: b ∫_{1/2}^{p} ds/min(√(s(1 − s)), √d(1 − s), T_d(1 − s)): the differential method with
      Bessel's inequality on the signs (≈ 2b(p − 1/2) near 1/2, the rate along one axis), at
      least as large as both conversions (ℓ1 radius/√d and the ℓ∞ radius).

    ℓ2 and ℓ∞ are integrated numerically on the safe side: never above the exact integral,
    below it by at most 5e-4 · b (see :mod:`rs_plugin.smoothings.differential`).

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
        # Inverse CDF of a uniform u on (−1/2, 1/2): sign(u) · (−b log(1 − 2|u|)). The uniform
        # draw can be exactly 0, i.e. u = −1/2, whose noise would be infinite: |u| stops one
        # rounding step below 1/2 (an atom of probability 2⁻²⁴ in float32 moved to b · 16.6).
        u = out.uniform_(generator=generator).sub_(0.5)
        sign = torch.sign(u)
        below_half = 0.5 - torch.finfo(out.dtype).eps / 2
        u.abs_().clamp_(max=below_half).mul_(-2.0).log1p_().mul_(sign).mul_(-self.scale)

    def radius(self, p_lower: torch.Tensor, dim: int) -> torch.Tensor:
        p = p_lower.to(torch.float64)
        return _above_half(p, -sampled_scale(self.scale) * torch.log(2.0 * (1.0 - p)))

    def certified_radii(self, p_lower: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
        p = p_lower.to(torch.float64)
        other = laplace_radii(p.cpu().numpy(), dim)
        radii = {"l1": self.radius(p_lower, dim)}
        for norm in ("l2", "linf"):
            scale = sampled_scale(self.scale)
            radii[norm] = _above_half(p, scale * torch.from_numpy(other[norm]).to(p.device))
        return radii

    @property
    def noise_scale(self) -> float:
        return self.sigma

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
        return _above_half(p, 2.0 * sampled_scale(self.half_width) * (p - 0.5))

    def certified_radii(self, p_lower: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
        p = p_lower.to(torch.float64)
        # 1 − (3/2 − p)^{1/d} as −expm1(log1p(1/2 − p)/d): 1/2 − p is exact for p in [1/2, 1],
        # and the direct form loses the digits of 1 − (a number within 1/d of 1), 12 % of the
        # radius at d = 3072 near p = 1/2 (above the true radius as often as below it).
        shrink = torch.log1p((0.5 - p).clamp(min=-0.5, max=0.0)) / dim
        linf = _above_half(p, 2.0 * sampled_scale(self.half_width) * -torch.expm1(shrink))
        return {"l1": self.radius(p_lower, dim), "linf": linf}

    @property
    def noise_scale(self) -> float:
        return self.sigma

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma}


class ExpInf(AdditiveNoise):
    """ℓ∞-exponential noise, density ∝ exp(−‖ε‖∞/λ): level sets are cubes; certifies ℓ1, ℓ2, ℓ∞.

    Yang et al. 2020 show the optimal smoothing distributions for a norm have the level sets of
    its Wulff crystal — the cube for ℓ1 — and that such distributions beat Laplace (whose level
    sets are ℓ1 balls) for ℓ1. This family is the exponential one with cube level sets. Writing
    exp(−s/λ) = ∫_s^∞ e^{−t/λ} dt/λ shows ε is a mixture of uniform cubes [−t, t]^d with
    half-width t ~ Gamma(d + 1, λ) (how it is sampled). Per coordinate Var = E[t²]/3 =
    λ²(d + 1)(d + 2)/3, so λ = σ√3/√((d + 1)(d + 2)) for standard deviation σ.

    Closed forms from the differential method (derived in
    :mod:`rs_plugin.smoothings.differential`), with m = 1 − p_lower:

    * ℓ1: 2λd(p_lower − 1/2) while m ≥ 1/(2d) (Yang et al. 2020), then
      (d − 1)λ + λ ln(1/(2dm)); exact along an axis.
    * ℓ∞: λ ln(1/(2m)) (Yang et al. 2020's ExpInf ℓ∞ radius); exact along (1, …, 1), where the
      problem reduces to one-dimensional Laplace noise of scale λ.
    * ℓ2: a sum of asinh terms, 2√d λ(p_lower − 1/2) near 1/2; above both conversions.

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
        return self.certified_radii(p_lower, dim)["l1"]

    def certified_radii(self, p_lower: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
        p = p_lower.to(torch.float64)
        radii = exp_inf_radii(p.cpu().numpy(), dim)
        scale = self.scale(dim)
        return {
            norm: _above_half(p, scale * torch.from_numpy(radii[norm]).to(p.device))
            for norm in ("l1", "l2", "linf")
        }

    @property
    def noise_scale(self) -> float:
        return self.sigma

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma}
