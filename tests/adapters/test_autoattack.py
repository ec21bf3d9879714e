"""AutoAttack's APGD members attack every input at its own budget in one batch: with one budget
for all it is pyautoattack's own ``run_standard_evaluation``; with per-input budgets every
candidate stays in its own ball and in the box, and the attack still finds adversarials."""

from __future__ import annotations

import pytest
import torch

from rs_plugin import AttackTarget, Gaussian, SmoothedClassifier
from rs_plugin.adapters.autoattack import AutoAttack
from rs_plugin.certification.classifier import SmoothedLogProbabilities


@pytest.fixture
def setting(digits):
    model, x, y = digits
    smoothed = SmoothedClassifier(
        model, Gaussian(0.01), 10, num_noise_samples=4, clip_values=(0.0, 1.0), seed=5
    )
    return AttackTarget(smoothed, "l2", "input", (0.0, 1.0), seed=3), x[:12], y[:12]


def test_one_budget_for_all_is_pyautoattacks_own_run(setting):
    target, x, y = setting
    x, y = x[:6], y[:6]
    attack = AutoAttack(steps=5, target_classes=2)
    eps = torch.full((6,), 0.6, dtype=torch.float64)
    batched = attack.generate(target, x, y, eps).x
    model = SmoothedLogProbabilities(target.smoothed).eval()
    standard = attack._standard(target, model, ["apgd-ce", "apgd-t"], x, y, 0.6)
    torch.testing.assert_close(batched, standard, atol=1e-6, rtol=0)
    assert not torch.equal(batched, x)  # it found something to compare


def test_each_input_is_attacked_within_its_own_budget(setting):
    target, x, y = setting
    eps = torch.linspace(0.3, 1.5, 12, dtype=torch.float64)
    eps[:2] = 0.0
    found = AutoAttack(steps=10).generate(target, x, y, eps).x
    assert torch.equal(found[:2], x[:2])  # a zero budget leaves the input alone
    distance = (found - x).double().flatten(1).norm(dim=1)
    assert bool((distance <= eps * (1 + 1e-5) + 1e-6).all()), (distance, eps)
    assert float(found.min()) >= 0.0 and float(found.max()) <= 1.0
    with torch.no_grad():
        fooled = target.model(found).argmax(dim=1) != y
    # σ = 0.01 makes the smoothed classifier the base model, which fails at ℓ2 ≈ 1 on digits.
    assert int(fooled[eps >= 0.9].sum()) >= 4, fooled
    # Adversarials sit on their own sphere (up to pixels clipped at the box), not a common one.
    moved = fooled & (eps > 0)
    assert bool((distance[moved] >= 0.95 * eps[moved]).all()), (distance, eps)
