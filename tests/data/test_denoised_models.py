"""The shipped denoised-smoothing pair for Fashion-MNIST: what the files say they were trained
for, and that the denoisers help the clean classifier under noise."""

from __future__ import annotations

import pytest
import torch

from rs_plugin import RSValueError
from rs_plugin.data import (
    FASHION_MNIST_DIR,
    SHIPPED_DENOISERS,
    load_clean_classifier,
    load_idx,
    load_shipped_denoiser,
)
from rs_plugin.data.train_denoised import denoised_accuracy


@pytest.fixture(scope="module")
def test_images() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_idx(FASHION_MNIST_DIR, "test")
    return x[:500], y[:500]


@pytest.mark.parametrize("name", SHIPPED_DENOISERS)
def test_shipped_denoisers_are_for_gaussian_noise_with_sigma_in_0_1(name):
    denoiser = load_shipped_denoiser(name)
    assert denoiser.noise == "gaussian"
    assert denoiser.sigma_range == (0.0, 1.0)
    assert not denoiser.training


def test_an_unknown_shipped_denoiser_is_refused():
    with pytest.raises(RSValueError, match="denoiser.*demo"):
        load_shipped_denoiser("dncnn")


def test_without_noise_the_accuracy_is_the_clean_accuracy(test_images):
    x, y = test_images
    classifier = load_clean_classifier()
    with torch.no_grad():
        clean = float((classifier(x).argmax(1) == y).float().mean())
    assert denoised_accuracy(classifier, None, x, y, 0.0) == pytest.approx(clean)
    assert clean > 0.8  # a classifier trained on clean images, 90 % on the whole test set


@pytest.mark.parametrize("name", SHIPPED_DENOISERS)
def test_the_shipped_denoisers_help_the_clean_classifier_under_noise(test_images, name):
    x, y = test_images
    classifier = load_clean_classifier()
    # Measured on 1 000 test images at σ = 0.5: 54 % without a denoiser, 72 % (mse) and 79 %
    # (demo) behind one; 500 images and a 10-point margin leave room for the sampling.
    alone = denoised_accuracy(classifier, None, x, y, 0.5)
    behind = denoised_accuracy(classifier, load_shipped_denoiser(name), x, y, 0.5)
    assert behind > alone + 0.1
