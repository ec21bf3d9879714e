"""Anisotropic (ANCER) and data-dependent (DDRS) smoothing: ellipsoid soundness along each axis,
why a σ chosen per input needs the memory, and the memory-backed certifier's soundness.

Statistical tests use the convention of tests/test_soundness.py: fail only when
P[Binomial(M, α) >= violations] < 1e-4.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from rs_plugin import (
    ANCER,
    DDRS,
    AnisotropicGaussian,
    Gaussian,
    Laplace,
    Rotation,
    RSValueError,
    SmoothedClassifier,
)
from rs_plugin.data import load_demo_model, load_digits
from tests.analytic import LinearModel, binomial_upper_tail

FALSE_ALARM = 1e-4


def _axis_case(seed: int, inputs: int, dim: int = 12, sparse: bool = False):
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=generator)
    if sparse:
        w = torch.zeros(dim).index_fill(0, torch.tensor([3]), 1.0)
    sigma = 0.2 + torch.rand(dim, generator=generator)  # σᵢ in [0.2, 1.2]
    x = torch.randn(inputs, dim, generator=generator) * 0.5
    return LinearModel(w, 0.1).eval(), x, sigma


def _axis_violations(model, x, certs, whitened, sigma) -> int:
    """Inputs whose ellipsoid reaches, along some axis i, past the true boundary |m| / |wᵢ|."""
    margin = model.margin(x).abs().double()
    w = model.w.double().abs()
    reach = whitened[:, None] * sigma.double()[None, :]  # extent of the ellipsoid along each axis
    with torch.no_grad():
        crosses = (reach * w[None, :] > margin[:, None]).any(dim=1)
    bad = crosses | (certs.prediction != model.label(x))
    return int(((certs.prediction >= 0) & bad).sum())


@pytest.mark.parametrize("sparse", [False, True])
def test_ellipsoid_certificate_holds_along_each_axis(sparse):
    """Under N(0, diag σ²) the linear model's p_A = Φ(|m| / ‖σ ⊙ w‖); the ellipsoid's extent
    R σᵢ along axis i must not cross the boundary, at |m| / |wᵢ| along that axis."""
    alpha, inputs = 0.05, 400
    model, x, sigma = _axis_case(seed=2, inputs=inputs, sparse=sparse)
    certs = SmoothedClassifier(model, AnisotropicGaussian(sigma), 2).certify(
        x, n0=50, n=1000, alpha=alpha, batch_size=20_000
    )
    assert int((certs.prediction >= 0).sum()) > inputs // 2
    whitened = torch.special.ndtri(certs.p_lower).clamp(min=0)
    violations = _axis_violations(model, x, certs, whitened, sigma)
    assert binomial_upper_tail(violations, inputs, alpha) >= FALSE_ALARM, violations
    # The isotropic radius, proxy radius and volume are those of that ellipsoid.
    assert torch.allclose(certs.radius, whitened * sigma.min().double())
    assert torch.allclose(
        certs.extra["proxy_radius"], whitened * torch.exp(torch.log(sigma.double()).mean())
    )
    if sparse:  # tight along axis 3: the plug-in p̂ must be caught
        p_hat = (certs.count.double() / certs.n).clamp(max=1 - 1e-9)
        naive = torch.special.ndtri(p_hat).clamp(min=0)
        caught = _axis_violations(model, x, certs, naive, sigma)
        assert binomial_upper_tail(caught, inputs, alpha) < FALSE_ALARM, caught


class Slab(nn.Module):
    """f(x) = 1 inside the slab |x₁| < 1, else 0. With small σ the smoothed classifier says 1 at
    the centre; with large σ most noise leaves the slab and it says 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 50.0 * (1.0 - x[:, :1].abs())
        return torch.cat([-z, z], dim=1)


def _slab_certifier() -> DDRS:
    return DDRS(Slab().eval(), Gaussian(0.25), 2, steps=0)


def test_naive_data_dependent_certificate_is_violated_and_the_memory_is_not():
    """A (x = 0) with σ = 0.25 is class 1; B (x = 0.6) with σ = 3 is class 0 with a radius that
    covers A. Naively both certificates stand, so the deployed classifier G(z) = g_σ(z)(z) gives
    A class 1 inside B's class-0 region."""
    x = torch.tensor([[0.0], [0.6]])
    sigma = torch.tensor([0.25, 3.0])
    settings: dict[str, Any] = {"n0": 100, "n": 4000, "alpha": 0.001, "sigma": sigma}
    naive = _slab_certifier().certify_without_memory(x, **settings)
    assert naive.prediction.tolist() == [1, 0]
    assert float(naive.radius[1]) > 0.6  # B's region contains A ...
    assert int(naive.prediction[0]) != int(naive.prediction[1])  # ... which G labels 1: violated

    for order in ([0, 1], [1, 0]):
        certifier = _slab_certifier()
        certs = certifier.certify(x[order], keys=order, **{**settings, "sigma": sigma[order]})
        first, second = certs.prediction.tolist()
        # The second input lies in the first one's region: the memory answers for it.
        assert second == first
        assert float(certs.extra["from_memory"][1]) == 1.0
        assert float(certs.radius[1]) < float(certs.radius[0])
        # Every point of every certified region gets the region's class from G.
        for row in range(2):
            centre, radius = x[order][row], float(certs.radius[row])
            offsets = torch.linspace(-0.999, 0.999, 9).view(-1, 1) * radius
            answers = certifier.predict(centre + offsets, n=500)
            assert torch.all(answers.prediction == certs.prediction[row])


def test_memory_shrinks_a_region_that_would_overlap_another_class():
    """B (x = 2.1) certified 0 first; then A (x = 0) is class 1 with a region that would reach
    B's: the memory shrinks A's until the two are disjoint."""
    certifier = _slab_certifier()
    x = torch.tensor([[2.1], [0.0]])
    certs = certifier.certify(x, n0=100, n=4000, sigma=torch.tensor([2.0, 0.3]))
    assert certs.prediction.tolist() == [0, 1]
    own = certifier.certify_without_memory(x[1:], n0=100, n=4000, sigma=torch.tensor([0.3]))
    assert float(certs.extra["shrink_factor"][1]) < 1.0
    assert float(certs.radius[1]) < float(own.radius[0])
    assert float(certs.radius[0]) + float(certs.radius[1]) <= 2.1 + 1e-9


@pytest.mark.parametrize("certifier_class", [DDRS, ANCER])
def test_memory_certificates_are_sound_on_a_linear_classifier(certifier_class):
    """With symmetric noise g_σ = f for every σ, so the true ℓ2 radius holds whatever σ is
    chosen; the memory-backed certificates must respect it."""
    alpha, inputs = 0.05, 120
    generator = torch.Generator().manual_seed(9)
    w = torch.randn(10, generator=generator)
    model = LinearModel(w / w.norm(), 0.05, scale=4.0).eval()
    x = torch.randn(inputs, 10, generator=generator) * 0.6
    certifier = certifier_class(model, Gaussian(0.4), 2, steps=5, num_noise_samples=16)
    certs = certifier.certify(x, n0=50, n=800, alpha=alpha, batch_size=10_000)
    assert int((certs.prediction >= 0).sum()) > inputs // 2
    wrong = certs.prediction != model.label(x)
    too_far = certs.radius > model.true_radius(x)
    violations = int(((certs.prediction >= 0) & (wrong | too_far)).sum())
    assert binomial_upper_tail(violations, inputs, alpha) >= FALSE_ALARM, violations
    assert len(certifier) == int(
        ((certs.prediction >= 0) & (certs.extra["from_memory"] == 0)).sum()
    )
    assert set(certs.radii) == {"l1", "l2", "linf"}


def test_sigma_search_is_reproducible_whatever_the_batch_and_moves_sigma():
    model = load_demo_model().eval()
    x, _ = load_digits("test")
    certifier = ANCER(model, Gaussian(0.25), 10, steps=4)
    sigma_all = certifier.choose_sigma(x[:6], seed=3, keys=range(6))
    sigma_part = certifier.choose_sigma(x[2:4], seed=3, keys=[2, 3])
    assert torch.equal(sigma_all[2:4], sigma_part)
    assert sigma_all.shape == (6, 64)
    assert torch.all(sigma_all >= sigma_all.amin(dim=1, keepdim=True))
    assert float(sigma_all.max()) > float(sigma_all.min())  # anisotropic after the search
    ddrs = DDRS(model, Gaussian(0.25), 10, steps=4, sigma_range=(0.5, 2.0))
    iso = ddrs.choose_sigma(x[:6], seed=3, keys=range(6))
    assert torch.all((iso >= 0.125 - 1e-9) & (iso <= 0.5 + 1e-9))
    assert torch.all(iso == iso[:, :1])  # isotropic: one σ per input


def test_bad_arguments_name_the_parameter():
    model = Slab()
    with pytest.raises(RSValueError, match="smoothing: expected an isotropic Gaussian"):
        DDRS(model, AnisotropicGaussian(torch.ones(2)), 2)
    # Other families have a scalar sigma too, but the σ search and the memory are Gaussian.
    for other in (Laplace(0.5), Rotation(10.0)):
        with pytest.raises(RSValueError, match="smoothing: expected an isotropic Gaussian"):
            ANCER(model, other, 2)
    with pytest.raises(RSValueError, match="sigma_range"):
        DDRS(model, Gaussian(0.5), 2, sigma_range=(2.0, 3.0))
    with pytest.raises(RSValueError, match="sigma: expected a positive number"):
        AnisotropicGaussian(torch.tensor([1.0, -1.0]))
    with pytest.raises(RSValueError, match=r"sigma: expected \(N,\) or \(N, 1\)"):
        _slab_certifier().certify(torch.zeros(2, 1), n=100, sigma=torch.ones(2, 3))


def test_a_prediction_is_remembered_so_later_regions_respect_it():
    """G answers 1 at z = 0.9 (small σ); a later class-0 region around 1.5 must exclude z."""
    certifier = _slab_certifier()
    answer = certifier.predict(torch.tensor([[0.9]]), n=2000)
    assert answer.prediction.tolist() == [1] and len(certifier) == 1
    certs = certifier.certify(torch.tensor([[1.5]]), n0=100, n=4000, sigma=torch.tensor([2.0]))
    own = certifier.certify_without_memory(
        torch.tensor([[1.5]]), n0=100, n=4000, sigma=torch.tensor([2.0])
    )
    assert certs.prediction.tolist() == [0]
    assert float(own.radius[0]) > 0.6  # alone it would have covered z ...
    assert float(certs.radius[0]) <= 0.6 + 1e-6  # ... with the memory it stops short of z
