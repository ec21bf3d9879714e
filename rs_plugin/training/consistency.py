"""Consistency regularisation (Jeong & Shin 2020): make f agree with itself across the noise.

With m perturbations δ_1 … δ_m of each input and p_i = softmax(f(perturb_i(x))),
p̂ = (1/m) Σ_i p_i, the loss is

    L = (1/m) Σ_i CE(f(perturb_i(x)), y)  +  λ · (1/m) Σ_i KL(p̂ ‖ p_i)  +  η · H(p̂),

cross-entropy on every copy, a KL term pulling each copy's prediction to their mean, and the
entropy of the mean (which keeps the consistent prediction confident). Predictions that agree
across perturbations mean a larger p_A for the smoothed classifier, hence larger radii.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from rs_plugin._validation import check_int, check_positive
from rs_plugin.smoothings.base import Smoothing
from rs_plugin.training.objective import TINY, Objective

__all__ = ["Consistency", "consistency_terms"]


def consistency_terms(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per input: the mean KL(p̂ ‖ p_i) over the copies and the entropy H(p̂), from (B, m, C)
    logits of m perturbations of each input."""
    log_p = F.log_softmax(logits, dim=2)
    mean = log_p.exp().mean(dim=1)
    log_mean = torch.log(mean.clamp_min(TINY))
    kl = (mean[:, None, :] * (log_mean[:, None, :] - log_p)).sum(dim=2).mean(dim=1)
    entropy = -(mean * log_mean).sum(dim=1)
    return kl, entropy


class Consistency(Objective):
    """Consistency-regularised noise augmentation (Jeong & Shin 2020).

    Args:
        smoothing: the smoothing whose ``perturb`` draws the m perturbations.
        num_noise_vec: m ≥ 2 perturbations per input; a batch is split into m chunks, one
            optimiser step each, so a step sees as many samples as a batch has inputs.
        lmbda: λ, weight of the KL consistency term (paper, MNIST: 10 at σ = 0.25, 5 at
            σ = 0.5 and 1.0 with η = 0.5).
        eta: η, weight of the entropy of the mean prediction (paper: 0.5).
    """

    name: ClassVar[str] = "consistency"

    def __init__(
        self,
        smoothing: Smoothing,
        *,
        num_noise_vec: int = 2,
        lmbda: float = 10.0,
        eta: float = 0.5,
    ) -> None:
        super().__init__(smoothing)
        self.num_noise_vec = check_int("num_noise_vec", num_noise_vec, 2)
        self.lmbda = check_positive("lmbda", lmbda)
        self.eta = float(eta) if eta == 0 else check_positive("eta", eta)

    @property
    def chunks(self) -> int:
        return self.num_noise_vec

    def loss(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator,
        epoch: int,
    ) -> torch.Tensor:
        m = self.num_noise_vec
        noisy = self.smoothing.perturb(x.repeat_interleave(m, dim=0), generator)
        logits = model(noisy)
        cross_entropy = F.cross_entropy(logits, y.repeat_interleave(m))
        kl, entropy = consistency_terms(logits.view(len(x), m, -1))
        return cross_entropy + (self.lmbda * kl + self.eta * entropy).mean()

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "num_noise_vec": self.num_noise_vec,
            "lmbda": self.lmbda,
            "eta": self.eta,
        }
