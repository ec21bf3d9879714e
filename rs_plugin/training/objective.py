"""The interface of a training objective, and the pieces objectives share.

An objective is the loss one optimiser step minimises when training a base classifier f to be
certified under a smoothing. It draws every perturbation through the smoothing's ``perturb``
with the generator it is given, so one objective serves every input-space smoothing.

Shared pieces: :func:`perturbed_copies` (m perturbations of each input, reproducible from a seed,
so an attack and the training step that follows it see the same noise) and
:func:`smoothed_log_probabilities` (the log of the soft smoothed classifier, the Monte-Carlo mean
of softmax(f) over those m copies).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from torch import nn

from rs_plugin._validation import RSValueError
from rs_plugin.smoothings.base import Smoothing

__all__ = [
    "Objective",
    "check_clip_values",
    "draw_seed",
    "perturbed_copies",
    "smoothed_log_probabilities",
]

# Smallest probability whose log enters a loss (keeps losses and gradients finite).
TINY = 1e-20


class Objective(abc.ABC):
    """The loss of one optimiser step, for a base classifier certified under :attr:`smoothing`.

    Subclasses store their hyperparameters unchanged in ``__init__`` and implement :meth:`loss`.
    :attr:`chunks` is how many optimiser steps a batch is split into: objectives that train on m
    perturbed copies of each input split a batch into m chunks, so every step sees as many noisy
    samples as a batch has inputs (as the papers' code does).
    """

    name: ClassVar[str]

    def __init__(self, smoothing: Smoothing) -> None:
        if not isinstance(smoothing, Smoothing):
            raise RSValueError("smoothing", "an rs_plugin.Smoothing instance", smoothing)
        self.smoothing = smoothing

    @property
    def chunks(self) -> int:
        """Optimiser steps per batch (the batch is split into this many near-equal chunks)."""
        return 1

    @abc.abstractmethod
    def loss(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator,
        epoch: int,
    ) -> torch.Tensor:
        """The scalar loss on the batch ``x`` (B, ...) with labels ``y`` (B,), int64.

        ``model`` is in the mode the loop chose (training, usually); an objective that attacks
        first switches it to eval mode for the attack and back. All randomness comes from
        ``generator`` (on ``x.device``). ``epoch`` (0-based) drives warm-up schedules.
        """

    def config(self) -> dict[str, Any]:
        """The objective's name, smoothing and hyperparameters, as plain values."""
        return {"name": self.name, "smoothing": self.smoothing.config()}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({params})"


def draw_seed(generator: torch.Generator) -> int:
    """A fresh seed drawn from ``generator`` (for noise that must be drawn twice, identically)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))


def perturbed_copies(smoothing: Smoothing, x: torch.Tensor, m: int, seed: int) -> torch.Tensor:
    """m perturbations of every input, shape (B·m, ...), the m copies of input i at rows i·m ...

    The same ``seed`` gives the same perturbations, so an attack and the step that trains on its
    result share their noise vectors (for additive noise, x' + δ_i with the same δ_i);
    differentiable in ``x`` where the perturbation is.
    """
    generator = torch.Generator(device=x.device)
    generator.manual_seed(seed)
    return smoothing.perturb(x.repeat_interleave(m, dim=0), generator)


def smoothed_log_probabilities(logits: torch.Tensor, m: int) -> torch.Tensor:
    """log (1/m) Σ_i softmax(logits of copy i), shape (B, C), from (B·m, C) input-major logits."""
    probabilities = torch.softmax(logits, dim=1).view(-1, m, logits.shape[1]).mean(dim=1)
    return torch.log(probabilities.clamp_min(TINY))


def check_clip_values(clip_values: Any) -> tuple[float, float] | None:
    """None, or a pair (low, high) with low < high, as floats."""
    if clip_values is None:
        return None
    try:
        low, high = (float(v) for v in clip_values)
    except (TypeError, ValueError):
        raise RSValueError("clip_values", "None or a pair (low, high)", clip_values) from None
    if not low < high:
        raise RSValueError("clip_values", "None or a pair (low, high) with low < high", clip_values)
    return low, high
