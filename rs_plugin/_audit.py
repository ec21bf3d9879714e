"""Attack-vs-certificate audit: attack every certified input and check each candidate by PREDICT.

For each input with a certificate (certified class ĉ, radius r in the certificates' space) and
each attack, candidates x' are generated at budgets: every global level (fractions of the
largest certified radius, for the curves) and the input's own radius r (the strongest point the
certificate speaks about). Each candidate that differs from x is checked with a fresh PREDICT
(Cohen et al. 2019) at ``predict_n`` samples and level ``predict_alpha``, with noise independent
of CERTIFY's and of the attacks'.

* A **violation** is a certified input with a candidate at distance ≤ r (up to a relative
  rounding allowance of 1e-5) where PREDICT returns a class other than ĉ. An abstention is not a
  violation. The clean input's own PREDICT counts as a candidate at distance 0.
* If every certificate holds, input i shows a violation with probability at most
  q_i = α + k_i·α_PREDICT (CERTIFY failing, or one of its k_i PREDICT checks inside the radius
  failing; union bound), independently across inputs. The verdict's p-value is
  P[S ≥ V] for S a sum of independent Bernoulli(q_i) (Poisson-binomial, exact), V the number of
  violations; certificates are **significantly violated** when it is below ``significance``.
* The **smallest adversarial distance** of an input is the smallest distance of a candidate
  whose PREDICT returns a class other than the reference (ĉ, or the label for inputs without a
  certificate); the **gap** is that distance minus r.
* **Empirical robust accuracy** at budget ε: the fraction of inputs whose clean PREDICT is the
  label and no candidate within ε was adversarial, at ε = 0 and every global level (where every
  such input was attacked). **Certified accuracy** at ε: label predicted with radius ≥ ε.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rs_plugin._attack import Attack, AttackTarget, Candidates
from rs_plugin._certificates import Certificates
from rs_plugin._classifier import SmoothedClassifier
from rs_plugin._diagnostics import Diagnostic, diagnose
from rs_plugin._norms import LP_NORMS, lp_norm
from rs_plugin._registry import load_attack
from rs_plugin._semantic import SemanticSmoothing
from rs_plugin._semantic_attacks import ShiftedParameters, parameter_distance
from rs_plugin._smoothing import Smoothing
from rs_plugin._validation import RSValueError, check_int, check_open_unit, check_positive

__all__ = [
    "ADDITIVE_ATTACKS",
    "BUDGETS",
    "SEMANTIC_ATTACKS",
    "Audit",
    "AuditReport",
    "CertificateSet",
    "audit",
    "poisson_binomial_tail",
]

ADDITIVE_ATTACKS = ("pgd", "autoattack", "deepfool", "cw_l2")
SEMANTIC_ATTACKS = ("semantic_grid", "semantic_random")
BUDGETS = (0.25, 0.5, 1.0, 1.5, 2.0)
# Relative allowance for float32 rounding of candidates when comparing distances with radii.
_ROUNDING = 1e-5
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
    """

    index: torch.Tensor
    prediction: torch.Tensor
    radius: torch.Tensor
    norm: str
    semantics: str
    alpha: float

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
        )

    @staticmethod
    def from_records(
        records: Sequence[dict[str, Any]], *, norm: str, source: str
    ) -> CertificateSet:
        """From JSON records with ``index``, ``prediction`` (−1 = abstain), ``radius`` and
        ``alpha`` (ours, or converted from another tool); ``norm`` and ``semantics`` default to
        the smoothing's when a record has none."""
        if not records:
            raise RSValueError("--certificates", "a file with at least one record", source)
        for number, record in enumerate(records, start=1):
            missing = [k for k in ("index", "prediction", "radius", "alpha") if k not in record]
            if missing:
                raise RSValueError(
                    "--certificates",
                    "records with index, prediction (-1 = abstain), radius and alpha",
                    f"a record without {missing} (record {number} of {source})",
                )
            if record.get("norm", norm) != norm:
                raise RSValueError(
                    "--certificates",
                    f"radii in the smoothing's norm {norm!r}",
                    f"radii in {record['norm']!r} (record {number} of {source})",
                )
        alphas = {float(r["alpha"]) for r in records}
        semantics = {str(r.get("semantics", "input")) for r in records}
        if len(alphas) > 1 or len(semantics) > 1:
            raise RSValueError(
                "--certificates",
                "records of one run (one alpha, one semantics)",
                f"alpha {sorted(alphas)}, semantics {sorted(semantics)} ({source})",
            )
        radius = torch.tensor([float(r["radius"] or 0.0) for r in records], dtype=torch.float64)
        if bool((radius < 0).any()) or not bool(torch.isfinite(radius).all()):
            raise RSValueError("--certificates", "finite radii >= 0", f"other radii ({source})")
        return CertificateSet(
            index=torch.tensor([int(r["index"]) for r in records], dtype=torch.int64),
            prediction=torch.tensor([int(r["prediction"]) for r in records], dtype=torch.int64),
            radius=radius,
            norm=norm,
            semantics=semantics.pop(),
            alpha=check_open_unit("alpha", alphas.pop()),
        )


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


# Fractions of the closest adversarial candidate's perturbation checked after the budget levels.
_SHRINK = (0.6, 0.7, 0.8, 0.9)


class _Best:
    """Each input's closest adversarial candidate so far (perturbation and parameters)."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self.delta = torch.zeros_like(x)
        self.params: torch.Tensor | None = None
        self.distance = torch.full((x.shape[0],), float("inf"), dtype=torch.float64)

    @property
    def found(self) -> torch.Tensor:
        return torch.isfinite(self.distance)

    def update(
        self, found: Candidates, checks: _Checks, column: int, reference: torch.Tensor
    ) -> None:
        predicted = checks.predicted[:, column]
        d = checks.distance[:, column]
        better = predicted.ge(0) & predicted.ne(reference.cpu()) & (d < self.distance)
        rows = torch.nonzero(better)[:, 0]
        self.distance[rows] = d[rows]
        self.delta[rows.to(self.x.device)] = (found.x - self.x)[rows.to(self.x.device)]
        if found.params is not None:
            if self.params is None:
                self.params = torch.zeros_like(found.params)
            self.params[rows] = found.params[rows]

    def shrunk(self, fraction: float, target: AttackTarget) -> Candidates:
        """Candidates at ``fraction`` of each closest adversarial perturbation (or parameters)."""
        if self.params is not None:
            smoothing = target.smoothing
            assert isinstance(smoothing, SemanticSmoothing)
            params = self.params * fraction
            images = smoothing.apply(self.x, params.to(self.x)).clamp(*target.clip_values)
            return Candidates(x=images, params=params)
        return Candidates(x=self.x + fraction * self.delta)


@dataclass
class _Checks:
    """Every PREDICT check of one attack: (N, L) distance and PREDICT class per level."""

    distance: torch.Tensor
    predicted: torch.Tensor
    base_distance: torch.Tensor | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class AuditReport:
    """What an audit found. ``to_dict()`` is the JSON report (see :mod:`rs_plugin._report`)."""

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
        from rs_plugin._report import write_report

        return write_report(self, folder)

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


class Audit:
    """Attack certificates of ``smoothing`` on ``model`` and check every candidate with PREDICT.

    Args:
        model: base classifier (logits).
        smoothing: the smoothing the certificates were computed with.
        num_classes: the model's number of classes.
        attacks: attack names registered in ``rs_plugin.attacks`` or :class:`Attack` objects
            (default: pgd, autoattack, deepfool, cw_l2 for input-space noises; semantic_grid
            and semantic_random for semantic smoothings).
        budgets: global budget levels as fractions of the largest certified radius; each input
            is also attacked at its own radius.
        predict_n, predict_alpha: PREDICT's samples and level for every check.
        significance: level of the verdict's one-sided test.
        num_noise_samples: noise draws of the soft smoothed classifier the attacks use (m).
        clip_values: valid input range.
        batch_size: samples per forward pass of PREDICT.
        seed: seeds the attacks (``seed + 1``) and the PREDICT checks (``seed + 2``).
        progress: show a progress bar on standard error.
    """

    def __init__(
        self,
        model: nn.Module,
        smoothing: Smoothing,
        num_classes: int,
        *,
        attacks: Sequence[str | Attack] | None = None,
        budgets: Sequence[float] = BUDGETS,
        predict_n: int = 1000,
        predict_alpha: float = 0.001,
        significance: float = 0.01,
        num_noise_samples: int = 16,
        clip_values: tuple[float, float] = (0.0, 1.0),
        batch_size: int = 1000,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        self.smoothed = SmoothedClassifier(
            model,
            smoothing,
            num_classes,
            num_noise_samples=num_noise_samples,
            clip_values=clip_values,
            seed=seed + 1,
        )
        self.budgets = tuple(check_positive("budgets", float(b)) for b in budgets)
        if not self.budgets:
            raise RSValueError("budgets", "at least one fraction of the largest radius", budgets)
        self.predict_n = check_int("predict_n", predict_n, 1)
        self.predict_alpha = check_open_unit("predict_alpha", predict_alpha)
        self.significance = check_open_unit("significance", significance)
        self.clip_values = (float(clip_values[0]), float(clip_values[1]))
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.seed = check_int("seed", seed, 0)
        self.progress = progress
        self.attacks = self._resolve(attacks)

    @property
    def smoothing(self) -> Smoothing:
        return self.smoothed.smoothing

    def _resolve(self, attacks: Sequence[str | Attack] | None) -> list[Attack]:
        semantic = isinstance(self.smoothing, SemanticSmoothing)
        named = attacks is not None
        chosen = (
            list(attacks)
            if attacks is not None
            else list(SEMANTIC_ATTACKS if semantic else ADDITIVE_ATTACKS)
        )
        resolved: list[Attack] = []
        for item in chosen:
            attack = load_attack(item) if isinstance(item, str) else item
            if not isinstance(attack, Attack):
                raise RSValueError("attacks", "names of rs_plugin.attacks or Attack objects", item)
            reason = attack.applies_to(self.smoothing)
            if reason is not None:
                if named:
                    raise RSValueError(
                        "attacks",
                        f"attacks that apply to {self.smoothing!r}",
                        f"{attack.name}: {reason}",
                    )
                continue
            resolved.append(attack)
        names = [a.name for a in resolved]
        if len(set(names)) != len(names) or not resolved:
            raise RSValueError("attacks", "one or more distinct applicable attacks", names)
        return resolved

    def settings(self) -> dict[str, Any]:
        return {
            "smoothing": self.smoothing.config(),
            "attacks": [a.config() for a in self.attacks],
            "budget_fractions": list(self.budgets),
            "predict_n": self.predict_n,
            "predict_alpha": self.predict_alpha,
            "significance": self.significance,
            "num_noise_samples": self.smoothed.num_noise_samples,
            "seed": self.seed,
        }

    # -- running -------------------------------------------------------------------------------

    def run(
        self, x: torch.Tensor, labels: torch.Tensor, certificates: CertificateSet
    ) -> AuditReport:
        """Audit ``certificates`` of inputs ``x`` (N, ...) with true ``labels`` (N,)."""
        if len(certificates) != x.shape[0] or labels.shape[0] != x.shape[0]:
            raise RSValueError(
                "certificates",
                f"one certificate and one label per input ({x.shape[0]} inputs)",
                f"{len(certificates)} certificates, {labels.shape[0]} labels",
            )
        if certificates.norm != self.smoothing.norm:
            raise RSValueError(
                "certificates",
                f"radii in the smoothing's norm {self.smoothing.norm!r}",
                certificates.norm,
            )
        started = time.perf_counter()
        device = self.smoothed.device
        x = x.to(device=device, dtype=torch.float32)
        labels = labels.to(torch.int64)
        diagnostics = diagnose(
            self.smoothed,
            x,
            labels,
            certificates.prediction,
            gradients=any(a.name in ("pgd", "autoattack", "art_autoattack") for a in self.attacks),
            dlr=any(a.name in ("autoattack", "art_autoattack") for a in self.attacks),
        )
        keys = iter(range(10**12))
        clean = self._predict(x, None, keys, len(x))
        certified = certificates.certified
        radius = torch.where(certified, certificates.radius, torch.zeros_like(certificates.radius))
        reference = torch.where(certified, certificates.prediction, labels)
        scale = (
            float(radius.max())
            if bool(certified.any())
            else float(getattr(self.smoothing, "sigma", 1.0))
        )
        levels = [fraction * scale for fraction in self.budgets]
        # Inputs worth attacking: certified ones, and the rest where PREDICT is right.
        attacked = certified | (clean == labels)
        target = AttackTarget(
            smoothed=self.smoothed,
            norm=certificates.norm,
            semantics=certificates.semantics,
            clip_values=self.clip_values,
            seed=self.seed + 1,
        )
        checks = self._attack_all(target, x, reference, attacked, radius, levels, keys)
        report = self._summarise(
            certificates, labels, clean, reference, radius, levels, checks, diagnostics
        )
        report.settings["seconds"] = time.perf_counter() - started
        return report

    def _attack_all(
        self,
        target: AttackTarget,
        x: torch.Tensor,
        reference: torch.Tensor,
        attacked: torch.Tensor,
        radius: torch.Tensor,
        levels: list[float],
        keys: Any,
    ) -> dict[str, _Checks]:
        from tqdm import tqdm

        n = x.shape[0]
        columns = [torch.where(attacked, level, 0.0).to(torch.float64) for level in levels]
        columns.append(radius.clone())
        width = len(columns) + len(_SHRINK)
        results: dict[str, _Checks] = {}
        with tqdm(
            total=len(self.attacks) * (len(columns) + 1),
            desc="audit",
            unit="step",
            disable=not self.progress,
            file=sys.stderr,
        ) as bar:
            for attack in self.attacks:
                checks = _Checks(
                    torch.full((n, width), float("inf"), dtype=torch.float64),
                    torch.full((n, width), UNCHECKED, dtype=torch.int64),
                )
                best = _Best(x)
                started = time.perf_counter()
                for column, eps in enumerate(columns):
                    bar.set_postfix_str(f"{attack.name} eps={float(eps.max()):.3g}")
                    found = attack.generate(target, x, reference.to(x.device), eps.to(x.device))
                    self._check(x, found, target.norm, eps > 0, checks, column, keys)
                    best.update(found, checks, column, reference)
                    if found.base_distance is not None:
                        checks.base_distance = found.base_distance.to(torch.float64).cpu()
                    bar.update(1)
                # Line search towards x from each input's closest adversarial candidate.
                bar.set_postfix_str(f"{attack.name} line search")
                for offset, fraction in enumerate(_SHRINK):
                    found = best.shrunk(fraction, target)
                    self._check(
                        x, found, target.norm, best.found, checks, len(columns) + offset, keys
                    )
                bar.update(1)
                checks.seconds = time.perf_counter() - started
                results[attack.name] = checks
        return results

    def _check(
        self,
        x: torch.Tensor,
        found: Candidates,
        norm: str,
        wanted: torch.Tensor,
        checks: _Checks,
        column: int,
        keys: Any,
    ) -> None:
        """PREDICT at the candidates of ``wanted`` rows that moved; store in ``column``."""
        d, moved = self._distances(x, found, norm)
        rows = torch.nonzero(moved & wanted.cpu())[:, 0]
        checks.distance[rows, column] = d[rows]
        if len(rows):
            checks.predicted[rows, column] = self._predict(x, found, keys, len(x), rows)

    def _distances(
        self, x: torch.Tensor, found: Candidates, norm: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) distance of each candidate in the certificates' space, and whether it moved."""
        if found.params is not None:
            d = parameter_distance(found.params, norm).cpu()
            return d, d > 0
        if norm not in LP_NORMS:
            raise RSValueError("attacks", f"attacks returning parameters for {norm!r}", "images")
        d = lp_norm((found.x.to(torch.float64) - x.to(torch.float64)), norm).cpu()
        return d, d > 0

    def _predict(
        self,
        x: torch.Tensor,
        found: Candidates | None,
        keys: Any,
        n: int,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """PREDICT at the candidates' rows (the clean inputs when ``found`` is None)."""
        picked = torch.arange(n) if rows is None else rows
        seed = self.seed + 2
        if (
            found is not None
            and found.params is not None
            and isinstance(self.smoothing, SemanticSmoothing)
            and not self.smoothing.semantics_label.endswith("input")
        ):
            # A parametric certificate speaks of the classifier smoothed over parameters: PREDICT
            # it centred at the candidate's parameters, on the clean input.
            out = []
            for row in picked.tolist():
                shifted = SmoothedClassifier(
                    self.smoothed.model,
                    ShiftedParameters(self.smoothing, found.params[row]),
                    self.smoothed.num_classes,
                )
                result = shifted.predict(
                    x[row : row + 1],
                    n=self.predict_n,
                    alpha=self.predict_alpha,
                    batch_size=self.batch_size,
                    seed=seed,
                    keys=[next(keys)],
                )
                out.append(int(result.prediction[0]))
            return torch.tensor(out, dtype=torch.int64)
        points = x if found is None else found.x
        result = self.smoothed.predict(
            points[picked.to(points.device)],
            n=self.predict_n,
            alpha=self.predict_alpha,
            batch_size=self.batch_size,
            seed=seed,
            keys=[next(keys) for _ in range(len(picked))],
        )
        return result.prediction.cpu()

    # -- summarising ---------------------------------------------------------------------------

    def _summarise(
        self,
        certificates: CertificateSet,
        labels: torch.Tensor,
        clean: torch.Tensor,
        reference: torch.Tensor,
        radius: torch.Tensor,
        levels: list[float],
        checks: dict[str, _Checks],
        diagnostics: list[Diagnostic],
    ) -> AuditReport:
        n = len(certificates)
        certified = certificates.certified
        limit = radius * (1.0 + _ROUNDING)
        inside_all = torch.zeros(n, dtype=torch.int64)
        violated = clean.ne(ABSTAIN) & clean.ne(certificates.prediction) & certified
        violating: list[list[str]] = [["clean PREDICT"] if bool(v) else [] for v in violated]
        smallest = torch.full((n,), float("inf"), dtype=torch.float64)
        attack_rows = []
        for name, c in checks.items():
            checked = c.predicted != UNCHECKED
            inside = checked & (c.distance <= limit[:, None])
            inside_all += inside.sum(dim=1)
            bad = (
                inside & c.predicted.ne(ABSTAIN) & c.predicted.ne(certificates.prediction[:, None])
            )
            bad &= certified[:, None]
            for row in torch.nonzero(bad.any(dim=1))[:, 0].tolist():
                violating[row].append(name)
            violated |= bad.any(dim=1)
            adversarial = checked & c.predicted.ne(ABSTAIN) & c.predicted.ne(reference[:, None])
            own = torch.where(adversarial, c.distance, torch.full_like(c.distance, float("inf")))
            own_min = own.min(dim=1).values
            smallest = torch.minimum(smallest, own_min)
            c.distance = own  # keep only adversarial distances for the curves below
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
        bound = certificates.alpha + (inside_all + 1).to(torch.float64) * self.predict_alpha
        q = bound[certified].numpy()
        observed = int((violated & certified).sum())
        p_value = poisson_binomial_tail(q, observed)
        verdict = {
            "certified_inputs": int(certified.sum()),
            "violations": observed,
            "expected_violations_bound": float(q.sum()),
            "p_value": p_value,
            "significance": self.significance,
            "significantly_violated": p_value < self.significance,
            "summary": _verdict_line(
                observed, int(certified.sum()), float(q.sum()), p_value, self.significance
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
                entry[f"distance_{name}"] = _finite(float(c.distance[i].min()))
                if c.base_distance is not None:
                    entry[f"base_distance_{name}"] = _finite(float(c.base_distance[i]))
            inputs.append(entry)
        curves = _curves(certificates, labels, clean, radius, levels, checks, smallest)
        settings = {
            **self.settings(),
            "norm": certificates.norm,
            "semantics": certificates.semantics,
            "certificate_alpha": certificates.alpha,
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
    checks: dict[str, _Checks],
    smallest: torch.Tensor,
) -> dict[str, Any]:
    correct_cert = certificates.certified & certificates.prediction.eq(labels)
    top = max([*levels, float(radius.max())])
    grid = np.linspace(0.0, top, 101)
    certified_acc = [float((correct_cert & (radius >= r)).float().mean()) for r in grid]
    budgets = [0.0, *levels]
    right = clean.eq(labels)
    empirical = {}
    for name, c in checks.items():
        own = c.distance.min(dim=1).values
        empirical[name] = [float((right & (own > b)).float().mean()) for b in budgets]
    empirical["all attacks"] = [float((right & (smallest > b)).float().mean()) for b in budgets]
    return {
        "radius": grid.tolist(),
        "certified_accuracy": certified_acc,
        "budgets": budgets,
        "empirical_robust_accuracy": empirical,
    }


def audit(
    model: nn.Module,
    smoothing: Smoothing,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    certificates: Certificates | CertificateSet | None = None,
    n0: int = 100,
    n: int = 10_000,
    alpha: float = 0.001,
    keys: Sequence[int] | None = None,
    **settings: Any,
) -> AuditReport:
    """Certify ``x`` (unless ``certificates`` are given) and audit the certificates.

    ``n0``, ``n``, ``alpha`` are CERTIFY's (Cohen et al. 2019); ``settings`` are
    :class:`Audit`'s keywords (attacks, budgets, predict_n, predict_alpha, significance,
    num_noise_samples, clip_values, batch_size, seed, progress). ``keys`` are the inputs' dataset
    indices (default 0..N−1).
    """
    runner = Audit(model, smoothing, num_classes, **settings)
    if certificates is None:
        certifier = SmoothedClassifier(
            model, smoothing, num_classes, clip_values=runner.clip_values
        )
        certificates = certifier.certify(
            x, n0=n0, n=n, alpha=alpha, batch_size=runner.batch_size, seed=runner.seed, keys=keys
        )
    if isinstance(certificates, Certificates):
        certificates = CertificateSet.from_certificates(certificates)
    return runner.run(x, labels, certificates)
