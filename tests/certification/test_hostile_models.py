"""A model that writes to its input never changes what is certified.

The engine gives the model one batch buffer whose every sample is rewritten before it is read
again, and the probes run on copies: a model that zeroes its input after computing its answer,
or one that zeroes the whole storage behind its input, or the common in-place normalisation
``x -= mean; x /= std``, gets exactly the certificates of the same function written without
side effects.
"""

from __future__ import annotations

import torch
from torch import nn

from rs_plugin import Gaussian, SmoothedClassifier
from rs_plugin.certification.probe import probe_model


def _linear() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    return model.eval()


class ZeroesItsInput(nn.Module):
    """f's answer, then the input (or, with ``storage``, every element behind it) zeroed."""

    def __init__(self, f: nn.Module, storage: bool = False) -> None:
        super().__init__()
        self.f, self.storage = f, storage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.f(x.clone())
        if self.storage:
            whole = x.new_empty(0)
            whole.set_(x.untyped_storage())
            whole.zero_()
        else:
            x.zero_()
        return out


class NormalisesInPlace(nn.Module):
    def __init__(self, f: nn.Module, mean: float, std: float, in_place: bool) -> None:
        super().__init__()
        self.f, self.mean, self.std, self.in_place = f, mean, std, in_place

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_place:
            x -= self.mean
            x /= self.std
        else:
            x = (x - self.mean) / self.std
        return self.f(x)


def _inputs() -> torch.Tensor:
    return torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(3))


def _certify(model: nn.Module, x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, ...]:
    smoothed = SmoothedClassifier(model, Gaussian(0.5), 10, clip_values=(0.0, 1.0))
    # n0 + n = 700 samples per input: noise blocks of 256 straddle batches of 300 and of 100.
    c = smoothed.certify(x, n0=100, n=600, alpha=0.01, batch_size=batch_size, seed=5)
    return c.prediction, c.radius, c.p_lower


def _same(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> None:
    for left, right in zip(a, b, strict=True):
        torch.testing.assert_close(left, right, rtol=0, atol=0)


def test_a_model_that_zeroes_its_input_gets_the_certificates_of_its_function():
    f = _linear()
    x = _inputs()
    kept = x.clone()
    for batch_size in (300, 100, 4096):
        expected = _certify(f, x, batch_size)
        for storage in (False, True):
            _same(_certify(ZeroesItsInput(f, storage).eval(), x, batch_size), expected)
            torch.testing.assert_close(x, kept, rtol=0, atol=0)


def test_in_place_normalisation_gets_the_certificates_of_the_out_of_place_one():
    f = _linear()
    x = _inputs()
    expected = _certify(NormalisesInPlace(f, 0.25, 0.5, in_place=False).eval(), x, 300)
    _same(_certify(NormalisesInPlace(f, 0.25, 0.5, in_place=True).eval(), x, 300), expected)
    assert float(x.min()) >= 0.0  # the inputs were not normalised behind the caller's back


def test_the_probe_runs_on_a_copy():
    x = _inputs()
    kept = x.clone()
    logits = probe_model(ZeroesItsInput(_linear()), x)
    assert logits.shape == (6, 10)
    torch.testing.assert_close(x, kept, rtol=0, atol=0)
