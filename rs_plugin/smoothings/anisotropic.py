"""Anisotropic Gaussian smoothing: per-coordinate σ, an ellipsoid certificate (ANCER).

Eiras et al. 2022 (ANCER) certify with ε ~ N(0, diag(σ²)). Whitening z ↦ z/σ turns it into
Cohen et al.'s isotropic case with σ = 1, so the smoothed classifier is constant on the ellipsoid
{δ : ‖δ/σ‖₂ < R} with R = Φ⁻¹(p_lower) (runner-up bounded by 1 − p_lower), with probability at
least 1 − α over the sampling. The per-input σ that makes the ellipsoid large is found by
:func:`rs_plugin.certification.sigma_search.optimise_anisotropic_sigma`; certifying with a σ
chosen per input needs the memory of :mod:`rs_plugin.certification.memory` to stay sound.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from rs_plugin._validation import RSValueError
from rs_plugin.smoothings.base import AdditiveNoise, sampled_scale
from rs_plugin.smoothings.norms import norm_rounding_error

__all__ = ["AnisotropicGaussian", "ellipsoid_summary"]


def ellipsoid_summary(whitened: torch.Tensor, sigma: torch.Tensor) -> dict[str, torch.Tensor]:
    """Radii and size of the ellipsoids {δ : ‖δ/σ‖₂ < R} for R = ``whitened`` (N,), σ (N, d).

    * ``l2`` and ``l1``: R · min σᵢ, the largest ball of either norm inside (a ball's farthest
      points along axis i must satisfy ρ/σᵢ ≤ R; the ℓ1 ball's extreme points are on the axes);
    * ``linf``: R / ‖1/σ‖₂, the largest cube inside (its corner (ρ, …, ρ) on the boundary);
    * ``proxy_radius``: R · (∏ σᵢ)^{1/d}, the radius of the ball of equal volume (ANCER's proxy);
    * ``log_volume``: log Vol = d log R + Σ log σᵢ + log(π^{d/2} / Γ(d/2 + 1)), NaN when R ≤ 0.
    """
    r = whitened.to(torch.float64).clamp(min=0.0)
    s = sigma.to(torch.float64)
    dim = s.shape[1]
    # ‖1/σ‖₂ rounded up by its rounding-error bound, so that the cube stays inside (computed
    # directly it was 1.3e-12 too large at d = 786 432, above the records' margin)
    norm_up = torch.linalg.vector_norm(1.0 / s, dim=1) * (1.0 + norm_rounding_error(dim))
    unit_ball = 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim + 1.0)
    log_volume = dim * torch.log(r) + torch.log(s).sum(dim=1) + unit_ball
    return {
        "l2": r * s.amin(dim=1),
        "l1": r * s.amin(dim=1),
        "linf": r / norm_up,
        "proxy_radius": r * torch.exp(torch.log(s).mean(dim=1)),
        "log_volume": torch.where(r > 0, log_volume, torch.full_like(r, math.nan)),
    }


class AnisotropicGaussian(AdditiveNoise):
    """Gaussian noise with per-coordinate standard deviations σ (a scalar or one per coordinate).

    Certificates (see :func:`ellipsoid_summary`): the ellipsoid ‖δ/σ‖₂ < Φ⁻¹(p_lower), reported
    as its isotropic ℓ2 radius min σᵢ · Φ⁻¹(p_lower) (the primary radius), the ℓ1 and ℓ∞ balls
    inside it, and, in ``Certificates.extra``, the proxy radius and log-volume. With a scalar σ
    it is :class:`~rs_plugin.Gaussian`.

    Args:
        sigma: a positive number, or a tensor of positive numbers shaped like one input (or
            flattened to its number of coordinates).
    """

    name: ClassVar[str] = "anisotropic_gaussian"
    norm: ClassVar[str] = "l2"

    def __init__(self, sigma: float | torch.Tensor) -> None:
        value = torch.as_tensor(sigma, dtype=torch.float64).detach().cpu()
        if value.numel() == 0 or not bool(torch.isfinite(value).all() and (value > 0).all()):
            raise RSValueError("sigma", "a positive number or a tensor of positive numbers", sigma)
        self.sigma = value

    def _vector(self, dim: int) -> torch.Tensor:
        if self.sigma.numel() == 1:
            return self.sigma.reshape(1).expand(dim)
        if self.sigma.numel() != dim:
            raise RSValueError(
                "sigma", f"one value or {dim} values (one per input coordinate)", self.sigma.shape
            )
        return self.sigma.reshape(dim)

    def noise_(self, out: torch.Tensor, generator: torch.Generator) -> None:
        shape = out.shape[1:]
        scale = self._vector(shape.numel()).to(device=out.device, dtype=out.dtype).view(shape)
        out.normal_(generator=generator).mul_(scale)

    def _summary(self, p_lower: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
        p = p_lower.to(torch.float64)
        whitened = torch.where(p > 0.5, torch.special.ndtri(p), torch.zeros_like(p))
        sigma = sampled_scale(self._vector(dim).to(device=p.device, dtype=torch.float64))
        return ellipsoid_summary(whitened, sigma.expand(p.shape[0], dim))

    def radius(self, p_lower: torch.Tensor, dim: int) -> torch.Tensor:
        return self._summary(p_lower, dim)["l2"]

    def certified_radii(self, p_lower: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
        summary = self._summary(p_lower, dim)
        return {norm: summary[norm] for norm in ("l2", "l1", "linf")}

    def certificate_extras(self, p_lower: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
        summary = self._summary(p_lower, dim)
        return {key: summary[key] for key in ("proxy_radius", "log_volume")}

    @property
    def noise_scale(self) -> float:
        """The largest per-coordinate σ."""
        return float(self.sigma.max())

    def config(self) -> dict[str, Any]:
        values = self.sigma.flatten()
        if values.numel() == 1:
            return {"name": self.name, "sigma": float(values[0])}
        return {
            "name": self.name,
            "sigma_min": float(values.min()),
            "sigma_max": float(values.max()),
            "sigma_geometric_mean": float(torch.exp(torch.log(values).mean())),
        }
