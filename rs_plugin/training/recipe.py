"""The optimiser and learning-rate schedule of the randomized-smoothing papers' tables.

Cohen et al. 2019's training code, reused by Salman et al. 2019, Jeong & Shin 2020 and Jeong,
Kim & Shin 2023 for MNIST and Fashion-MNIST (LeNet): SGD with momentum 0.9 and weight decay
1e-4, batches of 256, learning rate 0.01 multiplied by 0.1 at one third and two thirds of the
run. The published Fashion-MNIST runs' training logs (alinlab/smoothing-catrs, ``data/fmnist``)
show 90 epochs with the drops after epochs 30 and 60; the repository's example commands say 150
epochs with drops every 50. :func:`published_recipe` is that recipe for any epoch count;
:class:`SGDRecipe` builds its optimiser and schedule for a model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from rs_plugin._validation import RSValueError, check_int, check_positive

__all__ = ["SGDRecipe", "published_recipe"]


@dataclass(frozen=True)
class SGDRecipe:
    """SGD with momentum and weight decay, a step schedule, a batch size and an epoch count.

    The learning rate of epoch e (0-based) is ``lr · gamma^⌊e / step_size⌋``.
    """

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 256
    epochs: int = 90
    step_size: int = 30
    gamma: float = 0.1

    def __post_init__(self) -> None:
        check_positive("lr", self.lr)
        if not 0.0 <= float(self.momentum) < 1.0:
            raise RSValueError("momentum", "a number in [0, 1)", self.momentum)
        if float(self.weight_decay) < 0.0:
            raise RSValueError("weight_decay", "a number >= 0", self.weight_decay)
        check_int("batch_size", self.batch_size, 1)
        check_int("epochs", self.epochs, 1)
        check_int("step_size", self.step_size, 1)
        check_positive("gamma", self.gamma)

    def optimizer(self, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.SGD:
        """SGD over ``parameters`` with this recipe's learning rate, momentum and decay."""
        return torch.optim.SGD(
            parameters, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )

    def scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.StepLR:
        """The step schedule, stepped once after every epoch."""
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=self.step_size, gamma=self.gamma
        )

    def config(self) -> dict[str, Any]:
        """The recipe as plain values."""
        return asdict(self)


def published_recipe(epochs: int = 90) -> SGDRecipe:
    """The papers' recipe over ``epochs`` epochs: SGD (momentum 0.9, weight decay 1e-4), batch
    256, lr 0.01 ÷ 10 every ⌈epochs / 3⌉ epochs (the published runs: 90 epochs, drops at 30 and
    60; 150 epochs gives drops every 50)."""
    epochs = check_int("epochs", epochs, 1)
    return SGDRecipe(epochs=epochs, step_size=-(-epochs // 3))
