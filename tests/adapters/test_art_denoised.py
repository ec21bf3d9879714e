"""ART's estimator with ``denoiser=``: attacks, gradients and certificates go through the
denoiser; what it refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from art.attacks.evasion import ProjectedGradientDescent
from torch import nn

from rs_plugin import Laplace, RSValueError
from rs_plugin.adapters.art import PyTorchRandomizedSmoothing
from rs_plugin.data import load_demo_model, load_digits
from rs_plugin.denoising import build_denoiser

SIGMA = 0.25


class _Composed(nn.Module):
    """model(D(x, σ)) as a plain model, the oracle the estimator's denoiser path must match."""

    def __init__(self, model: nn.Module, denoiser: nn.Module) -> None:
        super().__init__()
        self.model, self.denoiser = model, denoiser

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.denoiser(x, SIGMA))


class _Constant(nn.Module):
    """A 'denoiser' that ignores its input: everything behind it has zero input gradient."""

    def forward(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        return x * 0.0 + 0.5


def _estimator(model: nn.Module, **extra) -> PyTorchRandomizedSmoothing:
    return PyTorchRandomizedSmoothing(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, 8, 8),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        sample_size=16,
        scale=SIGMA,
        device_type="cpu",
        **extra,
    )


@pytest.fixture
def parts():
    x, y = load_digits("test")
    return load_demo_model(), build_denoiser(0, width=4, depth=1).eval(), x[:6].numpy(), y[:6]


def test_gradients_and_predictions_are_those_of_the_composed_model(parts):
    model, denoiser, x, y = parts
    ours = _estimator(model, denoiser=denoiser)
    oracle = _estimator(_Composed(model, denoiser).eval())
    labels = y.numpy()
    for sampling in (None, False):
        np.testing.assert_allclose(
            ours.loss_gradient(x, labels, sampling=sampling),
            oracle.loss_gradient(x, labels, sampling=sampling),
            rtol=1e-4,
            atol=1e-6,
        )
    prediction, radius = ours.certify(x, n=100, batch_size=100)
    expected, expected_radius = oracle.certify(x, n=100, batch_size=100)
    np.testing.assert_array_equal(prediction, expected)
    np.testing.assert_allclose(radius, expected_radius, rtol=1e-5)
    undenoised = _estimator(model)
    assert not np.allclose(ours.loss_gradient(x, labels), undenoised.loss_gradient(x, labels))


def test_art_pgd_attacks_through_the_denoiser(parts):
    model, denoiser, x, y = parts
    estimator = _estimator(model, denoiser=denoiser, outputs="log_probabilities")
    attack = ProjectedGradientDescent(estimator, norm=2, eps=0.5, eps_step=0.2, max_iter=3,
                                      verbose=False)  # fmt: skip
    adversarial = attack.generate(x, y=y.numpy())
    moved = np.linalg.norm((adversarial - x).reshape(len(x), -1), axis=1)
    assert moved.max() <= 0.5 + 1e-5 and moved.max() > 0.1
    # Behind a denoiser that ignores its input the gradient is zero, so PGD cannot move.
    frozen = _estimator(model, denoiser=_Constant(), outputs="log_probabilities")
    blind = ProjectedGradientDescent(frozen, norm=2, eps=0.5, eps_step=0.2, max_iter=3,
                                     verbose=False).generate(x, y=y.numpy())  # fmt: skip
    np.testing.assert_array_equal(blind, x)


def test_a_smoothing_the_denoiser_was_not_trained_for_is_refused(parts):
    model, _, _, _ = parts
    narrow = build_denoiser(0, width=4, depth=1, sigma_range=(0.0, 0.2))
    with pytest.raises(RSValueError, match=r"smoothing.*\[0\.0, 0\.2\].*0\.25"):
        _estimator(model, denoiser=narrow)
    estimator = _estimator(model, denoiser=build_denoiser(0, width=4, depth=1))
    with pytest.raises(RSValueError, match=r"smoothing.*gaussian.*Laplace"):
        estimator.smoothing = Laplace(0.25)
    estimator.scale = 0.5  # inside [0, 1]: the denoiser is told the new σ
    assert estimator.smoothed.model.sigma == 0.5
    assert estimator.scale == 0.5


def test_fit_is_refused_with_a_denoiser(parts):
    model, denoiser, x, y = parts
    estimator = PyTorchRandomizedSmoothing(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1), scale=SIGMA, device_type="cpu",
        denoiser=denoiser,
    )  # fmt: skip
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RSValueError, match="denoiser"):
        estimator.fit(x, y.numpy(), nb_epochs=1)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
