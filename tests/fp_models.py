"""A base classifier that reads the floating-point rounding of its input (Voráček & Hein 2023).

Gaussian noise in float32 is ``fl(x + fl(σ·n))``. Around x = 0 a noisy coordinate is the noise
itself, and one below 2⁻⁸ in magnitude has a float32 spacing of at most 2⁻³¹, so it usually has
bits below 2⁻³⁰. Around x = c·1 with c ∈ [2⁻⁷ + 2⁻⁸, 2⁻⁵), a sum c + ε below 2⁻⁸ needs
ε ∈ [c/2, 2c] in magnitude: the sum is exact (Sterbenz) and a multiple of the spacings of c and
ε, both at least 2⁻³⁰. So "some coordinate is tiny and not a multiple of 2⁻³⁰" tells the noise
around 0 from the noise around c·1.
"""

from __future__ import annotations

import torch
from torch import nn

TINY = 2.0**-8
RESIDUE = 2.0**30


class RoundingResidue(nn.Module):
    """Class 0 when some coordinate z has 0 < |z| < 2⁻⁸ and z is not a multiple of 2⁻³⁰,
    else class 1; logits ±4."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1)
        scaled = z * RESIDUE  # exact: a power of two
        tiny = (z != 0) & (z.abs() < TINY) & (scaled != torch.round(scaled))
        reads = tiny.any(dim=1).to(x.dtype)
        return torch.stack([reads, 1.0 - reads], dim=1).mul_(8.0).sub_(4.0)
