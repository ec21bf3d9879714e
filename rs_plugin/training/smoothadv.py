"""SmoothAdv (Salman et al. 2019): adversarial training of the smoothed classifier.

For each input, m perturbations are drawn; an ℓ2 PGD attack maximises the loss of the *soft*
smoothed classifier averaged over those m perturbations,

    x' = argmax_{‖x' − x‖₂ ≤ ε}  −log (1/m) Σ_i softmax(f(perturb_i(x')))_y,

and the step trains f on the m perturbations of x' (the same draws). This is the paper's
SmoothAdv_PGD with m noise vectors; for additive noise perturb_i(x') = x' + δ_i.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from rs_plugin._validation import check_int, check_positive
from rs_plugin.smoothings.base import Smoothing
from rs_plugin.training.objective import (
    Objective,
    check_clip_values,
    draw_seed,
    perturbed_copies,
    smoothed_log_probabilities,
)

__all__ = ["SmoothAdv", "smoothed_nll", "unit_l2"]


def smoothed_nll(
    model: nn.Module, smoothing: Smoothing, x: torch.Tensor, y: torch.Tensor, m: int, seed: int
) -> torch.Tensor:
    """−log of the soft smoothed probability of ``y`` over the m perturbations ``seed`` draws,
    one value per input, shape (B,)."""
    logits = model(perturbed_copies(smoothing, x, m, seed))
    return F.nll_loss(smoothed_log_probabilities(logits, m), y, reduction="none")


def unit_l2(g: torch.Tensor) -> torch.Tensor:
    """Each row of ``g`` divided by its ℓ2 norm (rows of norm 0 stay 0)."""
    norms = torch.linalg.vector_norm(g.flatten(1), dim=1).view(-1, *([1] * (g.ndim - 1)))
    return g / norms.clamp_min(1e-12)


class SmoothAdv(Objective):
    """SmoothAdv training: ℓ2 PGD on the soft smoothed classifier, then CE at its m perturbations.

    Args:
        smoothing: the smoothing whose ``perturb`` draws the m perturbations.
        epsilon: ℓ2 radius ε of the attack, in input units (reached after ``warmup`` epochs).
        num_noise_vec: m, perturbations per input (the attack averages over them; the training
            step uses all m). A batch is split into m chunks, one optimiser step each.
        num_steps: T, PGD steps of size 2ε/T along the ℓ2-normalised gradient, no random start.
        warmup: ε grows linearly, ε·min(1, (epoch + 1)/warmup).
        clip_values: (low, high) the adversarial input is kept in, or None.
    """

    name: ClassVar[str] = "smoothadv"

    def __init__(
        self,
        smoothing: Smoothing,
        *,
        epsilon: float = 1.0,
        num_noise_vec: int = 1,
        num_steps: int = 10,
        warmup: int = 1,
        clip_values: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(smoothing)
        self.epsilon = check_positive("epsilon", epsilon)
        self.num_noise_vec = check_int("num_noise_vec", num_noise_vec, 1)
        self.num_steps = check_int("num_steps", num_steps, 1)
        self.warmup = check_int("warmup", warmup, 1)
        self.clip_values = check_clip_values(clip_values)

    @property
    def chunks(self) -> int:
        return self.num_noise_vec

    def epsilon_at(self, epoch: int) -> float:
        """The attack radius during ``epoch`` (0-based): the linear warm-up of ε."""
        return self.epsilon * min(1.0, (epoch + 1) / self.warmup)

    def attack(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epsilon: float, seed: int
    ) -> torch.Tensor:
        """x' with ‖x' − x‖₂ ≤ ``epsilon`` (and inside ``clip_values``) raising the soft smoothed
        loss over the m perturbations ``seed`` draws; computed with ``model`` in eval mode."""
        was_training = model.training
        model.eval()
        step = 2.0 * epsilon / self.num_steps
        x = x.detach()
        x_adv = x.clone()
        for _ in range(self.num_steps):
            x_adv.requires_grad_(True)
            loss = smoothed_nll(model, self.smoothing, x_adv, y, self.num_noise_vec, seed).sum()
            (grad,) = torch.autograd.grad(loss, x_adv)
            with torch.no_grad():
                x_adv = x_adv + step * unit_l2(grad)
                if self.clip_values is not None:
                    x_adv = x_adv.clamp(*self.clip_values)
                delta = (x_adv - x).flatten(1)
                shrink = epsilon / torch.linalg.vector_norm(delta, dim=1).clamp_min(1e-12)
                delta = delta * shrink.clamp(max=1.0)[:, None]
                x_adv = x + delta.view_as(x)
        model.train(was_training)
        return x_adv.detach()

    def loss(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator,
        epoch: int,
    ) -> torch.Tensor:
        seed = draw_seed(generator)
        x_adv = self.attack(model, x, y, epsilon=self.epsilon_at(epoch), seed=seed)
        noisy = perturbed_copies(self.smoothing, x_adv, self.num_noise_vec, seed)
        return F.cross_entropy(model(noisy), y.repeat_interleave(self.num_noise_vec))

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "epsilon": self.epsilon,
            "num_noise_vec": self.num_noise_vec,
            "num_steps": self.num_steps,
            "warmup": self.warmup,
            "clip_values": self.clip_values,
        }
