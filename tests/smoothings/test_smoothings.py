"""Every registered smoothing: one invariant table, closed forms against independent oracles,
norm conversions, and statistical soundness on linear classifiers in every norm certified.

Soundness tests count violations V over M inputs; sound certificates give V ~ Binomial(M, q)
with q <= α, and a test fails only when P[Binomial(M, α) >= V] < 1e-4 (false-alarm rate at most
1e-4 per test). Power checks apply the same test to a plug-in radius (p̂ instead of its lower
bound) where the certificate is tight, and require it to fail.
"""

from __future__ import annotations

import functools
import itertools
import json
import math

import numpy as np
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
    SoundNoise,
    convert_radius,
    dual_norm,
    lp_norm,
)
from rs_plugin._registry import discover, load_smoothing
from rs_plugin.cli import main
from tests.analytic import LinearModel, assert_art_adapter_matches_core, binomial_upper_tail

FALSE_ALARM = 1e-4
SIGMA = 0.5
# Additive noise families; semantic transforms have their own table in test_semantic.py, the
# sound-in-floating-point families (grid inputs only) theirs in test_sound.py.
REGISTERED = sorted(
    name
    for name, entry in discover("rs_plugin.smoothings").items()
    if not issubclass(entry.load(), (SemanticSmoothing, SoundNoise))
)
P_VALUES = [0.3, 0.5, 0.55, 0.7, 0.9, 0.99, 0.99999]


# Independent oracles: the radius at p > 1/2 from scipy's distributions or quadrature, never
# from the formulas in rs_plugin. A new registered smoothing must add its oracle here.
def _gaussian(p: float, dim: int) -> dict[str, float]:
    r = SIGMA * stats.norm.ppf(p)
    return {"l2": r, "linf": r / math.sqrt(dim)}


def _rate_radius(rate, p: float, breaks: list[float]) -> float:
    """∫_{1/2}^{p} ds / rate(1 − s) by adaptive quadrature, split at the rate's kinks."""
    edges = sorted({0.5, p, *(b for b in breaks if 0.5 < b < p)})
    return sum(
        integrate.quad(lambda s: 1.0 / rate(1.0 - s), a, b, limit=400, epsabs=1e-13)[0]
        for a, b in itertools.pairwise(edges)
    )


@functools.cache
def _signs_law(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Values of Σ sᵢ (d random signs), largest first, and their probabilities."""
    k = np.arange(dim, -1, -1)
    return 2.0 * k - dim, stats.binom.pmf(k, dim, 0.5)


def _signs_top_mean(m: float, dim: int) -> float:
    """Mean of Σ sᵢ on its top-m set: whole atoms from the top, then part of the next one."""
    values, pmf = _signs_law(dim)
    taken = np.minimum(pmf, np.maximum(0.0, m - (np.cumsum(pmf) - pmf)))
    return float(taken @ values)


def _laplace(p: float, dim: int) -> dict[str, float]:
    # ℓ1: one-dimensional Neyman–Pearson, the worst shift along an axis is F⁻¹(p). ℓ∞ and ℓ2:
    # the differential method's integral (Yang et al. 2020) by quadrature from scipy's binomial.
    b = SIGMA / math.sqrt(2)
    atoms = [1 - stats.binom.sf(k - 1, dim, 0.5) for k in range(dim + 1)]

    def linf_rate(m: float) -> float:
        return _signs_top_mean(m, dim)

    def l2_rate(m: float) -> float:
        return min(math.sqrt(m * (1 - m)), math.sqrt(dim) * m, _signs_top_mean(m, dim))

    return {
        "l1": stats.laplace.ppf(p, scale=b),
        "linf": b * _rate_radius(linf_rate, p, atoms),
        "l2": b * _rate_radius(l2_rate, p, [*atoms, 1 - 1 / dim]),
    }


def _uniform(p: float, dim: int) -> dict[str, float]:
    half = SIGMA * math.sqrt(3)
    linf = optimize.brentq(lambda r: (1 - r / (2 * half)) ** dim - (1.5 - p), 0, 2 * half)
    return {"l1": stats.uniform.ppf(p, loc=-half, scale=2 * half), "linf": linf}


def _exp_inf(p: float, dim: int) -> dict[str, float]:
    # ℓ∞: along (1, …, 1) the mid-range of the noise is Laplace with scale λ. ℓ1, ℓ2: quadrature
    # of the differential method's rate, the top-m mean of ±v_{i*} maximised over the ball.
    scale = SIGMA * math.sqrt(3 / ((dim + 1) * (dim + 2)))
    atom = 1 / (2 * dim)

    def l2_rate(m: float) -> float:
        weights = [min(atom, max(0.0, m - i * atom)) for i in range(dim)]
        return math.sqrt(sum(w * w for w in weights))

    kinks = [1 - i * atom for i in range(dim + 1)]
    return {
        "l1": scale * _rate_radius(lambda m: min(m, atom), p, kinks),
        "l2": scale * _rate_radius(l2_rate, p, kinks),
        "linf": stats.laplace.ppf(p, scale=scale),
    }


ORACLES = {
    "gaussian": _gaussian,
    "anisotropic_gaussian": _gaussian,
    "laplace": _laplace,
    "uniform": _uniform,
    "exp_inf": _exp_inf,
}
# Where the computation is numerical, the documented tolerance (absolute, on the safe side):
# 5e-4 · b for Laplace's integrated radii.
TOLERANCE = {"laplace": {"l2": 5e-4 * SIGMA / math.sqrt(2), "linf": 5e-4 * SIGMA / math.sqrt(2)}}


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
    """Inputs and models over many directions: dense, 1-sparse and 2-sparse w (tight for ℓ1),
    and all-equal w (the worst direction of the ℓ∞ ball)."""
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for kind in ("dense", "sparse1", "sparse2", "equal"):
        w = torch.randn(dim, generator=generator)
        if kind == "equal":
            w = torch.ones(dim)
        elif kind != "dense":
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
    for case, (model, x) in enumerate(_linear_cases(seed=21, inputs=112)):
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


@pytest.mark.parametrize("dim", [64, 784])
def test_laplace_integrated_radii_stay_below_quadrature_and_within_tolerance(dim):
    """Larger d than the table above: Laplace's ℓ2 and ℓ∞ radii never exceed scipy's quadrature
    of the same integral and stay within the documented 5e-4 · b of it."""
    smoothing = load_smoothing("laplace", sigma=SIGMA)
    p = torch.tensor([0.6, 0.95, 0.9999], dtype=torch.float64)
    ours = smoothing.certified_radii(p, dim)
    b = SIGMA / math.sqrt(2)
    atoms = [1 - stats.binom.sf(k - 1, dim, 0.5) for k in range(dim + 1)]
    rates = {
        "linf": lambda m: _signs_top_mean(m, dim),
        "l2": lambda m: min(math.sqrt(m * (1 - m)), math.sqrt(dim) * m, _signs_top_mean(m, dim)),
    }
    for norm, rate in rates.items():
        for i, value in enumerate(p.tolist()):
            exact = b * _rate_radius(rate, value, [*atoms, 1 - 1 / dim])
            assert exact - 5e-4 * b <= float(ours[norm][i]) <= exact, (norm, value, ours[norm][i])


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
    assert "--certifier: expected a stateless certifier" in err and f"'{certifier} with" in err
    assert out.read_text() == before and not (tmp_path / "ray.jsonl").exists()


@pytest.mark.parametrize("name", REGISTERED)
def test_every_smoothing_plugs_into_the_art_adapter(name):
    assert_art_adapter_matches_core(load_smoothing(name, sigma=0.25), inputs=4)
