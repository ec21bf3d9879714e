"""The Foolbox bridge: the wrapped model is log of the soft smoothed classifier with a useful
gradient; the registered Foolbox attacks keep every input within its own budget, find real
adversarials and catch a planted unsound radius; the audit command runs them by name; without
Foolbox the one-line error names the extra that fixes it."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import foolbox as fb
import pytest
import torch

from rs_plugin import AttackTarget, Gaussian, RSValueError, SmoothedClassifier, audit
from rs_plugin.adapters.foolbox import FoolboxDDN, FoolboxFMN, FoolboxPGD, foolbox_model
from rs_plugin.auditing.attack import load_attack
from rs_plugin.cli import main
from rs_plugin.data import load_demo_model, load_digits
from rs_plugin.smoothings.norms import lp_norm

ATTACKS = ("foolbox_pgd", "foolbox_fmn", "foolbox_ddn")
CORE = Path(__file__).resolve().parents[2] / "rs_plugin"
# Budgets at which the undefended digits model (inputs in [0, 1]^64) fails on most inputs.
FRAGILE = {"l1": 12.0, "l2": 1.5, "linf": 0.3}


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits("test")
    return load_demo_model(), x[:16], y[:16]


def _smoothed(model, sigma, seed=5, clip_values=(0.0, 1.0)):
    return SmoothedClassifier(
        model, Gaussian(sigma), 10, num_noise_samples=4, clip_values=clip_values, seed=seed
    )


def test_the_foolbox_model_is_the_log_of_the_soft_smoothed_classifier(digits):
    model, x, _ = digits
    smoothed = _smoothed(model, 0.25)
    fmodel = foolbox_model(smoothed)
    assert isinstance(fmodel, fb.PyTorchModel)
    assert tuple(fmodel.bounds) == (0.0, 1.0)
    logits = fmodel(x)
    with torch.no_grad():
        probabilities = smoothed(x)
    assert logits.shape == (16, 10)
    torch.testing.assert_close(logits.exp(), probabilities, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(logits, probabilities.clamp_min(1e-12).log())
    # Seeded: the same call gives the same output; another seed, other noise.
    torch.testing.assert_close(fmodel(x), logits)
    other = foolbox_model(smoothed, seed=6)(x)
    assert not torch.allclose(other, logits)
    assert tuple(foolbox_model(smoothed, bounds=(-1.0, 2.0)).bounds) == (-1.0, 2.0)


def test_the_foolbox_model_has_a_finite_nonzero_gradient(digits):
    model, x, y = digits
    fmodel = foolbox_model(_smoothed(model, 0.25))
    inputs = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(fmodel(inputs), y, reduction="sum")
    (gradient,) = torch.autograd.grad(loss, inputs)
    assert bool(torch.isfinite(gradient).all())
    assert bool((gradient.flatten(1).norm(dim=1) > 0).all())
    # Foolbox's own gradient path (eagerpy) sees the same gradient.
    import eagerpy as ep

    def loss_fn(u):
        return ep.crossentropy(fmodel(u), ep.astensor(y)).sum()

    _, through_foolbox = ep.value_and_grad(loss_fn, ep.astensor(x))
    torch.testing.assert_close(through_foolbox.raw, gradient, atol=1e-6, rtol=1e-4)


def test_a_foolbox_attack_runs_against_the_wrapped_model(digits):
    model, x, y = digits
    fmodel = foolbox_model(_smoothed(model, 0.01))
    _, clipped, success = fb.attacks.L2DeepFoolAttack(steps=10, candidates=3)(
        fmodel, x, fb.criteria.Misclassification(y), epsilons=1.5
    )
    assert float(success.float().mean()) >= 0.75
    with torch.no_grad():
        fooled = fmodel(clipped).argmax(dim=1) != y
    assert torch.equal(fooled, success)  # what Foolbox reports is what the model says


def test_a_classifier_without_clip_values_needs_bounds(digits):
    smoothed = _smoothed(digits[0], 0.25, clip_values=None)
    with pytest.raises(RSValueError, match="^bounds: expected a pair"):
        foolbox_model(smoothed)
    for bad in [(1.0, 0.0), (0.0,), ("low", 1.0), 1.0]:
        with pytest.raises(RSValueError, match="^bounds: expected a pair"):
            foolbox_model(smoothed, bounds=bad)
    with pytest.raises(RSValueError, match="^smoothed: expected"):
        foolbox_model(digits[0])
    assert tuple(foolbox_model(smoothed, bounds=(0.0, 1.0)).bounds) == (0.0, 1.0)


def test_bad_settings_are_refused():
    with pytest.raises(RSValueError, match="^steps: "):
        FoolboxPGD(steps=0)
    with pytest.raises(RSValueError, match="^random_start: "):
        FoolboxPGD(random_start=1)
    with pytest.raises(RSValueError, match="^gamma: "):
        FoolboxFMN(gamma=-1.0)
    with pytest.raises(RSValueError, match="^init_epsilon: "):
        FoolboxDDN(init_epsilon=0.0)


CASES = [(name, norm) for name in ATTACKS for norm in load_attack(name).norms]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "norm"), CASES)
def test_candidates_stay_in_their_own_budget_and_are_real_adversarials(digits, name, norm):
    """σ = 0.01 makes the soft smoothed classifier the base model; budgets differ per input."""
    model, x, y = digits
    target = AttackTarget(_smoothed(model, 0.01), norm, "input", (0.0, 1.0), seed=3)
    eps = torch.linspace(0.2, 1.0, 16, dtype=torch.float64) * FRAGILE[norm]
    eps[:2] = 0.0
    found = load_attack(name).generate(target, x, y, eps)
    assert found.params is None and found.x.shape == x.shape
    assert torch.equal(found.x[:2], x[:2])  # a zero budget leaves the input alone
    distance = lp_norm((found.x - x).double(), norm)
    assert bool((distance <= eps * (1 + 1e-5) + 1e-6).all()), (distance, eps)
    assert float(found.x.min()) >= 0.0 and float(found.x.max()) <= 1.0
    with torch.no_grad():
        base_fooled = model(found.x).argmax(dim=1) != y
        soft_fooled = target.smoothed(found.x).argmax(dim=1) != y
    large = eps >= 0.6 * FRAGILE[norm]
    assert int(base_fooled[large].sum()) >= large.sum() // 2, (base_fooled, eps)
    assert int(soft_fooled[large].sum()) >= large.sum() // 2, (soft_fooled, eps)


@pytest.mark.parametrize("name", ATTACKS)
def test_a_planted_unsound_radius_is_caught(digits, name):
    """Certificates claiming 4 σ Φ⁻¹(p_lower) instead of σ Φ⁻¹(p_lower)."""

    class OverclaimingGaussian(Gaussian):
        name = "overclaiming_gaussian"

        def radius(self, p_lower: torch.Tensor, dim: int) -> torch.Tensor:
            return 4.0 * super().radius(p_lower, dim)

    model, x, y = digits
    x, y = x[:8], y[:8]
    report = audit(
        model, OverclaimingGaussian(0.25), x, y, num_classes=10, n=1000, predict_n=300,
        attacks=[name], budgets=[1.0],
    )  # fmt: skip
    assert report.violated
    assert report.verdict["violations"] >= 4


def test_the_audit_command_runs_foolbox_attacks_by_name(tmp_path):
    out = tmp_path / "audit"
    args = ["audit", "--attacks", ",".join(ATTACKS), "--limit", "6", "-n", "500"]
    args += ["--predict-n", "300", "--threads", "1", "--out", str(out)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(args)
    assert code == 0, printed.getvalue()
    assert "HOLDS" in printed.getvalue()
    report = json.loads((out / "report.json").read_text())
    assert [a["name"] for a in report["attacks"]] == list(ATTACKS)
    assert all(a["adversarial_inputs"] >= 1 and a["checks"] > 0 for a in report["attacks"])
    assert [a["name"] for a in report["settings"]["attacks"]] == list(ATTACKS)
    markdown = (out / "report.md").read_text()
    assert all(f"| {name} |" in markdown for name in ATTACKS)


_WITHOUT_FOOLBOX = textwrap.dedent(
    """
    import sys

    class Absent:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("foolbox", "eagerpy"):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, Absent())
    from rs_plugin.cli import main

    sys.exit(main(sys.argv[1:]))
    """
)


def test_without_foolbox_one_line_names_the_extra(tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-c", _WITHOUT_FOOLBOX, *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )

    done = run("audit", "--attacks", "foolbox_pgd", "--limit", "2", "--out", str(tmp_path / "o"))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("rs-plugin audit: error: the Foolbox attacks and model: foolbox")
    assert "pip install 'rs-plugin[foolbox]'" in lines[0]
    assert not (tmp_path / "o").exists()  # refused before anything was certified
    # Listing the plugins does not import them.
    listed = run("plugins")
    assert listed.returncode == 0 and "foolbox_pgd" in listed.stdout


def test_only_the_adapter_knows_foolbox():
    """The audit and the command line find the attacks through the entry points alone."""
    for path in CORE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "import foolbox" not in text and "from foolbox" not in text, path
        if path.parent.name in ("cli", "auditing"):
            assert not any(name in text for name in ATTACKS), path
