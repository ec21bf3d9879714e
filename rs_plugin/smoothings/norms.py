"""Conversion of certified radii between ℓp norms: the one place the project does it.

If the smoothed classifier is constant on the ℓp ball of radius r around x, it is constant on
every ℓq ball that fits inside it. In R^d, ‖δ‖_p ≤ d^max(0, 1/p − 1/q) ‖δ‖_q (Hölder, tight at
the all-equal vector for p < q and at a basis vector for p ≥ q), so the ℓq ball of radius
r · d^−max(0, 1/p − 1/q) lies in the ℓp ball of radius r. Examples: an ℓ2 radius r gives the
ℓ∞ radius r/√d and the ℓ1 radius r; an ℓ1 radius r gives the ℓ2 radius r/√d and the ℓ∞ radius
r/d; an ℓ∞ radius r gives ℓ1 and ℓ2 radii r.

Radii measured in other spaces (transformation parameters, ellipsoids' proxies) are never
converted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from rs_plugin._validation import RSValueError

__all__ = [
    "LP_NORMS",
    "complete_radii",
    "convert_radius",
    "dual_norm",
    "lp_norm",
    "norm_rounding_error",
]

LP_NORMS = ("l1", "l2", "linf")
_EXPONENT = {"l1": 1.0, "l2": 0.5, "linf": 0.0}  # 1/p


def _check_norm(parameter: str, norm: str) -> None:
    if norm not in _EXPONENT:
        raise RSValueError(parameter, f"one of {LP_NORMS}", norm)


def dual_norm(norm: str) -> str:
    """The dual of an ℓp norm (1/p + 1/q = 1): l1 ↔ linf, l2 ↔ l2."""
    _check_norm("norm", norm)
    return {"l1": "linf", "l2": "l2", "linf": "l1"}[norm]


def norm_rounding_error(dim: int) -> float:
    """A bound on the relative rounding error of a float64 ℓ2 norm of ``dim`` computed
    coordinates (the coordinates' own rounding, the sum of d squares, the root): (d + 8)·ε."""
    return (dim + 8) * torch.finfo(torch.float64).eps


def lp_norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    """The ℓp norm of each row of ``v`` (flattened from dimension 1)."""
    _check_norm("norm", norm)
    order = {"l1": 1.0, "l2": 2.0, "linf": math.inf}[norm]
    return torch.linalg.vector_norm(v.flatten(1), ord=order, dim=1)


def convert_radius(radius: torch.Tensor, source: str, target: str, dim: int) -> torch.Tensor:
    """The ``target``-norm radius implied by a ``source``-norm radius in R^``dim``."""
    _check_norm("source", source)
    _check_norm("target", target)
    if dim < 1:
        raise RSValueError("dim", "the number of input coordinates (>= 1)", dim)
    power = max(0.0, _EXPONENT[source] - _EXPONENT[target])
    return radius * float(dim) ** -power


def complete_radii(direct: Mapping[str, torch.Tensor], dim: int) -> dict[str, torch.Tensor]:
    """Every ℓp radius implied by the directly certified ones (plus the non-ℓp ones unchanged).

    For each of l1, l2 and linf, per input, the largest radius over the directly certified ℓp
    norms after conversion (a direct certificate counts as a conversion to itself). Nothing is
    added when no ℓp norm is certified directly.
    """
    radii = {k: v for k, v in direct.items() if k not in _EXPONENT}
    certified = [norm for norm in LP_NORMS if norm in direct]
    if certified:
        for target in LP_NORMS:
            candidates = [
                convert_radius(direct[s].to(torch.float64), s, target, dim) for s in certified
            ]
            radii[target] = torch.stack(candidates).amax(dim=0)
    return radii
