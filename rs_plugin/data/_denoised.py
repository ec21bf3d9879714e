"""The shipped denoised-smoothing pair for Fashion-MNIST: a LeNet trained on clean images only
and noise-conditional denoisers for Gaussian noise with σ in [0, 1].

Trained by :mod:`rs_plugin.data.train_denoised`; certified figures in docs/denoised.md. The
command line names them ``--model clean`` and ``--denoiser demo`` (stability + MSE) or
``--denoiser mse`` (MSE only).
"""

from __future__ import annotations

from pathlib import Path

import torch

from rs_plugin._validation import RSValueError
from rs_plugin.data._lenet import LeNet, build_lenet
from rs_plugin.denoising.denoiser import ConditionalDenoiser, build_denoiser

__all__ = [
    "CLEAN_WEIGHTS",
    "DENOISER_WEIGHTS",
    "SHIPPED_DENOISERS",
    "load_clean_classifier",
    "load_shipped_denoiser",
]

CLEAN_WEIGHTS = Path(__file__).with_name("fashion_clean_lenet.pt")
# The shipped denoisers by their command-line name: ``demo`` is the best one measured.
DENOISER_WEIGHTS = {
    "demo": Path(__file__).with_name("fashion_denoiser.pt"),
    "mse": Path(__file__).with_name("fashion_denoiser_mse.pt"),
}
SHIPPED_DENOISERS = tuple(DENOISER_WEIGHTS)


def load_clean_classifier(weights: str | Path = CLEAN_WEIGHTS) -> LeNet:
    """The LeNet trained on clean Fashion-MNIST images only (no noise), in eval mode."""
    model = build_lenet()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def load_shipped_denoiser(name: str = "demo") -> ConditionalDenoiser:
    """The shipped Fashion-MNIST denoiser ``name`` (``demo`` or ``mse``), for Gaussian noise
    with σ in [0, 1], in eval mode."""
    if name not in DENOISER_WEIGHTS:
        raise RSValueError("denoiser", f"one of the shipped denoisers {SHIPPED_DENOISERS}", name)
    denoiser = build_denoiser()
    denoiser.load_state_dict(
        torch.load(DENOISER_WEIGHTS[name], map_location="cpu", weights_only=True)
    )
    return denoiser.eval()
