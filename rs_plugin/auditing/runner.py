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

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from rs_plugin._validation import (
    RSValueError,
    check_finite_inputs,
    check_int,
    check_open_unit,
    check_positive,
)
from rs_plugin.auditing.attack import Attack, AttackTarget, Candidates, load_attack
from rs_plugin.auditing.checking import SHRINK, AttackState, Checker
from rs_plugin.auditing.defaults import ADDITIVE_ATTACKS, BUDGETS, SEMANTIC_ATTACKS
from rs_plugin.auditing.diagnostics import Diagnostic, diagnose, warn
from rs_plugin.auditing.plausibility import (
    MAX_BUDGET_FRACTION,
    impossible_certificates,
    mark_impossible,
)
from rs_plugin.auditing.progress import Progress
from rs_plugin.auditing.results import (
    AuditReport,
    CertificateSet,
    Checks,
    summarise,
)
from rs_plugin.certification.batching import check_batch_size
from rs_plugin.certification.certificates import Certificates
from rs_plugin.certification.classifier import SmoothedClassifier
from rs_plugin.certification.grid import cohen_certifier
from rs_plugin.certification.radii import sampling_cap
from rs_plugin.smoothings.base import Smoothing
from rs_plugin.smoothings.semantic import SemanticSmoothing

__all__ = [
    "ADDITIVE_ATTACKS",
    "BUDGETS",
    "SEMANTIC_ATTACKS",
    "Audit",
    "AuditReport",
    "CertificateSet",
    "audit",
]


# Certificates at a larger alpha get a "weak certificates" finding beside the verdict.
WEAK_ALPHA = 0.05


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
        batch_size: samples per forward pass of PREDICT, or ``"auto"`` (the fastest size,
            :mod:`rs_plugin.certification.batching`).
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
        batch_size: int | str = "auto",
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
        if any(b > MAX_BUDGET_FRACTION for b in self.budgets):
            # Far beyond any input domain; near the float maximum the distances overflow.
            raise RSValueError(
                "budgets", f"fractions of the largest radius <= {MAX_BUDGET_FRACTION:g}", budgets
            )
        if not self.budgets:
            raise RSValueError("budgets", "at least one fraction of the largest radius", budgets)
        self.predict_n = check_int("predict_n", predict_n, 1)
        self.predict_alpha = check_open_unit("predict_alpha", predict_alpha)
        self.significance = check_open_unit("significance", significance)
        self.clip_values = (float(clip_values[0]), float(clip_values[1]))
        self.batch_size = check_batch_size(batch_size)
        self.seed = check_int("seed", seed, 0)
        self.progress = progress
        self.attacks = self._resolve(attacks)
        self.checker = Checker(
            self.smoothed,
            predict_n=self.predict_n,
            predict_alpha=self.predict_alpha,
            batch_size=self.batch_size,
            seed=self.seed + 2,
        )

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
        self,
        x: torch.Tensor,
        labels: torch.Tensor,
        certificates: CertificateSet,
        *,
        impossible: Sequence[Mapping[str, Any]] = (),
    ) -> AuditReport:
        """Audit ``certificates`` of inputs ``x`` (N, ...) with true ``labels`` (N,).

        Certificates no model could earn (a class outside the model's, a radius above the
        sampling cap of the set's ``n`` and ``alpha``) are violations whatever the attacks find
        (:func:`~rs_plugin.auditing.plausibility.mark_impossible`); ``impossible`` adds
        findings of the caller's (``{"index", "reason"}``, e.g. from a file's other fields)."""
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
        check_finite_inputs("x", x, self.clip_values)
        started = time.perf_counter()
        device = self.smoothed.device
        x = x.to(device=device, dtype=torch.float32)
        labels = labels.to(torch.int64)
        diagnostics = diagnose(
            self.smoothed,
            x,
            labels,
            certificates.prediction,
            gradients=any(a.gradients or a.base_gradients for a in self.attacks),
            dlr=any(a.dlr for a in self.attacks),
        )
        if certificates.alpha > WEAK_ALPHA:
            # The verdict tests "more violations than alpha allows": at a large alpha, a file
            # of wrong certificates can hold. Say so beside the verdict.
            weak = Diagnostic(
                "weak certificates",
                f"alpha {certificates.alpha:g}: each certificate may fail with probability up "
                f"to {certificates.alpha:g}, so even many violations can be within what the "
                "certificates promise",
                f"certify with alpha <= {WEAK_ALPHA:g} (the papers use 0.001) before relying on "
                "the verdict",
            )
            warn(weak)
            diagnostics.append(weak)
        keys = iter(range(10**12))
        clean = self.checker.predict(x, keys)
        certified = certificates.certified
        radius = torch.where(certified, certificates.radius, torch.zeros_like(certificates.radius))
        reference = torch.where(certified, certificates.prediction, labels)
        scale = (
            float(radius.max()) if bool(certified.any()) else (self.smoothing.noise_scale or 1.0)
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
        report = summarise(
            certificates,
            labels,
            clean,
            reference,
            radius,
            levels,
            checks,
            diagnostics,
            predict_alpha=self.predict_alpha,
            significance=self.significance,
            settings=self.settings(),
            # A grid certificate's cap is its grid's range, not the p_lower cap the report draws.
            cap=None
            if certificates.n is None or self.smoothing.on_grid
            else sampling_cap(self.smoothing, certificates.alpha, certificates.n, x[0].numel()),
        )
        found = {int(entry["index"]): dict(entry) for entry in impossible}
        records = [
            {
                "index": int(i),
                "prediction": int(p),
                "radius": float(r),
                "alpha": certificates.alpha,
                "n": certificates.n,
            }
            for i, p, r in zip(
                certificates.index.tolist(),
                certificates.prediction.tolist(),
                certificates.radius.tolist(),
                strict=True,
            )
        ]
        for entry in impossible_certificates(
            records,
            smoothing=self.smoothing,
            num_classes=self.smoothed.num_classes,
            dim=int(x[0].numel()),
            cap=not self.smoothing.on_grid,  # without n: capped at MAX_SAMPLES samples
        ):
            found.setdefault(entry["index"], entry)
        mark_impossible(report.verdict, report.inputs, [found[i] for i in sorted(found)])
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
    ) -> dict[str, Checks]:
        """Every attack at every budget (ascending levels, then each input's own radius), then
        the line search; each stage's candidates of all attacks are checked in one PREDICT run.

        A candidate is generated and checked only where it can change a figure: for each
        attack and input, nothing is attacked or checked at or beyond the distance of an
        adversarial candidate that attack already has confirmed (the smallest adversarial
        distance, the empirical curves and the violations are what they would be otherwise;
        at the own radius such an input is already a violation).
        """
        n = x.shape[0]
        order = sorted(range(len(levels)), key=lambda j: levels[j])
        columns = [
            (j, torch.where(attacked, levels[j], 0.0).to(torch.float64), f"{levels[j]:.3g}")
            for j in order
        ]
        columns.append((len(levels), radius.clone(), "own radius"))
        width = len(columns) + len(SHRINK)
        states = [AttackState(attack, n, width, x) for attack in self.attacks]
        steps = len(columns) * len(states) + len(SHRINK)
        with Progress("audit", steps, "step", enabled=self.progress) as progress:
            for column, eps, label in columns:
                stage: list[tuple[AttackState, Candidates, torch.Tensor, int]] = []
                for state in states:
                    budget = torch.where(state.best.distance <= eps, 0.0, eps)
                    started = time.perf_counter()
                    found = state.attack.generate(
                        target, x, reference.to(x.device), budget.to(x.device)
                    )
                    state.checks.seconds += time.perf_counter() - started
                    if found.base_distance is not None:
                        state.checks.base_distance = found.base_distance.to(torch.float64).cpu()
                    stage.append((state, found, budget > 0, column))
                    progress.update(1, f"{state.attack.name} at budget {label}")
                self.checker.check_stage(x, stage, target.norm, reference, keys)
            # Line search towards x from each input's closest adversarial candidate after the
            # budgets, nearest first (a confirmed one makes the farther fractions unnecessary).
            shrunk = [
                [(s.best.shrunk(fraction, target), s.best.found) for fraction in SHRINK]
                for s in states
            ]
            for offset, fraction in enumerate(SHRINK):
                stage = [
                    (s, *shrunk[i][offset], len(columns) + offset) for i, s in enumerate(states)
                ]
                self.checker.check_stage(x, stage, target.norm, reference, keys)
                progress.update(1, f"line search at {fraction:g} of the closest adversarial")
        return {state.attack.name: state.checks for state in states}


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
    attacks: Sequence[str | Attack] | None = None,
    budgets: Sequence[float] = BUDGETS,
    predict_n: int = 1000,
    predict_alpha: float = 0.001,
    significance: float = 0.01,
    num_noise_samples: int = 16,
    clip_values: tuple[float, float] = (0.0, 1.0),
    batch_size: int | str = "auto",
    seed: int = 0,
    progress: bool = False,
) -> AuditReport:
    """Certify ``x`` (unless ``certificates`` are given) and audit the certificates.

    ``n0``, ``n``, ``alpha`` are CERTIFY's (Cohen et al. 2019), seeded with ``seed``; ``keys``
    are the inputs' dataset indices (default 0..N−1). The other keywords are :class:`Audit`'s.
    """
    runner = Audit(
        model,
        smoothing,
        num_classes,
        attacks=attacks,
        budgets=budgets,
        predict_n=predict_n,
        predict_alpha=predict_alpha,
        significance=significance,
        num_noise_samples=num_noise_samples,
        clip_values=clip_values,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
    )
    if certificates is None:
        certifier = cohen_certifier(model, smoothing, num_classes, clip_values=clip_values)
        certificates = certifier.certify(
            x, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed, keys=keys
        )
    if isinstance(certificates, Certificates):
        certificates = CertificateSet.from_certificates(certificates)
    return runner.run(x, labels, certificates)
