"""The training loop: shuffle, batch, split into the objective's chunks, step.

Every random draw comes from two generators, :class:`TrainingGenerators`: one on the model's
device for the objective's noise, one on the CPU for shuffling. Seeded once, they make a run
reproducible on the same torch build and thread count; kept between calls (the ART estimators
do this), successive calls continue the same streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rs_plugin._validation import RSValueError, check_finite_inputs, check_int
from rs_plugin.training.objective import Objective

__all__ = ["TrainingGenerators", "train"]


def _epochs(first: int, epochs: int, verbose: bool, name: str) -> Any:
    """range(first, first + epochs), with a progress bar when ``verbose`` and tqdm (the ``cli``
    extra) is installed; without tqdm there is no bar."""
    if verbose:
        try:
            from tqdm.auto import trange
        except ImportError:
            return range(first, first + epochs)
        return trange(first, first + epochs, desc=name)
    return range(first, first + epochs)


@dataclass
class TrainingGenerators:
    """The generators of a training run: ``noise`` (the objective's draws, on the model's
    device) and ``shuffle`` (the order of the inputs, on the CPU)."""

    noise: torch.Generator
    shuffle: torch.Generator

    @classmethod
    def from_seed(cls, seed: int, device: str | torch.device = "cpu") -> TrainingGenerators:
        """Both generators seeded from ``seed`` (noise with ``seed``, shuffling with seed + 1)."""
        seed = check_int("seed", seed, 0)
        noise = torch.Generator(device=device)
        noise.manual_seed(seed)
        return cls(noise=noise, shuffle=torch.Generator().manual_seed(seed + 1))


def _device(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def check_training_data(x: torch.Tensor, y: torch.Tensor) -> None:
    """Finite float inputs (N, ...) and N int64 labels >= 0, or one RSValueError."""
    check_finite_inputs("x", x, None)
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.ndim != 1:
        raise RSValueError("y", "int64 class indices of shape (N,)", y)
    if len(y) != len(x):
        raise RSValueError("y", f"one label per input ({len(x)})", f"{len(y)} labels")
    if int(y.min()) < 0:
        raise RSValueError("y", "class indices >= 0", int(y.min()))


def train(
    model: nn.Module,
    objective: Objective,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    optimizer: torch.optim.Optimizer,
    epochs: int = 1,
    batch_size: int = 128,
    generators: TrainingGenerators | int = 0,
    scheduler: Any = None,
    drop_last: bool = False,
    training_mode: bool = True,
    verbose: bool = False,
    first_epoch: int = 0,
) -> nn.Module:
    """Train ``model`` on (x, y) minimising ``objective``; returns the model in eval mode.

    Each epoch shuffles the inputs, cuts them into batches of ``batch_size`` (the last one
    shorter unless ``drop_last``), splits each batch into ``objective.chunks`` near-equal chunks
    and takes one ``optimizer`` step per chunk; ``scheduler.step()`` runs after every epoch.
    ``generators`` is a :class:`TrainingGenerators` (continued, not reset) or a seed for fresh
    ones. Inputs are checked (finite, labels int64) before the first step, so bad data leaves
    the weights untouched. ``training_mode`` is the mode the model is in while the objective's
    loss is computed (objectives attack in eval mode whatever it is); ``verbose`` shows a
    progress bar over epochs. ``first_epoch`` is the index the objective sees for the first
    epoch (its warm-up schedules count from it): training one epoch at a time with
    ``first_epoch`` = e and the same generators, optimiser and scheduler takes the same steps as
    one call over all epochs (how a run is checkpointed and resumed).
    """
    check_training_data(x, y)
    epochs = check_int("epochs", epochs, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    first_epoch = check_int("first_epoch", first_epoch, 0)
    if not isinstance(objective, Objective):
        raise RSValueError("objective", "an rs_plugin.training.Objective", objective)
    device = _device(model)
    if not isinstance(generators, TrainingGenerators):
        generators = TrainingGenerators.from_seed(generators, device)
    for epoch in _epochs(first_epoch, epochs, verbose, objective.name):
        model.train(mode=training_mode)
        order = torch.randperm(len(x), generator=generators.shuffle)
        starts = range(0, len(x), batch_size)
        for start in starts:
            batch = order[start : start + batch_size]
            if drop_last and len(batch) < batch_size:
                break
            for chunk in torch.tensor_split(batch, objective.chunks):
                if len(chunk) == 0:
                    continue
                inputs, labels = x[chunk].to(device), y[chunk].to(device)
                loss = objective.loss(
                    model, inputs, labels, generator=generators.noise, epoch=epoch
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return model.eval()
