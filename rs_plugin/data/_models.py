"""Reference models: the embedded digits CNN and the shipped Fashion-MNIST CNN, and which one
ships for a dataset. (The command line reads its ``--model`` text in
:mod:`rs_plugin.cli.models`.)"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = [
    "DEMO_SIGMA",
    "DEMO_WEIGHTS",
    "FASHION_SIGMA",
    "FASHION_WEIGHTS",
    "DemoCNN",
    "FashionCNN",
    "load_demo_model",
    "load_fashion_model",
    "shipped_model",
]

DEMO_WEIGHTS = Path(__file__).with_name("demo_cnn.pt")
DEMO_SIGMA = 0.25
FASHION_WEIGHTS = Path(__file__).with_name("fashion_cnn.pt")
FASHION_SIGMA = 0.25
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
    """The shipped Fashion-MNIST CNN (trained by :mod:`rs_plugin.data.train_fashion` for
    σ = ``FASHION_SIGMA``), in eval mode."""
    model = FashionCNN()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def shipped_model(data: str) -> nn.Module:
    """The reference model shipped for the dataset named ``data``, in eval mode: the
    Fashion-MNIST CNN for ``fashion-mnist``, the digits CNN otherwise."""
    if _DEMO_BY_DATA.get(data) == "fashion":
        return load_fashion_model()
    return load_demo_model()
