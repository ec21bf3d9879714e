"""A model that writes to its input never changes what is certified.

The engine gives the model one batch buffer whose every sample is rewritten before it is read
again, and the probes run on copies: a model that zeroes its input after computing its answer,
or one that zeroes the whole storage behind its input, or the common in-place normalisation
``x -= mean; x /= std``, gets exactly the certificates of the same function written without
side effects. A model whose output changes shape after the probe (wider logits on sampling
batches would send votes to another input's counts) is refused at the first such batch, and the
probe, run once per model state, runs again whenever the model's parameters change.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rs_plugin import Gaussian, RSValueError, SmoothedClassifier
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


class WidensOnLargeBatches(nn.Module):
    """f's logits on batches of at most ``small`` inputs (the probe's); on larger ones
    ``extra`` more columns whose first one wins: vote index num_classes + 1, which in the
    engine's flat count vector is the next input's class 0."""

    def __init__(self, f: nn.Module, small: int = 4, extra: int = 3) -> None:
        super().__init__()
        self.f, self.small, self.extra = f, small, extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.f(x)
        if x.shape[0] <= self.small:
            return logits
        widened = torch.full((x.shape[0], self.extra), -1e3)
        widened[:, 1] = 1e3
        return torch.cat([logits, widened], dim=1)


def test_a_model_that_widens_its_output_after_the_probe_is_refused_before_any_vote_counts():
    smoothed = SmoothedClassifier(WidensOnLargeBatches(_linear()).eval(), Gaussian(0.5), 10)
    certificates = smoothed.iter_certify(_inputs(), n0=100, n=600, batch_size=300)
    with pytest.raises(RSValueError, match=r"shape \(B, 10\) on every batch.*\(300, 13\)"):
        next(certificates)


class CountsProbes(nn.Module):
    """f, counting the calls on at most 4 inputs (the probe's batches; sampling uses 300)."""

    def __init__(self, f: nn.Module) -> None:
        super().__init__()
        self.f, self.probes, self.wide = f, 0, False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.probes += x.shape[0] <= 4
        logits = self.f(x)
        return torch.cat([logits, logits[:, :1]], dim=1) if self.wide else logits


def test_the_probe_runs_once_per_model_state_and_the_batches_are_checked_after_it():
    model = CountsProbes(_linear()).eval()
    smoothed = SmoothedClassifier(model, Gaussian(0.5), 10)
    x = _inputs()
    first = smoothed.certify(x, n0=100, n=600, batch_size=300)
    again = smoothed.certify(x, n0=100, n=600, batch_size=300)
    assert model.probes == 1
    torch.testing.assert_close(again.radius, first.radius, rtol=0, atol=0)
    smoothed.certify(x[:, :, :4, :4].repeat(1, 1, 2, 2), n0=10, n=20, batch_size=300)
    assert model.probes == 1  # same shape, dtype and device: other values need no new probe
    layer = model.f.get_submodule("1")
    assert isinstance(layer, nn.Linear)
    with torch.no_grad():
        layer.weight.mul_(2.0)  # an in-place write advances the version counter
    smoothed.certify(x, n0=10, n=20, batch_size=300)
    assert model.probes == 2
    layer.load_state_dict(_linear().get_submodule("1").state_dict())
    smoothed.certify(x, n0=10, n=20, batch_size=300)
    assert model.probes == 3
    # A change the state does not show (Python attributes) is caught by the batch check.
    model.wide = True
    with pytest.raises(RSValueError, match=r"\(300, 11\) on a batch of 300"):
        smoothed.certify(x, n0=100, n=600, batch_size=300)
    assert model.probes == 3


class KeepsTheSmoothing(nn.Module):
    """A step classifier (class 0 iff the first pixel < 0.5) that keeps the smoothing it is
    shown and multiplies its σ by 40 on every forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list = []

    def check_smoothing(self, smoothing) -> None:
        self.kept.append(smoothing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for smoothing in self.kept:
            smoothing.sigma *= 40
        s = 50 * (0.5 - x.flatten(1)[:, :1])
        return torch.cat([s, -s], dim=1)


def test_a_model_shown_the_smoothing_cannot_change_it():
    """check_smoothing gets a copy: the radius is the one of the σ the samples were drawn with
    (at most σΦ⁻¹(α^{1/n}) = 0.01 · 2.5 for σ = 0.01, n = 1000), and the caller's smoothing
    is left as it was."""
    smoothing = Gaussian(0.01)
    model = KeepsTheSmoothing().eval()
    certs = SmoothedClassifier(model, smoothing, 2).certify(
        torch.full((1, 1, 2, 2), 0.2), n0=100, n=1000, alpha=0.001, batch_size=100
    )
    assert len(model.kept) == 1 and model.kept[0] is not smoothing
    assert smoothing.sigma == 0.01
    assert int(certs.prediction[0]) == 0
    assert 0 < float(certs.radius[0]) <= 0.01 * 2.5


class _Steering(torch.Tensor):
    """Logits whose argmax moves every vote one class slot further (into another slot of the
    counts) - what a subclass's __torch_function__ could do to the engine's bookkeeping."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        out = super().__torch_function__(func, types, args, kwargs or {})
        if func is torch.Tensor.argmax:
            out = out.as_subclass(torch.Tensor) + 3
        return out


class ReturnsASubclass(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 2)
        logits[:, 1] = 5.0
        return logits.as_subclass(_Steering) if x.shape[0] > 4 else logits


def test_logits_of_a_tensor_subclass_are_refused_before_their_votes_are_counted():
    smoothed = SmoothedClassifier(ReturnsASubclass().eval(), Gaussian(0.25), 2)
    with pytest.raises(RSValueError, match="^model: .*_Steering on a batch of"):
        smoothed.certify(torch.full((1, 4), 0.5), n0=64, n=64, alpha=0.001, batch_size=128)
