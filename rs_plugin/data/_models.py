"""Reference models: the embedded digits CNN, the shipped Fashion-MNIST CNN, and loading a
user's model from a path or factory."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from rs_plugin._validation import RSValueError

__all__ = [
    "DEMO_SIGMA",
    "DEMO_WEIGHTS",
    "FASHION_SIGMA",
    "FASHION_WEIGHTS",
    "DemoCNN",
    "FashionCNN",
    "load_demo_model",
    "load_fashion_model",
    "load_model",
    "load_model_for",
]

DEMO_WEIGHTS = Path(__file__).with_name("demo_cnn.pt")
DEMO_SIGMA = 0.25
FASHION_WEIGHTS = Path(__file__).with_name("fashion_cnn.pt")
FASHION_SIGMA = 0.25
# `--model demo` means the model shipped for the data: these --data values get their own.
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


def load_model_for(spec: str, data: str) -> nn.Module:
    """:func:`load_model`, except that ``demo`` is the model shipped for ``data``: the
    Fashion-MNIST CNN for ``fashion-mnist``, the digits CNN otherwise."""
    if spec == "demo" and _DEMO_BY_DATA.get(data) == "fashion":
        return load_fashion_model()
    return load_model(spec)


def load_model(spec: str) -> nn.Module:
    """``demo``, a TorchScript file, or ``package.module:factory`` returning an ``nn.Module``."""
    if spec == "demo":
        return load_demo_model()
    if Path(spec).is_file():
        try:
            model = torch.jit.load(spec, map_location="cpu")
        except RuntimeError as error:
            raise RSValueError("model", "a TorchScript file (torch.jit.save)", spec) from error
        return model.eval()
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise RSValueError(
            "model", "'demo', an existing TorchScript file, or 'package.module:factory'", spec
        )
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise RSValueError("model", "an importable 'package.module:factory'", spec) from error
    model = factory()
    if not isinstance(model, nn.Module):
        raise RSValueError("model", "a factory returning a torch.nn.Module", f"{spec} -> {model!r}")
    return model.eval()
