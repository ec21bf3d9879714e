"""Every registered smoothing: one invariant table, closed forms against independent oracles,
norm conversions, and statistical soundness on linear classifiers in every norm certified.

Soundness tests count violations V over M inputs; sound certificates give V ~ Binomial(M, q)
with q <= α, and a test fails only when P[Binomial(M, α) >= V] < 1e-4 (false-alarm rate at most
1e-4 per test). Power checks apply the same test to a plug-in radius (p̂ instead of its lower
bound) where the certificate is tight, and require it to fail.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from scipy import integrate, optimize, stats

from rs_plugin import (
    LP_NORMS,
    AnisotropicGaussian,
    RSValueError,
    SemanticSmoothing,
    SmoothedClassifier,
    Smoothing,
    convert_radius,
    dual_norm,
    lp_norm,
)
from rs_plugin._registry import discover, load_smoothing
from rs_plugin.cli import main
from tests.analytic import LinearModel, assert_art_adapter_matches_core, binomial_upper_tail

FALSE_ALARM = 1e-4
SIGMA = 0.5
# Additive noise families; semantic transforms have their own table in test_semantic.py.
REGISTERED = sorted(
    name
    for name, entry in discover("rs_plugin.smoothings").items()
    if not issubclass(entry.load(), SemanticSmoothing)
)
P_VALUES = [0.3, 0.5, 0.55, 0.7, 0.9, 0.99, 0.99999]


# Independent oracles: the radius at p > 1/2 from scipy's distributions or quadrature, never
# from the formulas in rs_plugin. A new registered smoothing must add its oracle here.
def _gaussian(p: float, dim: int) -> dict[str, float]:
    r = SIGMA * stats.norm.ppf(p)
    return {"l2": r, "linf": r / math.sqrt(dim)}


def _laplace(p: float, dim: int) -> dict[str, float]:
    # One-dimensional Neyman–Pearson: the worst shift along an axis is F⁻¹(p).
    return {"l1": stats.laplace.ppf(p, scale=SIGMA / math.sqrt(2))}


def _uniform(p: float, dim: int) -> dict[str, float]:
    half = SIGMA * math.sqrt(3)
    linf = optimize.brentq(lambda r: (1 - r / (2 * half)) ** dim - (1.5 - p), 0, 2 * half)
    return {"l1": stats.uniform.ppf(p, loc=-half, scale=2 * half), "linf": linf}


def _exp_inf_tv(r: float, dim: int, scale: float) -> float:
    density = stats.gamma(dim + 1, scale=scale).pdf

    def lost(t: float) -> float:
        return (1 - max(0.0, 1 - r / (2 * t)) ** dim) * density(t)

    mode = dim * scale
    return sum(
        integrate.quad(lost, a, b, limit=200)[0]
        for a, b in ((0, r / 2), (r / 2, mode), (mode, 10 * mode))
    )


def _exp_inf(p: float, dim: int) -> dict[str, float]:
    scale = SIGMA * math.sqrt(3 / ((dim + 1) * (dim + 2)))
    mean_inverse = integrate.quad(
        lambda t: stats.gamma(dim + 1, scale=scale).pdf(t) / t, 0, math.inf
    )[0]
    linf = optimize.brentq(lambda r: _exp_inf_tv(r, dim, scale) - (p - 0.5), 1e-12, 40 * scale)
    return {"l1": 2 * (p - 0.5) / mean_inverse, "linf": linf}


ORACLES = {
    "gaussian": _gaussian,
    "anisotropic_gaussian": _gaussian,
    "laplace": _laplace,
    "uniform": _uniform,
    "exp_inf": _exp_inf,
}
# Where the computation is numerical, the documented tolerance (absolute, on the safe side).
TOLERANCE = {"exp_inf": {"linf": 0.006 * SIGMA * math.sqrt(3 / (17 * 18))}}  # 0.006 λ, d = 16


def _instances() -> list[tuple[str, Smoothing]]:
    built = [(name, load_smoothing(name, sigma=SIGMA)) for name in REGISTERED]
    sigma = torch.linspace(0.2, 0.8, 16).view(1, 4, 4)
    return [*built, ("anisotropic_gaussian[vector]", AnisotropicGaussian(sigma))]


INSTANCES = _instances()
IDS = [name for name, _ in INSTANCES]


def test_every_builtin_family_is_registered():
    assert {"gaussian", "laplace", "uniform", "exp_inf", "anisotropic_gaussian"} <= set(REGISTERED)


@pytest.mark.parametrize(("name", "smoothing"), INSTANCES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_perturbation_shape_device_dtype_and_seed(name, smoothing, dtype):
    x = torch.rand(6, 1, 4, 4, dtype=dtype)
    first = smoothing.perturb(x, torch.Generator().manual_seed(11))
    again = smoothing.perturb(x, torch.Generator().manual_seed(11))
    other = smoothing.perturb(x, torch.Generator().manual_seed(12))
    assert first.shape == x.shape and first.dtype == dtype and first.device == x.device
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first, x)


@pytest.mark.parametrize(("name", "smoothing"), INSTANCES, ids=IDS)
def test_noise_is_centred_with_the_stated_standard_deviation(name, smoothing):
    samples = 40_000
    noise = smoothing.perturb(torch.zeros(samples, 1, 4, 4), torch.Generator().manual_seed(3))
    if isinstance(smoothing, AnisotropicGaussian) and smoothing.sigma.numel() > 1:
        expected = smoothing.sigma.view(1, 4, 4).float()
    else:
        expected = torch.full((1, 4, 4), SIGMA)
    std = noise.double().std(dim=0)
    mean = noise.double().mean(dim=0)
    # 5 standard errors per coordinate (the std's relative s.e. is below 1.3% here).
    assert torch.all((std / expected - 1).abs() < 0.065), std
    assert torch.all(mean.abs() < 5 * expected / math.sqrt(samples)), mean


@pytest.mark.parametrize(("name", "smoothing"), INSTANCES, ids=IDS)
def test_radii_vanish_below_one_half_and_grow_with_p(name, smoothing):
    dim = 16
    p = torch.linspace(0.0, 1.0 - 1e-9, 4001, dtype=torch.float64)
    radii = smoothing.radii(p, dim)
    assert set(LP_NORMS) <= set(radii)
    assert smoothing.norm in smoothing.certified_radii(p, dim)
    for norm, r in radii.items():
        assert r.shape == p.shape and r.dtype == torch.float64, norm
        assert torch.all(torch.isfinite(r)), norm
        assert torch.all(r[p <= 0.5] == 0), norm
        assert torch.all(r[1:] >= r[:-1]), norm
        assert float(r[-1]) > 0, norm
    assert torch.equal(radii[smoothing.norm], smoothing.radius(p, dim))


@pytest.mark.parametrize("name", REGISTERED)
def test_closed_form_radii_match_an_independent_computation(name):
    assert name in ORACLES, f"add an independent oracle for the registered smoothing {name!r}"
    smoothing = load_smoothing(name, sigma=SIGMA)
    dim = 16
    p = torch.tensor(P_VALUES, dtype=torch.float64)
    direct = smoothing.radii(p, dim)
    for i, value in enumerate(P_VALUES):
        expected = ORACLES[name](value, dim) if value > 0.5 else {}
        for norm, radius in expected.items():
            ours = float(direct[norm][i])
            slack = TOLERANCE.get(name, {}).get(norm, 0.0)
            assert ours <= radius * (1 + 1e-7) + 1e-12, (norm, value, ours, radius)
            assert ours >= radius - slack - 1e-7 * max(1.0, radius), (norm, value, ours, radius)
        if value <= 0.5:
            assert all(float(r[i]) == 0 for r in direct.values())


@pytest.mark.parametrize("source", LP_NORMS)
@pytest.mark.parametrize("target", LP_NORMS)
def test_norm_conversion_is_the_largest_ball_inside(source, target):
    """The converted ball's farthest point (corner or axis point) lies on the source sphere."""
    dim, r = 9, torch.tensor([0.7], dtype=torch.float64)
    rho = float(convert_radius(r, source, target, dim)[0])
    axis = torch.zeros(1, dim, dtype=torch.float64)
    axis[0, 0] = rho
    corner = torch.full((1, dim), rho, dtype=torch.float64)
    if target != "linf":
        corner = corner / float(lp_norm(corner, target)[0]) * rho
    farthest = max(float(lp_norm(v, source)[0]) for v in (axis, corner))
    assert farthest == pytest.approx(0.7, rel=1e-12)


def test_dual_norms_and_bad_norms():
    assert [dual_norm(n) for n in LP_NORMS] == ["linf", "l2", "l1"]
    with pytest.raises(RSValueError, match="norm: expected one of .*received 'l3'"):
        dual_norm("l3")
    with pytest.raises(RSValueError, match="dim"):
        convert_radius(torch.ones(1), "l2", "linf", 0)


def test_records_name_the_direct_norms_and_carry_every_radius():
    model = LinearModel(torch.ones(16), 0.0).eval()
    certs = SmoothedClassifier(model, load_smoothing("uniform", sigma=SIGMA), 2).certify(
        torch.full((3, 16), 0.2), n0=20, n=300, alpha=0.01
    )
    record = certs.to_records()[0]
    assert record["norm"] == "l1" and record["certified_norms"] == ["l1", "linf"]
    assert set(record["radii"]) == set(LP_NORMS)
    assert record["radii"]["l1"] == record["radius"]
    assert record["radii"]["l2"] == pytest.approx(record["radius"] / 4)  # ℓ1 → ℓ2: r / √16


def _linear_cases(seed: int, inputs: int, dim: int = 16):
    """Inputs and models over many directions: dense, 1-sparse and 2-sparse w (tight for ℓ1)."""
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for kind in ("dense", "sparse1", "sparse2"):
        w = torch.randn(dim, generator=generator)
        if kind != "dense":
            keep = torch.randperm(dim, generator=generator)[: int(kind[-1])]
            w = torch.zeros(dim).index_copy(0, keep, w[keep])
        w = w / w.norm()
        x = torch.randn(inputs, dim, generator=generator) * 0.4
        cases.append((LinearModel(w, float(torch.randn((), generator=generator)) * 0.2), x))
    return cases


def _linear_violations(model, x, certs, radii) -> int:
    margin = model.margin(x).abs().double()
    bad = certs.prediction != model.label(x)
    for norm, radius in radii.items():
        true = margin / float(lp_norm(model.w.double()[None, :], dual_norm(norm))[0])
        bad = bad | (radius > true)
    return int(((certs.prediction >= 0) & bad).sum())


@pytest.mark.parametrize(("name", "smoothing"), INSTANCES, ids=IDS)
def test_linear_classifier_certificates_are_sound_in_every_norm(name, smoothing):
    """Symmetric noise: g = f, and the true ℓp radius is |w·x + b| / ‖w‖_q (q dual to p)."""
    alpha, total, violations, certified = 0.05, 0, 0, 0
    for case, (model, x) in enumerate(_linear_cases(seed=21, inputs=150)):
        certs = SmoothedClassifier(model.eval(), smoothing, 2).certify(
            x.view(-1, 1, 4, 4), n0=50, n=1000, alpha=alpha, batch_size=20_000, seed=case
        )
        assert set(LP_NORMS) <= set(certs.radii)
        violations += _linear_violations(model, x, certs, certs.radii)
        certified += int((certs.prediction >= 0).sum())
        total += x.shape[0]
    assert certified > total // 2  # informative: most inputs get a radius
    assert binomial_upper_tail(violations, total, alpha) >= FALSE_ALARM, violations


@pytest.mark.parametrize(
    ("name", "norm"), [("gaussian", "l2"), ("laplace", "l1"), ("uniform", "l1")]
)
def test_soundness_check_has_power_where_the_radius_is_tight(name, norm):
    """Plug-in p̂ in place of the lower bound overstates radii often enough to be caught."""
    alpha, smoothing = 0.05, load_smoothing(name, sigma=SIGMA)
    model, x = _linear_cases(seed=4, inputs=300)[1]  # 1-sparse w: tight in ℓ1 and ℓ2
    certs = SmoothedClassifier(model.eval(), smoothing, 2).certify(
        x, n0=50, n=1000, alpha=alpha, batch_size=20_000
    )
    p_hat = (certs.count.double() / certs.n).clamp(max=1 - 1e-9)
    naive = {norm: smoothing.certified_radii(p_hat, x.shape[1])[norm]}
    assert binomial_upper_tail(_linear_violations(model, x, certs, naive), 300, alpha) < FALSE_ALARM
    honest = {norm: certs.radii[norm]}
    assert (
        binomial_upper_tail(_linear_violations(model, x, certs, honest), 300, alpha) >= FALSE_ALARM
    )


def test_bad_sigma_names_the_parameter():
    for name in REGISTERED:
        with pytest.raises(RSValueError, match="sigma"):
            load_smoothing(name, sigma=-1.0)
    with pytest.raises(RSValueError, match="sigma: expected one value or 16 values"):
        AnisotropicGaussian(torch.ones(5)).radius(torch.tensor([0.9]), 16)


def test_exp_inf_linf_is_numerical_on_the_safe_side_of_quadrature():
    """Larger d than the table above: the ℓ∞ radius never exceeds scipy's quadrature value and
    stays within the documented tolerance of it."""
    smoothing = load_smoothing("exp_inf", sigma=SIGMA)
    dim = 64
    scale = SIGMA * math.sqrt(3 / ((dim + 1) * (dim + 2)))
    p = torch.tensor([0.6, 0.8, 0.95], dtype=torch.float64)
    ours = smoothing.certified_radii(p, dim)["linf"]
    for value, radius in zip(p.tolist(), ours.tolist(), strict=True):
        exact = _exp_inf(value, dim)["linf"]
        assert exact - 0.006 * scale <= radius <= exact, (value, radius, exact)


@pytest.mark.parametrize("name", REGISTERED)
def test_every_smoothing_certifies_from_the_command_line(name, tmp_path):
    out = tmp_path / f"{name}.jsonl"
    args = ["certify", "--smoothing", name, "--sigma", "0.5", "--limit", "4"]
    assert main([*args, "-n", "300", "--n0", "30", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    smoothing = load_smoothing(name, sigma=0.5)
    assert len(records) == 4
    for record in records:
        assert record["smoothing"] == {"name": name, "sigma": 0.5}
        assert record["norm"] == smoothing.norm and record["certifier"] == "cohen"
        assert set(record["radii"]) >= set(LP_NORMS)
        assert record["certified_norms"][0] == smoothing.norm
        assert record["radii"][smoothing.norm] == record["radius"]
    assert any(r["radius"] > 0 for r in records)


@pytest.mark.parametrize("certifier", ["ddrs", "ancer"])
def test_data_dependent_certifiers_run_from_the_command_line(certifier, tmp_path, capsys):
    out = tmp_path / "dd.jsonl"
    args = ["certify", "--certifier", certifier, "--limit", "3", "-n", "300", "--n0", "30"]
    assert main([*args, "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["certifier"] for r in records] == [certifier] * 3
    assert all({"sigma_min", "sigma_max", "proxy_radius", "from_memory"} <= set(r) for r in records)
    # Resuming a finished file rebuilds the memory from its records and certifies nothing again.
    before = out.read_text()
    assert main([*args, "--out", str(out), "--resume"]) == 0
    assert out.read_text() == before
    # A memory must see every input, in order, in one process: sharding on Ray is refused up front.
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "ray.jsonl"), "--engine", "ray"]) == 2
    err = capsys.readouterr().err
    assert "--certifier: expected a certifier without memory" in err and f"'{certifier} with" in err
    assert out.read_text() == before and not (tmp_path / "ray.jsonl").exists()


@pytest.mark.parametrize("name", REGISTERED)
def test_every_smoothing_plugs_into_the_art_adapter(name):
    assert_art_adapter_matches_core(load_smoothing(name, sigma=0.25), inputs=4)
