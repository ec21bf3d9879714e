"""Cast shadows as a semantic smoothing: a soft-edged half-plane that darkens part of the image.

The shadow model. In centred pixel coordinates p = (u, v) (u to the right, v downwards, origin at
the image centre) a shadow of direction θ degrees (counter-clockwise as displayed: θ = 0 shadows
the right side, θ = 90 the top), edge offset o pixels from the centre along that direction,
softness w pixels and darkness s (log-transmission) multiplies every channel by

    e^{−s · m(p)},   m(p) = 1 / (1 + e^{−(⟨n, p⟩ − o) / w}),   n = (cos θ, −sin θ),

so the shadowed side lets e^{−s} of the light through, the lit side is unchanged and the edge is a
logistic ramp about w pixels wide. s < 0 is a bright patch (the noise draws both signs).

Certificates. Gaussian or uniform noise is added to the smoothed parameters, each in its own unit
(darkness in log-transmission, angle in degrees, offset in pixels):

* darkness alone (``sigma_angle = sigma_offset = 0``, nominal darkness 0): the geometry is fixed,
  so e^{−s₁ m} · e^{−s₂ m} = e^{−(s₁+s₂) m} and T(T(x, a), b) = T(x, a + b) exactly. The
  parametric certificate ‖δ‖ < r (g(x, δ) = g(x, 0)) is then also an input-domain statement:
  for every image z = x · e^{−δ m} with |δ| < r, the smoothed classifier evaluated on z (what
  CERTIFY and PREDICT compute when z is handed to them) returns the class certified at x, with
  probability ≥ 1 − α over the sampling. In transmission terms: any shadow of this geometry
  letting through a fraction in (e^{−r}, e^{r}) of the light. Records say ``parametric=input``.
* one geometric parameter (angle or offset, with a nominal darkness > 0): the parametric
  certificate (DeformRS, Alfarra et al. 2022) in that parameter's unit, |δ| < r.
* several parameters: the joint certificate in σ units, Σ_j δ_j²/σ_j² < ρ², as
  :class:`~rs_plugin.smoothings.semantic.Compose` states it; records add each parameter's radius
  alone (σ_j ρ, key ``shadow.<parameter>``) and the box all may fill at once (``...:box``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from rs_plugin._validation import RSValueError, _is_real, check_positive
from rs_plugin.smoothings.norms import complete_radii
from rs_plugin.smoothings.semantic import (
    FLOAT32_SCALE_SHRINK,
    NOISES,
    SEMANTICS,
    SemanticSmoothing,
    _parameter_noise,
    check_choice,
)
from rs_plugin.smoothings.transforms import check_image_batch

__all__ = ["Shadow", "shadow_mask"]

UNITS = {
    "darkness": "s, log-transmission",
    "angle": "degrees",
    "offset": "pixels",
}


def _check_real(name: str, value: Any, minimum: float = -math.inf) -> float:
    if not _is_real(value) or not math.isfinite(float(value)) or float(value) < minimum:
        accepted = "a finite real number" + (f" >= {minimum:g}" if minimum > -math.inf else "")
        raise RSValueError(name, accepted, value)
    return float(value)


def shadow_mask(
    height: int,
    width: int,
    angle: torch.Tensor,
    offset: torch.Tensor,
    softness: float,
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """(B, 1, H, W) soft half-plane masks m(p) = logistic((⟨n, p⟩ − o) / w) for angles θ (B,)
    in degrees and offsets o (B,) in pixels, n = (cos θ, −sin θ) in (u right, v down)."""
    u = torch.arange(width, dtype=dtype, device=device) - (width - 1) / 2
    v = torch.arange(height, dtype=dtype, device=device) - (height - 1) / 2
    theta = torch.deg2rad(angle.to(dtype))
    along = (
        torch.cos(theta)[:, None, None] * u[None, None, :]
        - torch.sin(theta)[:, None, None] * v[None, :, None]
    )
    return torch.sigmoid((along - offset.to(dtype)[:, None, None]) / softness)[:, None]


class Shadow(SemanticSmoothing):
    """A cast shadow x · e^{−s m(p)} with noise on its darkness and, optionally, its geometry.

    Args:
        sigma_darkness: standard deviation of the darkness noise (log-transmission units; no
            default: one of the three standard deviations must be > 0); 0 keeps the
            darkness at ``darkness`` (then ``sigma_angle`` or ``sigma_offset`` must be > 0).
        sigma_angle: standard deviation of the angle noise in degrees (0: fixed angle).
        sigma_offset: standard deviation of the edge-offset noise in pixels (0: fixed offset).
        angle, offset, darkness: the nominal shadow (degrees, pixels, log-transmission) the
            parameters are measured from; darkness 0 (default) is the unshadowed image.
        softness: width w of the logistic edge in pixels (> 0).
        noise: ``"gaussian"`` or ``"uniform"`` (half-width σ√3), for every parameter.
        semantics: ``"parametric"``; ``"input"`` is accepted where it coincides (darkness alone
            around darkness 0, an exactly composing family).

    Parameters are ordered darkness, angle, offset (those with σ > 0).
    """

    name: ClassVar[str] = "shadow"
    scale_keyword: ClassVar[str] = "sigma_darkness"

    def __init__(
        self,
        sigma_darkness: float = 0.0,
        *,
        sigma_angle: float = 0.0,
        sigma_offset: float = 0.0,
        angle: float = 0.0,
        offset: float = 0.0,
        darkness: float = 0.0,
        softness: float = 2.0,
        noise: str = "gaussian",
        semantics: str = "parametric",
    ) -> None:
        self.sigma = _check_real("sigma_darkness", sigma_darkness, 0.0)
        self.sigma_angle = _check_real("sigma_angle", sigma_angle, 0.0)
        self.sigma_offset = _check_real("sigma_offset", sigma_offset, 0.0)
        self.angle = _check_real("angle", angle)
        self.offset = _check_real("offset", offset)
        self.darkness = _check_real("darkness", darkness)
        self.softness = check_positive("softness", softness)
        self.noise = check_choice("noise", noise, NOISES)
        self.semantics = check_choice("semantics", semantics, SEMANTICS)
        sigmas = {
            "darkness": self.sigma,
            "angle": self.sigma_angle,
            "offset": self.sigma_offset,
        }
        self.parameters = tuple(p for p, s in sigmas.items() if s > 0)
        if not self.parameters:
            raise RSValueError(
                "sigma_darkness",
                "sigma_darkness, sigma_angle or sigma_offset > 0 (something to smooth)",
                sigma_darkness,
            )
        self.sigmas = tuple(sigmas[p] for p in self.parameters)
        if self.semantics == "input" and self.composition != "exact":
            raise RSValueError(
                "semantics",
                "'parametric' for a shadow whose geometry varies or whose nominal darkness is "
                "not 0 (only darkness around 0 composes exactly)",
                semantics,
            )

    @property
    def composition(self) -> str:  # type: ignore[override]
        return "exact" if self.parameters == ("darkness",) and self.darkness == 0 else "none"

    @property
    def norm(self) -> str:  # type: ignore[override]
        if len(self.parameters) == 1:
            p = self.parameters[0]
            return "shadow" if p == "darkness" else f"shadow.{p}"
        return "shadow:l2"

    @property
    def units(self) -> str:  # type: ignore[override]
        if len(self.parameters) == 1:
            return UNITS[self.parameters[0]]
        return "σ units (each parameter's change over its sigma)"

    @property
    def radius_scale(self) -> float:
        """The noise scale of the radius unit: the one parameter's σ, or 1 in σ units."""
        return self.sigmas[0] if self.num_parameters == 1 else 1.0

    @property
    def sigma_units(self) -> bool:
        """True when radii are in σ units (several parameters), not in a parameter's unit."""
        return self.num_parameters > 1

    @property
    def parameter_sigmas(self) -> tuple[float, ...]:
        """The smoothed parameters' σ (darkness, angle, offset order)."""
        return self.sigmas

    @property
    def num_parameters(self) -> int:
        return len(self.parameters)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """``"shadow.darkness"``, ``"shadow.angle"``, ``"shadow.offset"`` (those smoothed); the
        radius's own key (:attr:`norm`) when one parameter is smoothed."""
        if len(self.parameters) == 1:
            return (self.norm,)
        return tuple(f"shadow.{p}" for p in self.parameters)

    def sample_parameters(
        self, batch: int, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """(batch, k) parameters, column j with standard deviation ``sigmas[j]``."""
        shape = (batch, self.num_parameters)
        scale = torch.tensor(self.sigmas, dtype=dtype, device=device)
        if self.noise == "gaussian":
            return scale * torch.randn(shape, generator=generator, device=device, dtype=dtype)
        u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
        return scale * math.sqrt(3.0) * (2.0 * u - 1.0)

    def _column(self, params: torch.Tensor, name: str, nominal: float) -> torch.Tensor:
        if name in self.parameters:
            return nominal + params[:, self.parameters.index(name)]
        return params.new_full((params.shape[0],), nominal)

    def transmission(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) factors e^{−s m(p)} for the parameters (B, k)."""
        p = params.to(x.dtype)
        mask = shadow_mask(
            x.shape[-2],
            x.shape[-1],
            self._column(p, "angle", self.angle),
            self._column(p, "offset", self.offset),
            self.softness,
            dtype=x.dtype,
            device=x.device,
        )
        darkness = self._column(p, "darkness", self.darkness)
        return torch.exp(-darkness[:, None, None, None] * mask)

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        check_image_batch(x)
        return x * self.transmission(x, params)

    def apply_(self, out: torch.Tensor, x: torch.Tensor, params: torch.Tensor) -> None:
        torch.mul(x, self.transmission(out, params), out=out)

    def _parameter_radii(self, p_lower: torch.Tensor) -> dict[str, torch.Tensor]:
        k = self.num_parameters
        # Sampled as float32 σ_j (times float32 √3 for uniform noise): see FLOAT32_SCALE_SHRINK.
        if k == 1:
            noise = _parameter_noise(self.noise, self.sigmas[0])
            radius = complete_radii(noise.certified_radii(p_lower, 1), 1)["l2"]
            return {self.norm: radius * FLOAT32_SCALE_SHRINK}
        unit = complete_radii(_parameter_noise(self.noise, 1.0).certified_radii(p_lower, k), k)
        return {f"shadow:{norm}": r * FLOAT32_SCALE_SHRINK for norm, r in unit.items()}

    def certificate_extras(self, p_lower: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
        if self.num_parameters == 1:
            return {}
        unit = self._parameter_radii(p_lower)
        extras: dict[str, torch.Tensor] = {}
        for p, s in zip(self.parameters, self.sigmas, strict=True):
            extras[f"shadow.{p}"] = s * unit["shadow:l2"]
            extras[f"shadow.{p}:box"] = s * unit["shadow:linf"]
        return extras

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "sigma_angle": self.sigma_angle,
            "sigma_offset": self.sigma_offset,
            "angle": self.angle,
            "offset": self.offset,
            "darkness": self.darkness,
            "softness": self.softness,
        }

    def __repr__(self) -> str:
        return (
            f"Shadow(sigma_darkness={self.sigma!r}, sigma_angle={self.sigma_angle!r}, "
            f"sigma_offset={self.sigma_offset!r}, angle={self.angle!r}, offset={self.offset!r}, "
            f"darkness={self.darkness!r}, softness={self.softness!r}, noise={self.noise!r})"
        )
