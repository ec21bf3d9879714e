"""Isotropic Gaussian noise, the smoothing of Cohen et al. 2019 and the project's default."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from rs_plugin._validation import check_positive
from rs_plugin.smoothings.base import AdditiveNoise, sampled_scale

__all__ = ["Gaussian"]


class Gaussian(AdditiveNoise):
    """Isotropic Gaussian noise ε ~ N(0, σ² I), certifying an ℓ2 ball (Cohen et al. 2019).

    If the smoothed classifier g(x) = argmax_c P[f(x + ε) = c] has top-class probability
    p_A ≥ p_lower > 1/2, then g(x + δ) = g(x) for every ‖δ‖₂ < σ · Φ⁻¹(p_lower)
    (Cohen, Rosenfeld & Kolter 2019, Theorem 1 with the runner-up bounded by 1 − p_lower).
    The ℓ2 ball contains the ℓ1 ball of the same radius and the ℓ∞ ball of radius r/√d, which
    :meth:`radii` adds (Gaussian ℓ∞ certification "via the ℓ2 ball"). When p_lower is a
    1 − α lower confidence bound, the radius holds with probability at least 1 − α over the
    sampling.

    Args:
        sigma: standard deviation of the noise per coordinate, in input units (> 0).
    """

    name: ClassVar[str] = "gaussian"
    norm: ClassVar[str] = "l2"

    def __init__(self, sigma: float) -> None:
        self.sigma = check_positive("sigma", sigma)

    def noise_(self, out: torch.Tensor, generator: torch.Generator) -> None:
        # One draw scaled inside the generator's transform: σ·z, as σ * randn rounds it.
        out.normal_(0.0, self.sigma, generator=generator)

    def radius(self, p_lower: torch.Tensor, dim: int) -> torch.Tensor:
        p = p_lower.to(torch.float64)
        r = sampled_scale(self.sigma) * torch.special.ndtri(p)
        return torch.where(p > 0.5, r, torch.zeros_like(r))

    @property
    def noise_scale(self) -> float:
        return self.sigma

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma}
