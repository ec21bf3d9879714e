"""Fog and haze as semantic smoothings: attenuation towards an airlight over a depth map.

The atmospheric scattering model (Koschmieder's law, as used for haze synthesis and removal):

    x′ = t · x + (1 − t) · A,   t = e^{−β d(p)},

with airlight A (the colour of the fog, 1.0 for images in [0, 1]), depth map d and density β
(units 1/depth). :class:`Fog` has uniform depth d ≡ 1; :class:`HorizonFog` has a vertical
gradient, d = 1 on the top row falling linearly to 0 on the bottom row (a ground plane seen
towards a horizon at the top: the far scene is foggiest). β < 0 is the inverse operation
(dehazing: x′ = A + t (x − A) with t > 1); the noise draws both signs.

Exact composition. With the same A and d, β₁ then β₂ gives
A + e^{−β₂ d}(A + e^{−β₁ d}(x − A) − A) = A + e^{−(β₁+β₂) d}(x − A), the fog of β₁ + β₂. So
T(T(x, a), b) = T(x, a + b) and the parametric certificate |δ| < r (g(x, δ) = g(x, 0), radius in
1/depth units, σ Φ⁻¹(p_lower) for Gaussian noise) is also an input-domain statement: for every
image z = A + e^{−δ d}(x − A) with |δ| < r, the smoothed classifier evaluated on z returns the
class certified at x, with probability ≥ 1 − α over the sampling. Records say
``parametric=input``. In transmission terms, a uniform fog is certified for every t in
(e^{−r}, 1], and a horizon fog for transmission down to e^{−r} on the top row.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from rs_plugin._validation import RSValueError, _is_real
from rs_plugin.smoothings.semantic import SemanticSmoothing
from rs_plugin.smoothings.transforms import check_image_batch

__all__ = ["Fog", "HorizonFog"]


class Fog(SemanticSmoothing):
    """Uniform fog x′ = A + e^{−β}(x − A): noise on the density β (1/depth, depth d ≡ 1).

    Args:
        beta: standard deviation of the density noise, in 1/depth (no default: give one).
        airlight: A, the intensity the fog tends to (finite; 1.0 for images in [0, 1]).
        noise: ``"gaussian"`` or ``"uniform"`` (half-width σ√3).
        semantics: ``"parametric"`` or ``"input"`` (identical: fog composes exactly in β).
    """

    name: ClassVar[str] = "fog"
    norm: ClassVar[str] = "fog"
    units: ClassVar[str] = "beta, 1/depth"
    composition: ClassVar[str] = "exact"
    scale_keyword: ClassVar[str] = "beta"

    def __init__(
        self,
        beta: float | None = None,
        *,
        airlight: float = 1.0,
        noise: str = "gaussian",
        semantics: str = "parametric",
    ) -> None:
        super().__init__(beta, noise=noise, semantics=semantics)
        if not _is_real(airlight) or not math.isfinite(float(airlight)):
            raise RSValueError("airlight", "a finite real intensity (1.0 for [0, 1])", airlight)
        self.airlight = float(airlight)

    @property
    def num_parameters(self) -> int:
        return 1

    def depth(
        self, height: int, width: int, *, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """(H, W) depth map d(p): ones."""
        return torch.ones(height, width, dtype=dtype, device=device)

    def transmission(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) transmissions e^{−β d(p)} for densities ``params[:, 0]``."""
        d = self.depth(x.shape[-2], x.shape[-1], dtype=x.dtype, device=x.device)
        beta = params[:, 0].to(x.dtype)
        return torch.exp(-beta[:, None, None, None] * d[None, None])

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        check_image_batch(x)
        return self.airlight + self.transmission(x, params) * (x - self.airlight)

    def apply_(self, out: torch.Tensor, x: torch.Tensor, params: torch.Tensor) -> None:
        t = self.transmission(out, params)
        torch.mul(x - self.airlight, t, out=out)
        out.add_(self.airlight)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "airlight": self.airlight}


class HorizonFog(Fog):
    """Fog over a vertical depth gradient: d = 1 on the top row, 0 on the bottom row, linear in
    between, so x′ = A + e^{−β d(row)}(x − A) (β in 1/depth; the top row gets e^{−β})."""

    name: ClassVar[str] = "horizon_fog"
    norm: ClassVar[str] = "horizon_fog"

    def depth(
        self, height: int, width: int, *, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """(H, W) depth map: (H − 1 − i) / (H − 1) on row i (1 for a single row)."""
        rows = torch.arange(height, dtype=dtype, device=device)
        d = (height - 1 - rows) / (height - 1) if height > 1 else torch.ones_like(rows)
        return d[:, None].expand(height, width)
