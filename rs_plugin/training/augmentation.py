"""Noise augmentation (Cohen, Rosenfeld & Kolter 2019): train f on the noise it is certified with.

The base classifier learns to classify perturbed inputs, which makes f(perturb(x)) agree with
the label often, i.e. raises p_A and with it the certified radius.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from rs_plugin.smoothings.base import Smoothing
from rs_plugin.training.objective import Objective

__all__ = ["NoiseAugmentation"]


class NoiseAugmentation(Objective):
    """The loss of f at one fresh perturbation per input: ℓ(f(perturb(x)), y).

    Args:
        smoothing: the smoothing whose ``perturb`` draws the noise (train on the noise you
            certify with).
        criterion: ℓ(logits, labels), a scalar; default cross-entropy.
    """

    name: ClassVar[str] = "noise_augmentation"

    def __init__(
        self,
        smoothing: Smoothing,
        *,
        criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__(smoothing)
        self.criterion = F.cross_entropy if criterion is None else criterion

    def loss(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator,
        epoch: int,
    ) -> torch.Tensor:
        return self.criterion(model(self.smoothing.perturb(x, generator)), y)

    def config(self) -> dict[str, Any]:
        name = getattr(self.criterion, "__name__", type(self.criterion).__name__)
        return {**super().config(), "criterion": name}
