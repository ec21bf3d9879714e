"""AutoAttack (Croce & Hein 2020) from the ``pyautoattack`` package, as an audit attack.

``pyautoattack`` (PyPI) is keyword-only: ``AutoAttack(model, attacks=[...], eps=, norm=,
version="custom", seed=, device=)`` and ``run_standard_evaluation(x, y, batch_size=)`` returning
``(x_adv, y_adv)``. Here its model is the log of the soft smoothed classifier (mean softmax over
m seeded noise draws), so its APGD attacks the smoothed classifier as SmoothAdv does. The attack
takes one ``eps`` per call, so inputs are grouped by budget.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
from pyautoattack import AutoAttack as _PyAutoAttack

from rs_plugin._validation import RSValueError, check_int
from rs_plugin.adapters.art import SmoothedLogProbabilities
from rs_plugin.auditing.attack import Attack, AttackTarget, Candidates, budget_groups, project

__all__ = ["AutoAttack"]

_NORM = {"l1": "L1", "l2": "L2", "linf": "Linf"}
ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")


def _set_iterations(apgd: Any, steps: int) -> None:
    # pyautoattack derives its checkpoint schedule from n_iter in the constructor only.
    apgd.n_iter = steps
    apgd.n_iter_orig = steps
    apgd.n_iter_2 = max(int(0.22 * steps), 1)
    apgd.n_iter_min = max(int(0.06 * steps), 1)
    apgd.size_decr = max(int(0.03 * steps), 1)


class AutoAttack(Attack):
    """``pyautoattack``'s AutoAttack on the soft smoothed classifier.

    Args:
        attacks: pyautoattack attack names run in order (each input keeps the first success):
            any of apgd-ce, apgd-dlr, apgd-t, fab, fab-t, square. Default: APGD on the
            cross-entropy and targeted APGD on the DLR loss (the gradient half of the standard
            version).
        steps: APGD iterations (the standard version uses 100).
        target_classes: target classes of the targeted attacks (at most num_classes − 1).
        batch_size: inputs per call of the model.
    """

    name: ClassVar[str] = "autoattack"
    gradients: ClassVar[bool] = True
    dlr: ClassVar[bool] = True

    def __init__(
        self,
        attacks: tuple[str, ...] | list[str] = ("apgd-ce", "apgd-t"),
        steps: int = 20,
        target_classes: int = 3,
        batch_size: int = 250,
    ) -> None:
        chosen = tuple(attacks)
        if not chosen or any(a not in ATTACKS for a in chosen):
            raise RSValueError("attacks", f"a non-empty list of {ATTACKS}", attacks)
        self.attacks = chosen
        self.steps = check_int("steps", steps, 1)
        self.target_classes = check_int("target_classes", target_classes, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)

    def generate(
        self, target: AttackTarget, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor
    ) -> Candidates:
        model = SmoothedLogProbabilities(target.smoothed).eval()
        targets = min(self.target_classes, target.num_classes - 1)
        attacks = list(self.attacks)
        if target.num_classes <= 3:
            # The DLR losses need at least 3 classes (targeted DLR at least 4).
            attacks = [a for a in attacks if a in ("apgd-ce", "fab", "square")] or ["apgd-ce"]
        x_adv = x.clone()
        for value, rows in budget_groups(eps):
            runner = _PyAutoAttack(
                model,
                attacks=attacks,
                device=x.device,
                eps=value,
                norm=_NORM[target.norm],
                seed=target.seed,
                version="custom",
            )
            runner.verbose = False
            # pyautoattack's own checks log warnings; the audit runs the same diagnostics.
            runner.logger = logging.getLogger("rs_plugin.autoattack")
            for apgd in (runner.apgd, runner.apgd_targeted):
                _set_iterations(apgd, self.steps)
            runner.apgd_targeted.n_target_classes = targets
            runner.fab.n_target_classes = targets
            found, _ = runner.run_standard_evaluation(
                x[rows].detach(), y[rows].to(x.device), batch_size=self.batch_size
            )
            x_adv[rows] = found.detach().to(x)
        return Candidates(x=project(x, x_adv, eps, target.norm, target.clip_values))
