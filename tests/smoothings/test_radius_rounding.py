"""Every recorded ℓp radius of the Laplace, uniform and ExpInf families is at most the exact one.

The exact radii are the closed forms (and, for Laplace ℓ2/ℓ∞, the differential-method
integrals) evaluated in 40-digit arithmetic (mpmath) at the same float64 p_lower, completed to
every norm as :func:`~rs_plugin.smoothings.norms.complete_radii` does. A record
(:func:`~rs_plugin.pack_certificates`) rounds its radii down by
:data:`~rs_plugin.certification.stats.ROUNDING_MARGIN`; a formula that loses more digits than
that (1 − x^{1/d} near x = 1, say) overstates the radius and fails here.
"""

from __future__ import annotations

import math

import mpmath
import pytest
import torch

from rs_plugin import pack_certificates
from rs_plugin._registry import load_smoothing

SIGMA = 0.25
P_LOWER = [
    0.5 + 2.0**-40,
    0.5 + 1e-9,
    0.5001,
    0.6,
    0.75,
    0.9,
    0.999,
    0.001 ** (1 / 100_000),  # all of N = 100 000 votes at α = 0.001
    1 - 1e-9,
]
EXPONENT = {"l1": mpmath.mpf(1), "l2": mpmath.mpf(1) / 2, "linf": mpmath.mpf(0)}  # 1/p


def _exp_inf(norm: str, p: mpmath.mpf, dim: int) -> mpmath.mpf:
    """ExpInf radii in units of λ (closed forms of rs_plugin.smoothings.differential)."""
    m, d = 1 - p, mpmath.mpf(dim)
    if norm == "linf":
        return mpmath.log(1 / (2 * m))
    if norm == "l1":
        if 2 * d * m >= 1:
            return 2 * d * (p - mpmath.mpf(1) / 2)
        return d - 1 + mpmath.log(1 / (2 * d * m))
    # ℓ2: ∫ ds / ‖w‖₂ with w = (1/(2d) k times, m − k/(2d)), summed cell by cell from m up to 1/2
    total, low = mpmath.mpf(0), m
    for k in range(int(mpmath.floor(2 * d * m)), dim):
        high = mpmath.mpf(k + 1) / (2 * d)
        if k == 0:
            total += mpmath.log(high / low)
        else:
            # ∫ ds / √(c² + (s − s₀)²) = asinh((s − s₀)/c), c = √k/(2d), s₀ = k/(2d)
            c, s0 = mpmath.sqrt(k) / (2 * d), mpmath.mpf(k) / (2 * d)
            total += mpmath.asinh((high - s0) / c) - mpmath.asinh((low - s0) / c)
        low = high
    return total


def _rademacher_top_mean(m: mpmath.mpf, dim: int) -> mpmath.mpf:
    """T_d(m): the mean of Σ sᵢ (d random signs) over its top set of mass m."""
    total, mass = mpmath.mpf(0), mpmath.mpf(0)
    for k in range(dim, -1, -1):
        atom = mpmath.binomial(dim, k) / mpmath.mpf(2) ** dim
        take = min(atom, m - mass)
        total += take * (2 * k - dim)
        mass += take
        if mass >= m:
            break
    return total


def _laplace(norm: str, p: mpmath.mpf, dim: int) -> mpmath.mpf:
    """Laplace radii in units of b: the closed ℓ1 form and the ℓ2/ℓ∞ rate integrals."""
    m = 1 - p
    if norm == "l1":
        return -mpmath.log(2 * m)

    def rate(s: mpmath.mpf) -> mpmath.mpf:
        top = _rademacher_top_mean(s, dim)
        if norm == "linf":
            return top
        return min(mpmath.sqrt(s * (1 - s)), mpmath.sqrt(dim) * s, top)

    # the rate is linear between the binomial atoms' cumulative masses: break the integral there
    cuts = [m, mpmath.mpf(1) / 2]
    mass = mpmath.mpf(0)
    for k in range(dim, -1, -1):
        mass += mpmath.binomial(dim, k) / mpmath.mpf(2) ** dim
        if m < mass < mpmath.mpf(1) / 2:
            cuts.append(mass)
    return mpmath.quad(lambda s: 1 / rate(s), sorted(cuts))


def _sampled(scale: float) -> mpmath.mpf:
    """The scale float32 noise is drawn with, or the float64 one if smaller (see
    rs_plugin.smoothings.base.sampled_scale): the radii below are exact for it."""
    return mpmath.mpf(min(scale, float(torch.tensor(scale, dtype=torch.float32))))


def _direct(name: str, norm: str, p: float, dim: int) -> mpmath.mpf:
    """The family's directly certified radius in input units, exactly, at p > 1/2."""
    sigma, q = mpmath.mpf(SIGMA), mpmath.mpf(p)
    if name == "uniform":
        half_width = _sampled(SIGMA * math.sqrt(3.0))
        if norm == "l1":
            return 2 * half_width * (q - mpmath.mpf(1) / 2)
        return 2 * half_width * (1 - (mpmath.mpf(3) / 2 - q) ** (mpmath.mpf(1) / dim))
    if name == "laplace":
        return _sampled(SIGMA / math.sqrt(2.0)) * _laplace(norm, q, dim)
    scale = sigma * mpmath.sqrt(mpmath.mpf(3) / ((dim + 1) * (dim + 2)))
    return scale * _exp_inf(norm, q, dim)


def _exact_radii(name: str, direct_norms: tuple[str, ...], p: float, dim: int) -> dict:
    """Each ℓp radius: the best exact direct radius converted (Hölder), as complete_radii does."""
    direct = {norm: _direct(name, norm, p, dim) for norm in direct_norms}
    return {
        target: max(
            r * mpmath.mpf(dim) ** -max(0, EXPONENT[source] - EXPONENT[target])
            for source, r in direct.items()
        )
        for target in EXPONENT
    }


FAMILIES = [
    ("uniform", 2),
    ("uniform", 784),
    ("uniform", 3072),
    ("exp_inf", 1),
    ("exp_inf", 3),
    ("exp_inf", 784),
    ("laplace", 1),
    ("laplace", 2),
    ("laplace", 5),
    ("laplace", 784),
]


@pytest.mark.parametrize(("name", "dim"), FAMILIES)
def test_recorded_radii_are_at_most_the_exact_ones(name, dim):
    smoothing = load_smoothing(name, sigma=SIGMA)
    p = torch.tensor(P_LOWER, dtype=torch.float64)
    votes = torch.tensor([[1, 0]] * len(P_LOWER))
    record = pack_certificates(
        smoothing, range(len(P_LOWER)), torch.zeros(len(P_LOWER), dtype=torch.int64), p, votes,
        votes, 1, 1, 0.001, dim=dim,
    )  # fmt: skip
    direct_norms = record.certified_norms
    if name == "laplace" and dim > 5:
        direct_norms = ("l1",)  # the ℓ2/ℓ∞ integrals are checked on the small dimensions
    # every completed norm where every direct radius is known exactly, else the direct ones
    checked = tuple(EXPONENT) if direct_norms == record.certified_norms else direct_norms
    with mpmath.workdps(40):
        for i, value in enumerate(P_LOWER):
            exact = _exact_radii(name, direct_norms, value, dim)
            for norm in checked:
                got = float(record.radii[norm][i])
                assert got <= exact[norm], (norm, value, got, exact[norm])
            for norm in direct_norms:
                # ... and tight, not a crude bound: within the integrals' numerical slack
                slack = 1e-3 if name == "laplace" and norm != "l1" else 1e-9
                gap = exact[norm] - float(record.radii[norm][i])
                assert gap <= slack * max(SIGMA, float(exact[norm])), (norm, value)


def test_uniform_linf_keeps_its_digits_where_the_cube_root_is_close_to_one():
    """1 − (3/2 − p)^{1/d} is computed without cancellation: at d = 3072 and p − 1/2 = 2⁻⁴⁰ the
    direct form was 12 % above the exact radius."""
    smoothing = load_smoothing("uniform", sigma=SIGMA)
    p = torch.tensor([0.5 + 2.0**-40], dtype=torch.float64)
    got = float(smoothing.certified_radii(p, 3072)["linf"][0])
    with mpmath.workdps(40):
        exact = _direct("uniform", "linf", P_LOWER[0], 3072)
        assert math.isclose(got, exact, rel_tol=1e-14)


def test_exp_inf_l2_keeps_its_digits_in_the_last_cell_at_imagenet_size():
    """Near p = 1/2 the ExpInf ℓ2 radius is one small asinh difference; computed directly it was
    8e-10 of itself above the exact one at d = 150 528 (p − 1/2 = 1e-9)."""
    dim = 3 * 224 * 224
    values = [0.5 + 1e-9, 0.5 + 1e-7, 0.5 + 3e-6]  # 2d(p − 1/2) < 1: the last cell only
    smoothing = load_smoothing("exp_inf", sigma=SIGMA)
    p = torch.tensor(values, dtype=torch.float64)
    votes = torch.tensor([[1, 0]] * len(values))
    record = pack_certificates(
        smoothing, range(len(values)), torch.zeros(len(values), dtype=torch.int64), p, votes,
        votes, 1, 1, 0.001, dim=dim,
    )  # fmt: skip
    direct = smoothing.certified_radii(p, dim)["l2"]
    with mpmath.workdps(40):
        for i, value in enumerate(values):
            exact = _exact_radii("exp_inf", ("l1", "l2", "linf"), value, dim)["l2"]
            assert float(record.radii["l2"][i]) <= exact, value
            assert abs(float(direct[i]) - exact) <= 1e-14 * exact, value


@pytest.mark.parametrize("sigma", [0.12, 0.25, 0.3, 1.0 / 3.0])
def test_radii_use_at_most_the_float32_scale_the_samplers_apply(sigma):
    """Float32 noise is scaled by the scale rounded to float32 (0.12 → 0.11999999731779…): the
    law sampled has that scale, so a radius may not use the larger float64 value."""

    def float32(value: float) -> float:
        return float(torch.tensor(value, dtype=torch.float32))

    p = torch.tensor([0.6, 0.9, 0.999], dtype=torch.float64)
    whitened = torch.special.ndtri(p)
    checks = {
        "gaussian": (load_smoothing("gaussian", sigma=sigma).radius(p, 4), whitened, sigma),
        "laplace": (
            load_smoothing("laplace", sigma=sigma).radius(p, 4),
            -torch.log(2 * (1 - p)),
            sigma / math.sqrt(2),
        ),
        "uniform": (
            load_smoothing("uniform", sigma=sigma).radius(p, 4),
            2 * (p - 0.5),
            sigma * 3**0.5,
        ),
        "anisotropic": (
            load_smoothing("anisotropic_gaussian", sigma=sigma).radius(p, 4),
            whitened,
            sigma,
        ),
    }
    for name, (radius, unit, scale) in checks.items():
        bound = min(scale, float32(scale)) * unit
        assert bool((radius <= bound).all()), (name, radius, bound)
        assert bool((radius >= bound * (1 - 1e-12)).all()), name


@pytest.mark.parametrize("noise", ["gaussian", "uniform"])
def test_semantic_radii_in_sigma_units_allow_for_the_float32_scales_sampled(noise):
    # σ = 0.12 is drawn as float32 0.11999999731779 (and √3 times it, rounded again, for uniform
    # noise): the radii in σ units, and each component's σ_j·ρ, are computed for the scales
    # actually drawn and no larger.
    from rs_plugin.smoothings.semantic import Brightness, Compose, Contrast
    from rs_plugin.smoothings.shadow import Shadow

    sigmas = (0.12, 0.07)
    compose = Compose(Brightness(sigmas[0], noise=noise), Contrast(sigmas[1], noise=noise))
    shadow = Shadow(sigmas[0], sigma_angle=sigmas[1], noise=noise)
    for smoothing, keys in ((compose, ("brightness", "contrast")), (shadow, None)):
        p = torch.tensor(P_LOWER, dtype=torch.float64)
        certs = pack_certificates(
            smoothing, range(len(P_LOWER)), torch.zeros(len(P_LOWER), dtype=torch.int64), p,
            torch.zeros(len(P_LOWER), 2, dtype=torch.int64),
            torch.zeros(len(P_LOWER), 2, dtype=torch.int64), 1, 10, 0.001, dim=784,
        )  # fmt: skip
        names = keys or tuple(k for k in certs.extra if not k.endswith(":box"))
        for i, value in enumerate(P_LOWER):
            pm = mpmath.mpf(value)
            if noise == "gaussian":
                unit = mpmath.sqrt(2) * mpmath.erfinv(2 * pm - 1)  # Φ⁻¹(p)
                scales = [mpmath.mpf(float(torch.tensor(s, dtype=torch.float32))) for s in sigmas]
            else:  # ℓ1 radius of uniform noise in σ units (above ℓ2's): 2√3 (p − ½), λ = σ√3
                unit = 2 * mpmath.sqrt(3) * (pm - mpmath.mpf(1) / 2)
                fp32 = [torch.tensor(s, dtype=torch.float32) for s in sigmas]
                halves = [float(s * math.sqrt(3.0)) for s in fp32]
                scales = [mpmath.mpf(h) / mpmath.sqrt(3) for h in halves]
            ratio = min(s / mpmath.mpf(n) for s, n in zip(scales, sigmas, strict=True))
            assert mpmath.mpf(float(certs.radius[i])) <= unit * min(ratio, 1), (smoothing, value)
            for name, scale in zip(names, scales, strict=True):
                assert mpmath.mpf(float(certs.extra[name][i])) <= scale * unit, (name, value)
