"""Every bad input gets one RSValueError naming the parameter, before any sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rs_plugin import Gaussian, RSValueError, RSWarning, SmoothedClassifier
from rs_plugin.data import load_demo_model
from tests.analytic import LinearModel


class CallCounter(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x)


def _smoothed(**kwargs):
    model = CallCounter(load_demo_model()).eval()
    return model, SmoothedClassifier(model, Gaussian(0.25), 10, **kwargs)


def _images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("sigma", [0, -0.5, math.nan, math.inf, "0.25", None, True])
def test_sigma_must_be_positive_and_finite(sigma):
    with pytest.raises(RSValueError, match="^sigma: expected a finite number > 0; received"):
        Gaussian(sigma)


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
        ({"alpha": math.nan}, "alpha"),
        ({"n0": 0}, "n0"),
        ({"n": 0}, "n"),
        ({"n": 10.5}, "n"),
        ({"n": 2**31 + 1}, "n"),
        ({"seed": 2**64}, "seed"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"keys": [0, 1]}, "keys"),
    ],
)
def test_certify_parameters_are_checked_before_sampling(kwargs, parameter):
    model, smoothed = _smoothed()
    with pytest.raises(RSValueError, match=f"^{parameter}: expected .*; received "):
        smoothed.certify(_images(), **{"n0": 10, "n": 50, **kwargs})
    assert model.calls == 0


@pytest.mark.parametrize(
    ("x", "accepted"),
    [
        (torch.full((2, 1, 8, 8), math.nan), "finite values"),
        (torch.full((2, 1, 8, 8), math.inf), "finite values"),
        (torch.rand(8), "rank >= 2"),
        (torch.zeros(0, 1, 8, 8), "at least one input"),
        (torch.ones(2, 1, 8, 8, dtype=torch.int64), "floating-point"),
        ([[0.0]], "torch.Tensor or numpy array"),
        (torch.rand(2, 1, 28, 28), "forward pass runs"),
        (torch.rand(2, 8, 8), "forward pass runs"),
    ],
)
def test_bad_inputs_are_named(x, accepted):
    model, smoothed = _smoothed()
    with pytest.raises(RSValueError, match=f"^x: expected .*{accepted}"):
        smoothed.certify(x, n0=10, n=50)
    assert model.calls <= 1  # at most the clean probe, never a noisy batch


def test_values_outside_the_clip_range_are_rejected():
    model, smoothed = _smoothed(clip_values=(0.0, 1.0))
    x = _images()
    x[0, 0, 0, 0] = 1.5
    with pytest.raises(RSValueError, match=r"^x: expected values inside clip_values \[0.0, 1.0\]"):
        smoothed.predict(x, n=50)
    assert model.calls == 0


def test_numpy_inputs_are_accepted():
    _, smoothed = _smoothed()
    certs = smoothed.certify(_images().numpy().astype(np.float64), n0=10, n=50)
    assert len(certs) == 3


def test_class_count_mismatch_is_named():
    model = CallCounter(load_demo_model()).eval()
    smoothed = SmoothedClassifier(model, Gaussian(0.25), 5)
    with pytest.raises(
        RSValueError, match="^num_classes: expected the model's output width 10; received 5"
    ):
        smoothed.certify(_images(), n0=10, n=50)
    assert model.calls == 1


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"num_classes": 1}, "num_classes"),
        ({"num_noise_samples": 0}, "num_noise_samples"),
        ({"clip_values": (1.0, 0.0)}, "clip_values"),
        ({"seed": -3}, "seed"),
        ({"seed": 2**64}, "seed"),  # beyond what a generator can be seeded with
    ],
)
def test_constructor_arguments_are_checked(kwargs, parameter):
    args = {"num_classes": 10, **kwargs}
    with pytest.raises(RSValueError, match=f"^{parameter}: expected"):
        SmoothedClassifier(load_demo_model(), Gaussian(0.25), **args)


def test_constructor_rejects_non_modules_and_non_smoothings():
    with pytest.raises(RSValueError, match="^model: expected a torch.nn.Module"):
        SmoothedClassifier(lambda x: x, Gaussian(0.25), 10)  # type: ignore[arg-type]
    with pytest.raises(RSValueError, match="^smoothing: expected an rs_plugin.Smoothing"):
        SmoothedClassifier(load_demo_model(), 0.25, 10)  # type: ignore[arg-type]


class Probabilities(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = load_demo_model()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def test_a_model_returning_probabilities_gets_a_warning_saying_how_to_fix_it():
    smoothed = SmoothedClassifier(Probabilities().eval(), Gaussian(0.25), 10)
    with pytest.warns(RSWarning, match="return logits"):
        certs = smoothed.certify(_images(), n0=10, n=50)
    assert len(certs) == 3


def test_a_model_in_training_mode_is_put_in_eval_mode_with_a_warning():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(64, 10))
    smoothed = SmoothedClassifier(model.train(), Gaussian(0.25), 10)
    with pytest.warns(RSWarning, match=r"model.eval\(\)"):
        smoothed.certify(_images(), n0=10, n=50)
    assert not model.training


def test_error_is_a_value_error_carrying_its_parts():
    with pytest.raises(ValueError) as info:
        SmoothedClassifier(LinearModel(torch.ones(3), 0.0), Gaussian(1.0), 2).certify(
            torch.rand(2, 3), n0=1, n=1, alpha=2.0
        )
    error = info.value
    assert isinstance(error, RSValueError)
    assert (error.parameter, error.received) == ("alpha", 2.0)


def test_a_long_received_value_is_shown_whole_so_the_part_that_says_what_to_fix_is_seen():
    diff = {"smoothing": ({"name": "gaussian", "sigma": 0.25}, {"name": "gaussian", "sigma": 0.5})}
    received = f"line 1 differs in {diff} " + "x" * 200 + " (use --sigma 0.25)"
    message = str(RSValueError("--resume", "the same configuration", received))
    assert message.endswith('(use --sigma 0.25)"')
    assert "'sigma': 0.5" in message
    huge = str(RSValueError("keys", "distinct keys", list(range(10_000))))
    assert "9999]" in huge and "[0, 1, 2" in huge and "characters) ..." in huge
    assert len(huge) < 2200
