"""An rs-plugin smoothing shipped by a third-party distribution (see pyproject.toml).

A plugin implements the two hooks of :class:`rs_plugin.Smoothing` and nothing else: batching,
seeding, counting, statistics and abstention come from the engine. The distribution also ships
a certifier, :mod:`rs_plugin_example.certifier`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from rs_plugin import RSValueError, Smoothing

__all__ = ["ExampleUniform"]


class ExampleUniform(Smoothing):
    """Uniform noise on the cube [−λ, λ]^d with λ = σ√3 (per-coordinate standard deviation σ).

    Certifies the ℓ1 ball of radius 2λ(p_lower − 1/2) (Lee et al. 2019, Yang et al. 2020):
    moving the cube by δ changes the probability of any set by at most the volume of the
    symmetric difference of the two cubes, which is at most ‖δ‖₁ / (2λ) of the cube's volume,
    so the top class keeps probability above 1/2 while ‖δ‖₁ < 2λ(p_lower − 1/2).
    """

    name: ClassVar[str] = "example_uniform"
    norm: ClassVar[str] = "l1"

    def __init__(self, sigma: float) -> None:
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise RSValueError("sigma", "a finite number > 0", sigma)
        self.sigma = float(sigma)

    @property
    def half_width(self) -> float:
        return self.sigma * math.sqrt(3.0)

    @property
    def noise_scale(self) -> float:
        return self.sigma

    def perturb(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + self.half_width * (2.0 * u - 1.0)

    def radius(self, p_lower: torch.Tensor, dim: int) -> torch.Tensor:
        p = p_lower.to(torch.float64)
        return torch.clamp(2.0 * self.half_width * (p - 0.5), min=0.0)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma}
