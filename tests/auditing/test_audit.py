"""The audit: honest certificates hold, planted unsoundness is caught, attacks are not no-ops,
and the report files say what the JSON says."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats

from rs_plugin import (
    Attack,
    AttackTarget,
    Audit,
    Brightness,
    CertificateSet,
    Gaussian,
    Rotation,
    RSValueError,
    RSWarning,
    SmoothedClassifier,
    audit,
)
from rs_plugin._registry import discover
from rs_plugin.auditing.attack import Candidates, load_attack
from rs_plugin.auditing.report import FILES, format_markdown
from rs_plugin.auditing.results import poisson_binomial_tail
from rs_plugin.cli import main
from tests.analytic import LinearModel

N_INPUTS = 30


# The digits fixture (tests/conftest.py): the demo CNN and the first N_INPUTS test digits.


class OverclaimingGaussian(Gaussian):
    """Gaussian noise with a deliberately wrong radius: 4 σ Φ⁻¹(p_lower) instead of σ Φ⁻¹."""

    name = "overclaiming_gaussian"

    def radius(self, p_lower: torch.Tensor, dim: int) -> torch.Tensor:
        return 4.0 * super().radius(p_lower, dim)


def test_poisson_binomial_tail_matches_the_binomial_and_a_simulation():
    q = np.full(50, 0.03)
    for k in (0, 1, 3, 7):
        assert poisson_binomial_tail(q, k) == pytest.approx(stats.binom.sf(k - 1, 50, 0.03))
    mixed = np.linspace(0.0, 0.2, 40)
    draws = (np.random.default_rng(0).random((200_000, 40)) < mixed).sum(axis=1)
    assert poisson_binomial_tail(mixed, 6) == pytest.approx((draws >= 6).mean(), abs=0.005)


@pytest.mark.slow
def test_honest_certificates_of_the_demo_model_hold_under_every_default_attack(digits):
    model, x, y = digits
    report = audit(model, Gaussian(0.25), x, y, num_classes=10, n=2000, seed=1)
    verdict = report.verdict
    assert verdict["certified_inputs"] >= 25
    assert [a["name"] for a in report.attacks] == ["pgd", "autoattack", "deepfool", "cw_l2"]
    # Each input may fail with probability at most alpha + k·alpha_PREDICT.
    assert verdict["violations"] <= 1
    assert not report.violated
    assert verdict["p_value"] > 0.01
    # The attacks got somewhere: every certified input has an adversarial beyond its radius.
    for row in report.inputs:
        if row["certified"] and row["smallest_adversarial_distance"] is not None:
            assert row["gap"] >= 0 or row["violation"]
    found = sum(r["smallest_adversarial_distance"] is not None for r in report.inputs)
    assert found >= 0.8 * N_INPUTS
    # Empirical robust accuracy (an upper estimate) stays above certified accuracy (a lower one).
    curves = report.curves
    for j, budget in enumerate(curves["budgets"]):
        certified = np.interp(budget, curves["radius"], curves["certified_accuracy"])
        assert curves["empirical_robust_accuracy"]["all attacks"][j] >= certified - 0.1


@pytest.mark.parametrize(("factor", "violated"), [(0.98, False), (1.5, True)])
def test_verdict_against_the_exact_radius_of_a_linear_classifier(factor, violated):
    """sign(w·x + b) smoothed by Gaussian noise is itself, with true ℓ2 radius |w·x + b| / ‖w‖.
    Certificates just inside the truth must hold; 1.5 times the truth must be flagged."""
    generator = torch.Generator().manual_seed(11)
    w = torch.randn(64, generator=generator)
    model = LinearModel(w / w.norm(), b=0.0, scale=4.0).eval()
    x = 0.3 + 0.4 * torch.rand(400, 1, 8, 8, generator=generator)
    model.b = -float(model.margin(x).median())
    truth = model.true_radius(x)
    keep = torch.nonzero((truth > 0.1) & (truth < 0.6))[:30, 0]
    x, truth, labels = x[keep], truth[keep], model.label(x[keep])
    certificates = CertificateSet(
        index=torch.arange(len(keep)),
        prediction=labels.clone(),
        radius=factor * truth,
        norm="l2",
        semantics="input",
        alpha=0.001,
    )
    runner = Audit(model, Gaussian(0.25), 2, attacks=["pgd", "deepfool"], predict_n=1000)
    report = runner.run(x, labels, certificates)
    assert report.violated == violated
    if violated:
        assert report.verdict["violations"] >= 20
    else:
        assert report.verdict["violations"] <= 1
        # No confirmed adversarial inside the true radius (up to PREDICT's alpha), and the
        # attacks get near it: PREDICT needs p ≈ 0.55 to be confident, about 0.13σ beyond the
        # boundary, and the line search has 10 % steps (measured median 1.26x, 1.07x to 1.62x).
        found = torch.tensor(
            [r["smallest_adversarial_distance"] or math.inf for r in report.inputs]
        )
        ratio = found / truth
        assert int((ratio < 1.0).sum()) <= 1
        assert bool(torch.isfinite(ratio).all())
        assert float(ratio.median()) <= 1.4


@pytest.mark.slow
def test_a_wrong_radius_formula_is_flagged(digits):
    model, x, y = digits
    report = audit(model, OverclaimingGaussian(0.25), x, y, num_classes=10, n=2000, attacks=["pgd"])
    assert report.violated
    assert report.verdict["violations"] >= N_INPUTS // 2
    assert report.verdict["p_value"] < 1e-6


@pytest.fixture(scope="module")
def honest_run(tmp_path_factory):
    """rs-plugin audit certifying 24 digits: (exit code, standard output, report folder)."""
    out = tmp_path_factory.mktemp("audit") / "honest"
    args = ["audit", "--limit", "24", "-n", "2000", "--attacks", "pgd,deepfool", "--out", str(out)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(args)
    return code, printed.getvalue(), out


@pytest.mark.slow
def test_cli_audit_passes_honest_certificates_and_fails_tampered_ones(honest_run, tmp_path, capsys):
    code, printed, out = honest_run
    assert code == 0
    assert "HOLDS" in printed
    for name in (*FILES, "certificates.jsonl"):
        assert (out / name).is_file()

    tampered = tmp_path / "tampered.jsonl"
    with tampered.open("w") as handle:
        for line in (out / "certificates.jsonl").read_text().splitlines():
            record = json.loads(line)
            record["radius"] *= 3
            record["radii"] = {k: 3 * v for k, v in record["radii"].items()}
            handle.write(json.dumps(record) + "\n")
    args = ["audit", "--certificates", str(tampered), "--attacks", "pgd,deepfool"]
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "tampered")]) == 1
    captured = capsys.readouterr()
    assert "VIOLATED" in captured.out
    # Once the inputs are checked, the first line on standard error is the thread count chosen.
    assert re.match(r"audit: \d+ torch thread\(s\) \(auto: \d+\.\d of \d+ cores busy", captured.err)
    report = json.loads((tmp_path / "tampered" / "report.json").read_text())
    assert report["verdict"]["significantly_violated"]
    assert report["verdict"]["violations"] >= 12
    # A violated report says what to do next; an honest one does not.
    assert "## What to do next" in (tmp_path / "tampered" / "report.md").read_text()
    assert "## What to do next" not in (out / "report.md").read_text()


@pytest.mark.slow
def test_report_files_parse_and_match_the_json(honest_run):
    code, _, out = honest_run
    assert code == 0
    data = json.loads((out / "report.json").read_text())
    markdown = (out / "report.md").read_text()
    assert markdown == format_markdown(data)
    assert markdown.splitlines()[2] == f"**{data['verdict']['summary']}**"
    for attack in data["attacks"]:
        row = next(
            line for line in markdown.splitlines() if line.startswith(f"| {attack['name']} |")
        )
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1:4] == [
            str(attack["checks"]),
            str(attack["adversarial_inputs"]),
            str(attack["violations"]),
        ]
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("## Certified vs empirical"))
    end = next(i for i, line in enumerate(lines) if line.startswith("## Per input"))
    table = [line for line in lines[start:end] if re.match(r"\| [\d.e+-]+ \|", line)]
    curves = data["curves"]
    assert len(table) == len(curves["budgets"])
    for line, budget, value in zip(
        table, curves["budgets"], curves["empirical_robust_accuracy"]["all attacks"], strict=True
    ):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert float(cells[0]) == pytest.approx(budget, rel=1e-3, abs=5e-4)
        assert float(cells[-1]) == pytest.approx(value, abs=5e-4)
    certified_cells = [float(line.strip("|").split("|")[1]) for line in table]
    assert certified_cells == pytest.approx(curves["certified_accuracy_at_budgets"], abs=5e-4)
    # Budgets are rounded one way throughout: the header's levels appear as table cells.
    header = next(line for line in lines if line.startswith("- Budgets: "))
    levels = header.removeprefix("- Budgets: ").split(" (fractions")[0].split(", ")
    first_cells = {line.strip("|").split("|")[0].strip() for line in table}
    assert set(levels) <= first_cells
    # The headline tightness figure is the JSON's.
    tight = data["verdict"]["tightness"]
    assert tight["inputs_with_adversarial"] >= 1
    expected = f"median {tight['median_distance_over_radius']:.2f}"
    assert any(
        line.startswith("- Smallest adversarial distance / certified radius") and expected in line
        for line in lines
    )
    for name in ("curves.png", "distances.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data["inputs"]) == 24


def _target(model, smoothing, norm, semantics="input"):
    smoothed = SmoothedClassifier(
        model, smoothing, 10, num_noise_samples=4, clip_values=(0.0, 1.0), seed=5
    )
    return AttackTarget(smoothed, norm, semantics, (0.0, 1.0), seed=3)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(discover("rs_plugin.attacks")))
def test_each_attack_fools_an_undefended_model_at_a_fragile_budget(digits, name):
    """Smoothing so small the smoothed classifier is the base model; budgets at which the base
    model is known to fail (ℓ2 1.5 on 8×8 digits in [0, 1]; a 90° rotation)."""
    model, x, y = digits
    attack = load_attack(name)
    assert isinstance(attack, Attack)
    if attack.applies_to(Gaussian(0.01)) is None:
        target, eps = _target(model, Gaussian(0.01), "l2"), 1.5
    else:
        target, eps = _target(model, Rotation(0.5), "rotation", "parametric"), 90.0
    budgets = torch.full((N_INPUTS,), eps, dtype=torch.float64)
    budgets[:3] = 0.0
    found = attack.generate(target, x, y, budgets)
    with torch.no_grad():
        clean = model(x).argmax(dim=1)
        fooled = model(found.x).argmax(dim=1) != y
    assert torch.equal(found.x[:3], x[:3])  # a zero budget leaves the input alone
    right = clean == y
    assert fooled[3:][right[3:]].float().mean() >= 0.5, f"{name} barely changed anything"
    if found.params is not None:
        assert bool((found.params.abs() <= eps + 1e-4).all())
    else:
        assert bool(((found.x - x).flatten(1).norm(dim=1) <= budgets.float() + 1e-4).all())


@pytest.mark.slow
def test_semantic_certificates_hold_in_both_semantics(digits):
    model, x, y = digits
    x, y = x[:12], y[:12]
    exact = audit(model, Brightness(0.2), x, y, num_classes=10, n=1000, predict_n=500)
    assert exact.settings["semantics"] == "parametric=input"
    parametric = audit(model, Rotation(10.0), x, y, num_classes=10, n=1000, predict_n=500)
    assert parametric.settings["semantics"] == "parametric"
    for report in (exact, parametric):
        assert [a["name"] for a in report.attacks] == ["semantic_grid", "semantic_random"]
        assert not report.violated
        assert report.verdict["certified_inputs"] >= 8


@pytest.mark.slow
def test_parametric_rotation_with_a_wrong_radius_is_flagged(digits):
    class OverclaimingRotation(Rotation):
        def _parameter_radii(self, p_lower):
            return {k: 6.0 * v for k, v in super()._parameter_radii(p_lower).items()}

    model, x, y = digits
    report = audit(
        model,
        OverclaimingRotation(10.0),
        x[:16],
        y[:16],
        num_classes=10,
        n=1000,
        predict_n=500,
        attacks=["semantic_grid"],
    )
    assert report.violated


@pytest.mark.slow
def _first_four(y: torch.Tensor, radius: float) -> CertificateSet:
    """ℓ2 certificates of the first four inputs: their labels at ``radius``."""
    return CertificateSet(
        index=torch.arange(4),
        prediction=y[:4].clone(),
        radius=torch.full((4,), radius, dtype=torch.float64),
        norm="l2",
        semantics="input",
        alpha=0.001,
    )


def test_diagnostics_warn_with_a_fix(digits):
    model, x, y = digits

    class Probabilities(torch.nn.Module):
        def forward(self, inputs):
            return torch.softmax(model(inputs), dim=1)

    certificates = _first_four(y, 0.1)
    runner = Audit(Probabilities().eval(), Gaussian(0.25), 10, attacks=["deepfool"], predict_n=200)
    # PREDICT's own input check warns too.
    with pytest.warns(RSWarning, match="seems to output probabilities"):
        with pytest.warns(RSWarning, match="probability outputs.*Fix: drop the final softmax"):
            report = runner.run(x[:4], y[:4], certificates)
    assert [d.check for d in report.diagnostics] == ["probability outputs"]

    dropout = torch.nn.Sequential(model, torch.nn.Dropout(0.5)).train()
    runner = Audit(dropout, Gaussian(0.25), 10, attacks=["deepfool"], predict_n=200)
    # PREDICT then warns about training mode too (and switches the model to eval mode).
    with pytest.warns(RSWarning, match="training mode"):
        with pytest.warns(RSWarning, match="non-determinism.*Fix: call model.eval"):
            runner.run(x[:4], y[:4], certificates)


@pytest.mark.slow
def test_bad_input_is_refused_before_any_attack(digits, honest_run, tmp_path, capsys):
    model = digits[0]
    with pytest.raises(RSValueError, match="attacks: expected attacks that apply"):
        Audit(model, Gaussian(0.25), 10, attacks=["semantic_grid"])
    with pytest.raises(RSValueError, match="^attacks: expected one of"):
        Audit(model, Gaussian(0.25), 10, attacks=["nope"])
    with pytest.raises(RSValueError, match="budgets"):
        Audit(model, Gaussian(0.25), 10, budgets=[0.5, -1])
    missing = tmp_path / "missing.jsonl"
    assert main(["audit", "--certificates", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert "--certificates: expected an existing JSON Lines file" in capsys.readouterr().err
    converted = tmp_path / "converted.jsonl"
    converted.write_text(json.dumps({"index": 0, "prediction": 3, "radius": 0.2}) + "\n")
    assert main(["audit", "--certificates", str(converted), "--out", str(tmp_path / "o")]) == 2
    assert "without ['alpha']" in capsys.readouterr().err
    record = {"index": 0, "prediction": 3, "radius": 0.2, "alpha": 0.001, "certifier": "ddrs"}
    converted.write_text(json.dumps(record) + "\n")
    assert main(["audit", "--certificates", str(converted), "--out", str(tmp_path / "o")]) == 2
    assert "(a stateless certifier); received 'certifier ddrs, which is stateful'" in (
        capsys.readouterr().err
    )
    out = honest_run[2]
    args = ["audit", "--certificates", str(out / "certificates.jsonl"), "--sigma", "0.5"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    assert "--sigma: expected the certificate file's sigma (0.25)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_converted_certificates_without_configuration_are_audited(digits, tmp_path, capsys):
    """Another tool's file: index, prediction, radius, alpha only; the flags say the rest."""
    model, x, _ = digits
    smoothed = SmoothedClassifier(model, Gaussian(0.25), 10, clip_values=(0.0, 1.0))
    certificates = smoothed.certify(x[:10], n0=100, n=2000, alpha=0.001)
    converted = tmp_path / "other_tool.jsonl"
    converted.write_text(
        "".join(
            json.dumps({"index": i, "prediction": int(p), "radius": float(r), "alpha": 0.001})
            + "\n"
            for i, (p, r) in enumerate(
                zip(certificates.prediction, certificates.radius, strict=True)
            )
        )
    )
    args = ["audit", "--certificates", str(converted), "--attacks", "deepfool", "--sigma", "0.25"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["verdict"]["certified_inputs"] == int((certificates.prediction >= 0).sum())


@pytest.mark.slow
def test_report_labels_the_sampling_cap(honest_run):
    """No radius can exceed σΦ⁻¹(α^{1/n}) (all n votes for one class); the report says where."""
    _, _, out = honest_run
    data = json.loads((out / "report.json").read_text())
    cap = 0.25 * stats.norm.ppf(0.001 ** (1 / 2000))
    assert data["curves"]["sampling_cap"] == pytest.approx(cap, rel=1e-9)
    assert max(r["radius"] for r in data["inputs"]) <= cap * (1 + 1e-9)
    assert f"**sampling cap** σΦ⁻¹(α^{{1/n}}) = {cap:.3f}" in (out / "report.md").read_text()


class _Unchanged(Attack):
    """Proposes the inputs themselves: the verdict rests on PREDICT at the audited points."""

    name = "unchanged"

    def generate(self, target, x, y, eps):
        return Candidates(x=x.clone())


class _MovesItsInput(torch.nn.Module):
    """Class 0 iff the mean pixel is above 0.5; outside inference mode and autograd (where the
    audit's diagnostics call it) it writes 0.9 into its input."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Linear(1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_inference_mode_enabled() and not x.requires_grad:
            x.fill_(0.9)
        s = 20 * (x.flatten(1).mean(dim=1, keepdim=True) - 0.5)
        return torch.cat([s, -s], dim=1)


def _class_0_claimed_on_class_1(alpha: float) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """16 inputs of class 1 (every pixel 0.1) and forged certificates of class 0 at radius 0.3."""
    x = torch.full((16, 1, 4, 4), 0.1)
    labels = torch.ones(16, dtype=torch.int64)
    forged = CertificateSet(
        index=torch.arange(16),
        prediction=torch.zeros(16, dtype=torch.int64),
        radius=torch.full((16,), 0.3, dtype=torch.float64),
        norm="l2",
        semantics="input",
        alpha=alpha,
        n=10_000,
    )
    return x, labels, forged


def test_the_audit_never_hands_the_model_the_inputs_it_audits():
    """Forged class-0 certificates on inputs of class 1: a model that writes its input during
    the diagnostics can neither move the audited points (the verdict stays VIOLATED) nor the
    caller's tensor."""
    x, labels, forged = _class_0_claimed_on_class_1(alpha=0.001)
    runner = Audit(
        _MovesItsInput().eval(), Gaussian(0.25), 2, attacks=[_Unchanged()], predict_n=200
    )
    report = runner.run(x, labels, forged)
    assert report.violated and report.verdict["violations"] == 16
    assert bool((x == 0.1).all())


def test_the_python_audit_marks_certificates_no_model_could_earn():
    """A radius above what n samples certify at level α is a violation whatever the attacks
    find, in the library's audit as on the command line; the honest certificates beside it
    are not marked."""
    x = torch.full((4, 1, 4, 4), 0.1)
    labels = torch.ones(4, dtype=torch.int64)
    cap = 0.25 * float(torch.special.ndtri(torch.tensor(0.001 ** (1 / 100), dtype=torch.float64)))
    certificates = CertificateSet(
        index=torch.arange(4),
        prediction=torch.ones(4, dtype=torch.int64),
        radius=torch.tensor([0.1, 0.1, 10 * cap, 0.1], dtype=torch.float64),
        norm="l2",
        semantics="input",
        alpha=0.001,
        n=100,
    )
    model = _MovesItsInput().eval()  # class 1 at 0.1: every certificate's class is right
    report = Audit(model, Gaussian(0.25), 2, attacks=[_Unchanged()], predict_n=200).run(
        x, labels, certificates
    )
    assert [entry["index"] for entry in report.verdict["impossible"]] == [2]
    assert "exceeds" in report.verdict["impossible"][0]["reason"]
    assert report.violated and report.verdict["summary"].startswith("VIOLATED: 1 certificate")


def test_certificates_at_a_large_alpha_are_flagged_beside_the_verdict():
    """At alpha = 0.999 sixteen wrong certificates are within what they promise, so the
    verdict holds; a "weak certificates" finding says why that verdict means little."""
    x, labels, forged = _class_0_claimed_on_class_1(alpha=0.999)
    runner = Audit(_MovesItsInput().eval(), Gaussian(0.25), 2, attacks=[_Unchanged()])
    with pytest.warns(RSWarning, match="weak certificates"):
        report = runner.run(x, labels, forged)
    assert report.verdict["violations"] == 16
    assert [d.check for d in report.diagnostics] == ["weak certificates"]


@pytest.mark.slow
def test_a_float16_model_is_audited_through_the_cast_it_is_certified_with(digits):
    # The diagnostics and the attacks feed the model as the vote runner does (float32 inputs
    # and noise, cast to the model's dtype); the model used to get float32 inputs there.
    model, x, y = digits
    half = model.half().eval()
    certificates = _first_four(y, 0.05)
    report = Audit(half, Gaussian(0.25), 10, attacks=["deepfool"], predict_n=200).run(
        x[:4], y[:4], certificates
    )
    assert report.diagnostics == [] and len(report.inputs) == 4
