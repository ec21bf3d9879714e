"""Shadows and fog: the shadow and depth geometry, exact composition laws (with tests that fail
when the law is off), statistical soundness against classifiers whose smoothed behaviour is known
in closed form, records and the command line, the audit's parameter search, training and ART.

The soundness cases read the centre pixel (or a row) of a constant image γ and threshold it at
0.5. Every family here is monotone in its one parameter at that pixel, so the base classifier's
class-1 set is a half-line {φ < b} (or {φ > b}) and the smoothed classifier changes class exactly
at φ = b: |b| is the true radius, in the parameter's unit.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from rs_plugin import (
    Brightness,
    Compose,
    Contrast,
    Fog,
    HorizonFog,
    RSValueError,
    SemanticGrid,
    SemanticRandom,
    SemanticSmoothing,
    Shadow,
    SmoothedClassifier,
    audit,
)
from rs_plugin.auditing.attack import AttackTarget
from rs_plugin.cli import main
from rs_plugin.data import load_demo_model, load_digits
from rs_plugin.smoothings.semantic import FLOAT32_SCALE_SHRINK
from rs_plugin.training.augmentation import NoiseAugmentation
from rs_plugin.training.loop import train
from tests.analytic import assert_art_adapter_matches_core, binomial_upper_tail

FALSE_ALARM = 1e-4
SIZE = 15
C = SIZE // 2


def _logistic(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# ---- geometry ----------------------------------------------------------------------------


def test_shadow_falls_on_the_side_its_angle_names_with_the_stated_darkness():
    x = torch.ones(1, 1, 9, 9, dtype=torch.float64)
    right = Shadow(1.0, softness=0.25).apply(x, torch.tensor([[2.0]], dtype=torch.float64))
    assert float(right[0, 0, 4, 8]) == pytest.approx(math.exp(-2.0), rel=1e-6)
    assert float(right[0, 0, 4, 0]) == pytest.approx(1.0, abs=1e-6)
    assert float(right[0, 0, 4, 4]) == pytest.approx(math.exp(-1.0), rel=1e-9)  # on the edge
    top = Shadow(1.0, angle=90.0, offset=2.0, softness=0.25).apply(
        x, torch.tensor([[2.0]], dtype=torch.float64)
    )
    # Row 0 is v = −4, 2 pixels beyond the edge; row 3 (v = −1) is 1 pixel before it.
    assert float(top[0, 0, 0, 4]) == pytest.approx(math.exp(-2.0 * _logistic(8.0)), rel=1e-9)
    assert float(top[0, 0, 3, 4]) == pytest.approx(math.exp(-2.0 * _logistic(-4.0)), rel=1e-9)
    assert float(top[0, 0, 8, 4]) == pytest.approx(1.0, abs=1e-6)
    # A soft edge: the mask at distance d from the edge is logistic(d / w).
    soft = Shadow(1.0, softness=2.0).apply(x, torch.tensor([[1.0]], dtype=torch.float64))
    assert float(soft[0, 0, 4, 6]) == pytest.approx(math.exp(-_logistic(1.0)), rel=1e-9)


def test_fog_tends_to_the_airlight_and_horizon_fog_is_densest_on_the_top_row():
    x = torch.zeros(1, 1, 5, 3, dtype=torch.float64)
    beta = torch.tensor([[1.0]], dtype=torch.float64)
    uniform = Fog(0.5, airlight=0.8).apply(x, beta)
    torch.testing.assert_close(uniform, torch.full_like(x, 0.8 * (1 - math.exp(-1.0))))
    horizon = HorizonFog(0.5).apply(x, beta)[0, 0, :, 0]
    depth = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64)
    torch.testing.assert_close(horizon, 1 - torch.exp(-depth))


# ---- exact composition -------------------------------------------------------------------

EXACT: list[SemanticSmoothing] = [
    Shadow(0.3, angle=30.0, offset=-1.5),
    Fog(0.3),
    HorizonFog(0.3),
    Fog(0.3, airlight=0.7),
]


@pytest.mark.parametrize("smoothing", EXACT, ids=lambda s: f"{s.name}-{s.config()}")
def test_exact_families_compose_exactly_and_the_law_is_checked(smoothing):
    """T(T(x, a), b) = T(x, a + b); the same check fails on a composition that is off (another
    airlight or another depth for the second step, or the darkness of a moved shadow)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 11, 8, dtype=torch.float64, generator=generator)
    a = torch.randn(6, 1, dtype=torch.float64, generator=generator)
    b = torch.randn(6, 1, dtype=torch.float64, generator=generator)
    torch.testing.assert_close(
        smoothing.apply(smoothing.apply(x, a), b), smoothing.apply(x, a + b), atol=1e-12, rtol=0
    )
    assert smoothing.semantics_label == "parametric=input"
    off: list[SemanticSmoothing]
    if isinstance(smoothing, Fog):
        off = [Fog(0.3, airlight=smoothing.airlight + 0.1)]
        off.append(Fog(0.3) if isinstance(smoothing, HorizonFog) else HorizonFog(0.3))
    else:
        off = [Shadow(0.3, angle=smoothing.angle + 20.0, offset=smoothing.offset)]
    for other in off:
        gap = (other.apply(smoothing.apply(x, a), b) - smoothing.apply(x, a + b)).abs().max()
        assert float(gap) > 1e-3, other


class _FirstOrderFog(Fog):
    """Transmission 1 − βd, the first-order expansion of e^{−βd}: (1 − β₁d)(1 − β₂d) is not
    1 − (β₁ + β₂)d, so it does not compose."""

    def transmission(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        d = self.depth(x.shape[-2], x.shape[-1], dtype=x.dtype, device=x.device)
        return 1.0 - params[:, 0].to(x.dtype)[:, None, None, None] * d[None, None]


class _ClippedHorizonFog(HorizonFog):
    """Horizon fog clipped to [0, 1]: dehazing (β < 0) then fog no longer gives the sum."""

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return super().apply(x, params).clamp(0.0, 1.0)


@pytest.mark.parametrize("mutant", [_FirstOrderFog(0.3), _ClippedHorizonFog(0.3)])
def test_the_composition_check_fails_on_fogs_whose_law_is_off(mutant):
    """The check of the exact law above, run on fogs that get the composition wrong: strong
    dehazing (a < 0, which pushes pixels past 1 where the clipped fog cuts them) then fog."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 11, 8, dtype=torch.float64, generator=generator)
    a = -0.5 - torch.rand(6, 1, dtype=torch.float64, generator=generator)
    b = 0.5 + torch.rand(6, 1, dtype=torch.float64, generator=generator)
    gap = (mutant.apply(mutant.apply(x, a), b) - mutant.apply(x, a + b)).abs().max()
    assert float(gap) > 1e-3


def test_moving_the_shadow_does_not_compose_so_geometry_is_parametric_only():
    smoothing = Shadow(0.0, sigma_offset=2.0, darkness=1.0)
    x = torch.rand(2, 1, 9, 9, dtype=torch.float64)
    a = torch.tensor([[1.0], [-2.0]], dtype=torch.float64)
    twice = smoothing.apply(smoothing.apply(x, a), a)
    assert float((twice - smoothing.apply(x, 2 * a)).abs().max()) > 0.05
    assert smoothing.semantics_label == "parametric"
    with pytest.raises(RSValueError, match="^semantics: expected 'parametric'"):
        Shadow(0.5, sigma_angle=5.0, semantics="input")
    with pytest.raises(RSValueError, match="^semantics: expected 'parametric'"):
        Shadow(0.5, darkness=1.0, semantics="input")


# ---- several parameters --------------------------------------------------------------------


def test_shadow_parameters_are_drawn_in_their_own_units_and_certified_in_sigma_units():
    smoothing = Shadow(0.4, sigma_angle=15.0, sigma_offset=2.0, darkness=0.5)
    assert smoothing.parameters == ("darkness", "angle", "offset")
    params = smoothing.sample_parameters(
        40_000, torch.Generator().manual_seed(1), torch.device("cpu"), torch.float64
    )
    torch.testing.assert_close(
        params.std(dim=0), torch.tensor([0.4, 15.0, 2.0], dtype=torch.float64), rtol=0.03, atol=0
    )
    p = torch.tensor([0.9, 0.99], dtype=torch.float64)
    radii = smoothing.certified_radii(p, 81)
    # Φ⁻¹(p) in σ units, less the allowance for the float32 scales the parameters are drawn with
    rho = torch.distributions.Normal(0.0, 1.0).icdf(p) * FLOAT32_SCALE_SHRINK
    assert smoothing.norm == "shadow:l2" and smoothing.sigma_units
    torch.testing.assert_close(radii["shadow:l2"], rho)
    extras = smoothing.certificate_extras(p, 81)
    torch.testing.assert_close(extras["shadow.angle"], 15.0 * rho)
    torch.testing.assert_close(extras["shadow.offset:box"], 2.0 * radii["shadow:linf"])
    single = Shadow(0.0, sigma_angle=15.0, darkness=0.5)
    assert single.norm == "shadow.angle" and single.units == "degrees"
    torch.testing.assert_close(single.radius(p, 81), 15.0 * rho)
    with pytest.raises(RSValueError, match="^sigma_darkness: expected sigma_darkness, sigma_angle"):
        Shadow(0.0)
    with pytest.raises(RSValueError, match="^softness"):
        Shadow(0.3, softness=0.0)
    with pytest.raises(RSValueError, match="^airlight"):
        Fog(0.3, airlight=float("nan"))


# ---- soundness -----------------------------------------------------------------------------


class PixelThreshold(nn.Module):
    """Class 1 where pixel (row, col) is below 0.5."""

    def __init__(self, row: int, col: int) -> None:
        super().__init__()
        self.row, self.col = row, col

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (0.5 - x[:, 0, self.row, self.col]) * 1e3
        return torch.stack([-z, z], dim=1)


@pytest.mark.parametrize(
    "shadow",
    [Shadow(2.0, sigma_angle=0.5), Shadow(0.0, sigma_angle=0.5), Shadow(0.3)],
    ids=["darkness+angle", "angle", "darkness"],
)
def test_composition_extras_are_each_parameter_s_own_extent(shadow):
    """Every extra of a composition is what its parameters may do inside the certified set
    Σ_j δ_j²/σ_j² < ρ² (alone) or max_j |δ_j|/σ_j < ρ∞ (``:box``, all at once): moving those
    parameters by the extra stays on the set's boundary, in each parameter's own unit. A shadow
    with its geometry has one scale per parameter, so its extras are per parameter."""
    smoothing = Compose(Brightness(0.1), shadow)
    p = torch.tensor([0.9, 0.99], dtype=torch.float64)
    radii = smoothing.certified_radii(p, 64)
    extras = smoothing.certificate_extras(p, 64)
    names = ("brightness", *shadow.parameter_names)
    sigmas = torch.tensor(smoothing.parameter_sigmas, dtype=torch.float64)
    expected_keys = {*names, *(f"{n}:box" for n in names)}
    if shadow.num_parameters > 1:
        assert set(extras) == expected_keys
    else:
        assert set(extras) == {"brightness", "brightness:box", shadow.norm, f"{shadow.norm}:box"}
        assert shadow.parameter_names == (shadow.norm,)
    for j, name in enumerate(names):
        # the parameter alone: whitened distance ρ exactly
        torch.testing.assert_close(extras[name] / sigmas[j], radii["composed:l2"])
        assert bool((extras[name] > 0).all())
    # every parameter at once by its box extra: whitened distance ρ∞ in each coordinate
    box = torch.stack([extras[f"{n}:box"] for n in names]) / sigmas[:, None]
    torch.testing.assert_close(box, radii["composed:linf"].expand_as(box))


def _constant(levels: torch.Tensor) -> torch.Tensor:
    return levels.double().view(-1, 1, 1, 1).expand(-1, 1, SIZE, SIZE).float().contiguous()


def _case(name: str):
    """(smoothing, x, model, label, true radius): class 1 on {φ: φ > b} for darkness and offset
    (the centre darkens as φ grows) or {φ: φ < b} for fog (the centre whitens as β grows)."""
    if name.startswith("shadow-darkness"):
        # Centre pixel γ·e^{−s m₀}, m₀ = logistic(−o/w) = logistic(1): class 1 for s > ln(2γ)/m₀.
        g = torch.linspace(0.25, 0.9, 120, dtype=torch.float64)
        noise = "uniform" if name.endswith("uniform") else "gaussian"
        smoothing = Shadow(0.5, offset=-2.0, softness=2.0, noise=noise)
        b = torch.log(2 * g) / _logistic(1.0)
        return smoothing, _constant(g), PixelThreshold(C, C), (b < 0).long(), b.abs()
    if name == "shadow-offset":
        # γ·e^{−s₀ logistic(−o/w)} < 0.5 ⟺ o < −w·logit(ln(2γ)/s₀) (needs 0 < ln 2γ < s₀).
        g = torch.linspace(0.55, 1.3, 120, dtype=torch.float64)
        s0, w = 1.0, 2.0
        smoothing = Shadow(0.0, sigma_offset=1.5, darkness=s0, softness=w)
        q = torch.log(2 * g) / s0
        b = -w * torch.log(q / (1 - q))
        return smoothing, _constant(g), PixelThreshold(C, C), (b > 0).long(), b.abs()
    # Fog: 1 + t(γ − 1) < 0.5 ⟺ t > 0.5/(1 − γ) ⟺ β d < ln(2(1 − γ)); d = 1, or the depth of
    # row 2 of the horizon (12/14).
    g = torch.linspace(0.05, 0.8, 120, dtype=torch.float64)
    fog: Fog
    if name == "fog":
        fog, depth, row = Fog(0.4), 1.0, C
    else:
        fog, depth, row = HorizonFog(0.4), (SIZE - 3) / (SIZE - 1), 2
    b = torch.log(2 * (1 - g)) / depth
    return fog, _constant(g), PixelThreshold(row, C), (b > 0).long(), b.abs()


CASES = ["shadow-darkness", "shadow-darkness-uniform", "shadow-offset", "fog", "horizon_fog"]


@pytest.mark.parametrize("case", CASES)
def test_certificates_are_sound_against_the_known_truth(case):
    smoothing, x, model, label, truth = _case(case)
    alpha = 0.01
    certs = SmoothedClassifier(model.eval(), smoothing, 2).certify(
        x, n0=64, n=1000, alpha=alpha, batch_size=8192, seed=11
    )
    certified = certs.prediction >= 0
    bad = (certs.prediction != label) | (certs.radius > truth * (1 + 1e-6) + 1e-9)
    violations = int((certified & bad).sum())
    assert int(certified.sum()) > len(x) // 2 and float(certs.radius.max()) > 0  # informative
    assert binomial_upper_tail(violations, len(x), alpha) >= FALSE_ALARM, violations
    # Tight where the truth is finite: a plug-in radius (p̂) overstates it and is caught.
    p_hat = (certs.count.double() / certs.n).clamp(max=1 - 1e-9)
    naive = smoothing.radius(p_hat, x[0].numel())
    over = int((certified & (naive > truth * (1 + 1e-6))).sum())
    assert binomial_upper_tail(over, len(x), alpha) < FALSE_ALARM


# ---- records, command line, audit, training, ART -----------------------------------------


@pytest.mark.parametrize(
    ("name", "extra", "norm", "units", "semantics"),
    [
        ("shadow", [], "shadow", "s, log-transmission", "parametric=input"),
        (
            "shadow",
            ["sigma_offset=2", "darkness=1", "sigma_angle=10"],
            "shadow:l2",
            "σ units (each parameter's change over its sigma)",
            "parametric",
        ),
        ("fog", ["airlight=1.0"], "fog", "beta, 1/depth", "parametric=input"),
        ("horizon_fog", [], "horizon_fog", "beta, 1/depth", "parametric=input"),
    ],
)
def test_certify_from_the_command_line_names_units_and_semantics(
    name, extra, norm, units, semantics, tmp_path, capsys
):
    out = tmp_path / "w.jsonl"
    keyword = "sigma_darkness" if name == "shadow" else "beta"
    args = ["certify", "--smoothing", name, "--smoothing-param", f"{keyword}=0.5"]
    args += ["--limit", "3", "-n", "300"]
    for pair in extra:
        args += ["--smoothing-param", pair]
    assert main([*args, "--n0", "30", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{norm} radius >= " in printed and f"({units})" in printed
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3
    for record in records:
        assert record["norm"] == norm and record["semantics"] == semantics
        assert record["smoothing"]["name"] == name and record["smoothing"]["units"] == units
    assert any(r["radius"] > 0 for r in records)
    if norm == "shadow:l2":
        assert {"shadow.darkness", "shadow.angle:box", "shadow.offset"} <= set(records[0])


def test_the_plugins_command_lists_shadow_and_fog_from_their_entry_points(capsys):
    assert main(["plugins"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    for name, target in [
        ("shadow", "rs_plugin:Shadow"),
        ("fog", "rs_plugin:Fog"),
        ("horizon_fog", "rs_plugin:HorizonFog"),
    ]:
        assert ["rs_plugin.smoothings", name, target, "rs-plugin"] in rows


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits("test")
    return load_demo_model(), x[:12], y[:12]


@pytest.mark.slow
@pytest.mark.parametrize(
    "smoothing",
    [Shadow(0.5, angle=180.0), Shadow(0.0, sigma_offset=1.0, darkness=1.0), Fog(0.5)],
    ids=["shadow", "shadow-offset", "fog"],
)
def test_the_audit_searches_the_parameter_within_the_certified_radius(digits, smoothing):
    model, x, y = digits
    report = audit(model, smoothing, x, y, num_classes=10, n=1000, predict_n=500)
    assert [a["name"] for a in report.attacks] == ["semantic_grid", "semantic_random"]
    assert report.settings["semantics"] == smoothing.semantics_label
    assert not report.violated and report.verdict["certified_inputs"] >= 6
    # The candidates of both attacks stay inside the budget, in the parameter's unit.
    smoothed = SmoothedClassifier(model, smoothing, 10, num_noise_samples=4, seed=5)
    target = AttackTarget(smoothed, smoothing.norm, smoothing.semantics_label, (0.0, 1.0), 3)
    budget = torch.full((len(y),), 0.7, dtype=torch.float64)
    for attack in (SemanticGrid(), SemanticRandom(8)):
        found = attack.generate(target, x, y, budget)
        assert found.params is not None and bool((found.params.abs() <= 0.7 + 1e-6).all())
        assert float(found.params.abs().max()) > 0.3


def test_an_overclaiming_fog_is_flagged_by_the_audit(digits):
    class OverclaimingFog(Fog):
        def _parameter_radii(self, p_lower):
            return {k: 8.0 * v for k, v in super()._parameter_radii(p_lower).items()}

    model, x, y = digits
    report = audit(
        model, OverclaimingFog(0.5), x, y, num_classes=10, n=1000, predict_n=500,
        attacks=["semantic_grid"],
    )  # fmt: skip
    assert report.violated


def test_the_audit_searches_compositions_in_sigma_units(digits):
    """Radii in σ units (Compose, a shadow over several parameters) are attacked like the
    others; the joint shadow's soundness against a known truth, the audit's search of its
    certified ellipsoid and a forged certificate caught are in
    tests/smoothings/test_shadow_joint.py."""
    model, x, y = digits
    smoothing = Compose(Brightness(0.2), Contrast(0.2))
    assert smoothing.sigma_units and smoothing.parameter_sigmas == (0.2, 0.2)
    report = audit(model, smoothing, x[:6], y[:6], num_classes=10, n=500, predict_n=200)
    assert [a["name"] for a in report.attacks] == ["semantic_grid", "semantic_random"]
    assert all(a["checks"] > 0 for a in report.attacks)
    assert not report.violated and report.verdict["certified_inputs"] >= 4


@pytest.mark.parametrize(
    "smoothing", [Shadow(0.5), Fog(0.5), HorizonFog(0.5)], ids=lambda s: s.name
)
def test_noise_augmentation_trains_with_the_smoothing(smoothing):
    """A model trained on shadowed / fogged digits classifies them better than at the start."""
    x, y = load_digits("train")
    x, y = x[:512], y[:512]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    objective = NoiseAugmentation(smoothing)

    def perturbed_accuracy() -> float:
        noisy = smoothing.perturb(x, torch.Generator().manual_seed(9))
        with torch.no_grad():
            return float((model(noisy).argmax(dim=1) == y).double().mean())

    before = perturbed_accuracy()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train(model, objective, x, y, optimizer=optimizer, epochs=5, batch_size=64, generators=1)
    assert perturbed_accuracy() > max(0.7, before + 0.3)


@pytest.mark.parametrize(
    "smoothing", [Shadow(0.5), Fog(0.5), HorizonFog(0.5)], ids=lambda s: s.name
)
def test_the_art_adapter_certifies_like_the_core(smoothing):
    assert (assert_art_adapter_matches_core(smoothing, inputs=3) > 0).any()


class _FogRatio(nn.Module):
    """Class 0 when (1 − z₁)/(1 − z₀) < 1/2, a ratio fog (airlight 1) leaves unchanged: its
    smoothed classifier is class 0 at every fog of x = (0, 0.9), on both sides of β = 0. Clipping
    the inverse side's image (z₀ = 1 − e^{|β|} < 0) to [0, 1] breaks the ratio (e^{|β|}·0.1), and
    PREDICT on that clipped image answers class 1 once |β| > ln 5."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.flatten(1)
        ratio = (1 - flat[:, 1]) / (1 - flat[:, 0]).clamp_min(1e-12)
        one = (ratio >= 0.5).to(z.dtype)
        return torch.stack([1 - one, one], dim=1) * 10.0


def test_the_audit_checks_fog_images_themselves_not_clipped_ones():
    x = torch.tensor([[[[0.0, 0.9]]]])
    y = torch.tensor([0])
    report = audit(
        _FogRatio().eval(), Fog(1.0), x, y, num_classes=2, n=1000, predict_n=200,
        attacks=["semantic_grid"],
    )  # fmt: skip
    assert report.verdict["certified_inputs"] == 1
    # The certified radius (≈ 2.46) reaches past ln 5 on the inverse side.
    assert float(report.inputs[0]["radius"]) > math.log(5.0)
    assert not report.violated
