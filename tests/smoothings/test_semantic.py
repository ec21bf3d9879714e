"""Semantic smoothings: one invariant table over every registered transform, exact composition
laws, statistical soundness of parametric certificates against classifiers whose smoothed
behaviour is known in closed form, and the input-domain grid certificate for rotation.

Soundness tests count violations V over M inputs and fail only when P[Binomial(M, α) ≥ V] < 1e-4.
The constructed classifiers read one pixel of an image whose values are a linear ramp (bilinear
interpolation reproduces a ramp exactly, and border padding keeps it monotone), so the set of
parameters where the base classifier says 1 is a half-space (or half-line) whose distance from 0
is the true radius of the smoothed classifier in parameter space.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy import optimize, stats
from torch import nn

from rs_plugin import (
    Affine,
    Blur,
    Brightness,
    Compose,
    Contrast,
    Deformation,
    GridCertifier,
    Rotation,
    RSValueError,
    Scaling,
    SemanticSmoothing,
    SequentialCertifier,
    SmoothedClassifier,
    Translation,
    cohen_certifier,
)
from rs_plugin._registry import discover, load_smoothing
from rs_plugin.cli import main
from rs_plugin.runs import CertifyJob
from tests.analytic import assert_art_adapter_matches_core, binomial_upper_tail
from tests.smoothings.test_weather import _case as _weather_case

FALSE_ALARM = 1e-4
SIZE = 15  # odd: the centre pixel sits on the rotation/scaling centre
C = SIZE // 2
SEMANTIC = sorted(
    name
    for name, entry in discover("rs_plugin.smoothings").items()
    if issubclass(entry.load(), SemanticSmoothing)
)
SIGMAS = {
    "rotation": 10.0,
    "translation": 1.0,
    "scaling": 0.1,
    "affine": 0.05,
    "deformation": 0.5,
    "brightness": 0.2,
    "contrast": 0.2,
    "blur": 0.5,
    "shadow": 0.5,
    "fog": 0.3,
    "horizon_fog": 0.3,
}


def _semantic(name: str) -> SemanticSmoothing:
    smoothing = load_smoothing(name, sigma=SIGMAS[name])
    assert isinstance(smoothing, SemanticSmoothing)
    return smoothing


def _instances() -> list[tuple[str, SemanticSmoothing]]:
    built = [(name, _semantic(name)) for name in SEMANTIC]
    extra: list[tuple[str, SemanticSmoothing]] = [
        ("rotation[input]", Rotation(10.0, semantics="input", input_range=4, grid_step=2)),
        ("translation[bilinear]", Translation(1.0, interpolation="bilinear", padding="border")),
        ("brightness[uniform]", Brightness(0.2, noise="uniform")),
        ("compose", Compose(Rotation(10.0), Brightness(0.2))),
    ]
    return built + extra


INSTANCES = _instances()
IDS = [name for name, _ in INSTANCES]


def test_every_transform_is_registered():
    assert set(SIGMAS) == set(SEMANTIC)


@pytest.mark.parametrize(("name", "smoothing"), INSTANCES, ids=IDS)
def test_identity_parameters_give_the_input_back(name, smoothing):
    x = torch.rand(3, 2, 12, 10, dtype=torch.float64)
    params = torch.zeros(3, smoothing.num_parameters, dtype=torch.float64)
    torch.testing.assert_close(smoothing.apply(x, params), x, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("name", "smoothing"), INSTANCES, ids=IDS)
def test_perturbation_is_seeded_and_draws_parameters_of_the_stated_spread(name, smoothing):
    x = torch.rand(5, 1, 9, 9)
    first = smoothing.perturb(x, torch.Generator().manual_seed(3))
    assert first.shape == x.shape and first.dtype == x.dtype
    assert torch.equal(first, smoothing.perturb(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, smoothing.perturb(x, torch.Generator().manual_seed(4)))
    params = smoothing.sample_parameters(
        20_000, torch.Generator().manual_seed(5), x.device, torch.float64
    )
    sigmas = (
        torch.cat([torch.full((c.num_parameters,), c.sigma) for c in smoothing.components])
        if isinstance(smoothing, Compose)
        else torch.full((smoothing.num_parameters,), smoothing.sigma)
    ).double()
    assert torch.all((params.std(dim=0) / sigmas - 1).abs() < 0.05)
    assert torch.all(params.mean(dim=0).abs() < 5 * sigmas / math.sqrt(20_000))
    if not smoothing.on_grid:
        again = smoothing.apply(
            x, smoothing.sample_parameters(5, torch.Generator().manual_seed(3), x.device, x.dtype)
        )
        assert torch.equal(first, again)


@pytest.mark.parametrize(("name", "smoothing"), INSTANCES, ids=IDS)
def test_gradients_flow_to_the_image_and_the_parameters(name, smoothing):
    x = torch.rand(2, 1, 9, 9, dtype=torch.float64, requires_grad=True)
    params = torch.full((2, smoothing.num_parameters), 0.3, dtype=torch.float64)
    params.requires_grad_(True)
    weights = torch.rand(1, 1, 9, 9, dtype=torch.float64)
    (smoothing.apply(x, params) * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert params.grad is not None and torch.isfinite(params.grad).all()
    assert params.grad.abs().sum() > 0


@pytest.mark.parametrize(("name", "smoothing"), INSTANCES, ids=IDS)
def test_radii_and_records_name_the_parameter_space_and_semantics(name, smoothing):
    if smoothing.on_grid:
        with pytest.raises(RSValueError, match="grid"):
            smoothing.radius(torch.tensor([0.9]), 81)
        return
    p = torch.linspace(0.0, 1.0 - 1e-9, 2001, dtype=torch.float64)
    radii = smoothing.certified_radii(p, 81)
    assert smoothing.norm in radii and torch.equal(radii[smoothing.norm], smoothing.radius(p, 81))
    for norm, r in radii.items():
        assert torch.all(r[p <= 0.5] == 0) and torch.all(r[1:] >= r[:-1]), norm
        assert not set(radii) & {"l1", "l2", "linf"}  # never mixed up with pixel-space norms
    expected = "parametric=input" if smoothing.composition == "exact" else "parametric"
    assert smoothing.config()["semantics"] == expected


# ---- exact composition laws -------------------------------------------------------------


@pytest.mark.parametrize(
    "smoothing", [Brightness(0.1), Contrast(0.1), Translation(1.0)], ids=lambda s: s.name
)
def test_exact_transforms_compose_exactly(smoothing):
    x = torch.rand(4, 2, 10, 13, dtype=torch.float64)
    a = torch.randn(4, smoothing.num_parameters, dtype=torch.float64)
    b = torch.randn(4, smoothing.num_parameters, dtype=torch.float64)
    torch.testing.assert_close(
        smoothing.apply(smoothing.apply(x, a), b), smoothing.apply(x, a + b), atol=1e-10, rtol=0
    )


def _ramp(slope_u: float, slope_v: float, offset: float = 0.5) -> torch.Tensor:
    u = torch.arange(SIZE, dtype=torch.float64) - C
    return (offset + slope_u * u[None, :] + slope_v * u[:, None])[None, None]


@pytest.mark.parametrize(
    ("smoothing", "a", "b", "combined"),
    [
        (Rotation(1.0), 12.0, -31.0, -19.0),
        (Scaling(0.1), 0.2, -0.3, (1.2 * 0.7) - 1.0),
    ],
    ids=["rotation", "scaling"],
)
def test_geometric_maps_compose_exactly_on_images_interpolation_reproduces(
    smoothing, a, b, combined
):
    """Rotations add angles and scalings multiply factors: exact on a linear ramp, which bilinear
    interpolation reproduces, away from the border."""
    x = _ramp(0.03, -0.02)
    first, second = (
        torch.tensor([[a]], dtype=torch.float64),
        torch.tensor([[b]], dtype=torch.float64),
    )
    twice = smoothing.apply(smoothing.apply(x, first), second)
    once = smoothing.apply(x, torch.tensor([[combined]], dtype=torch.float64))
    inner = slice(C - 3, C + 4)
    torch.testing.assert_close(twice[..., inner, inner], once[..., inner, inner], atol=1e-9, rtol=0)
    # On a generic image interpolation breaks the law: this is why input-domain certificates
    # of rotation and scaling need the grid.
    noise = torch.rand(1, 1, SIZE, SIZE, dtype=torch.float64)
    gap = smoothing.apply(smoothing.apply(noise, first), second)
    direct = smoothing.apply(noise, torch.tensor([[combined]], dtype=torch.float64))
    assert float((gap - direct).abs().max()) > 0.05


def test_rotation_turns_content_counter_clockwise_and_translation_moves_it_right_and_down():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 7] = 1.0  # right of the centre
    turned = Rotation(1.0).apply(x, torch.tensor([[90.0]]))
    assert divmod(int(turned.flatten().argmax()), 9) == (1, 4)  # above the centre
    moved = Translation(1.0).apply(x, torch.tensor([[1.0, 2.0]]))
    assert divmod(int(moved.flatten().argmax()), 9) == (6, 8)


# ---- soundness of parametric certificates ---------------------------------------------------


class PixelThreshold(nn.Module):
    """Class 1 where pixel (row, col) of channel 0 is below ``threshold`` (above, if ``above``)."""

    def __init__(self, row: int, col: int, threshold: float, above: bool = False) -> None:
        super().__init__()
        self.row, self.col, self.threshold = row, col, threshold
        self.sign = -1.0 if above else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.sign * (self.threshold - x[:, 0, self.row, self.col]) * 1e3
        return torch.stack([-z, z], dim=1)


Case = tuple[SemanticSmoothing, torch.Tensor, nn.Module, torch.Tensor, dict[str, torch.Tensor]]


def _offsets(count: int, low: float, high: float) -> torch.Tensor:
    return torch.linspace(low, high, count, dtype=torch.float64)


def _ramps(offsets: torch.Tensor, slope_u: float, slope_v: float) -> torch.Tensor:
    return torch.cat([_ramp(slope_u, slope_v, float(g)) for g in offsets]).float()


def _half_line(boundary: torch.Tensor, keys: list[str], scale: list[float]) -> tuple:
    """Base class 1 on {φ : φ < boundary} (sign handled by the caller): class at 0, radii."""
    label = (boundary > 0).long()
    return label, {k: boundary.abs() / s for k, s in zip(keys, scale, strict=True)}


def _brightness(noise: str) -> Case:
    g = _offsets(120, 0.2, 0.8)
    x = torch.cat([torch.full((1, 1, SIZE, SIZE), float(v)) for v in g])
    label, truth = _half_line(0.5 - g, ["brightness"], [1.0])
    return Brightness(0.2, noise=noise), x, PixelThreshold(C, C, 0.5), label, truth


def _contrast() -> Case:
    g = _offsets(120, 0.3, 0.8)
    x = torch.cat([torch.full((1, 1, SIZE, SIZE), float(v)) for v in g])
    label, truth = _half_line(torch.log(0.5 / g), ["contrast"], [1.0])
    return Contrast(0.2), x, PixelThreshold(C, C, 0.5), label, truth


def _translation_fourier() -> Case:
    # A sinusoid of one period across the image: the centre pixel reads γ − A·sin(2π t_u/W)
    # exactly after a Fourier shift, so class 1 (below 0.5) is t_u > t*.
    g = _offsets(120, 0.35, 0.65)
    u = torch.arange(SIZE, dtype=torch.float64) - C
    wave = 0.3 * torch.sin(2 * math.pi * u / SIZE)[None, :].expand(SIZE, SIZE)
    x = torch.stack([(v + wave)[None] for v in g]).float()
    boundary = SIZE / (2 * math.pi) * torch.asin((g - 0.5) / 0.3)
    label, truth = _half_line(-boundary, ["translation:l2", "translation:linf"], [1.0, 1.0])
    return Translation(1.0), x, PixelThreshold(C, C, 0.5), label, truth


def _translation_bilinear() -> Case:
    g = _offsets(120, 0.35, 0.65)
    boundary = (g - 0.5) / 0.05  # centre reads γ − 0.05 t_u: class 1 for t_u > (γ − 0.5)/0.05
    label, truth = _half_line(-boundary, ["translation:l2", "translation:l1"], [1.0, 1.0])
    smoothing = Translation(1.0, interpolation="bilinear", padding="border")
    return smoothing, _ramps(g, 0.05, 0.0), PixelThreshold(C, C, 0.5), label, truth


def _rotation() -> Case:
    # Vertical ramp γ + a·v; pixel (r, 0) samples (r cos θ, r sin θ): reads γ + a r sin θ.
    g = _offsets(120, 0.38, 0.62)
    boundary = torch.rad2deg(torch.asin((0.5 - g) / (0.04 * 4)))
    label, truth = _half_line(boundary, ["rotation"], [1.0])
    smoothing = Rotation(10.0, padding="border")
    return smoothing, _ramps(g, 0.0, 0.04), PixelThreshold(C, C + 4, 0.5), label, truth


def _scaling() -> Case:
    # Ramp γ + a·u; pixel (3, 0) samples 3/(1 + φ): class 1 (below 0.5) for φ > 3a/(0.5 − γ) − 1.
    g = _offsets(120, 0.31, 0.39)
    boundary = 3 * 0.05 / (0.5 - g) - 1.0
    label, truth = _half_line(-boundary, ["scaling"], [1.0])
    smoothing = Scaling(0.1, padding="border")
    return smoothing, _ramps(g, 0.05, 0.0), PixelThreshold(C, C + 3, 0.5), label, truth


def _affine() -> Case:
    g = _offsets(120, 0.45, 0.55)
    boundary = (0.5 - g) / 0.05  # centre samples (e, f): reads γ + 0.05 e
    keys = ["affine:l1", "affine:l2", "affine:linf"]
    label, truth = _half_line(boundary, keys, [1.0, 1.0, 1.0])
    smoothing = Affine(0.05, padding="border")
    return smoothing, _ramps(g, 0.05, 0.0), PixelThreshold(C, C, 0.5), label, truth


def _deformation() -> Case:
    # The centre's u-displacement is ⟨w, c_u⟩ with w = B_kl(centre) = cos(πk/2)cos(πl/2):
    # ‖w‖₂ = 2, ‖w‖₁ = 4, ‖w‖∞ = 1, so the distances to the hyperplane are |e*|/‖w‖_dual.
    g = _offsets(120, 0.45, 0.55)
    boundary = (0.5 - g) / 0.05
    keys = ["deformation:l2", "deformation:linf", "deformation:l1"]
    label, truth = _half_line(boundary, keys, [2.0, 4.0, 1.0])
    smoothing = Deformation(0.5, frequencies=3, padding="border")
    return smoothing, _ramps(g, 0.05, 0.0), PixelThreshold(C, C, 0.5), label, truth


def _centre_weight(s: float) -> float:
    """Independent numpy recomputation of the blur kernel's centre tap (its own ⌈3s⌉ taps)."""
    if s == 0:
        return 1.0
    taps = np.arange(-math.ceil(3 * s), math.ceil(3 * s) + 1)
    return float(1.0 / np.exp(-0.5 * (taps / s) ** 2).sum())


def _blur() -> Case:
    # One bright pixel of height h at the centre reads h·w0(|s|)², decreasing in |s|: class 1
    # (above 0.5) on |s| < s*, so g(φ) = P[|φ + ε| < s*] and the truth solves g(R) = 1/2.
    sigma, heights = 0.5, _offsets(100, 0.55, 4.0)
    x = torch.zeros(len(heights), 1, SIZE, SIZE)
    x[:, 0, C, C] = heights.float()
    labels, radii = [], []
    for h in heights.tolist():
        s_star = optimize.brentq(lambda s, h=h: h * _centre_weight(s) ** 2 - 0.5, 1e-9, 20.0)

        def inside(r: float, s_star: float = s_star) -> float:
            return stats.norm.cdf((s_star - r) / sigma) - stats.norm.cdf((-s_star - r) / sigma)

        if inside(0.0) > 0.5:
            labels.append(1)
            radii.append(optimize.brentq(lambda r: inside(r) - 0.5, 0.0, s_star))
        else:
            labels.append(0)
            radii.append(math.inf)
    truth = {"blur": torch.tensor(radii, dtype=torch.float64)}
    model = PixelThreshold(C, C, 0.5, above=True)
    return Blur(sigma), x, model, torch.tensor(labels), truth


def _composed() -> Case:
    # Bilinear translation then brightness on a ramp: the centre reads γ − a t_u + b, class 1
    # below 0.5: a half-space with normal (−a σ_t, 0, σ_b) in σ units.
    g = _offsets(120, 0.3, 0.7)
    a, s_t, s_b = 0.05, 1.0, 0.1
    normal = torch.tensor([-a * s_t, 0.0, s_b], dtype=torch.float64)
    label = (g < 0.5).long()
    truth = {
        "composed:l2": (0.5 - g).abs() / normal.norm(),
        "composed:linf": (0.5 - g).abs() / normal.abs().sum(),
    }
    smoothing = Compose(
        Translation(s_t, interpolation="bilinear", padding="border"), Brightness(s_b)
    )
    return smoothing, _ramps(g, a, 0.0), PixelThreshold(C, C, 0.5), label, truth


def _weather(name: str) -> Case:
    """Shadow darkness and fog (tests/smoothings/test_weather.py): half-lines at the centre."""
    smoothing, x, model, label, truth = _weather_case(name)
    return smoothing, x, model, label, {smoothing.norm: truth}


CASES: dict[str, Callable[[], Case]] = {
    "brightness": lambda: _brightness("gaussian"),
    "brightness[uniform]": lambda: _brightness("uniform"),
    "contrast": _contrast,
    "translation": _translation_fourier,
    "translation[bilinear]": _translation_bilinear,
    "rotation": _rotation,
    "scaling": _scaling,
    "affine": _affine,
    "deformation": _deformation,
    "blur": _blur,
    "compose": _composed,
    "shadow": lambda: _weather("shadow-darkness"),
    "fog": lambda: _weather("fog"),
    "horizon_fog": lambda: _weather("horizon_fog"),
}


def test_every_registered_transform_has_a_soundness_case():
    assert set(SEMANTIC) <= set(CASES)


# Cases whose certification takes more than a few seconds (interpolating transforms on large
# batches): run by make test, left out by make test-fast.
SLOW_CASES = {"translation[bilinear]", "scaling", "translation", "blur", "affine", "deformation"}


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES else c for c in sorted(CASES)],
)
def test_parametric_certificates_are_sound_against_the_known_truth(case):
    smoothing, x, model, label, truth = CASES[case]()
    alpha = 0.01
    certs = SmoothedClassifier(model.eval(), smoothing, 2).certify(
        x, n0=64, n=1000, alpha=alpha, batch_size=8192, seed=7
    )
    certified = certs.prediction >= 0
    wrong = certs.prediction != label
    over = torch.zeros_like(wrong)
    for norm, true_radius in truth.items():
        over |= certs.radii[norm] > true_radius * (1 + 1e-6) + 1e-9
    violations = int((certified & (wrong | over)).sum())
    assert int(certified.sum()) > len(x) // 2  # informative
    assert float(certs.radius[certified].max()) > 0
    assert binomial_upper_tail(violations, len(x), alpha) >= FALSE_ALARM, violations
    assert {r["semantics"] for r in certs.to_records()} == {smoothing.config()["semantics"]}


@pytest.mark.slow
def test_soundness_check_has_power_against_a_plug_in_radius():
    """p̂ instead of its lower bound overstates brightness radii often enough to be caught."""
    smoothing, x, model, _, truth = _brightness("gaussian")
    certs = SmoothedClassifier(model.eval(), smoothing, 2).certify(
        x, n0=64, n=1000, alpha=0.01, batch_size=8192
    )
    p_hat = (certs.count.double() / certs.n).clamp(max=1 - 1e-9)
    naive = smoothing.radius(p_hat, x[0].numel())
    violations = int(((certs.prediction >= 0) & (naive > truth["brightness"])).sum())
    assert binomial_upper_tail(violations, len(x), 0.01) < FALSE_ALARM


# ---- input-domain semantics for rotation --------------------------------------------------


class Sharpness(nn.Module):
    """Class 1 when the image keeps at least ``fraction`` of a reference energy Σx².

    One bilinear rotation of a 2×2 block keeps ≥ 63 % of its energy at every angle; a rotation of
    an already rotated image blurs twice and, a few degrees away, usually keeps less.
    """

    def __init__(self, reference: float, fraction: float) -> None:
        super().__init__()
        self.level = reference * fraction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = ((x**2).flatten(1).sum(dim=1) - self.level) * 100.0
        return torch.stack([-z, z], dim=1)


@pytest.mark.slow
def test_parametric_rotation_certificate_is_violated_by_a_rotated_image_but_input_domain_is_not():
    x = torch.zeros(1, 1, SIZE, SIZE)
    x[0, 0, 3:5, 7:9] = 1.0
    model = Sharpness(reference=4.0, fraction=0.63).eval()
    angle = 5.0

    parametric = SmoothedClassifier(model, Rotation(10.0), 2)
    cert = parametric.certify(x, n0=100, n=2000, alpha=0.001)
    assert int(cert.prediction[0]) == 1 and float(cert.radius[0]) > 2 * angle
    # The image the model receives when the content is turned by 5°: the same smoothing, fed
    # that image, confidently says 0, inside the parametric radius.
    turned = Rotation(10.0).apply(x, torch.tensor([[angle]]))
    assert int(parametric.predict(turned, n=2000, alpha=0.001).prediction[0]) == 0

    smoothing = Rotation(
        10.0, semantics="input", additive_sigma=0.002, input_range=3.0, grid_step=0.05
    )
    domain = GridCertifier(model, smoothing, 2)
    cert = domain.certify(x, n0=100, n=2000, alpha=0.001, batch_size=20_000)
    record = cert.to_records()[0]
    assert record["semantics"] == "input" and record["grid_points"] == 121
    radius = float(cert.radius[0])
    assert int(cert.prediction[0]) == 1 and 0 < radius < angle
    assert 0 < record["interpolation_bound"] < 2 * smoothing.additive_sigma * 4
    inside = torch.linspace(-radius, radius, 9)[:, None]
    received = Rotation(10.0).apply(x.expand(9, -1, -1, -1), inside)
    answers = domain.predict(received, n=2000, alpha=0.001).prediction
    assert not bool((answers == 0).any()), answers


def test_covered_range_shrinks_when_grid_points_disagree():
    from rs_plugin.certification.grid import covered_range

    smoothing = Rotation(5.0, semantics="input", input_range=2.0, grid_step=0.5)
    x = torch.rand(1, 9, 9)
    k = smoothing.grid().shape[0]
    classes = torch.full((k,), 3)
    radii = torch.full((k,), 10.0)
    full, bound, lipschitz = covered_range(smoothing, x, classes, radii)
    assert full == pytest.approx(2.0) and 0 < bound < 10 and lipschitz > 0
    # Radii just above the largest bound needed: each grid point covers its own neighbourhood.
    radii = torch.full((k,), bound * 1.01)
    assert covered_range(smoothing, x, classes, radii)[0] == pytest.approx(2.0)
    assert covered_range(smoothing, x, classes, radii * 0.5)[0] < 2.0
    classes[k // 2 + 2] = 4  # a disagreeing grid point at +1°
    assert covered_range(smoothing, x, classes, radii)[0] < 1.0
    classes[k // 2] = -1  # the centre abstains
    assert covered_range(smoothing, x, classes, radii)[0] == 0.0


# ---- end to end: CLI, ART, errors -------------------------------------------------------


def _scale(name: str) -> list[str]:
    """The command-line text of a transform's scale, under its own keyword."""
    keyword = discover("rs_plugin.smoothings")[name].load().scale_keyword
    return ["--smoothing-param", f"{keyword}={SIGMAS[name]}"]


@pytest.mark.parametrize("name", SEMANTIC)
def test_every_transform_certifies_from_the_command_line(name, tmp_path):
    out = tmp_path / f"{name}.jsonl"
    args = ["certify", "--smoothing", name, *_scale(name), "--limit", "3"]
    assert main([*args, "-n", "300", "--n0", "30", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    smoothing = _semantic(name)
    assert len(records) == 3
    for record in records:
        assert record["smoothing"]["name"] == name
        assert record["norm"] == smoothing.norm
        assert record["semantics"] == smoothing.semantics_label
        assert record["radii"][smoothing.norm] == record["radius"]
    assert any(r["radius"] > 0 for r in records)


@pytest.mark.parametrize("name", ["rotation", "scaling", "brightness", "translation"])
def test_input_semantics_from_the_command_line(name, tmp_path):
    out = tmp_path / "input.jsonl"
    args = ["certify", "--smoothing", name, *_scale(name), "--limit", "2"]
    args += ["--semantics", "input", "-n", "300", "--n0", "30", "--out", str(out)]
    if name in ("rotation", "scaling"):
        step = "grid_step=5" if name == "rotation" else "grid_step=0.05"
        args += ["--smoothing-param", step]
    assert main(args) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    expected = "input" if name in ("rotation", "scaling") else "parametric=input"
    assert [r["semantics"] for r in records] == [expected] * 2
    assert records[0]["smoothing"]["semantics"] == expected


def test_bad_semantic_settings_are_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "never.jsonl"
    cases = [
        (
            ["--smoothing", "affine", "--smoothing-param", "scale=0.05", "--semantics", "input"],
            "semantics: expected 'parametric'",
        ),
        (["--smoothing", "affine"], "scale: expected the standard deviation"),
        (["--smoothing", "rotation", "--sigma", "15"], "--smoothing-param degrees=VALUE"),
        (["--smoothing", "gaussian", "--semantics", "input"], "--semantics/--smoothing-param"),
        (["--smoothing", "rotation", "--smoothing-param", "bogus=1"], "bogus"),
        (["--smoothing", "rotation", "--smoothing-param", "grid_step"], "KEY=VALUE"),
        (
            [
                "--smoothing",
                "rotation",
                "--semantics",
                "input",
                "--smoothing-param",
                "interpolation=nearest",
            ],
            "interpolation: expected 'bilinear'",
        ),
    ]
    for extra, message in cases:
        assert main(["certify", *extra, "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(RSValueError, match="padding: expected 'circular'"):
        Translation(1.0, padding="zeros")
    with pytest.raises(RSValueError, match="input_range"):
        Scaling(0.1, semantics="input", input_range=1.5)
    with pytest.raises(RSValueError, match="components"):
        Compose(Rotation(1.0))
    with pytest.raises(RSValueError, match="input-domain rotation and scaling"):
        SequentialCertifier(nn.Linear(1, 2), Rotation(1.0, semantics="input"), 2, radius=1.0)
    grid = Rotation(1.0, semantics="input")
    x = torch.rand(1, 1, SIZE, SIZE)
    model = nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 2))
    with pytest.raises(RSValueError, match="^smoothing: .*use rs_plugin.GridCertifier"):
        SmoothedClassifier(model, grid, 2).certify(x, n=10)
    with pytest.raises(RSValueError, match="^smoothing: .*Rotation or Scaling"):
        GridCertifier(model, Rotation(1.0), 2)
    assert isinstance(cohen_certifier(model, grid, 2), GridCertifier)
    assert isinstance(cohen_certifier(model, Rotation(1.0), 2), SmoothedClassifier)


@pytest.mark.parametrize(
    "smoothing",
    [
        pytest.param(Rotation(10.0), marks=pytest.mark.slow),
        Brightness(0.2),
        pytest.param(Rotation(10.0, semantics="input", grid_step=10.0), marks=pytest.mark.slow),
    ],
    ids=["rotation", "brightness", "rotation[input]"],
)
def test_transforms_plug_into_the_art_adapter(smoothing):
    assert (assert_art_adapter_matches_core(smoothing, inputs=3) > 0).any()


def _input_domain_truth(offset: float, slope: float, r: int, sigma: float, noise: float) -> float:
    """True radius (degrees) of G(T(x, φ)) for the rotation grid smoothing on a vertical ramp
    read at pixel (r, 0) against 0.5: for a ramp, rotations compose exactly, so
    T(T(x, φ) + η, ε) at that pixel is γ + a r sin(φ + ε) plus Gaussian noise of std
    σ_a ‖w(ε)‖₂, w the bilinear weights at the sample point (r cos ε, r sin ε). P[class 1] is an
    integral over ε (quadrature on a fine grid); the truth is the first |φ| where the class
    changes."""
    eps = np.linspace(-6 * sigma, 6 * sigma, 4001)
    weight = stats.norm.pdf(eps, scale=sigma)
    weight /= weight.sum()
    theta = np.radians(eps)
    fu, fv = np.mod(r * np.cos(theta), 1.0), np.mod(r * np.sin(theta), 1.0)
    spread = noise * np.sqrt(((1 - fu) ** 2 + fu**2) * ((1 - fv) ** 2 + fv**2))

    def p_one(phi: float) -> float:
        value = offset + slope * r * np.sin(np.radians(phi + eps))
        return float((weight * stats.norm.cdf((0.5 - value) / spread)).sum())

    start = p_one(0.0) > 0.5
    for phi in np.arange(0.01, 40.0, 0.01):
        if (p_one(phi) > 0.5) != start or (p_one(-phi) > 0.5) != start:
            return float(phi) - 0.01
    return math.inf


@pytest.mark.slow
def test_input_domain_rotation_certificates_are_sound_against_the_known_truth():
    offsets = _offsets(60, 0.44, 0.56)
    slope, r, sigma, noise = 0.04, 4, 10.0, 0.05
    x = _ramps(offsets, 0.0, slope)
    smoothing = Rotation(
        sigma,
        semantics="input",
        padding="border",
        additive_sigma=noise,
        input_range=20.0,
        grid_step=1.0,
    )
    model = PixelThreshold(C, C + 4, 0.5).eval()
    alpha = 0.01
    certs = GridCertifier(model, smoothing, 2).certify(
        x, n0=64, n=500, alpha=alpha, batch_size=20_000, seed=3
    )
    truth = torch.tensor([_input_domain_truth(float(g), slope, r, sigma, noise) for g in offsets])
    label = (offsets < 0.5).long()
    certified = certs.prediction >= 0
    bad = (certs.prediction != label) | (certs.radius > truth.double())
    violations = int((certified & bad).sum())
    assert float(certs.radius.max()) > 2.0  # informative
    assert binomial_upper_tail(violations, len(x), alpha) >= FALSE_ALARM, violations


@pytest.mark.parametrize("name", SEMANTIC)
def test_every_transform_takes_its_scale_by_its_unit_or_refuses_without_one(name):
    factory = discover("rs_plugin.smoothings")[name].load()
    keyword, default = factory.scale_keyword, factory.default_scale
    assert keyword != "sigma"
    named = factory(**{keyword: SIGMAS[name]})
    assert named.sigma == SIGMAS[name] and named.config()["sigma"] == SIGMAS[name]
    assert f"{keyword}={SIGMAS[name]!r}" in repr(named)
    # Code written before the keyword existed keeps working through the registry.
    assert load_smoothing(name, sigma=SIGMAS[name]).config() == named.config()
    if default is None:
        with pytest.raises(RSValueError, match=f"^{keyword}: expected"):
            factory()
    else:
        assert factory().sigma == default
    # A run refuses sigma (additive noise's standard deviation) and names the keyword.
    job = {"model": "demo", "data": "digits", "smoothing": name, "n0": 10, "n": 10}
    job |= {"alpha": 0.01, "batch_size": 10, "seed": 0, "limit": 1, "device": "cpu"}
    with pytest.raises(RSValueError, match=f"^sigma: .*--smoothing-param {keyword}=VALUE"):
        CertifyJob(**job, sigma=SIGMAS[name])
    built = CertifyJob(**job, sigma=None, smoothing_params=((keyword, SIGMAS[name]),))
    assert built.build_smoothing().config()["sigma"] == SIGMAS[name]
