"""Yang et al. 2020's differential method: a radius from a bound on how fast a set can lose mass.

Let q be a noise density, x an input whose top class has the set A with P[x + ε ∈ A] = ρ, and
move x along a unit vector v (‖v‖ ≤ 1 in the norm certified). The mass p(t) = P[x + tv + ε ∈ A]
has derivative

    p′(t) = E[1_{A_t}(ε) ⟨−∇ log q(ε), v⟩],   A_t = A − x − tv, P[ε ∈ A_t] = p(t),

so p′(t) ≥ −Φ(p(t)) where Φ(p) bounds, over every ‖v‖ ≤ 1 and every set U of mass 1 − p, the
mean of S_v = ⟨−∇ log q(ε), v⟩ on U (the "top-(1 − p) mean"; for the symmetric, centred S_v of
the families here it equals the top-p mean of −S_v). With G(p) = ∫_{1/2}^{p} ds/Φ(s),
d G(p(t))/dt ≥ −1, so p(t) > 1/2 for every t < G(ρ): **the radius is R(ρ) = ∫_{1/2}^{ρ} dp/Φ(p)**
(Yang et al. 2020, "Randomized smoothing of all shapes and sizes", Section 4; q must be
Lipschitz, so that p(t) is absolutely continuous — true of Laplace and ExpInf, not of uniform
noise). Any upper bound on Φ gives a smaller, still sound radius; bounds for several norms
combine: ‖v‖₂ ≤ 1 implies ‖v‖∞ ≤ 1 and ‖v‖₁ ≤ √d, so Φ_ℓ2 ≤ min(Φ_ℓ∞, √d Φ_ℓ1), which is at
least as good as converting either radius (see :mod:`rs_plugin.smoothings.norms`).

Below, m = 1 − p ∈ (0, 1/2) is the mass of the set that leaves.

**Laplace** (scale b, ∇ log q = −sign(ε)/b, signs s ∈ {±1}^d i.i.d. uniform):

* ℓ∞: S_v = ⟨s, v⟩/b is convex in v, so its top-m mean peaks at a vertex of the cube, all alike
  by symmetry: Φ_ℓ∞(m) = T_d(m)/b with T_d(m) the top-m mean of Σᵢ sᵢ = 2·Binomial(d, 1/2) − d
  (exact, computed from the binomial law; the bound Yang et al. integrate numerically).
* ℓ2: for a set U of mass m write u(σ) = P[ε ∈ U | s = σ]; then E[1_U ⟨s, v⟩] = ⟨g, v⟩ with
  gᵢ = E[u(s) sᵢ], and Bessel's inequality in L²({±1}^d) (the sᵢ are orthonormal and orthogonal to
  1) gives ‖g‖₂² ≤ E[u²] − E[u]² ≤ m(1 − m). So Φ_ℓ2(m) ≤ min(√(m(1 − m)), √d·m, T_d(m))/b.
  Near p = 1/2 this is 1/(2b), the rate along one axis, so the radius ≈ 2b(p − 1/2) there,
  √d/1.25 times the best conversion (the ℓ∞ radius ≈ bΦ⁻¹(p)/√d).

**ExpInf** (density ∝ exp(−‖ε‖∞/λ)): ∇ log q = −sign(ε_{i*}) e_{i*}/λ with i* = argmax |εᵢ|,
uniform over coordinates and independent of its sign, so S_v = ±v_{i*}/λ takes the values
±vᵢ/λ with mass 1/(2d) each. Its top-m mean fills the largest |vᵢ| first, mass 1/(2d) each:
with k = ⌊2dm⌋ it is ⟨w, |v|↓⟩/λ, w = (1/(2d) k times, m − k/(2d), 0, …), and the supremum is

* ℓ1 (‖v‖₁ ≤ 1, a vertex ±eᵢ): Φ = min(m, 1/(2d))/λ, so R = 2dλ(p − 1/2) for m ≥ 1/(2d)
  (Yang et al.'s radius) and (d − 1)λ + λ ln(1/(2dm)) beyond (the "better radii" their code
  mentions and leaves out);
* ℓ∞ (‖v‖∞ ≤ 1, v = 1): Φ = m/λ, R = λ ln(1/(2m)) = λ ln(1/(2(1 − p))). It is exact: along
  δ = r·1 the log-likelihood ratio depends on ε only through the mid-range h = (max εᵢ + min εᵢ)/2,
  which is Laplace with scale λ (the joint density of half-range w and h is ∝ w^{d−2} e^{−w/λ}
  e^{−|h|/λ}), so the problem is one-dimensional Laplace;
* ℓ2 (‖v‖₂ ≤ 1, Cauchy–Schwarz): Φ = ‖w‖₂/λ = √(k/(4d²) + (m − k/(2d))²)/λ, whose integral is
  λ[ln(1/(2dm)) + A(1)] for k = 0 and λ[asinh(1/√k) − asinh(2d(m − k/(2d))/√k) + A(k + 1)]
  for k ≥ 1, with A(j) = Σ_{i=j}^{d−1} asinh(1/√i). Near p = 1/2 it is 2√d λ(p − 1/2), the exact
  rate along 1/√d.

Numerical integration (Laplace): in u = ln(1/(2m)) (dp = m du) the integrand m/Φ is
non-increasing, so right-endpoint sums on a grid of step ``_STEP`` are below the integral, by at
most ``_STEP`` · (g(0) − g(u)) ≤ ``_STEP`` · b; the table ends at u = ``_U_MAX`` (1 − p ≈ 1.6e-17,
below float64's resolution) and larger u get the radius at its end (the radius grows with u).
A relative margin of 1e-9 covers floating-point rounding of the sums.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import stats

__all__ = ["exp_inf_radii", "laplace_radii"]

_STEP = 5e-4
_U_MAX = 38.0
_ROUNDING = 1.0 - 1e-9


def _leaving_mass(p: np.ndarray) -> np.ndarray:
    """m = 1 − p, clipped into (0, 1/2] (the radii are 0 for p ≤ 1/2 anyway)."""
    return np.clip(1.0 - p, np.finfo(np.float64).tiny, 0.5)


@functools.lru_cache(maxsize=16)
def _rademacher_top_mean(dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, cumulative mass, cumulative mean) of Σ sᵢ = 2·Binomial(dim, 1/2) − dim, from
    the largest value down, so that T(m) interpolates linearly inside one atom."""
    k = np.arange(dim, -1, -1)
    values = (2 * k - dim).astype(np.float64)
    pmf = stats.binom.pmf(k, dim, 0.5)
    mass = np.concatenate([[0.0], np.cumsum(pmf)])
    mean = np.concatenate([[0.0], np.cumsum(pmf * values)])
    return values, mass, mean


def _top_mean(m: np.ndarray, dim: int) -> np.ndarray:
    """T_d(m): the mean of Σ sᵢ on its top-m set (mass m counted, not normalised)."""
    values, mass, mean = _rademacher_top_mean(dim)
    j = np.clip(np.searchsorted(mass, m, side="right") - 1, 0, dim)
    return mean[j] + (m - mass[j]) * values[j]


@functools.lru_cache(maxsize=16)
def _laplace_tables(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower Riemann sums of R/b on the u grid for (ℓ2, ℓ∞), with the integrand at each node."""
    u = np.arange(0.0, _U_MAX + _STEP / 2, _STEP)
    m = 0.5 * np.exp(-u)
    per_linf = m / _top_mean(m, dim)
    per_l2 = np.maximum(
        np.maximum(np.sqrt(m / (1.0 - m)), 1.0 / math.sqrt(dim)),
        per_linf,
    )
    integrands = np.stack([per_l2, per_linf])
    # R(u_j) ≥ Σ_{k<j} STEP · g(u_{k+1}) (g non-increasing); R(0) = 0.
    sums = np.concatenate([np.zeros((2, 1)), np.cumsum(_STEP * integrands[:, 1:], axis=1)], axis=1)
    return sums, integrands


def laplace_radii(p: np.ndarray, dim: int) -> dict[str, np.ndarray]:
    """ℓ2 and ℓ∞ radii of Laplace noise in units of its scale b, for p > 1/2 (see the module
    docstring); never above the exact integral of the rate bound."""
    u = np.clip(-np.log(2.0 * _leaving_mass(p)), 0.0, _U_MAX)
    sums, integrands = _laplace_tables(dim)
    j = np.minimum((u / _STEP).astype(np.int64), sums.shape[1] - 1)
    nxt = np.minimum(j + 1, sums.shape[1] - 1)
    # Partial last cell at the integrand's right-end value (a lower bound on it there).
    radii = sums[:, j] + (u - j * _STEP) * integrands[:, nxt]
    radii = np.maximum(radii, 0.0) * _ROUNDING
    return {"l2": radii[0], "linf": radii[1]}


@functools.lru_cache(maxsize=16)
def _asinh_tail(dim: int) -> np.ndarray:
    """A(j) = Σ_{i=j}^{dim−1} asinh(1/√i) for j = 0 … dim (A(0) unused, A(dim) = 0)."""
    i = np.arange(1, dim, dtype=np.float64)
    terms = np.arcsinh(1.0 / np.sqrt(i))
    tail = np.concatenate([np.cumsum(terms[::-1])[::-1], [0.0]])
    return np.concatenate([[np.inf], tail])


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Veltkamp's split: a = high + low exactly, each with at most 26 significant bits."""
    c = 134217729.0 * a  # 2^27 + 1
    high = c - (c - a)
    return high, a - high


def _exact_product(a: np.ndarray | float, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dekker's product: a·b = high + low exactly (high the rounded product)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    high = a * b
    a_high, a_low = _split(a)
    b_high, b_low = _split(b)
    low = ((a_high * b_high - high) + a_high * b_low + a_low * b_high) + a_low * b_low
    return high, low


def exp_inf_radii(p: np.ndarray, dim: int) -> dict[str, np.ndarray]:
    """ℓ1, ℓ2 and ℓ∞ radii of ExpInf noise in units of its scale λ, for p > 1/2 (closed forms,
    see the module docstring).

    2dm is carried as an exact sum high + low (Dekker), so that ln(1/(2dm)) near 2dm = 1 and
    the last cell's asinh difference near p = 1/2, both small differences, keep their digits:
    computed directly they lost up to 8e-10 of the ℓ2 radius at d = 150 528 (ImageNet), in either
    direction. The difference asinh(a) − asinh(b) is asinh((a − b)(a + b)/(a√(1 + b²) +
    b√(1 + a²))), with a − b = (k + 1 − 2dm)/√k from the exact 2dm.
    """
    m = _leaving_mass(p)
    d = float(dim)
    high, low = _exact_product(2.0 * d, m)  # 2dm (2d is exact)
    inverse = -(np.log(high) + np.log1p(low / high))  # ln(1/(2dm)), > 0 where m < 1/(2d)
    l1 = np.where(high >= 1.0, d * (1.0 - 2.0 * m), (d - 1.0) + inverse)
    k = np.minimum(np.floor(high), d - 1.0)
    tail = _asinh_tail(dim)
    root_k = np.sqrt(np.maximum(k, 1.0))
    # a = 1/√k, b = (2dm − k)/√k in the last (partial) cell [m, (k + 1)/(2d)]; k + 1 − high is
    # exact (Sterbenz) where k ≥ 1
    gap = np.clip((k + 1.0 - high) - low, 0.0, 1.0)
    a = 1.0 / root_k
    b = np.maximum(1.0 - gap, 0.0) / root_k
    inside = np.arcsinh(
        (gap / root_k) * (a + b) / (a * np.sqrt(1.0 + b * b) + b * np.sqrt(1.0 + a * a))
    )
    k_int = k.astype(np.int64)
    l2 = np.where(k_int == 0, inverse + tail[1], inside + tail[k_int + 1])
    return {"l1": l1, "l2": l2, "linf": -np.log(2.0 * m)}
