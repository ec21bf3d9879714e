"""What an audit works on and what it finds: the certificates it checks, the PREDICT checks of
each attack, and the verdict, rows and curves made from them (see
:mod:`rs_plugin.auditing.runner` for the definitions)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rs_plugin._validation import RSValueError, check_open_unit
from rs_plugin.auditing.diagnostics import Diagnostic
from rs_plugin.auditing.report import write_report
from rs_plugin.certification.certificates import Certificates

__all__ = [
    "ABSTAIN",
    "UNCHECKED",
    "AuditReport",
    "CertificateSet",
    "Checks",
    "poisson_binomial_tail",
    "summarise",
]

# Relative allowance for float32 rounding of candidates when comparing distances with radii.
ROUNDING = 1e-5
# PREDICT class codes besides real classes: abstain, and "not checked".
ABSTAIN, UNCHECKED = -1, -2


@dataclass(frozen=True)
class CertificateSet:
    """The certificates an audit checks, aligned with the inputs it is given.

    Attributes:
        index: (N,) dataset index of each input.
        prediction: (N,) certified class, −1 where CERTIFY abstained.
        radius: (N,) certified radius in ``norm`` (0 where abstained).
        norm: the space of the radii (``l2``, ``rotation``, ``affine:linf``, ...).
        semantics: ``input``, ``parametric`` or ``parametric=input``.
        alpha: the certificates' failure probability.
        n: CERTIFY's estimation samples, when known (they cap every radius: see
            :func:`~rs_plugin.certification.radii.sampling_cap`).
    """

    index: torch.Tensor
    prediction: torch.Tensor
    radius: torch.Tensor
    norm: str
    semantics: str
    alpha: float
    n: int | None = None

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @property
    def certified(self) -> torch.Tensor:
        return (self.prediction >= 0) & (self.radius > 0)

    @staticmethod
    def from_certificates(certificates: Certificates) -> CertificateSet:
        return CertificateSet(
            index=certificates.index.clone(),
            prediction=certificates.prediction.clone(),
            radius=certificates.radius.to(torch.float64).clone(),
            norm=certificates.norm,
            semantics=certificates.semantics,
            alpha=float(certificates.alpha),
            n=int(certificates.n),
        )

    @staticmethod
    def from_records(
        records: Sequence[dict[str, Any]], *, norm: str, source: str
    ) -> CertificateSet:
        """From JSON records with ``index``, ``prediction`` (−1 = abstain), ``radius`` and
        ``alpha`` (ours, or converted from another tool); ``norm`` and ``semantics`` default to
        the smoothing's when a record has none."""
        if not records:
            raise RSValueError("certificates", "a file with at least one record", source)
        for number, record in enumerate(records, start=1):
            missing = [k for k in ("index", "prediction", "radius", "alpha") if k not in record]
            if missing:
                raise RSValueError(
                    "certificates",
                    "records with index, prediction (-1 = abstain), radius and alpha",
                    f"a record without {missing} (record {number} of {source})",
                )
            if record.get("norm", norm) != norm:
                raise RSValueError(
                    "certificates",
                    f"radii in the smoothing's norm {norm!r}",
                    f"radii in {record['norm']!r} (record {number} of {source})",
                )
        alphas = {float(r["alpha"]) for r in records}
        sizes = {r.get("n") for r in records}
        semantics = {str(r.get("semantics", "input")) for r in records}
        if len(alphas) > 1 or len(semantics) > 1:
            raise RSValueError(
                "certificates",
                "records of one run (one alpha, one semantics)",
                f"alpha {sorted(alphas)}, semantics {sorted(semantics)} ({source})",
            )
        radius = torch.tensor([float(r["radius"] or 0.0) for r in records], dtype=torch.float64)
        if bool((radius < 0).any()) or not bool(torch.isfinite(radius).all()):
            raise RSValueError("certificates", "finite radii >= 0", f"other radii ({source})")
        return CertificateSet(
            index=torch.tensor([int(r["index"]) for r in records], dtype=torch.int64),
            prediction=torch.tensor([int(r["prediction"]) for r in records], dtype=torch.int64),
            radius=radius,
            norm=norm,
            semantics=semantics.pop(),
            alpha=check_open_unit("alpha", alphas.pop()),
            n=_one_size(sizes),
        )


def _one_size(sizes: set[Any]) -> int | None:
    """The records' common sample size n, or None when they do not all state the same one."""
    if len(sizes) != 1:
        return None
    size = sizes.pop()
    return int(size) if isinstance(size, (int, float)) and size >= 1 else None


def poisson_binomial_tail(q: np.ndarray, observed: int) -> float:
    """P[S ≥ observed] for S a sum of independent Bernoulli(q_i) (exact, dynamic programming)."""
    if observed <= 0:
        return 1.0
    pmf = np.zeros(len(q) + 1)
    pmf[0] = 1.0
    for i, qi in enumerate(np.clip(q, 0.0, 1.0), start=1):
        pmf[1 : i + 1] = pmf[1 : i + 1] * (1.0 - qi) + pmf[:i] * qi
        pmf[0] *= 1.0 - qi
    return float(min(1.0, pmf[observed:].sum()))


@dataclass
class Checks:
    """Every PREDICT check of one attack: (N, L) distance and PREDICT class per level."""

    distance: torch.Tensor
    predicted: torch.Tensor
    base_distance: torch.Tensor | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class AuditReport:
    """What an audit found. ``to_dict()`` is the JSON report (:mod:`rs_plugin.auditing.report`)."""

    verdict: dict[str, Any]
    settings: dict[str, Any]
    inputs: list[dict[str, Any]]
    attacks: list[dict[str, Any]]
    curves: dict[str, Any]
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def violated(self) -> bool:
        """True when the certificates are significantly violated (the CLI exits 1)."""
        return bool(self.verdict["significantly_violated"])

    def write(self, folder: str | Path) -> list[Path]:
        """Write report.json, report.md, curves.png and distances.png into ``folder``."""
        return write_report(self.to_dict(), folder)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "settings": self.settings,
            "diagnostics": [d.to_dict() for d in self.diagnostics],
            "attacks": self.attacks,
            "curves": self.curves,
            "inputs": self.inputs,
        }


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


def summarise(
    certificates: CertificateSet,
    labels: torch.Tensor,
    clean: torch.Tensor,
    reference: torch.Tensor,
    radius: torch.Tensor,
    levels: list[float],
    checks: dict[str, Checks],
    diagnostics: list[Diagnostic],
    *,
    predict_alpha: float,
    significance: float,
    settings: dict[str, Any],
    cap: float | None = None,
) -> AuditReport:
    """The verdict, per-attack and per-input rows and curves from every PREDICT check."""
    n = len(certificates)
    certified = certificates.certified
    limit = radius * (1.0 + ROUNDING)
    inside_all = torch.zeros(n, dtype=torch.int64)
    violated = clean.ne(ABSTAIN) & clean.ne(certificates.prediction) & certified
    violating: list[list[str]] = [["clean PREDICT"] if bool(v) else [] for v in violated]
    # Per attack, each input's smallest distance of a candidate PREDICT assigned another class.
    adversarial_distance: dict[str, torch.Tensor] = {}
    attack_rows = []
    for name, c in checks.items():
        checked = c.predicted != UNCHECKED
        inside = checked & (c.distance <= limit[:, None])
        inside_all += inside.sum(dim=1)
        bad = inside & c.predicted.ne(ABSTAIN) & c.predicted.ne(certificates.prediction[:, None])
        bad &= certified[:, None]
        for row in torch.nonzero(bad.any(dim=1))[:, 0].tolist():
            violating[row].append(name)
        violated |= bad.any(dim=1)
        adversarial = checked & c.predicted.ne(ABSTAIN) & c.predicted.ne(reference[:, None])
        own = torch.where(adversarial, c.distance, torch.full_like(c.distance, float("inf")))
        own_min = adversarial_distance[name] = own.min(dim=1).values
        ratio = own_min[certified] / radius[certified]
        finite = ratio[torch.isfinite(ratio)]
        attack_rows.append(
            {
                "name": name,
                "checks": int(checked.sum()),
                "adversarial_inputs": int(torch.isfinite(own_min).sum()),
                "violations": int(bad.any(dim=1).sum()),
                "median_distance_over_radius": _finite(float(finite.median()))
                if len(finite)
                else None,
                "seconds": c.seconds,
                "base_model_median_distance": _finite(
                    float(torch.nanmedian(c.base_distance))
                    if c.base_distance is not None
                    else float("nan")
                ),
            }
        )
    smallest = torch.stack(list(adversarial_distance.values())).amin(dim=0)
    ratio = smallest[certified] / radius[certified]
    found = ratio[torch.isfinite(ratio)]
    bound = certificates.alpha + (inside_all + 1).to(torch.float64) * predict_alpha
    q = bound[certified].numpy()
    observed = int((violated & certified).sum())
    p_value = poisson_binomial_tail(q, observed)
    verdict = {
        "certified_inputs": int(certified.sum()),
        "violations": observed,
        "expected_violations_bound": float(q.sum()),
        "p_value": p_value,
        "significance": significance,
        "significantly_violated": p_value < significance,
        # How tight the certificates are: the smallest adversarial distance any attack found,
        # over the certified radius, for the certified inputs where one was found.
        "tightness": {
            "inputs_with_adversarial": len(found),
            "median_distance_over_radius": _finite(float(found.median())) if len(found) else None,
            "min_distance_over_radius": _finite(float(found.min())) if len(found) else None,
            "max_distance_over_radius": _finite(float(found.max())) if len(found) else None,
        },
        "summary": _verdict_line(
            observed, int(certified.sum()), float(q.sum()), p_value, significance
        ),
    }
    inputs = []
    for i in range(n):
        entry: dict[str, Any] = {
            "index": int(certificates.index[i]),
            "label": int(labels[i]),
            "prediction": int(certificates.prediction[i]),
            "radius": float(radius[i]),
            "certified": bool(certified[i]),
            "clean_predict": int(clean[i]),
            "smallest_adversarial_distance": _finite(float(smallest[i])),
            "gap": _finite(float(smallest[i] - radius[i])) if bool(certified[i]) else None,
            "violation": bool(violated[i]),
            "violated_by": violating[i],
            "checks_within_radius": int(inside_all[i]) + 1,
        }
        for name, c in checks.items():
            entry[f"distance_{name}"] = _finite(float(adversarial_distance[name][i]))
            if c.base_distance is not None:
                entry[f"base_distance_{name}"] = _finite(float(c.base_distance[i]))
        inputs.append(entry)
    curves = _curves(certificates, labels, clean, radius, levels, adversarial_distance)
    curves["sampling_cap"] = cap
    settings = {
        **settings,
        "norm": certificates.norm,
        "semantics": certificates.semantics,
        "certificate_alpha": certificates.alpha,
        "certificate_n": certificates.n,
        "budget_levels": levels,
    }
    return AuditReport(verdict, settings, inputs, attack_rows, curves, diagnostics)


def _verdict_line(observed: int, total: int, expected: float, p_value: float, level: float) -> str:
    if p_value < level:
        return (
            f"VIOLATED: {observed} of {total} certified inputs have a confident different "
            f"prediction inside their certified region; at most {expected:.2f} expected if the "
            f"certificates hold (p = {p_value:.2g} < {level:g})"
        )
    return (
        f"HOLDS: {observed} violations in {total} certified inputs, within the {expected:.2f} "
        f"expected from the certificates' and PREDICT's alpha (p = {p_value:.2g} >= {level:g})"
    )


def _curves(
    certificates: CertificateSet,
    labels: torch.Tensor,
    clean: torch.Tensor,
    radius: torch.Tensor,
    levels: list[float],
    adversarial_distance: dict[str, torch.Tensor],
) -> dict[str, Any]:
    correct_cert = certificates.certified & certificates.prediction.eq(labels)

    def certified_at(r: float) -> float:
        return float((correct_cert & (radius >= r)).float().mean())

    top = max([*levels, float(radius.max())])
    grid = np.linspace(0.0, top, 101)
    budgets = [0.0, *levels]
    right = clean.eq(labels)
    distances = {
        **adversarial_distance,
        "all attacks": torch.stack(list(adversarial_distance.values())).amin(dim=0),
    }
    # A candidate found at budget b may lie a float32 rounding beyond b: it still counts at b.
    empirical = {
        name: [float((right & (d > b * (1.0 + ROUNDING))).float().mean()) for b in budgets]
        for name, d in distances.items()
    }
    return {
        "radius": grid.tolist(),
        "certified_accuracy": [certified_at(r) for r in grid],
        "budgets": budgets,
        "certified_accuracy_at_budgets": [certified_at(b) for b in budgets],
        "empirical_robust_accuracy": empirical,
    }
