"""``rs-plugin bench --radii``: every family's radius in every norm against the literature's best.

For p_lower ∈ [0.5, 0.9999], d ∈ {64, 784, 3072} and σ ∈ {0.12, 0.25, 1.0}, each registered
additive family's radius (direct or converted, as certificates report it) is divided by the
largest sound radius in the literature, recomputed here independently of the package:

* Gaussian: σΦ⁻¹(p) in ℓ2 (Cohen et al. 2019), converted to ℓ1 (the same) and ℓ∞ (/√d).
* Laplace (b = σ/√2): ℓ1 −b ln(2(1 − p)) (Teng et al. 2020); ℓ∞ Yang et al. 2020's
  differential-method integral ∫ ds/T_d(1 − s), integrated *exactly* here (T_d is linear
  between the binomial atoms, so each piece is a logarithm); ℓ2 the larger conversion of those.
  Their code's default ℓ∞ value, the approximation bΦ⁻¹(p)/√d (no proof that it is a bound),
  is reported beside it.
* Uniform (λ = σ√3): ℓ1 2λ(p − 1/2), ℓ∞ 2λ(1 − (3/2 − p)^{1/d}) (Yang et al. 2020), ℓ2 the
  larger conversion.
* ExpInf (λ = σ√3/√((d+1)(d+2))): ℓ1 2λd(p − 1/2), ℓ∞ λ ln(1/(2(1 − p))) (Yang et al. 2020 and
  their code), ℓ2 the larger conversion.

The ratio target is ≥ 0.99 everywhere; a ratio above 1 is a radius the literature did not have.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy import stats

from rs_plugin.smoothings.base import Smoothing
from rs_plugin.smoothings.gaussian import Gaussian
from rs_plugin.smoothings.noises import ExpInf, Laplace, Uniform

__all__ = ["format_radii", "literature_radii", "run_radii_bench"]

DIMS = (64, 784, 3072)
SIGMAS = (0.12, 0.25, 1.0)
FAMILIES: dict[str, Callable[[float], Smoothing]] = {
    "gaussian": Gaussian,
    "laplace": Laplace,
    "uniform": Uniform,
    "exp_inf": ExpInf,
}


def _p_grid() -> np.ndarray:
    """0.5 < p ≤ 0.9999: dense near 1/2 and, on a log scale of 1 − p, up to 0.9999."""
    near_half = 0.5 + np.logspace(-6, -1, 20)
    tail = 1.0 - np.logspace(np.log10(0.4), -4, 60)
    return np.unique(np.concatenate([near_half, tail]))


@functools.lru_cache(maxsize=8)
def _laplace_linf_pieces(dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(atom values, mass before each atom, T_d there, ∫ dm/T_d from each atom's start to 1/2),
    atoms from the largest value of 2·Binomial(d, 1/2) − d down, those starting below 1/2."""
    k = np.arange(dim, -1, -1)
    values = 2.0 * k - dim
    pmf = stats.binom.pmf(k, dim, 0.5)
    starts = np.concatenate([[0.0], np.cumsum(pmf)[:-1]])
    at_start = np.concatenate([[0.0], np.cumsum(pmf * values)[:-1]])
    keep = starts < 0.5
    values, starts, at_start = values[keep], starts[keep], at_start[keep]
    ends = np.minimum(np.append(starts[1:], 0.5), 0.5)
    at_end = at_start + (ends - starts) * values
    with np.errstate(divide="ignore", invalid="ignore"):
        # Over one atom T_d is linear with slope = the atom's value: a logarithm (constant at 0).
        pieces = np.where(values == 0, (ends - starts) / at_end, np.log(at_end / at_start) / values)
    tail = np.concatenate([np.cumsum(pieces[::-1])[::-1][1:], [0.0]])  # from each atom's end
    return values, starts, at_start, tail


def _laplace_linf_exact(p: np.ndarray, dim: int) -> np.ndarray:
    """∫_{1−p}^{1/2} dm / T_d(m), T_d the top-m mean of 2·Binomial(d, 1/2) − d, in units of b:
    exact, piece by piece (between atoms T_d is linear in m)."""
    values, starts, at_start, tail = _laplace_linf_pieces(dim)
    m = 1.0 - p
    j = np.searchsorted(starts, m, side="right") - 1
    here = at_start[j] + (m - starts[j]) * values[j]
    end = np.minimum(np.append(starts[1:], 0.5)[j], 0.5)
    at_end = at_start[j] + (end - starts[j]) * values[j]
    with np.errstate(divide="ignore", invalid="ignore"):
        partial = np.where(values[j] == 0, (end - m) / here, np.log(at_end / here) / values[j])
    return partial + tail[j]


def literature_radii(family: str, p: np.ndarray, dim: int, sigma: float) -> dict[str, np.ndarray]:
    """The best sound radius in the literature per norm (see the module docstring)."""
    if family == "gaussian":
        l2 = sigma * stats.norm.ppf(p)
        return {"l1": l2, "l2": l2, "linf": l2 / math.sqrt(dim)}
    if family == "laplace":
        b = sigma / math.sqrt(2)
        l1 = -b * np.log(2 * (1 - p))
        linf = np.maximum(b * _laplace_linf_exact(p, dim), l1 / dim)
        return {"l1": l1, "l2": np.maximum(l1 / math.sqrt(dim), linf), "linf": linf}
    if family == "uniform":
        half = sigma * math.sqrt(3)
        l1 = 2 * half * (p - 0.5)
        # 1 − (3/2 − p)^{1/d} without cancellation (1/2 − p is exact in float64)
        linf = np.maximum(2 * half * -np.expm1(np.log1p(0.5 - p) / dim), l1 / dim)
        return {"l1": l1, "l2": np.maximum(l1 / math.sqrt(dim), linf), "linf": linf}
    scale = sigma * math.sqrt(3 / ((dim + 1) * (dim + 2)))
    l1 = 2 * scale * dim * (p - 0.5)
    linf = np.maximum(scale * np.log(1 / (2 * (1 - p))), l1 / dim)
    return {"l1": l1, "l2": np.maximum(l1 / math.sqrt(dim), linf), "linf": linf}


def run_radii_bench() -> dict[str, Any]:
    """Smallest and largest ratio (ours / literature) per family and norm over the grid."""
    p = _p_grid()
    ratios: dict[str, dict[str, dict[str, Any]]] = {}
    approx_ratio = math.inf
    for family in FAMILIES:
        ratios[family] = {}
        factory = FAMILIES[family]
        for dim in DIMS:
            for sigma in SIGMAS:
                ours = factory(sigma).radii(torch.from_numpy(p), dim)
                theirs = literature_radii(family, p, dim, sigma)
                for norm, reference in theirs.items():
                    ratio = ours[norm].numpy() / reference
                    entry = ratios[family].setdefault(norm, {"min": math.inf, "max": 0.0})
                    worst = int(np.argmin(ratio))
                    if ratio[worst] < entry["min"]:
                        entry.update(min=float(ratio[worst]), at={"p": float(p[worst]), "d": dim})
                        entry["at"]["sigma"] = sigma
                    entry["max"] = max(entry["max"], float(ratio.max()))
                if family == "laplace":
                    approx = sigma / math.sqrt(2) * stats.norm.ppf(p) / math.sqrt(dim)
                    approx_ratio = min(approx_ratio, float((ours["linf"].numpy() / approx).min()))
    worst = min(entry["min"] for norms in ratios.values() for entry in norms.values())
    return {
        "radius_ratio": ratios,
        "radius_ratio_min": worst,
        "laplace_linf_over_approximation_min": approx_ratio,
        "grid": {"p": [float(p[0]), float(p[-1]), len(p)], "d": DIMS, "sigma": SIGMAS},
    }


def format_radii(result: dict[str, Any]) -> list[str]:
    """Lines for the human-readable bench output."""
    lines = ["radius / best sound radius in the literature (min .. max over p, d, σ):"]
    for family, norms in result["radius_ratio"].items():
        cells = [f"{norm} {e['min']:.4f}..{e['max']:.3g}" for norm, e in norms.items()]
        lines.append(f"  {family:<9}" + ", ".join(cells))
    lines.append(
        f"  Laplace ℓ∞ / the approximation bΦ⁻¹(p)/√d: min "
        f"{result['laplace_linf_over_approximation_min']:.4f}"
    )
    return lines
