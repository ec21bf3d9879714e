"""Statistical soundness of CERTIFY and PREDICT against cases whose truth is known in closed form.

Each soundness test counts violations V over M independent inputs; a sound procedure gives
V ~ Binomial(M, q) with q <= α, so the test fails only when P[Binomial(M, α) >= V] < 1e-4
(a false-alarm rate of at most 1e-4 per test). The same check applied to a deliberately unsound
radius shows the test has the power to fail.
"""

from __future__ import annotations

import math

import torch

from rs_plugin import Gaussian, SmoothedClassifier
from tests.analytic import ConstantModel, LinearModel, binomial_upper_tail

FALSE_ALARM = 1e-4


def test_constant_model_gives_the_closed_form_radius():
    sigma, n, alpha = 0.25, 100_000, 0.001
    smoothed = SmoothedClassifier(ConstantModel(10, target=3).eval(), Gaussian(sigma), 10)
    certs = smoothed.certify(torch.zeros(2, 1, 8, 8), n0=100, n=n, alpha=alpha, batch_size=10_000)
    expected_p = alpha ** (1.0 / n)
    expected = sigma * torch.special.ndtri(torch.tensor(expected_p, dtype=torch.float64))
    assert certs.prediction.tolist() == [3, 3]
    assert torch.allclose(
        certs.p_lower, torch.full((2,), expected_p, dtype=torch.float64), rtol=0, atol=1e-12
    )
    assert torch.allclose(certs.radius, expected.expand(2), rtol=1e-9, atol=0)
    assert round(float(certs.radius[0]), 3) == 0.953
    assert certs.norm == "l2" and certs.n == n and certs.n0 == 100


def _linear_case(seed: int, inputs: int, dim: int = 20):
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=generator)
    b = float(torch.randn((), generator=generator))
    x = torch.randn(inputs, dim, generator=generator) * 0.15
    return LinearModel(w, b).eval(), x


def _violations(model: LinearModel, x: torch.Tensor, certs, radius: torch.Tensor) -> int:
    certified = certs.prediction >= 0
    wrong_class = certs.prediction != model.label(x)
    too_large = radius > model.true_radius(x)
    return int((certified & (wrong_class | too_large)).sum())


def test_linear_model_certificates_are_sound_and_the_check_can_fail():
    sigma, alpha, inputs = 0.5, 0.05, 400
    model, x = _linear_case(seed=0, inputs=inputs)
    smoothed = SmoothedClassifier(model, Gaussian(sigma), 2)
    certs = smoothed.certify(x, n0=100, n=1000, alpha=alpha, batch_size=5000, seed=1)
    certified = int((certs.prediction >= 0).sum())
    assert certified > inputs // 2  # the case is informative: most inputs get a radius

    violations = _violations(model, x, certs, certs.radius)
    assert binomial_upper_tail(violations, inputs, alpha) >= FALSE_ALARM, violations

    # Power: the plug-in estimate p̂ instead of the lower bound overstates about half the radii.
    p_hat = (certs.count.double() / certs.n).clamp(max=1 - 1e-9)
    naive_radius = sigma * torch.special.ndtri(p_hat)
    naive_violations = _violations(model, x, certs, naive_radius)
    assert binomial_upper_tail(naive_violations, inputs, alpha) < FALSE_ALARM, naive_violations


def test_linear_model_radii_are_tight_at_large_n():
    sigma = 0.5
    model, x = _linear_case(seed=3, inputs=200)
    p_true = torch.special.ndtr(model.true_radius(x) / sigma)
    chosen = x[(p_true > 0.6) & (p_true < 0.995)][:8]
    assert chosen.shape[0] == 8
    certs = SmoothedClassifier(model, Gaussian(sigma), 2).certify(
        chosen, n0=100, n=100_000, alpha=0.001, batch_size=20_000
    )
    true = model.true_radius(chosen)
    assert torch.all(certs.prediction == model.label(chosen))
    # At n = 100 000 the 0.999 lower bound costs about 0.01σ of radius; allow 0.05σ.
    assert torch.all(certs.radius >= true - 0.05 * sigma), (certs.radius, true)
    assert torch.all(certs.radius <= true + 1e-9)


def test_predict_is_sound_on_the_decision_boundary():
    """On w·x + b = 0 both classes have probability 1/2, so PREDICT must abstain (w.p. ≥ 1 − α)."""
    alpha, inputs = 0.05, 300
    model, x = _linear_case(seed=5, inputs=inputs)
    w = model.w
    x = x - ((model.margin(x))[:, None] / (w @ w)) * w  # project onto the boundary
    assert model.margin(x).abs().max() < 1e-4
    predictions = SmoothedClassifier(model, Gaussian(0.5), 2).predict(
        x, n=200, alpha=alpha, batch_size=6000
    )
    answered = int((predictions.prediction >= 0).sum())
    assert binomial_upper_tail(answered, inputs, alpha) >= FALSE_ALARM, answered
    assert torch.all(predictions.counts.sum(dim=1) == 200)


def test_predict_answers_correctly_away_from_the_boundary():
    alpha = 0.001
    model, x = _linear_case(seed=6, inputs=300)
    far = x[model.true_radius(x) > 0.5][:50]
    predictions = SmoothedClassifier(model, Gaussian(0.25), 2).predict(far, n=500, alpha=alpha)
    assert torch.equal(predictions.prediction, model.label(far))
    assert torch.all(predictions.p_value < alpha)


def test_soft_classifier_matches_the_gaussian_closed_form_and_has_gradients():
    """With a near-step base model, E softmax = Φ(margin / (σ‖w‖)) for class 1."""
    sigma, m = 0.5, 20_000
    model, x = _linear_case(seed=7, inputs=5)
    model.scale = 1000.0
    smoothed = SmoothedClassifier(model, Gaussian(sigma), 2, num_noise_samples=m)
    x = x.clone().requires_grad_(True)
    probs = smoothed(x)
    expected = torch.special.ndtr(model.margin(x).detach().double() / (sigma * model.w.norm()))
    tolerance = 5 * torch.sqrt(expected * (1 - expected) / m) + 1e-3
    assert torch.all((probs[:, 1].double() - expected).abs() <= tolerance)
    assert torch.allclose(probs.sum(dim=1), torch.ones(5))
    # Deterministic without a generator, so attacks see one function.
    assert torch.equal(smoothed(x.detach()), probs.detach())
    probs[:, 1].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_abstention_when_p_lower_is_below_one_half():
    model, x = _linear_case(seed=8, inputs=50)
    w = model.w
    x = x - ((model.margin(x))[:, None] / (w @ w)) * w
    certs = SmoothedClassifier(model, Gaussian(0.5), 2).certify(x, n0=50, n=500, alpha=0.001)
    assert torch.all(certs.prediction[certs.p_lower < 0.5] == -1)
    assert torch.all(certs.radius[certs.prediction == -1] == 0)
    assert math.isclose(float(certs.abstain.double().mean()), 1.0)
