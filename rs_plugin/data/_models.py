"""Reference models: the embedded digits CNN, the Fashion-MNIST LeNets reproduced from the
published table (one per σ) and the earlier Fashion-MNIST CNN, and which one ships for a
dataset and a noise level. (The command line reads its ``--model`` text in
:mod:`rs_plugin.cli.models`.)"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rs_plugin._validation import check_positive
from rs_plugin.data._lenet import LeNet

__all__ = [
    "DEMO_SIGMA",
    "DEMO_WEIGHTS",
    "FASHION_LENETS",
    "FASHION_SIGMA",
    "FASHION_WEIGHTS",
    "DemoCNN",
    "FashionCNN",
    "fashion_lenet_sigma",
    "load_demo_model",
    "load_fashion_lenet",
    "load_fashion_model",
    "shipped_model",
]

DEMO_WEIGHTS = Path(__file__).with_name("demo_cnn.pt")
DEMO_SIGMA = 0.25
FASHION_WEIGHTS = Path(__file__).with_name("fashion_cnn.pt")
FASHION_SIGMA = 0.25
# The shipped Fashion-MNIST models: the papers' LeNet trained with the published recipe
# (examples/reproduce_fashion.py, 90 epochs on all 60 000 images), the best certified row of
# docs/reproduction.md at each σ: σ → (weights, training method).
FASHION_LENETS = {
    0.25: (Path(__file__).with_name("fashion_lenet_sigma0.25.pt"), "consistency"),
    0.5: (Path(__file__).with_name("fashion_lenet_sigma0.5.pt"), "consistency"),
}
# The datasets that ship their own reference model (the digits CNN serves the others).
_DEMO_BY_DATA = {"fashion-mnist": "fashion"}


class DemoCNN(nn.Module):
    """A small CNN for 1×8×8 digits images in [0, 1], returning 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FashionCNN(nn.Module):
    """A LeNet-size CNN for 1×28×28 images in [0, 1] (Fashion-MNIST), returning 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_demo_model(weights: str | Path = DEMO_WEIGHTS) -> DemoCNN:
    """The embedded CNN, trained on digits with Gaussian noise σ = 0.25, in eval mode."""
    model = DemoCNN()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def load_fashion_model(weights: str | Path = FASHION_WEIGHTS) -> FashionCNN:
    """The earlier Fashion-MNIST CNN (trained by :mod:`rs_plugin.data.train_fashion` for
    σ = ``FASHION_SIGMA``), in eval mode."""
    model = FashionCNN()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def fashion_lenet_sigma(sigma: float | None = None) -> float:
    """The σ of the shipped Fashion-MNIST LeNet for noise of level ``sigma``: the nearest one
    it was trained for (the smaller on a tie; 0.25 when ``sigma`` is None)."""
    if sigma is None:
        return min(FASHION_LENETS)
    check_positive("sigma", sigma)
    return min(FASHION_LENETS, key=lambda trained: (abs(trained - sigma), trained))


def load_fashion_lenet(sigma: float | None = None) -> LeNet:
    """The shipped Fashion-MNIST LeNet for noise of level ``sigma`` (:func:`fashion_lenet_sigma`:
    the one trained for the nearest σ of :data:`FASHION_LENETS`), in eval mode."""
    weights, _ = FASHION_LENETS[fashion_lenet_sigma(sigma)]
    model = LeNet()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def shipped_model(data: str, sigma: float | None = None) -> nn.Module:
    """The reference model shipped for the dataset named ``data``, in eval mode: for
    ``fashion-mnist`` the LeNet trained for the σ nearest ``sigma`` (:func:`load_fashion_lenet`),
    the digits CNN otherwise (trained for σ = 0.25, whatever ``sigma``)."""
    if _DEMO_BY_DATA.get(data) == "fashion":
        return load_fashion_lenet(sigma)
    return load_demo_model()
