"""The shadow certificate over several parameters jointly (radii in σ units): soundness against a
classifier whose decision is a known half-space in parameter space, and the audit's search of the
certified region in parameter space (an honest certificate holds, a forged one is caught).

The classifier reads the shadow's parameters back from a two-channel image. Channel 0 is 1 at
every pixel before the shadow, so ℓ(p) = −ln z₀(p) = s·m(p) with the logistic mask m of
:func:`rs_plugin.smoothings.shadow.shadow_mask`; on the centre row and column the mask's logit is
(⟨n, p⟩ − o)/w with n = (cos θ, −sin θ), which gives the parameters in closed form (below).
Channel 1 is τ + SHIFT before the shadow; the shadow multiplies both channels by the same factor,
so z₁/z₀ = τ + SHIFT carries the input's threshold τ through every shadow. The classifier answers
class 1 when ⟨v, δ/σ⟩ > τ, δ the parameters' change from the nominal shadow, σ their noise and v
a unit vector. For any noise symmetric about 0 the smoothed classifier's class-1 probability at
δ is P[⟨v, ε/σ⟩ > τ − ⟨v, δ/σ⟩], a decreasing function of τ − ⟨v, δ/σ⟩ equal to ½ at 0, so
its class changes exactly on the hyperplane ⟨v, u⟩ = τ (u = δ/σ): the true radius is |τ| in ℓ2
σ units, |τ|/‖v‖₁ in ℓ∞, |τ|/‖v‖∞ in ℓ1, and σ_j|τ|/|v_j| for parameter j alone.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from rs_plugin import Shadow, SmoothedClassifier, audit
from rs_plugin.auditing.attack import AttackTarget
from rs_plugin.auditing.semantic_attacks import (
    SemanticGrid,
    SemanticRandom,
    parameter_distance,
    parameter_scales,
)
from rs_plugin.cli import main
from rs_plugin.data import load_demo_model, load_digits
from tests.analytic import binomial_upper_tail

FALSE_ALARM = 1e-4
SIZE, C = 7, 3
SOFTNESS = 2.0
DARKNESS = 2.0  # the nominal darkness (log-transmission): ℓ > 0 at every pixel
SHIFT = 3.0
V = (0.6, 0.8)


def _shadow(pair: str, noise: str = "gaussian") -> Shadow:
    if pair == "darkness+offset":
        return Shadow(
            0.3, sigma_offset=1.0, darkness=DARKNESS, softness=SOFTNESS, noise=noise
        )  # fmt: skip
    return Shadow(0.0, sigma_angle=10.0, sigma_offset=1.0, darkness=DARKNESS, softness=SOFTNESS)


class ShadowDecoder(nn.Module):
    """Class 1 when ⟨v, δ/σ⟩ > τ, with δ decoded from the shadowed image (module docstring).

    darkness + offset (angle 0): on the centre row ℓ(u) = s/(1 + y e^{−u/w}), y = e^{o/w}; the
    ratio r = ℓ(0)/ℓ(1) gives y = (1 − r)/(r − e^{−1/w}), o = w ln y and s = ℓ(0)(1 + y).
    angle + offset (darkness s₀ known): q(p) = logit(ℓ(p)/s₀) = (⟨n, p⟩ − o)/w, so
    o = −w q(centre), cos θ = w(q(right) − q(centre)), sin θ = w(q(above) − q(centre)).
    """

    def __init__(self, smoothing: Shadow) -> None:
        super().__init__()
        self.smoothing = smoothing
        self.v = torch.tensor(V, dtype=torch.float64)
        self.sigma = torch.tensor(smoothing.sigmas, dtype=torch.float64)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 2) parameters' change from the nominal shadow, in the smoothing's order."""
        pixels = torch.stack([z[:, 0, C, C], z[:, 0, C, C + 1], z[:, 0, C - 1, C]], dim=1)
        centre, right, above = (-torch.log(pixels.double())).unbind(dim=1)
        w = SOFTNESS
        if self.smoothing.parameters == ("darkness", "offset"):
            r = centre / right
            y = (1 - r) / (r - math.exp(-1.0 / w))
            return torch.stack([centre * (1 + y) - DARKNESS, w * torch.log(y)], dim=1)
        q = torch.logit(torch.stack([centre, right, above], dim=1) / DARKNESS)
        angle = torch.rad2deg(torch.atan2(w * (q[:, 2] - q[:, 0]), w * (q[:, 1] - q[:, 0])))
        return torch.stack([angle, -w * q[:, 0]], dim=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        tau = (z[:, 1, C, C].double() / z[:, 0, C, C].double()) - SHIFT
        score = ((self.decode(z) / self.sigma) @ self.v - tau).clamp(-10.0, 10.0) * 1e3
        # An unshadowed image (the clean input the certifier probes) has nothing to decode.
        score = torch.nan_to_num(score, nan=0.0)
        return torch.stack([-score, score], dim=1).float()


def _inputs(tau: torch.Tensor) -> torch.Tensor:
    x = torch.ones(len(tau), 2, SIZE, SIZE)
    x[:, 1] = (tau + SHIFT).float().view(-1, 1, 1)
    return x


def _truths(smoothing: Shadow, tau: torch.Tensor) -> dict[str, torch.Tensor]:
    v = torch.tensor(V, dtype=torch.float64)
    t = tau.abs()
    truth = {
        "shadow:l2": t,
        "shadow:linf": t / v.abs().sum(),
        "shadow:l1": t / v.abs().max(),
    }
    for j, (name, s) in enumerate(zip(smoothing.parameters, smoothing.sigmas, strict=True)):
        truth[f"shadow.{name}"] = s * t / abs(V[j])
        truth[f"shadow.{name}:box"] = s * t / v.abs().sum()
    return truth


def test_the_decoder_reads_the_parameters_back():
    for pair in ("darkness+offset", "angle+offset"):
        smoothing = _shadow(pair)
        params = smoothing.sample_parameters(
            64, torch.Generator().manual_seed(0), torch.device("cpu"), torch.float32
        )
        decoded = ShadowDecoder(smoothing).decode(smoothing.apply(_inputs(torch.zeros(64)), params))
        torch.testing.assert_close(decoded, params.double(), atol=2e-3, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("pair", "noise"),
    [("darkness+offset", "gaussian"), ("darkness+offset", "uniform"), ("angle+offset", "gaussian")],
)
def test_joint_certificates_are_sound_against_the_known_half_space(pair, noise):
    smoothing = _shadow(pair, noise)
    assert smoothing.sigma_units and smoothing.norm == "shadow:l2"
    tau = torch.linspace(-2.4, 2.4, 120, dtype=torch.float64)
    x, label, truth = _inputs(tau), (tau < 0).long(), _truths(smoothing, tau)
    alpha = 0.01
    certs = SmoothedClassifier(ShadowDecoder(smoothing).eval(), smoothing, 2).certify(
        x, n0=64, n=1000, alpha=alpha, batch_size=8192, seed=3
    )
    certified = certs.prediction >= 0
    stated = {**certs.radii, **certs.extra}
    assert set(truth) <= set(stated)
    over = torch.zeros_like(certified)
    for key, true_radius in truth.items():
        over |= stated[key] > true_radius * (1 + 1e-4) + 1e-6
    violations = int((certified & ((certs.prediction != label) | over)).sum())
    assert int(certified.sum()) > len(x) // 2 and float(certs.radius.max()) > 1.0  # informative
    assert binomial_upper_tail(violations, len(x), alpha) >= FALSE_ALARM, violations
    if noise == "uniform":
        return
    # Power: the plug-in radius (p̂ instead of its lower bound) overstates the truth and is caught.
    p_hat = (certs.count.double() / certs.n).clamp(max=1 - 1e-9)
    naive = smoothing.radius(p_hat, x[0].numel())
    caught = int((certified & (naive > truth["shadow:l2"] * (1 + 1e-4))).sum())
    assert binomial_upper_tail(caught, len(x), alpha) < FALSE_ALARM


# ---- the audit --------------------------------------------------------------------------------


def test_the_parameter_search_fills_the_certified_ellipsoid_in_each_parameters_unit():
    x, y = load_digits("test")
    model, x, y = load_demo_model(), x[:6], y[:6]
    smoothing = Shadow(0.5, sigma_offset=2.0)
    scales = parameter_scales(smoothing)
    assert scales is not None and scales.tolist() == [0.5, 2.0]
    smoothed = SmoothedClassifier(model, smoothing, 10, num_noise_samples=4, seed=5)
    target = AttackTarget(smoothed, smoothing.norm, smoothing.semantics_label, (0.0, 1.0), 3)
    budget = torch.full((len(y),), 0.7, dtype=torch.float64)
    for attack in (SemanticGrid(), SemanticRandom(8)):
        assert attack.applies_to(smoothing) is None
        found = attack.generate(target, x, y, budget)
        assert found.params is not None
        assert bool((parameter_distance(found.params, "shadow:l2", scales) <= 0.7 + 1e-6).all())
        # The offset (σ = 2 px) moves further than the budget in σ units.
        assert float(found.params[:, 1].abs().max()) > 0.7


def _audit(smoothing: Shadow, tau: torch.Tensor):
    return audit(
        ShadowDecoder(smoothing).eval(), smoothing, _inputs(tau), (tau < 0).long(),
        num_classes=2, n=1000, alpha=0.001, predict_n=300, budgets=(0.5, 1.0, 2.0),
        clip_values=(0.0, 10.0), seed=1,
    )  # fmt: skip


def test_the_audit_holds_an_honest_joint_certificate_and_catches_a_forged_one():
    """The decoder's smoothed class changes at distance |τ| (σ units): an honest certificate
    stays inside and the audit finds no violation; one claiming 3 × the radius reaches past the
    hyperplane and PREDICT there answers the other class."""

    class Forged(Shadow):
        def _parameter_radii(self, p_lower):
            return {k: 3.0 * r for k, r in super()._parameter_radii(p_lower).items()}

    tau = torch.tensor([-1.2, -0.9, 0.9, 1.2], dtype=torch.float64)
    honest = _audit(_shadow("darkness+offset"), tau)
    assert [a["name"] for a in honest.attacks] == ["semantic_grid", "semantic_random"]
    assert honest.verdict["certified_inputs"] == 4 and not honest.violated
    assert all(a["checks"] > 0 for a in honest.attacks)
    assert all(row["checks_within_radius"] > 2 for row in honest.inputs)
    forged = _audit(
        Forged(0.3, sigma_offset=1.0, darkness=DARKNESS, softness=SOFTNESS), tau
    )  # fmt: skip
    assert forged.verdict["certified_inputs"] == 4
    assert forged.violated and forged.verdict["violations"] >= 3


def test_the_command_line_audits_a_joint_shadow_certificate_file(tmp_path, capsys):
    """The audit rebuilds the smoothing a certificate file records (every parameter's σ and the
    nominal shadow) and searches its certified ellipsoid."""
    certs = tmp_path / "c.jsonl"
    args = ["certify", "--smoothing", "shadow", "--limit", "3", "-n", "300"]
    args += ["--smoothing-param", "sigma_darkness=0.5", "--smoothing-param", "sigma_offset=2"]
    args += ["--smoothing-param", "softness=1.5"]
    assert main([*args, "--n0", "30", "--out", str(certs)]) == 0
    out = tmp_path / "audit"
    audit_args = ["audit", "--certificates", str(certs), "--predict-n", "100"]
    assert main([*audit_args, "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    stated = json.loads(certs.read_text().splitlines()[0])["smoothing"]
    assert report["settings"]["smoothing"] == stated and stated["sigma_offset"] == 2.0
    assert report["settings"]["norm"] == "shadow:l2"
    assert [a["name"] for a in report["attacks"]] == ["semantic_grid", "semantic_random"]
    assert all(a["checks"] > 0 for a in report["attacks"])
    assert report["verdict"]["certified_inputs"] >= 2 and report["verdict"]["violations"] == 0
