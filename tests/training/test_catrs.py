"""CAT-RS (Jeong, Kim & Shin 2023) against the loss computed independently from the noise the
model saw, on samples whose split (all copies correct / none correct) is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, softmax
from torch import nn

from rs_plugin import Brightness, Gaussian, RSValueError
from rs_plugin.training import CATRS
from rs_plugin.training.catrs import catrs_terms, worst_case_noise


class Recorder(nn.Module):
    """Wraps a model and keeps every input batch it sees."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.model(x)


def _model(bias_class: int | None = None) -> nn.Module:
    """Flatten → linear 16 → 3, seeded; with ``bias_class`` that class wins by a wide margin."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        linear = nn.Linear(16, 3)
    if bias_class is not None:
        with torch.no_grad():
            linear.bias.zero_()
            linear.bias[bias_class] = 6.0
    return nn.Sequential(nn.Flatten(), linear)


def _x(batch: int) -> torch.Tensor:
    return torch.rand((batch, 1, 4, 4), generator=torch.Generator().manual_seed(3))


def _logits(model: nn.Module, inputs: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(inputs).double().numpy()


def test_a_sample_all_of_whose_copies_are_correct_gets_all_copies_and_the_worst_case_term():
    """K = m: L = (1/m) Σ_i CE_i + λ max_i KL(q ‖ F(x + δ_i*)), q the mean softmax of the m
    copies; recomputed in NumPy from the inputs the model saw (the draws, then the attack's)."""
    m, lmbda, epsilon = 4, 0.7, 0.5
    recorder = Recorder(_model(bias_class=1))
    x, y = _x(3), torch.ones(3, dtype=torch.int64)
    objective = CATRS(Gaussian(0.25), num_noise_vec=m, epsilon=epsilon, num_steps=3, lmbda=lmbda)
    loss = objective.loss(recorder, x, y, generator=torch.Generator().manual_seed(1), epoch=0)
    noisy, worst = recorder.seen[0], recorder.seen[-1]
    clean = _logits(recorder.model, noisy).reshape(3, m, 3)
    assert (clean.argmax(axis=2) == 1).all(), "the test needs every copy correct"
    cross_entropy = -log_softmax(clean, axis=2)[:, :, 1].mean(axis=1)
    q = softmax(clean, axis=2).mean(axis=1)
    log_p = log_softmax(_logits(recorder.model, worst), axis=1).reshape(3, m, 3)
    kl = (q[:, None, :] * (np.log(q)[:, None, :] - log_p)).sum(axis=2)
    expected = (cross_entropy + lmbda * kl.max(axis=1)).mean()
    assert lmbda * kl.max(axis=1).mean() > 1e-3 * cross_entropy.mean(), "the KL term must count"
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    # The attacked noise stays within ε of its draw and keeps the draw's mean and scale.
    delta0 = (noisy - x.repeat_interleave(m, dim=0)).flatten(1)
    delta = (worst - x.repeat_interleave(m, dim=0)).flatten(1)
    assert not torch.allclose(delta, delta0)
    assert torch.allclose(delta.mean(1), delta0.mean(1), atol=1e-5)
    assert torch.allclose(delta.square().mean(1), delta0.square().mean(1), rtol=1e-4)


def test_a_sample_no_copy_gets_right_trains_on_its_easiest_copy_only():
    """p̂ = 0 gives K = 1: L = min_i CE_i / m, and no attack is run (one forward pass)."""
    m = 4
    recorder = Recorder(_model(bias_class=1))
    x, y = _x(5), torch.zeros(5, dtype=torch.int64)
    objective = CATRS(Gaussian(0.25), num_noise_vec=m, num_steps=2, lmbda=2.0)
    loss = objective.loss(recorder, x, y, generator=torch.Generator().manual_seed(4), epoch=0)
    assert len(recorder.seen) == 1
    clean = _logits(recorder.model, recorder.seen[0]).reshape(5, m, 3)
    assert (clean.argmax(axis=2) != 0).all(), "the test needs every copy wrong"
    cross_entropy = -log_softmax(clean, axis=2)[:, :, 0]
    assert float(loss.detach()) == pytest.approx((cross_entropy.min(axis=1) / m).mean(), rel=1e-5)


def test_the_terms_keep_the_k_smallest_losses_and_have_the_right_gradient():
    """catrs_terms: bottom-K selection and the masked worst-case KL, and a finite-difference
    gradient check in float64 (the selection is fixed away from ties)."""
    generator = torch.Generator().manual_seed(0)
    clean = torch.randn((4, 3, 5), generator=generator, dtype=torch.float64)
    worst = torch.randn((4, 3, 5), generator=generator, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    accepted = torch.tensor([1, 2, 3, 3])
    target = torch.softmax(torch.randn((4, 5), generator=generator, dtype=torch.float64), dim=1)
    low, high = catrs_terms(clean, worst, y, accepted, target)
    losses = -torch.log_softmax(clean, dim=2)[torch.arange(4), :, y]
    for i, k in enumerate(accepted.tolist()):
        assert float(low[i]) == pytest.approx(float(losses[i].sort().values[:k].sum() / 3))
    assert float(high[0]) == 0.0 and float(high[1]) == 0.0
    kl = (target[:, None] * (target.log()[:, None] - torch.log_softmax(worst, dim=2))).sum(2)
    assert torch.allclose(high[2:], kl[2:].max(dim=1).values)

    def total(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        first, second = catrs_terms(a, b, y, accepted, target)
        return (first + 0.5 * second).sum()

    inputs = (clean.clone().requires_grad_(True), worst.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(total, inputs)


def test_the_attack_raises_the_kl_and_stays_in_budget():
    model = _model()
    x = _x(6)
    noise = 0.25 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    target = torch.softmax(model(x), dim=1).detach()  # the clean prediction, q ≠ F(x + δ)
    worst = worst_case_noise(model, x, noise, target, epsilon=0.5, num_steps=4)
    before = (target * (target.log() - torch.log_softmax(model(x + noise), 1))).sum(1)
    after = (target * (target.log() - torch.log_softmax(model(x + worst), 1))).sum(1)
    assert (after > before).all()
    # The rescaling may move δ* slightly off the ε-ball around δ; it stays near it.
    assert torch.linalg.vector_norm((worst - noise).flatten(1), dim=1).max() < 0.5 * 1.05


def test_catrs_needs_an_additive_noise_and_valid_settings():
    with pytest.raises(RSValueError, match="smoothing"):
        CATRS(Brightness(0.2))
    with pytest.raises(RSValueError, match="num_steps"):
        CATRS(Gaussian(0.25), num_steps=0)
    with pytest.raises(RSValueError, match="teacher"):
        CATRS(Gaussian(0.25), teacher="model")  # type: ignore[arg-type]


def test_a_teacher_sets_the_target():
    """With a teacher the KL target is the teacher's smoothed prediction: the loss changes."""
    x, y = _x(3), torch.ones(3, dtype=torch.int64)

    def loss(teacher: nn.Module | None) -> float:
        objective = CATRS(Gaussian(0.25), num_noise_vec=2, num_steps=2, teacher=teacher)
        model = _model(bias_class=1)
        return float(
            objective.loss(
                model, x, y, generator=torch.Generator().manual_seed(5), epoch=0
            ).detach()
        )

    assert loss(None) != pytest.approx(loss(_model(bias_class=2)))
