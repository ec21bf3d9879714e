"""SmoothMix (Jeong et al. 2021): train the smoothed classifier to be calibrated between an input
and its adversarial example.

For each input, m perturbations are drawn and an attack on the soft smoothed classifier (over
those m perturbations) takes T steps of size α along the ℓ2-normalised gradient of
−log p̂_y, projected to ``maxnorm`` when given and kept in ``clip_values``. Its iterate at step
``mix_step`` is the "clean side" x̂ (projected to ``maxnorm_s``, by default α·mix_step, scaled by
the warm-up), its last iterate the adversarial side x̃. With p̂(x̂) the mean softmax over the m
perturbations of x̂, λ ~ U(0, 1/2) per input, x_mix = (1 − λ)x̂ + λx̃ and the target
ŷ_mix = (1 − λ)p̂(x̂) + λ·(uniform over the classes), the loss is

    L = (1/m) Σ_i CE(f(perturb_i(x̂)), y)
        + η · w(epoch) · (1/m) Σ_i 1[argmax p̂(x̂) = y] · KL(ŷ_mix ‖ softmax(f(perturb_i(x_mix))))

with the warm-up w(epoch) = min(1, (epoch + 1)/warmup): the smoothed classifier's confidence is
taught to fall linearly towards uniform along the path to the adversarial example, instead of
staying over-confident right up to the decision boundary.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from rs_plugin._validation import check_int, check_positive
from rs_plugin.smoothings.base import Smoothing
from rs_plugin.training.objective import Objective, check_clip_values, draw_seed, perturbed_copies
from rs_plugin.training.smoothadv import smoothed_nll, unit_l2

__all__ = ["SmoothMix"]


def _renorm(x: torch.Tensor, center: torch.Tensor, maxnorm: float | None) -> torch.Tensor:
    """``x`` moved into the ℓ2 ball of radius ``maxnorm`` around ``center`` (None: unchanged)."""
    if maxnorm is None:
        return x
    delta = (x - center).flatten(1)
    scale = maxnorm / torch.linalg.vector_norm(delta, dim=1).clamp_min(1e-12)
    return center + (delta * scale.clamp(max=1.0)[:, None]).view_as(x)


class SmoothMix(Objective):
    """SmoothMix training (Jeong et al. 2021), for any input-space smoothing.

    Args:
        smoothing: the smoothing whose ``perturb`` draws the m perturbations.
        eta: η, weight of the mixup term (paper, MNIST: 5).
        num_noise_vec: m, perturbations per input; a batch is split into m chunks, one optimiser
            step each.
        num_steps: T, attack steps (paper, MNIST: 2 / 4 / 8 at σ = 0.25 / 0.5 / 1.0).
        warmup: epochs over which η and the clean-side norm grow linearly to their values.
        mix_step: the attack step whose iterate is the clean side (0: the input itself; 1: the
            one-step adversary).
        maxnorm_s: ℓ2 bound of the clean side around the input (default α·mix_step).
        maxnorm: ℓ2 bound of the adversarial side around the input (default: unbounded).
        step_size: α, the attack's step length (the paper's code: 1.0).
        clip_values: (low, high) the attack's iterates are kept in, or None.
    """

    name: ClassVar[str] = "smoothmix"

    def __init__(
        self,
        smoothing: Smoothing,
        *,
        eta: float = 1.0,
        num_noise_vec: int = 1,
        num_steps: int = 10,
        warmup: int = 1,
        mix_step: int = 0,
        maxnorm_s: float | None = None,
        maxnorm: float | None = None,
        step_size: float = 1.0,
        clip_values: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(smoothing)
        self.eta = check_positive("eta", eta)
        self.num_noise_vec = check_int("num_noise_vec", num_noise_vec, 1)
        self.num_steps = check_int("num_steps", num_steps, 1)
        self.warmup = check_int("warmup", warmup, 1)
        self.mix_step = check_int("mix_step", mix_step, 0)
        self.maxnorm_s = None if maxnorm_s is None else check_positive("maxnorm_s", maxnorm_s)
        self.maxnorm = None if maxnorm is None else check_positive("maxnorm", maxnorm)
        self.step_size = check_positive("step_size", step_size)
        self.clip_values = check_clip_values(clip_values)

    @property
    def chunks(self) -> int:
        return self.num_noise_vec

    def warmup_factor(self, epoch: int) -> float:
        """w(epoch) = min(1, (epoch + 1)/warmup), scaling η and the clean-side bound."""
        return min(1.0, (epoch + 1) / self.warmup)

    def attack(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int, epoch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The clean side x̂ and the adversarial side x̃ of every input, computed with ``model``
        in eval mode on the soft smoothed classifier over the m perturbations ``seed`` draws."""
        was_training = model.training
        model.eval()
        x = x.detach()
        x_adv, clean_side = x.clone(), x
        for step in range(self.num_steps):
            if step == self.mix_step:
                clean_side = x_adv
            x_adv.requires_grad_(True)
            loss = smoothed_nll(model, self.smoothing, x_adv, y, self.num_noise_vec, seed).sum()
            (grad,) = torch.autograd.grad(loss, x_adv)
            with torch.no_grad():
                x_adv = _renorm(x_adv + self.step_size * unit_l2(grad), x, self.maxnorm)
                if self.clip_values is not None:
                    x_adv = x_adv.clamp(*self.clip_values)
        model.train(was_training)
        bound = self.step_size * self.mix_step if self.maxnorm_s is None else self.maxnorm_s
        clean_side = _renorm(clean_side.detach(), x, bound * self.warmup_factor(epoch))
        if self.clip_values is not None:
            clean_side = clean_side.clamp(*self.clip_values)
        return clean_side, x_adv.detach()

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
        seed = draw_seed(generator)
        clean_side, adversarial = self.attack(model, x, y, seed=seed, epoch=epoch)
        logits = model(perturbed_copies(self.smoothing, clean_side, m, seed))
        cross_entropy = F.cross_entropy(logits, y.repeat_interleave(m))
        clean_probs = torch.softmax(logits, dim=1).view(len(x), m, -1).mean(dim=1)

        lam = torch.rand(len(x), generator=generator, device=x.device, dtype=x.dtype) / 2
        shape = (-1, *([1] * (x.ndim - 1)))
        mixed = (1 - lam).view(shape) * clean_side + lam.view(shape) * adversarial
        uniform = torch.full_like(clean_probs, 1.0 / clean_probs.shape[1])
        target = (1 - lam)[:, None] * clean_probs + lam[:, None] * uniform
        log_q = F.log_softmax(model(perturbed_copies(self.smoothing, mixed, m, seed)), dim=1)
        target_c = target.repeat_interleave(m, dim=0)
        kl = (torch.special.xlogy(target_c, target_c) - target_c * log_q).sum(dim=1)
        correct = (clean_probs.argmax(dim=1) == y).to(kl.dtype).repeat_interleave(m)
        mixup = (correct * kl).mean()
        return cross_entropy + self.eta * self.warmup_factor(epoch) * mixup

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "eta": self.eta,
            "num_noise_vec": self.num_noise_vec,
            "num_steps": self.num_steps,
            "warmup": self.warmup,
            "mix_step": self.mix_step,
            "maxnorm_s": self.maxnorm_s,
            "maxnorm": self.maxnorm,
            "step_size": self.step_size,
            "clip_values": self.clip_values,
        }
