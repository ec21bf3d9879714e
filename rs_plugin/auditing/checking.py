"""The audit's PREDICT checks of attack candidates, and each attack's closest adversarial.

A stage (every attack at one budget level, or one fraction of the line search) is checked in one
PREDICT run of the engine, batched across attacks and inputs. A candidate is checked only when it
moved, was asked for, and lies closer than the closest adversarial its attack has confirmed for
that input (:class:`ClosestAdversarial`); see :mod:`rs_plugin.auditing.runner` for why that
changes no figure the audit reports.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from rs_plugin._validation import RSValueError
from rs_plugin.auditing.attack import Attack, AttackTarget, Candidates
from rs_plugin.auditing.results import UNCHECKED, Checks
from rs_plugin.auditing.semantic_attacks import (
    ShiftedParameters,
    parameter_distance,
    parameter_scales,
)
from rs_plugin.certification.classifier import SmoothedClassifier
from rs_plugin.smoothings.norms import LP_NORMS, lp_norm
from rs_plugin.smoothings.semantic import SemanticSmoothing

__all__ = ["SHRINK", "AttackState", "Checker", "ClosestAdversarial"]


# Fractions of the closest adversarial candidate's perturbation checked after the budget levels.
SHRINK = (0.6, 0.7, 0.8, 0.9)


class ClosestAdversarial:
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
        self, found: Candidates, checks: Checks, column: int, reference: torch.Tensor
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


class AttackState:
    """One attack's checks so far and its closest confirmed adversarial candidates."""

    def __init__(self, attack: Attack, n: int, width: int, x: torch.Tensor) -> None:
        self.attack = attack
        self.checks = Checks(
            torch.full((n, width), float("inf"), dtype=torch.float64),
            torch.full((n, width), UNCHECKED, dtype=torch.int64),
        )
        self.best = ClosestAdversarial(x)


class Checker:
    """PREDICT (Cohen et al. 2019) at candidates, with ``predict_n`` samples at level
    ``predict_alpha``, seeded with ``seed``; every check draws its own noise key from ``keys``."""

    def __init__(
        self,
        smoothed: SmoothedClassifier,
        *,
        predict_n: int,
        predict_alpha: float,
        batch_size: int | str,
        seed: int,
    ) -> None:
        self.smoothed = smoothed
        self.predict_n = predict_n
        self.predict_alpha = predict_alpha
        self.batch_size = batch_size
        self.seed = seed

    def check_stage(
        self,
        x: torch.Tensor,
        stage: list[tuple[AttackState, Candidates, torch.Tensor, int]],
        norm: str,
        reference: torch.Tensor,
        keys: Any,
    ) -> None:
        """PREDICT at every candidate of a stage that moved, was wanted and is closer than its
        attack's closest confirmed adversarial; one engine run for all attacks' candidates."""
        picked: list[tuple[AttackState, Candidates, torch.Tensor, int]] = []
        for state, found, wanted, column in stage:
            if found.params is None:  # the point the certificates speak about (e.g. on a grid)
                found = dataclasses.replace(
                    found, x=self.smoothed.smoothing.attack_point(x, found.x)
                )
            d, moved = self._distances(x, found, norm)
            rows = torch.nonzero(moved & wanted.cpu() & (d < state.best.distance))[:, 0]
            state.checks.distance[rows, column] = d[rows]
            picked.append((state, found, rows, column))
        started = time.perf_counter()
        predicted = self._predict_candidates(
            x, [(found, rows) for _, found, rows, _ in picked], keys
        )
        share = (time.perf_counter() - started) / max(1, sum(len(r) for _, _, r, _ in picked))
        for (state, found, rows, column), classes in zip(picked, predicted, strict=True):
            state.checks.predicted[rows, column] = classes
            state.checks.seconds += share * len(rows)
            state.best.update(found, state.checks, column, reference)

    def _distances(
        self, x: torch.Tensor, found: Candidates, norm: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) distance of each candidate in the certificates' space, and whether it moved."""
        if found.params is not None:
            smoothing = self.smoothed.smoothing
            assert isinstance(smoothing, SemanticSmoothing)
            d = parameter_distance(found.params, norm, parameter_scales(smoothing)).cpu()
            return d, d > 0
        if norm not in LP_NORMS:
            raise RSValueError("attacks", f"attacks returning parameters for {norm!r}", "images")
        d = lp_norm((found.x.to(torch.float64) - x.to(torch.float64)), norm).cpu()
        return d, d > 0

    def predict(self, points: torch.Tensor, keys: Any) -> torch.Tensor:
        """PREDICT at every row of ``points`` (one engine run), each with its own noise key."""
        if not len(points):
            return torch.zeros(0, dtype=torch.int64)
        result = self.smoothed.predict(
            points,
            n=self.predict_n,
            alpha=self.predict_alpha,
            batch_size=self.batch_size,
            seed=self.seed,
            keys=[next(keys) for _ in range(len(points))],
        )
        return result.prediction.cpu()

    def _predict_candidates(
        self, x: torch.Tensor, batches: list[tuple[Candidates, torch.Tensor]], keys: Any
    ) -> list[torch.Tensor]:
        """PREDICT at the given rows of each attack's candidates, in one run when they are
        images the model receives; a parametric certificate's check runs per candidate."""
        if isinstance(
            self.smoothed.smoothing, SemanticSmoothing
        ) and not self.smoothed.smoothing.semantics_label.endswith("input"):
            return [
                self._predict_parametric(x, found, rows, keys)
                if found.params is not None
                else self.predict(found.x[rows.to(found.x.device)], keys)
                for found, rows in batches
            ]
        points = [found.x[rows.to(found.x.device)] for found, rows in batches]
        classes = self.predict(torch.cat(points) if points else x[:0], keys)
        return list(classes.split([len(rows) for _, rows in batches]))

    def _predict_parametric(
        self, x: torch.Tensor, found: Candidates, rows: torch.Tensor, keys: Any
    ) -> torch.Tensor:
        """A parametric certificate speaks of the classifier smoothed over parameters: PREDICT
        it centred at each candidate's parameters, on the clean input."""
        assert found.params is not None and isinstance(self.smoothed.smoothing, SemanticSmoothing)
        out = []
        for row in rows.tolist():
            shifted = SmoothedClassifier(
                self.smoothed.model,
                ShiftedParameters(self.smoothed.smoothing, found.params[row]),
                self.smoothed.num_classes,
            )
            result = shifted.predict(
                x[row : row + 1],
                n=self.predict_n,
                alpha=self.predict_alpha,
                batch_size=self.batch_size,
                seed=self.seed,
                keys=[next(keys)],
            )
            out.append(int(result.prediction[0]))
        return torch.tensor(out, dtype=torch.int64)
