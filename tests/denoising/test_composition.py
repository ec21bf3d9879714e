"""The denoiser and the composition f(D(x, σ)): shapes, what they refuse, and that any certifier
certifies the composition exactly as it certifies the same function given as a plain model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rs_plugin import Gaussian, Laplace, RSValueError, SmoothedClassifier
from rs_plugin._validation import model_dtype
from rs_plugin.denoising import (
    ConditionalDenoiser,
    DenoisedClassifier,
    build_denoiser,
    denoised_for,
)


class _Linear(nn.Module):
    def __init__(self, dim: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.layer = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.flatten(1))


def _classifier() -> nn.Module:
    torch.manual_seed(0)
    return _Linear().eval()


class _Plain(nn.Module):
    """f(D(x, σ)) as an ordinary model that knows nothing of smoothings."""

    def __init__(self, f: nn.Module, d: nn.Module, sigma: float) -> None:
        super().__init__()
        self.f, self.d, self.sigma = f, d, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(self.d(x, self.sigma))


class _Shrinking(nn.Module):
    sigma_range = (0.0, 1.0)
    noise = "gaussian"

    def forward(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        return x[..., :-1, :-1]


class _NaN(nn.Module):
    def forward(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        return x * float("nan")


def test_denoiser_keeps_the_shape_and_depends_on_sigma():
    d = build_denoiser(0, width=4, depth=1).eval()
    x = torch.rand(3, 1, 4, 4)
    with torch.no_grad():
        low, high = d(x, 0.1), d(x, torch.tensor([0.9, 0.9, 0.9]))
    assert low.shape == x.shape
    assert not torch.allclose(low, high)  # σ enters as an input channel


def test_trained_range_travels_with_the_weights():
    trained = build_denoiser(1, width=4, depth=1, sigma_range=(0.2, 0.6))
    fresh = build_denoiser(2, width=4, depth=1)
    assert fresh.sigma_range == (0.0, 1.0)
    fresh.load_state_dict(trained.state_dict())
    assert fresh.sigma_range == pytest.approx((0.2, 0.6))


@pytest.mark.parametrize("bad", [(0.5, 0.2), (-0.1, 1.0), "wide"])
def test_denoiser_refuses_a_bad_sigma_range(bad):
    with pytest.raises(RSValueError, match="sigma_range"):
        ConditionalDenoiser(sigma_range=bad)


def test_composition_is_classifier_after_denoiser():
    f, d = _classifier(), build_denoiser(0, width=4, depth=1).eval()
    x = torch.rand(5, 1, 4, 4)
    with torch.no_grad():
        assert torch.allclose(DenoisedClassifier(f, d, 0.3)(x), f(d(x, 0.3)))


def test_certificates_equal_those_of_the_same_function_as_a_plain_model():
    f, d = _classifier(), build_denoiser(0, width=4, depth=1).eval()
    x = torch.rand(4, 1, 4, 4)
    smoothing = Gaussian(0.5)
    ours, plain = (
        SmoothedClassifier(model, smoothing, 3).certify(
            x, n0=20, n=200, alpha=0.01, batch_size=100, seed=3
        )
        for model in (denoised_for(f, d, smoothing), _Plain(f, d, 0.5).eval())
    )
    assert torch.equal(ours.prediction, plain.prediction)
    assert torch.allclose(ours.radius, plain.radius)


class _PlainFloat32(_Plain):
    input_dtype = torch.float32  # a model may declare the dtype it takes its inputs in


class _ToHalf(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.half()


def test_a_float16_classifier_after_a_float32_denoiser_gets_the_denoisers_output_cast():
    # The composition takes inputs in the denoiser's dtype (float32 noise, not cast to float16
    # first) and casts the denoised batch to the classifier's.
    f, d = _classifier().half(), build_denoiser(0, width=4, depth=1).eval()
    x = torch.rand(4, 1, 4, 4)
    composed = DenoisedClassifier(f, d, 0.5)
    assert model_dtype(composed) == torch.float32
    with torch.no_grad():
        assert torch.equal(composed(x), f(d(x, 0.5).half()))
    certs = SmoothedClassifier(composed, Gaussian(0.5), 3).certify(x, n0=20, n=200, seed=3)
    plain = _PlainFloat32(nn.Sequential(_ToHalf(), f), d, 0.5).eval()
    again = SmoothedClassifier(plain, Gaussian(0.5), 3).certify(x, n0=20, n=200, seed=3)
    assert torch.equal(certs.prediction, again.prediction)


def test_sigma_outside_the_trained_range_is_refused_naming_both():
    d = build_denoiser(0, width=4, depth=1, sigma_range=(0.0, 0.5))
    with pytest.raises(RSValueError, match=r"smoothing.*\[0\.0, 0\.5\].*Gaussian\(sigma=0\.75\)"):
        denoised_for(_classifier(), d, Gaussian(0.75))
    with pytest.raises(RSValueError, match=r"sigma.*\[0\.0, 0\.5\].*0\.75"):
        DenoisedClassifier(_classifier(), d, 0.75)


def test_another_noise_family_is_refused_naming_both():
    d = build_denoiser(0, width=4, depth=1)
    with pytest.raises(RSValueError, match=r"gaussian noise.*Laplace"):
        denoised_for(_classifier(), d, Laplace(0.25))


def test_every_certifier_refuses_a_smoothing_the_composition_was_not_built_for():
    composed = DenoisedClassifier(_classifier(), build_denoiser(0, width=4, depth=1), 0.25)
    SmoothedClassifier(composed, Gaussian(0.25), 3)  # the one it was built for
    for other in (Gaussian(0.5), Laplace(0.25)):
        with pytest.raises(RSValueError, match=r"smoothing.*σ = 0\.25"):
            SmoothedClassifier(composed, other, 3)


@pytest.mark.parametrize(
    ("denoiser", "message"), [(_Shrinking(), "input's shape"), (_NaN(), "finite values")]
)
def test_a_broken_denoiser_is_refused_before_sampling(denoiser, message):
    calls = []
    composed = DenoisedClassifier(_classifier(), denoiser.eval(), 0.25)
    composed.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    smoothed = SmoothedClassifier(composed, Gaussian(0.25), 3)
    with pytest.raises(RSValueError, match=rf"denoiser.*{message}"):
        smoothed.certify(torch.rand(6, 1, 4, 4), n0=10, n=100, alpha=0.01, batch_size=50)
    assert calls == [4]  # only the probe's clean inputs, never a noisy batch
