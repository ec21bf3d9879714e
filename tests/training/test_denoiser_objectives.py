"""Denoiser objectives: the noise they draw, what they refuse, that MSE training denoises, that
the classifier stays frozen bit for bit, and that a seed fixes the run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rs_plugin import Brightness, Gaussian, Laplace, RSValueError
from rs_plugin.denoising import build_denoiser
from rs_plugin.training import DenoiserObjective, train


def _classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 4)).eval()


def _data(count: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    # Smooth images (a coarse pattern upsampled), so that a denoiser has structure to exploit.
    coarse = torch.rand(count, 1, 2, 2, generator=generator)
    x = nn.functional.interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=False)
    return x, torch.zeros(count, dtype=torch.int64)


@pytest.mark.parametrize("smoothing", [Gaussian(0.5), Laplace(0.5)])
def test_each_input_gets_noise_of_its_own_sigma(smoothing):
    objective = DenoiserObjective(smoothing, sigma_range=(0.0, 1.0))
    x = torch.zeros(400, 1, 32, 32)
    noisy, sigma = objective.noisy(x, torch.Generator().manual_seed(1))
    assert sigma.shape == (400,) and float(sigma.min()) >= 0.0 and float(sigma.max()) <= 1.0
    assert float(sigma.std()) == pytest.approx((1 / 12) ** 0.5, rel=0.15)  # U[0, 1]
    spread = noisy.flatten(1).std(dim=1)
    # 1024 coordinates per input: the sample deviation is within 20 % of σᵢ (over 5 standard
    # errors even for Laplace noise's heavier tails).
    assert torch.allclose(spread, sigma, rtol=0.2, atol=1e-3)


def test_without_a_range_every_input_gets_the_smoothings_sigma():
    objective = DenoiserObjective(Gaussian(0.3), sigma_range=None)
    noisy, sigma = objective.noisy(torch.zeros(8, 1, 32, 32), torch.Generator().manual_seed(1))
    assert torch.equal(sigma, torch.full((8,), 0.3))
    assert float(noisy.std()) == pytest.approx(0.3, rel=0.05)


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"smoothing": Brightness(0.2)}, "smoothing"),
        ({"loss": "ssim"}, "loss"),
        ({"loss": "stability"}, "classifier"),
        ({"loss": "mse", "classifier": nn.Linear(2, 2)}, "classifier"),
        ({"sigma_range": (0.6, 0.2)}, "sigma_range"),
        ({"mse_weight": 0.0}, "mse_weight"),
    ],
)
def test_bad_arguments_are_refused_naming_the_parameter(kwargs, parameter):
    arguments = {"smoothing": Gaussian(0.5), **kwargs}
    with pytest.raises(RSValueError) as raised:
        DenoiserObjective(arguments.pop("smoothing"), **arguments)
    assert raised.value.parameter == parameter


def _mse(denoiser: nn.Module, x: torch.Tensor) -> float:
    objective = DenoiserObjective(Gaussian(0.5), sigma_range=(0.5, 0.5))
    with torch.no_grad():
        noisy, sigma = objective.noisy(x, torch.Generator().manual_seed(9))
        return float(((denoiser(noisy, sigma) - x) ** 2).mean())


def test_mse_training_lowers_the_denoising_error():
    x, y = _data(128)
    denoiser = build_denoiser(0, width=4, depth=1)
    before = _mse(denoiser.eval(), x)
    objective = DenoiserObjective(Gaussian(1.0), loss="mse")
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=1e-2)
    train(denoiser, objective, x, y, optimizer=optimizer, epochs=4, batch_size=32, generators=0)
    assert _mse(denoiser, x) < 0.5 * before


@pytest.mark.parametrize("loss", ["stability", "stability+mse"])
def test_the_classifier_stays_frozen_and_the_denoiser_learns(loss):
    x, y = _data()
    classifier = _classifier().train()  # even in training mode, nothing of it changes
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    denoiser = build_denoiser(0, width=4, depth=1)
    start = [p.detach().clone() for p in denoiser.parameters()]
    objective = DenoiserObjective(Gaussian(1.0), loss=loss, classifier=classifier)
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=1e-2)
    train(denoiser, objective, x, y, optimizer=optimizer, epochs=2, batch_size=16, generators=0)
    after = classifier.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in classifier.parameters())
    assert classifier.training  # its mode is restored
    assert any(not torch.equal(a, p) for a, p in zip(start, denoiser.parameters(), strict=True))


def test_stability_is_the_classifiers_cross_entropy_against_its_clean_prediction():
    classifier = _classifier()
    x = torch.rand(6, 1, 8, 8)

    class Identity(nn.Module):
        def forward(self, noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return x  # a perfect denoiser

    objective = DenoiserObjective(Gaussian(1.0), loss="stability", classifier=classifier)
    loss = objective.loss(Identity(), x, torch.zeros(6, dtype=torch.int64),
                          generator=torch.Generator().manual_seed(0), epoch=0)  # fmt: skip
    logits = classifier(x)
    expected = nn.functional.cross_entropy(logits, logits.argmax(dim=1))
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_the_same_seed_gives_the_same_denoiser():
    x, y = _data()
    runs = []
    for _ in range(2):
        denoiser = build_denoiser(0, width=4, depth=1)
        objective = DenoiserObjective(Gaussian(1.0), loss="stability+mse", classifier=_classifier())
        optimizer = torch.optim.Adam(denoiser.parameters(), lr=1e-2)
        train(denoiser, objective, x, y, optimizer=optimizer, epochs=1, batch_size=16,
              generators=3)  # fmt: skip
        runs.append(torch.cat([p.detach().flatten() for p in denoiser.parameters()]))
    assert torch.allclose(runs[0], runs[1])
