"""Audit attacks run through ART: SmoothAdv PGD, ART's AutoAttack, DeepFool and Carlini–Wagner.

Each class is an :class:`rs_plugin.auditing.attack.Attack` registered in the
``rs_plugin.attacks`` entry-point group; the audit (:mod:`rs_plugin.auditing.runner`) calls
``generate`` once per budget level.

* ``pgd`` (:class:`SmoothAdvPGD`): ART's ``ProjectedGradientDescent`` on the ART adapter with
  log-probability outputs, so the loss is −log of the soft smoothed classifier's probability of
  the reference class, averaged over m noise draws: the SmoothAdv attack of Salman et al. 2019.
  Budgets are per input (ART's array ``eps``).
* ``art_autoattack`` (:class:`ARTAutoAttack`): ART's ``AutoAttack`` with APGD on the
  cross-entropy and on the DLR loss, on the same estimator.
* ``deepfool`` and ``cw_l2`` (:class:`DeepFoolTransfer`, :class:`CarliniWagnerTransfer`):
  minimal-norm attacks on the *base* model. The base model's adversarial direction δ is found
  once per input (its ℓ2 length is reported as the base model's adversarial distance) and the
  candidate at budget b is x + b·δ/‖δ‖, transferred to the smoothed classifier.

Settings are explicit keywords; the defaults are light enough for the embedded digits audit.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from rs_plugin._validation import MissingExtraError, check_int, check_positive
from rs_plugin.adapters.art import PyTorchSmoothedClassifier
from rs_plugin.auditing.attack import Attack, AttackTarget, Candidates, budget_groups, project
from rs_plugin.certification.model_runner import model_dtype
from rs_plugin.smoothings.norms import lp_norm

try:
    from art.attacks.evasion import (
        AutoAttack,
        AutoProjectedGradientDescent,
        CarliniL2Method,
        DeepFool,
        ProjectedGradientDescent,
    )
    from art.estimators.classification import PyTorchClassifier
except ImportError as error:
    raise MissingExtraError("the ART audit attacks", "art", error.name or "art") from error

__all__ = ["ARTAutoAttack", "CarliniWagnerTransfer", "DeepFoolTransfer", "SmoothAdvPGD"]

ART_NORM: dict[str, Any] = {"l1": 1, "l2": 2, "linf": np.inf}


def _device_type(target: AttackTarget) -> str:
    return "gpu" if target.smoothed.device.type == "cuda" else "cpu"


def smoothed_estimator(target: AttackTarget, input_shape: tuple[int, ...]) -> Any:
    """The ART estimator of the soft smoothed classifier (log-probability outputs)."""
    return PyTorchSmoothedClassifier(
        target.model,
        nn.CrossEntropyLoss(),
        input_shape,
        target.num_classes,
        clip_values=target.clip_values,
        device_type=_device_type(target),
        smoothing=target.smoothing,
        num_noise_samples=target.smoothed.num_noise_samples,
        outputs="log_probabilities",
        seed=target.seed,
    )


class _CastInputs(nn.Module):
    """A float16/bfloat16 base model as the vote runner calls it: float32 inputs cast to its
    dtype, float32 logits (ART feeds and reads float32)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(model_dtype(self.model))).float()


def base_estimator(target: AttackTarget, input_shape: tuple[int, ...]) -> Any:
    """ART's ``PyTorchClassifier`` of the base model (logits)."""
    model = target.model
    return PyTorchClassifier(
        model if model_dtype(model) in (torch.float32, torch.float64) else _CastInputs(model),
        nn.CrossEntropyLoss(),
        input_shape,
        target.num_classes,
        clip_values=target.clip_values,
        device_type=_device_type(target),
    )


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float32)


class SmoothAdvPGD(Attack):
    """SmoothAdv PGD (Salman et al. 2019) through ART's ``ProjectedGradientDescent``.

    Args:
        steps: PGD iterations per budget.
        step_fraction: step size as a fraction of the budget (ART's ``eps_step``).
        restarts: random initialisations (ART's ``num_random_init``; 0 starts at x, as
            SmoothAdv does, and lets ART take every input's budget in one call).
        batch_size: inputs per ART batch.
    """

    name: ClassVar[str] = "pgd"
    gradients: ClassVar[bool] = True

    def __init__(
        self, steps: int = 20, step_fraction: float = 0.25, restarts: int = 0, batch_size: int = 128
    ) -> None:
        self.steps = check_int("steps", steps, 1)
        self.step_fraction = check_positive("step_fraction", step_fraction)
        self.restarts = check_int("restarts", restarts, 0)
        self.batch_size = check_int("batch_size", batch_size, 1)

    def generate(
        self, target: AttackTarget, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor
    ) -> Candidates:
        estimator = smoothed_estimator(target, tuple(x.shape[1:]))
        x_adv = x.clone()
        if self.restarts:
            # ART draws random starts for one scalar eps only: one call per distinct budget.
            groups: list[tuple[Any, torch.Tensor]] = [
                (np.float32(b), rows) for b, rows in budget_groups(eps)
            ]
        else:
            rows = torch.nonzero(eps > 0)[:, 0]
            shape = (len(rows),) + (1,) * (x.ndim - 1)
            groups = [(eps[rows].cpu().numpy().astype(np.float32).reshape(shape), rows)]
        for budget, rows in groups:
            if not len(rows):
                continue
            attack = ProjectedGradientDescent(
                estimator,
                norm=ART_NORM[target.norm],
                eps=budget,
                eps_step=budget * np.float32(self.step_fraction),
                max_iter=self.steps,
                num_random_init=self.restarts,
                batch_size=self.batch_size,
                verbose=False,
            )
            found = attack.generate(_numpy(x[rows]), y=y[rows].cpu().numpy())
            x_adv[rows] = torch.from_numpy(found).to(x)
        return Candidates(x=project(x, x_adv, eps, target.norm, target.clip_values))


class ARTAutoAttack(Attack):
    """ART's ``AutoAttack`` with APGD-CE and APGD-DLR on the soft smoothed classifier.

    ART's AutoAttack runs a list of attacks and keeps, per input, the first that succeeds. Its
    default list includes attacks that read hard labels; here it gets APGD on the cross-entropy
    and on the difference-of-logits ratio (DLR needs at least 3 classes), ``steps`` iterations
    each, one random start.

    Args:
        steps: APGD iterations per loss.
        batch_size: inputs per ART batch.
    """

    name: ClassVar[str] = "art_autoattack"
    gradients: ClassVar[bool] = True
    dlr: ClassVar[bool] = True

    def __init__(self, steps: int = 20, batch_size: int = 64) -> None:
        self.steps = check_int("steps", steps, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)

    def generate(
        self, target: AttackTarget, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor
    ) -> Candidates:
        estimator = smoothed_estimator(target, tuple(x.shape[1:]))
        norm = ART_NORM[target.norm]
        losses = ["cross_entropy"] + (["difference_logits_ratio"] if target.num_classes > 2 else [])
        x_adv = x.clone()
        for budget, rows in budget_groups(eps):
            apgd = [
                AutoProjectedGradientDescent(
                    estimator,
                    norm=norm,
                    eps=budget,
                    eps_step=budget / 4,
                    max_iter=self.steps,
                    nb_random_init=1,
                    batch_size=self.batch_size,
                    loss_type=loss,
                    verbose=False,
                )
                for loss in losses
            ]
            attack = AutoAttack(
                estimator,
                norm=norm,
                eps=budget,
                eps_step=budget / 4,
                attacks=apgd,
                batch_size=self.batch_size,
            )
            found = attack.generate(_numpy(x[rows]), y=y[rows].cpu().numpy())
            x_adv[rows] = torch.from_numpy(found).to(x)
        return Candidates(x=project(x, x_adv, eps, target.norm, target.clip_values))


class _Transfer(Attack):
    """Minimal-norm attack on the base model, scaled to each budget along its direction."""

    base_gradients: ClassVar[bool] = True

    def __init__(self) -> None:
        self._memo: tuple[torch.Tensor, torch.Tensor] | None = None

    @abc.abstractmethod
    def base_adversarial(self, estimator: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The base model's adversarial examples for ``x`` of labels ``y`` (ART arrays)."""

    def _direction(self, target: AttackTarget, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._memo is not None and torch.equal(self._memo[0], x):
            return self._memo[1]
        estimator = base_estimator(target, tuple(x.shape[1:]))
        found = self.base_adversarial(estimator, _numpy(x), y.cpu().numpy())
        delta = torch.from_numpy(found).to(x) - x
        self._memo = (x.clone(), delta)
        return delta

    def generate(
        self, target: AttackTarget, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor
    ) -> Candidates:
        delta = self._direction(target, x, y).to(torch.float64)
        length = lp_norm(delta, target.norm)
        shape = (-1,) + (1,) * (x.ndim - 1)
        scale = torch.where(length > 0, eps.to(torch.float64) / length.clamp_min(1e-30), 0.0)
        moved = (x.to(torch.float64) + delta * scale.view(shape)).to(x.dtype)
        # A zero budget gives scale 0, so those rows come back as x.
        x_adv = project(x, moved, eps, target.norm, target.clip_values)
        base = lp_norm(delta, "l2")
        # A zero direction means the attack found nothing (or the input was already misclassified).
        base = torch.where(base > 0, base, torch.full_like(base, float("nan")))
        return Candidates(x=x_adv, base_distance=base)


class DeepFoolTransfer(_Transfer):
    """ART's ``DeepFool`` on the base model (ℓ2 minimal perturbation), transferred.

    Args:
        max_iter: DeepFool iterations.
        overshoot: DeepFool's overshoot.
        batch_size: inputs per ART batch.
    """

    name: ClassVar[str] = "deepfool"

    def __init__(self, max_iter: int = 50, overshoot: float = 0.02, batch_size: int = 128) -> None:
        super().__init__()
        self.max_iter = check_int("max_iter", max_iter, 1)
        self.overshoot = check_positive("overshoot", overshoot)
        self.batch_size = check_int("batch_size", batch_size, 1)

    def base_adversarial(self, estimator: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        attack = DeepFool(
            estimator,
            max_iter=self.max_iter,
            epsilon=self.overshoot,
            batch_size=self.batch_size,
            verbose=False,
        )
        return np.asarray(attack.generate(x))


class CarliniWagnerTransfer(_Transfer):
    """ART's ``CarliniL2Method`` on the base model (ℓ2 minimal perturbation), transferred.

    Args:
        max_iter: optimisation steps per binary-search step.
        binary_search_steps: searches over the trade-off constant.
        learning_rate: Adam step size.
        batch_size: inputs per ART batch.
    """

    name: ClassVar[str] = "cw_l2"

    def __init__(
        self,
        max_iter: int = 20,
        binary_search_steps: int = 5,
        learning_rate: float = 0.05,
        batch_size: int = 128,
    ) -> None:
        super().__init__()
        self.max_iter = check_int("max_iter", max_iter, 1)
        self.binary_search_steps = check_int("binary_search_steps", binary_search_steps, 1)
        self.learning_rate = check_positive("learning_rate", learning_rate)
        self.batch_size = check_int("batch_size", batch_size, 1)

    def base_adversarial(self, estimator: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        labels = np.eye(estimator.nb_classes, dtype=np.float32)[y]
        attack = CarliniL2Method(
            estimator,
            max_iter=self.max_iter,
            binary_search_steps=self.binary_search_steps,
            learning_rate=self.learning_rate,
            initial_const=1.0,
            batch_size=self.batch_size,
            verbose=False,
        )
        return np.asarray(attack.generate(x, y=labels))
