"""Tiny untrained denoisers for the command-line tests (``--denoiser tests.denoising.tiny:X``)."""

from __future__ import annotations

from rs_plugin.denoising import ConditionalDenoiser, build_denoiser


def denoiser() -> ConditionalDenoiser:
    """An untrained noise-conditional denoiser for 1-channel images, σ in [0, 1]."""
    return build_denoiser(0, width=4, depth=1).eval()


def narrow() -> ConditionalDenoiser:
    """An untrained denoiser trained (nominally) for σ in [0.1, 0.3] only."""
    return build_denoiser(0, width=4, depth=1, sigma_range=(0.1, 0.3)).eval()
