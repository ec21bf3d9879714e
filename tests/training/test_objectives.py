"""Training objectives against independent re-implementations of the papers' formulas, and every
objective with every input-space noise."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, softmax
from scipy.stats import norm
from torch import nn

from rs_plugin import Gaussian, Laplace, RSValueError, Uniform
from rs_plugin.data import load_demo_model, load_digits
from rs_plugin.training import (
    CATRS,
    MACER,
    Consistency,
    NoiseAugmentation,
    Objective,
    SmoothAdv,
    SmoothMix,
)
from rs_plugin.training.objective import draw_seed, perturbed_copies
from rs_plugin.training.smoothadv import smoothed_nll

SIGMA = 0.25


def _digits(count: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits("test")
    return x[start : start + count], y[start : start + count]


class Recorder(nn.Module):
    """Wraps a model and keeps every input batch it sees (to read the noise back)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.model(x)


def _linear() -> nn.Linear:
    """A 64 → 10 linear layer initialised from a fixed seed (the global RNG left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Linear(64, 10)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _numpy_logits(model: nn.Module, noisy: torch.Tensor, k: int) -> np.ndarray:
    with torch.no_grad():
        return model(noisy).double().numpy().reshape(-1, k, 10)


# -- MACER (Zhai et al. 2020) ----------------------------------------------------------------------


def _macer_reference(logits: np.ndarray, y: np.ndarray, sigma, beta, gamma, lmbda) -> float:
    """The paper's loss from (B, k, C) logits: CE of the mean softmax plus
    λ·σ/2·Σ(γ − ξ)/B over correct inputs with ξ = Φ⁻¹(p̂_A) − Φ⁻¹(p̂_B) ≤ γ, finite."""
    batch = len(y)
    mean = softmax(logits, axis=2).mean(axis=1)
    classification = -np.log(mean[np.arange(batch), y] + 1e-10).mean()
    scores = softmax(beta * logits, axis=2).mean(axis=1)
    order = np.argsort(-scores, axis=1)
    top, second = order[:, 0], order[:, 1]
    rows = np.arange(batch)
    with np.errstate(divide="ignore"):
        xi = norm.ppf(scores[rows, top]) - norm.ppf(scores[rows, second])
    keep = (top == y) & np.isfinite(xi) & (xi <= gamma)
    robustness = sigma / 2 * (gamma - xi[keep]).sum() / batch
    return classification + lmbda * robustness


def test_macer_loss_is_the_papers_for_gaussian_noise():
    model = load_demo_model()
    x, y = _digits(40)
    k = 8
    objective = MACER(Gaussian(SIGMA), beta=16.0, gamma=8.0, lmbda=12.0, num_noise_samples=k)
    loss = objective.loss(model, x, y, generator=_generator(3), epoch=0)
    noisy = Gaussian(SIGMA).perturb(x.repeat_interleave(k, dim=0), _generator(3))
    logits = _numpy_logits(model, noisy, k)
    expected = _macer_reference(logits, y.numpy(), SIGMA, 16.0, 8.0, 12.0)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-4)
    _, active = objective.robustness_terms(torch.from_numpy(logits).float(), y, 64)
    assert 0 < int(active.sum()) < len(y), "the test needs inputs on both sides of the hinge"


def test_macer_hinge_and_margin_reduce_to_the_gaussian_formula():
    objective = MACER(Gaussian(0.5), gamma=8.0)
    assert objective.hinge_radius(64) == pytest.approx(0.5 * 8.0 / 2)
    from rs_plugin.training.macer import margin_radius

    p_top, p_second = torch.tensor([0.7, 0.4]), torch.tensor([0.2, 0.35])
    expected = 0.5 / 2 * (norm.ppf(p_top.numpy()) - norm.ppf(p_second.numpy()))
    got = margin_radius(Gaussian(0.5), p_top, p_second, 64).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_macer_gradient_stays_finite_when_the_runner_up_underflows():
    """With β = 16 and confident logits the runner-up's soft score is exactly 0 and Φ⁻¹ is
    −∞: such inputs are left out without turning the gradient into NaN (0 · ∞)."""
    linear = _linear()
    with torch.no_grad():
        linear.weight.mul_(200.0)
    model = nn.Sequential(nn.Flatten(), linear)
    x, y = _digits(16)
    objective = MACER(Gaussian(SIGMA), num_noise_samples=4)
    noisy = Gaussian(SIGMA).perturb(x.repeat_interleave(4, dim=0), _generator(0))
    with torch.no_grad():
        scores = torch.softmax(16.0 * model(noisy), dim=1).view(16, 4, 10).mean(dim=1)
    assert int((scores.topk(2, dim=1).values[:, 1] == 0).sum()) > 0, "the test needs underflow"
    loss = objective.loss(model, x, y, generator=_generator(0), epoch=0)
    loss.backward()
    assert torch.isfinite(loss)
    assert linear.weight.grad is not None and torch.isfinite(linear.weight.grad).all()


def test_macer_deferred_epochs_train_on_cross_entropy_only():
    model = load_demo_model()
    x, y = _digits(20)
    deferred = MACER(Gaussian(SIGMA), num_noise_samples=4, deferred_epochs=2)
    plain = MACER(Gaussian(SIGMA), num_noise_samples=4, lmbda=0.0)
    with torch.no_grad():
        first = float(deferred.loss(model, x, y, generator=_generator(1), epoch=1))
        assert first == pytest.approx(
            float(plain.loss(model, x, y, generator=_generator(1), epoch=1))
        )
        assert float(deferred.loss(model, x, y, generator=_generator(1), epoch=2)) > first


# -- Consistency (Jeong & Shin 2020) ---------------------------------------------------------------


def test_consistency_loss_is_the_papers():
    model = load_demo_model()
    x, y = _digits(30)
    m, lmbda, eta = 3, 10.0, 0.5
    objective = Consistency(Gaussian(SIGMA), num_noise_vec=m, lmbda=lmbda, eta=eta)
    loss = objective.loss(model, x, y, generator=_generator(5), epoch=0)
    noisy = Gaussian(SIGMA).perturb(x.repeat_interleave(m, dim=0), _generator(5))
    logits = _numpy_logits(model, noisy, m)
    labels = y.numpy()
    log_p = log_softmax(logits, axis=2)
    cross_entropy = -log_p[np.arange(len(labels)), :, labels].mean()
    mean = np.exp(log_p).mean(axis=1)
    kl = (mean[:, None, :] * (np.log(mean)[:, None, :] - log_p)).sum(axis=2).mean(axis=1)
    entropy = -(mean * np.log(mean)).sum(axis=1)
    expected = cross_entropy + (lmbda * kl + eta * entropy).mean()
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_consistency_needs_two_noise_draws():
    with pytest.raises(RSValueError, match="^num_noise_vec: expected an integer >= 2"):
        Consistency(Gaussian(SIGMA), num_noise_vec=1)


# -- SmoothAdv (Salman et al. 2019) ----------------------------------------------------------------


def test_smoothadv_attack_stays_in_budget_and_raises_the_smoothed_loss():
    model = load_demo_model()
    x, y = _digits(30)
    objective = SmoothAdv(
        Gaussian(SIGMA), epsilon=0.5, num_noise_vec=4, num_steps=5, clip_values=(0.0, 1.0)
    )
    x_adv = objective.attack(model, x, y, epsilon=0.5, seed=42)
    distance = torch.linalg.vector_norm((x_adv - x).flatten(1), dim=1)
    assert (distance <= 0.5 + 1e-5).all() and float(distance.mean()) > 0.3
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    with torch.no_grad():
        before = smoothed_nll(model, Gaussian(SIGMA), x, y, 4, 42)
        after = smoothed_nll(model, Gaussian(SIGMA), x_adv, y, 4, 42)
    assert float(after.mean()) > float(before.mean()) + 0.1
    assert float((after > before).double().mean()) >= 0.9


def test_smoothadv_trains_on_the_attacks_own_noise_and_warms_up():
    recorder = Recorder(load_demo_model())
    x, y = _digits(6)
    objective = SmoothAdv(Gaussian(SIGMA), epsilon=1.0, num_noise_vec=3, num_steps=2, warmup=4)
    assert [objective.epsilon_at(e) for e in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    recorder.train()
    objective.loss(recorder, x, y, generator=_generator(9), epoch=0)
    assert recorder.training  # the attack ran in eval mode and gave the mode back
    # Two attack forwards, then the training forward, all on their input plus the same draws.
    assert len(recorder.seen) == 3
    noise = perturbed_copies(Gaussian(SIGMA), torch.zeros_like(x), 3, draw_seed(_generator(9)))
    start = (recorder.seen[0] - noise).view(6, 3, -1)
    torch.testing.assert_close(start, x.view(6, 1, -1).expand(6, 3, 64))
    trained_on = (recorder.seen[2] - noise).view(6, 3, -1)
    torch.testing.assert_close(trained_on, trained_on[:, :1].expand(6, 3, 64))
    moved = torch.linalg.vector_norm(trained_on[:, 0] - x.view(6, -1), dim=1)
    assert (moved <= 0.25 + 1e-5).all() and float(moved.min()) > 0.2


# -- SmoothMix (Jeong et al. 2021) -----------------------------------------------------------------


def test_smoothmix_sides_follow_mix_step_and_norm_bounds():
    model = load_demo_model()
    x, y = _digits(12)
    base: dict[str, Any] = {
        "num_noise_vec": 2,
        "num_steps": 3,
        "step_size": 0.5,
        "clip_values": (0.0, 1.0),
    }
    clean, adversarial = SmoothMix(Gaussian(SIGMA), **base).attack(model, x, y, seed=1, epoch=0)
    torch.testing.assert_close(clean, x)
    moved = torch.linalg.vector_norm((adversarial - x).flatten(1), dim=1)
    assert (moved <= 3 * 0.5 + 1e-5).all() and float(moved.mean()) > 0.5
    bounded = SmoothMix(Gaussian(SIGMA), maxnorm=0.4, **base)
    _, adversarial = bounded.attack(model, x, y, seed=1, epoch=0)
    assert (torch.linalg.vector_norm((adversarial - x).flatten(1), dim=1) <= 0.4 + 1e-5).all()
    one_step = SmoothMix(Gaussian(SIGMA), mix_step=1, warmup=2, **base)
    clean, _ = one_step.attack(model, x, y, seed=1, epoch=0)
    # The one-step iterate, its norm α·mix_step scaled by the warm-up (1/2 in the first epoch).
    assert (torch.linalg.vector_norm((clean - x).flatten(1), dim=1) <= 0.25 + 1e-5).all()
    assert float(torch.linalg.vector_norm((clean - x).flatten(1), dim=1).mean()) > 0.2


def test_smoothmix_loss_is_the_papers():
    model = load_demo_model()
    x, y = _digits(20)
    m, eta = 2, 5.0
    objective = SmoothMix(
        Gaussian(SIGMA), eta=eta, num_noise_vec=m, num_steps=2, warmup=2, clip_values=(0.0, 1.0)
    )
    loss = objective.loss(model, x, y, generator=_generator(11), epoch=0)
    # Replay the draws: the noise seed, the attack, then λ.
    generator = _generator(11)
    seed = draw_seed(generator)
    clean, adversarial = objective.attack(model, x, y, seed=seed, epoch=0)
    lam = (torch.rand(len(x), generator=generator) / 2).double().numpy()
    clean_logits = _numpy_logits(model, perturbed_copies(Gaussian(SIGMA), clean, m, seed), m)
    labels = y.numpy()
    log_p = log_softmax(clean_logits, axis=2)
    cross_entropy = -log_p[np.arange(len(labels)), :, labels].mean()
    clean_probs = np.exp(log_p).mean(axis=1)
    target = (1 - lam)[:, None] * clean_probs + lam[:, None] / 10
    lam_t = torch.from_numpy(lam).float().view(-1, 1, 1, 1)
    mixed = (1 - lam_t) * clean + lam_t * adversarial
    log_q = log_softmax(
        _numpy_logits(model, perturbed_copies(Gaussian(SIGMA), mixed, m, seed), m), axis=2
    )
    kl = (target[:, None, :] * (np.log(target)[:, None, :] - log_q)).sum(axis=2)
    correct = (clean_probs.argmax(axis=1) == labels)[:, None]
    mixup = (correct * kl).mean()
    assert mixup > 0.01 * cross_entropy, "the test needs a mixup term that counts"
    assert float(loss.detach()) == pytest.approx(cross_entropy + eta * 0.5 * mixup, rel=1e-4)


# -- every objective, every input-space noise ------------------------------------------------------

OBJECTIVES = {
    "augmentation": lambda s: NoiseAugmentation(s),
    "smoothadv": lambda s: SmoothAdv(s, epsilon=0.5, num_noise_vec=2, num_steps=2),
    "macer": lambda s: MACER(s, num_noise_samples=4),
    "consistency": lambda s: Consistency(s),
    "smoothmix": lambda s: SmoothMix(s, num_noise_vec=2, num_steps=2, clip_values=(0.0, 1.0)),
    "catrs": lambda s: CATRS(s, num_noise_vec=2, num_steps=2),
}
NOISES = {"gaussian": Gaussian(0.25), "laplace": Laplace(0.25), "uniform": Uniform(0.25)}


def _input_blind_linear() -> nn.Module:
    """Logits = bias: zero weights, so attacks do not move the input (zero input gradient),
    while every parameter still gets a gradient."""
    linear = _linear()
    with torch.no_grad():
        linear.weight.zero_()
    return nn.Sequential(nn.Flatten(), linear)


@pytest.mark.parametrize("noise", sorted(NOISES))
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_draws_its_noise_from_the_smoothing(name, noise):
    """The objective's last forward sees the smoothing's noise around the input (spread and
    kurtosis: 3 for Gaussian, 6 for Laplace, 1.8 for uniform noise), and its loss has finite,
    non-zero gradients for every parameter."""
    smoothing = NOISES[noise]
    objective: Objective = OBJECTIVES[name](smoothing)
    recorder = Recorder(_input_blind_linear())
    x = torch.full((256, 1, 8, 8), 0.5)
    y = torch.arange(256) % 10
    loss = objective.loss(recorder, x, y, generator=_generator(2), epoch=0)
    loss.backward()
    assert torch.isfinite(loss)
    for parameter in recorder.parameters():
        assert parameter.grad is not None
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0
    noise_seen = recorder.seen[-1] - 0.5
    reference = smoothing.perturb(torch.zeros(100_000), _generator(0))
    assert float(noise_seen.std()) == pytest.approx(float(reference.std()), rel=0.1)
    assert abs(float(noise_seen.mean())) < 0.02

    def kurtosis(t: torch.Tensor) -> float:
        return float((t**4).mean() / t.var() ** 2)

    assert kurtosis(noise_seen) == pytest.approx(kurtosis(reference), rel=0.25)
