"""MACER (Zhai et al. 2020): maximise the certified radius directly, attack-free.

With k perturbations per input, the loss is the cross-entropy of the soft smoothed classifier
plus λ times a hinge on a differentiable surrogate of the certified radius:

    L = −log p̂_y(x)  +  λ · 1[x correctly classified] · max(0, γ_R − R̃(x)),

where p̂ is the mean over the k copies of softmax(f), and R̃ is computed from the mean of
softmax(β·f) (the inverse temperature β makes the soft scores approach the hard votes). For
Gaussian noise the paper's surrogate is R̃ = σ/2 · (Φ⁻¹(p̂_A) − Φ⁻¹(p̂_B)) (top class A = y and
runner-up B) and γ_R = σγ/2; inputs whose margin is already beyond the hinge, or whose Φ⁻¹ is
infinite, do not contribute. Only correctly classified inputs contribute.

Any smoothing: the smoothing's own radius R(p) (the certificate it gives for p_A = p with the
runner-up bounded by 1 − p) extended antisymmetrically, R̄(p) = R(p) − R(1 − p), gives
R̃ = (R̄(p̂_A) − R̄(p̂_B)) / 2 and γ_R = R̄(Φ(γ/2)). For Gaussian noise R̄(p) = σΦ⁻¹(p), so both
reduce exactly to the paper's; for other noises they are the same construction on that noise's
radius (e.g. Laplace ℓ1, uniform ℓ1).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from rs_plugin._validation import check_int, check_positive
from rs_plugin.smoothings.base import Smoothing
from rs_plugin.training.objective import Objective

__all__ = ["MACER", "margin_radius"]


def _signed_radius(smoothing: Smoothing, p: torch.Tensor, dim: int) -> torch.Tensor:
    """R̄(p) = R(p) − R(1 − p): the radius for p > 1/2, minus the radius of 1 − p below it."""
    return smoothing.radius(p, dim) - smoothing.radius(1.0 - p, dim)


def margin_radius(
    smoothing: Smoothing, p_top: torch.Tensor, p_second: torch.Tensor, dim: int
) -> torch.Tensor:
    """MACER's radius surrogate (R̄(p_top) − R̄(p_second)) / 2, float64, differentiable."""
    return 0.5 * (
        _signed_radius(smoothing, p_top.double(), dim)
        - _signed_radius(smoothing, p_second.double(), dim)
    )


class MACER(Objective):
    """MACER training (Zhai et al. 2020), for any smoothing (see the module docstring).

    Args:
        smoothing: the smoothing whose ``perturb`` draws the k perturbations and whose radius
            the robustness term raises.
        beta: inverse temperature β of the soft scores in the radius surrogate (paper: 16).
        gamma: hinge γ on the Gaussian margin Φ⁻¹(p̂_A) − Φ⁻¹(p̂_B) (paper: 8).
        lmbda: weight λ of the robustness term (ART's default 12; the paper's MNIST runs 16).
        num_noise_samples: k, perturbations per input (paper: 16).
        deferred_epochs: epochs trained on the cross-entropy term alone before the robustness
            term starts (Jeong & Shin's MNIST MACER runs defer it for the first 30 of 90
            epochs; the hinge on a classifier that is still mostly wrong slows learning).
    """

    name: ClassVar[str] = "macer"

    def __init__(
        self,
        smoothing: Smoothing,
        *,
        beta: float = 16.0,
        gamma: float = 8.0,
        lmbda: float = 12.0,
        num_noise_samples: int = 16,
        deferred_epochs: int = 0,
    ) -> None:
        super().__init__(smoothing)
        self.beta = check_positive("beta", beta)
        self.gamma = check_positive("gamma", gamma)
        self.lmbda = float(lmbda) if lmbda == 0 else check_positive("lmbda", lmbda)
        self.num_noise_samples = check_int("num_noise_samples", num_noise_samples, 1)
        self.deferred_epochs = check_int("deferred_epochs", deferred_epochs, 0)

    def hinge_radius(self, dim: int) -> float:
        """γ_R = R̄(Φ(γ/2)): the radius where the hinge stops (σγ/2 for Gaussian noise)."""
        p = torch.special.ndtr(torch.tensor([self.gamma / 2.0], dtype=torch.float64))
        return float(_signed_radius(self.smoothing, p, dim)[0])

    def robustness_terms(
        self, logits: torch.Tensor, y: torch.Tensor, dim: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """max(0, γ_R − R̃) of the inputs that contribute, and their boolean mask, from the
        (B, k, C) logits of the k perturbations of each input."""
        scores = torch.softmax(self.beta * logits, dim=2).mean(dim=1)
        top2 = scores.topk(2, dim=1)
        hinge = self.hinge_radius(dim)
        with torch.no_grad():
            margin = margin_radius(self.smoothing, top2.values[:, 0], top2.values[:, 1], dim)
            active = (top2.indices[:, 0] == y) & torch.isfinite(margin) & (margin <= hinge)
        # Recomputed on the active inputs only: a non-finite Φ⁻¹ elsewhere would turn the
        # gradient into NaN (0 · ∞) even through a mask.
        chosen = top2.values[active]
        terms = hinge - margin_radius(self.smoothing, chosen[:, 0], chosen[:, 1], dim)
        return terms.to(logits.dtype), active

    def loss(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator,
        epoch: int,
    ) -> torch.Tensor:
        k = self.num_noise_samples
        noisy = self.smoothing.perturb(x.repeat_interleave(k, dim=0), generator)
        logits = model(noisy).view(len(x), k, -1)
        mean_probs = torch.softmax(logits, dim=2).mean(dim=1)
        classification = F.nll_loss(torch.log(mean_probs + 1e-10), y)
        if epoch < self.deferred_epochs:
            return classification
        terms, _ = self.robustness_terms(logits, y, x[0].numel())
        return classification + self.lmbda * terms.sum() / len(x)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "beta": self.beta,
            "gamma": self.gamma,
            "lmbda": self.lmbda,
            "num_noise_samples": self.num_noise_samples,
            "deferred_epochs": self.deferred_epochs,
        }
