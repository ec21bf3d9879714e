"""CAT-RS (Jeong, Kim & Shin 2023): confidence-aware training of smoothed classifiers.

The smoothed classifier's certified radius at x grows with p_A, its accuracy under the noise
there. CAT-RS uses that accuracy, estimated from the m noisy copies a training step draws
anyway, to decide per sample what to train for:

- a sample that some copies get wrong is *hard* (low confidence): pushing robustness there costs
  accuracy elsewhere, so it is trained only on its easiest copies;
- a sample that every copy gets right is *easy* (high confidence): it gets, on top, a worst-case
  term that keeps the prediction confident under noise pushed towards the decision boundary.

With δ_1 … δ_m drawn from the additive noise, F = softmax ∘ f, ℓ_i = CE(f(x + δ_i), y) sorted
ℓ_(1) ≤ … ≤ ℓ_(m), and p̂ = (1/m) Σ_i 1[argmax f(x + δ_i) = y] the accuracy under noise:

1. K ~ Binomial(m, p̂), raised to at least 1, drawn from the training generator: the number of
   copies the sample is trained on (E[K] = m·p̂, the expected number of correct copies).
2. The low-confidence term, over the K copies with the smallest loss,

       L_low = (1/m) Σ_{i ≤ K} ℓ_(i).

   A sample no copy gets right (p̂ = 0) is trained on its single easiest copy; one every copy
   gets right (p̂ = 1, so K = m) on all m copies: L_low is then the noise-augmentation loss
   (1/m) Σ_i ℓ_i.
3. The high-confidence term, only where K = m. With a target distribution q (the smoothed soft
   prediction (1/m) Σ_i F(x + δ_i), held fixed, or a teacher's), each δ_i is moved by T steps
   of ℓ2 PGD of size 2ε/T to δ_i* = argmax_{‖δ − δ_i‖₂ ≤ ε} KL(q ‖ F(x + δ)), each step
   followed by projection on the ε-ball around δ_i and by standardising δ to the mean μ_i and
   standard deviation s_i of δ_i's coordinates (δ ← μ_i + (δ − μ)·s_i / s, μ and s those of
   δ; so the attacked noise keeps the first two moments of its draw). Then

       L_high = max_i KL(q ‖ F(x + δ_i*)),

   with δ_i* held fixed (no gradient through the attack).
4. The loss is the batch mean of L_low + λ · 1[K = m] · L_high.

Only the noise is attacked, not the input: the certified input is x, and the worst case sought
is a bad draw of the noise the certificate averages over. The paper's code takes q from a
separately trained Gaussian model's smoothed prediction (``teacher`` here); without a teacher,
q is the model's own smoothed soft prediction on the same draws, as a fixed target.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from rs_plugin._validation import RSValueError, check_int, check_positive
from rs_plugin.smoothings.base import AdditiveNoise, Smoothing
from rs_plugin.training.objective import Objective, draw_seed
from rs_plugin.training.smoothadv import unit_l2

__all__ = ["CATRS", "catrs_terms", "kl_to_target", "worst_case_noise"]


def kl_to_target(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(q ‖ softmax(logits)) per row, shape (R,), from q (R, C) and logits (R, C)."""
    log_p = F.log_softmax(logits, dim=1)
    return (torch.special.xlogy(target, target) - target * log_p).sum(dim=1)


def catrs_terms(
    clean_logits: torch.Tensor,
    worst_logits: torch.Tensor,
    y: torch.Tensor,
    accepted: torch.Tensor,
    target: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, L_low and L_high (module docstring) from logits of shape (B, m, C).

    ``clean_logits`` at x + δ_i, ``worst_logits`` at x + δ_i* (rows where ``accepted`` < m are
    ignored), ``accepted`` = K (B,) in [1, m], ``target`` = q (B, C). L_high is 0 where K < m.
    """
    batch, m, classes = clean_logits.shape
    losses = F.cross_entropy(
        clean_logits.reshape(-1, classes), y.repeat_interleave(m), reduction="none"
    ).view(batch, m)
    kept = torch.arange(m, device=y.device)[None, :] < accepted[:, None]
    low = (losses.sort(dim=1).values * kept).sum(dim=1) / m
    kl = kl_to_target(target.repeat_interleave(m, dim=0), worst_logits.reshape(-1, classes))
    high = torch.where(accepted == m, kl.view(batch, m).max(dim=1).values, 0.0)
    return low, high


def _standardised_like(noise: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``noise`` shifted and scaled, per row, to the mean and standard deviation of the
    coordinates of ``reference``'s row."""
    flat, ref = noise.flatten(1), reference.flatten(1)
    mean, std = flat.mean(dim=1, keepdim=True), flat.std(dim=1, correction=0, keepdim=True)
    mean0, std0 = ref.mean(dim=1, keepdim=True), ref.std(dim=1, correction=0, keepdim=True)
    return (mean0 + (flat - mean) * (std0 / std.clamp_min(1e-12))).view_as(noise)


def worst_case_noise(
    model: nn.Module,
    inputs: torch.Tensor,
    noise: torch.Tensor,
    target: torch.Tensor,
    *,
    epsilon: float,
    num_steps: int,
) -> torch.Tensor:
    """δ* (R, ...) from T steps of ℓ2 PGD on KL(q ‖ F(x + δ)) started at ``noise`` δ (R, ...),
    for inputs x (R, ...) and targets q (R, C); steps of 2ε/T along the normalised gradient,
    each projected on ‖δ* − δ‖₂ ≤ ε and standardised to δ's per-row mean and standard
    deviation."""
    start = noise.detach()
    step = 2.0 * epsilon / num_steps
    current = start
    for _ in range(num_steps):
        current = current.detach().requires_grad_(True)
        loss = kl_to_target(target, model(inputs + current)).sum()
        (gradient,) = torch.autograd.grad(loss, [current])
        shift = (current.detach() + step * unit_l2(gradient) - start).flatten(1)
        norms = torch.linalg.vector_norm(shift, dim=1, keepdim=True)
        shift = shift * (epsilon / norms.clamp_min(epsilon))
        current = _standardised_like(start + shift.view_as(start), start)
    return current.detach()


class CATRS(Objective):
    """Confidence-aware training (Jeong, Kim & Shin 2023, "Confidence-aware training of smoothed
    classifiers for certified robustness", AAAI); the loss is derived in the module docstring.

    Args:
        smoothing: an additive noise (perturb(x) = x + δ): the attack moves δ.
        num_noise_vec: m ≥ 1 noisy copies per input; a batch is split into m chunks, one
            optimiser step each, as in the paper's code (paper: m = 4).
        epsilon: ℓ2 radius ε of the attack on each noise vector (paper: 1.0 = 256/256; the code
            doubles it after a warm-up on ImageNet only).
        num_steps: T, PGD steps of size 2ε/T (paper: 4).
        lmbda: λ, weight of the high-confidence term (paper: 0.5 at σ = 0.25, 1 at σ = 0.5,
            2 at σ = 1).
        teacher: a model whose smoothed soft prediction on the same draws is the target q (the
            paper's code: a Gaussian-trained model's); None: the model's own, held fixed.
    """

    name: ClassVar[str] = "catrs"

    def __init__(
        self,
        smoothing: Smoothing,
        *,
        num_noise_vec: int = 4,
        epsilon: float = 1.0,
        num_steps: int = 4,
        lmbda: float = 1.0,
        teacher: nn.Module | None = None,
    ) -> None:
        super().__init__(smoothing)
        if not isinstance(smoothing, AdditiveNoise):
            raise RSValueError(
                "smoothing", "an additive noise (rs_plugin.smoothings.AdditiveNoise)", smoothing
            )
        self.num_noise_vec = check_int("num_noise_vec", num_noise_vec, 1)
        self.epsilon = check_positive("epsilon", epsilon)
        self.num_steps = check_int("num_steps", num_steps, 1)
        self.lmbda = float(lmbda) if lmbda == 0 else check_positive("lmbda", lmbda)
        if teacher is not None and not isinstance(teacher, nn.Module):
            raise RSValueError("teacher", "None or a torch.nn.Module", teacher)
        self.teacher = teacher

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
        assert isinstance(self.smoothing, AdditiveNoise)  # checked in __init__
        m = self.num_noise_vec
        inputs = x.repeat_interleave(m, dim=0)
        noise = torch.empty_like(inputs)
        self.smoothing.noise_(noise, generator)
        clean_logits = model(inputs + noise)
        batch, classes = len(x), clean_logits.shape[1]
        with torch.no_grad():
            correct = (clean_logits.argmax(dim=1) == y.repeat_interleave(m)).view(batch, m)
            accuracy = correct.to(clean_logits.dtype).mean(dim=1)
            draws = torch.full_like(accuracy, float(m))
            binomial = torch.Generator(device=x.device).manual_seed(draw_seed(generator))
            accepted = torch.binomial(draws, accuracy, generator=binomial).long().clamp_min(1)
            source = clean_logits if self.teacher is None else self.teacher(inputs + noise)
            target = torch.softmax(source.float(), dim=1).view(batch, m, classes).mean(dim=1)
            target = target.to(clean_logits.dtype)
        easy = accepted == m
        worst_logits = clean_logits.detach().clone()
        if self.lmbda > 0 and bool(easy.any()):
            rows = easy.repeat_interleave(m)
            was_training = model.training
            model.eval()
            worst = worst_case_noise(
                model,
                inputs[rows],
                noise[rows],
                target[easy].repeat_interleave(m, dim=0),
                epsilon=self.epsilon,
                num_steps=self.num_steps,
            )
            model.train(was_training)
            worst_logits = worst_logits.index_put(
                (rows.nonzero()[:, 0],), model(inputs[rows] + worst)
            )
        low, high = catrs_terms(
            clean_logits.view(batch, m, classes),
            worst_logits.view(batch, m, classes),
            y,
            accepted,
            target,
        )
        return (low + self.lmbda * high).mean()

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "num_noise_vec": self.num_noise_vec,
            "epsilon": self.epsilon,
            "num_steps": self.num_steps,
            "lmbda": self.lmbda,
            "teacher": None if self.teacher is None else type(self.teacher).__name__,
        }
