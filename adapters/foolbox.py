"""Foolbox 3 (Rauber et al. 2017, 2020): the smoothed classifier as a Foolbox model, and
Foolbox attacks as audit attacks.

Needs the optional extra: ``pip install 'rs-plugin[foolbox]'``. Only this module imports Foolbox.

* :func:`foolbox_model` wraps an :class:`rs_plugin.SmoothedClassifier` as a
  ``foolbox.PyTorchModel`` whose logits are log p(x), with p the soft smoothed classifier (mean
  softmax over m seeded perturbations, differentiable) and whose bounds are the classifier's
  clip values, so any Foolbox attack runs against it: its cross-entropy is the SmoothAdv loss
  −log p_y(x) of Salman et al. 2019.
* :class:`FixedBudgetAttack` turns a Foolbox ``FixedEpsilonAttack`` into an
  :class:`rs_plugin.Attack`; :class:`MinimalNormAttack` does the same for a
  ``MinimizationAttack``. The registered attacks (``rs_plugin.attacks`` entry points) are
  ``foolbox_pgd`` (:class:`FoolboxPGD`), ``foolbox_fmn`` (:class:`FoolboxFMN`) and
  ``foolbox_ddn`` (:class:`FoolboxDDN`).

Budgets. The audit gives every input its own budget r; a Foolbox fixed-epsilon attack takes one
epsilon per call. Every input is instead attacked in one call, in coordinates scaled per input:
with u the attacked variable, the model sees x' = clip(x + s·(u − x)) with s = r / r_min ≥ 1 and
Foolbox's epsilon = r_min. The map sends the ball ‖u − x‖ ≤ r_min inside the box onto exactly
the feasible set {‖x' − x‖ ≤ r} ∩ box (clipping towards a box containing x never lengthens a
perturbation, and every feasible x' has the preimage x + (x' − x)/s), and the attack's random
start, steps and projection, proportional to epsilon, become those of a run at epsilon = r.

Whatever an attack returns, the audit measures the candidate's distance itself and checks it
with a fresh PREDICT, so a Foolbox attack can only fail to find a violation, never invent one.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from torch import nn

from rs_plugin._validation import MissingExtraError, RSValueError, check_int, check_positive
from rs_plugin.auditing.attack import Attack, AttackTarget, Candidates, project
from rs_plugin.certification.classifier import SmoothedClassifier
from rs_plugin.smoothings.norms import lp_norm

try:
    import foolbox as fb
except ImportError as error:  # pragma: no cover - exercised in a subprocess without the extra
    raise MissingExtraError(
        "the Foolbox attacks and model", "foolbox", error.name or "foolbox"
    ) from error

__all__ = [
    "FixedBudgetAttack",
    "FoolboxDDN",
    "FoolboxFMN",
    "FoolboxPGD",
    "MinimalNormAttack",
    "foolbox_model",
]

# Probabilities below this are clipped before the logarithm (a finite loss and gradient).
_TINY = 1e-12


class _LogProbabilities(nn.Module):
    """x ↦ log p(x), (B, C): the soft smoothed classifier's log-probabilities, noise seeded by
    ``seed`` on every call (the same x always gives the same output)."""

    def __init__(self, smoothed: SmoothedClassifier, seed: int) -> None:
        super().__init__()
        self.smoothed = smoothed
        self.seed = seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        return torch.log(self.smoothed(x, generator).clamp_min(_TINY))


def _bounds(chosen: Any) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in chosen)
    except (TypeError, ValueError):
        low, high = 0.0, 0.0
    if not low < high:
        raise RSValueError(
            "bounds", "a pair (low, high) with low < high, or a classifier with clip_values", chosen
        )
    return low, high


def foolbox_model(
    smoothed: SmoothedClassifier,
    *,
    bounds: tuple[float, float] | None = None,
    seed: int | None = None,
) -> Any:
    """The soft smoothed classifier as a ``foolbox.PyTorchModel``.

    Its logits (B, C) are log p(x), p(x) = (1/m) Σ_i softmax(f(x + δ_i)) with m =
    ``smoothed.num_noise_samples`` perturbations drawn afresh from ``seed`` (default
    ``smoothed.seed``) on every call, so the model is deterministic and differentiable in x; its
    argmax is the soft smoothed classifier's prediction, not the certified (hard, Monte-Carlo)
    one. ``bounds`` defaults to ``smoothed.clip_values``; one of them is required.
    """
    if not isinstance(smoothed, SmoothedClassifier):
        raise RSValueError("smoothed", "an rs_plugin.SmoothedClassifier", smoothed)
    low, high = _bounds(smoothed.clip_values if bounds is None else bounds)
    seed = smoothed.seed if seed is None else check_int("seed", seed, 0)
    module = _LogProbabilities(smoothed, seed).eval()
    return fb.PyTorchModel(module, bounds=(low, high), device=smoothed.device)


class _PerInputBudget(nn.Module):
    """u ↦ model(clip(x + s·(u − x))): a budget of r_min in u is a budget of s·r_min in x'."""

    def __init__(
        self, model: nn.Module, x: torch.Tensor, scale: torch.Tensor, clip: tuple[float, float]
    ) -> None:
        super().__init__()
        self.model = model
        self.x, self.scale, self.clip = x, scale, clip

    def image(self, u: torch.Tensor) -> torch.Tensor:
        return (self.x + self.scale * (u - self.x)).clamp(*self.clip)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.model(self.image(u))


class FixedBudgetAttack(Attack):
    """A Foolbox ``FixedEpsilonAttack`` on the soft smoothed classifier, every input at its own
    budget in one call (module docstring). Subclasses implement :meth:`foolbox_attack`.

    Random starts draw from the global torch generator inside Foolbox; they run on a private copy
    of its state seeded with ``target.seed``, so the caller's stream is untouched.
    """

    gradients: ClassVar[bool] = True

    @abc.abstractmethod
    def foolbox_attack(self, norm: str) -> Any:
        """The Foolbox attack for budgets in ``norm`` (one of ``self.norms``)."""

    def generate(
        self, target: AttackTarget, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor
    ) -> Candidates:
        x_adv = x.clone()
        rows = torch.nonzero(eps > 0)[:, 0]
        if len(rows):
            x_adv[rows] = self._attack(target, x[rows], y[rows], eps[rows])
        return Candidates(x=project(x, x_adv, eps, target.norm, target.clip_values))

    def _attack(
        self, target: AttackTarget, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        unit = float(eps.min())
        scale = (eps / unit).to(x).view(-1, *([1] * (x.ndim - 1)))
        smoothed = _LogProbabilities(target.smoothed, target.smoothed.seed)
        scaled = _PerInputBudget(smoothed, x.detach(), scale, target.clip_values).eval()
        model = fb.PyTorchModel(scaled, bounds=target.clip_values, device=x.device)
        criterion = fb.criteria.Misclassification(y.to(x.device).long())
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(target.seed)
            _, clipped, _ = self.foolbox_attack(target.norm)(
                model, x.detach(), criterion, epsilons=unit
            )
        return scaled.image(clipped).detach()


class MinimalNormAttack(Attack):
    """A Foolbox ``MinimizationAttack`` on the soft smoothed classifier, swept along its
    direction. Subclasses implement :meth:`foolbox_attack`.

    The attack finds one adversarial x + δ per input (once per set of inputs: the audit calls
    ``generate`` at several budgets with the same inputs), and the candidate at budget b is
    x + b·δ/‖δ‖ (clipped to the box): beyond the soft classifier's boundary when b ≥ ‖δ‖, so the
    audit's budget levels and line search locate the hard classifier's boundary along δ.
    """

    gradients: ClassVar[bool] = True

    def __init__(self) -> None:
        self._memo: tuple[AttackTarget, torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @abc.abstractmethod
    def foolbox_attack(self, norm: str) -> Any:
        """The Foolbox attack minimising ``norm`` (one of ``self.norms``)."""

    def _direction(self, target: AttackTarget, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        memo = self._memo
        if memo is not None and memo[0] is target and torch.equal(memo[1], x):
            if torch.equal(memo[2], y):
                return memo[3]
        model = foolbox_model(target.smoothed, bounds=target.clip_values)
        criterion = fb.criteria.Misclassification(y.to(x.device).long())
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(target.seed)
            raw, _, _ = self.foolbox_attack(target.norm)(
                model, x.detach(), criterion, epsilons=None
            )
        delta = (raw.detach() - x).to(torch.float64)
        self._memo = (target, x.clone(), y.clone(), delta)
        return delta

    def generate(
        self, target: AttackTarget, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor
    ) -> Candidates:
        delta = self._direction(target, x, y)
        length = lp_norm(delta, target.norm)
        scale = torch.where(length > 0, eps.to(torch.float64) / length.clamp_min(1e-30), 0.0)
        moved = (x.to(torch.float64) + delta * scale.view(-1, *([1] * (x.ndim - 1)))).to(x.dtype)
        # A zero budget (or a zero direction) gives scale 0: the row comes back as x.
        return Candidates(x=project(x, moved, eps, target.norm, target.clip_values))


class FoolboxPGD(FixedBudgetAttack):
    """Foolbox's projected gradient descent (``L1PGD``, ``L2PGD``, ``LinfPGD`` by the
    certificates' norm) on the cross-entropy of the soft smoothed classifier, each input at its
    own budget: SmoothAdv's attack (Salman et al. 2019) as Foolbox runs it.

    Args:
        steps: gradient steps per budget.
        rel_stepsize: step length as a fraction of the budget.
        random_start: start from a uniform point of the ball (seeded with the audit's seed).
    """

    name: ClassVar[str] = "foolbox_pgd"

    def __init__(
        self, steps: int = 20, rel_stepsize: float = 0.1, random_start: bool = True
    ) -> None:
        self.steps = check_int("steps", steps, 1)
        self.rel_stepsize = check_positive("rel_stepsize", rel_stepsize)
        if not isinstance(random_start, bool):
            raise RSValueError("random_start", "True or False", random_start)
        self.random_start = random_start

    def foolbox_attack(self, norm: str) -> Any:
        cls: Any = {"l1": fb.attacks.L1PGD, "l2": fb.attacks.L2PGD, "linf": fb.attacks.LinfPGD}[
            norm
        ]
        return cls(rel_stepsize=self.rel_stepsize, steps=self.steps, random_start=self.random_start)


class FoolboxFMN(MinimalNormAttack):
    """Foolbox's fast minimum-norm attack (Pintor et al. 2021; ``L1FMNAttack``,
    ``L2FMNAttack``, ``LInfFMNAttack`` by the certificates' norm) on the soft smoothed classifier.

    Args:
        steps: FMN iterations.
        max_stepsize: FMN's initial step size (cosine-annealed).
        gamma: FMN's rate of change of the norm constraint.
    """

    name: ClassVar[str] = "foolbox_fmn"

    def __init__(self, steps: int = 50, max_stepsize: float = 1.0, gamma: float = 0.05) -> None:
        super().__init__()
        self.steps = check_int("steps", steps, 1)
        self.max_stepsize = check_positive("max_stepsize", max_stepsize)
        self.gamma = check_positive("gamma", gamma)

    def foolbox_attack(self, norm: str) -> Any:
        cls: Any = {
            "l1": fb.attacks.L1FMNAttack,
            "l2": fb.attacks.L2FMNAttack,
            "linf": fb.attacks.LInfFMNAttack,
        }[norm]
        return cls(steps=self.steps, max_stepsize=self.max_stepsize, gamma=self.gamma)


class FoolboxDDN(MinimalNormAttack):
    """Foolbox's decoupled direction and norm attack (Rony et al. 2019, ``DDNAttack``): ℓ2
    minimal perturbations of the soft smoothed classifier.

    Args:
        steps: DDN iterations.
        init_epsilon: initial norm of the perturbation.
        gamma: DDN's factor of norm change per step.
    """

    name: ClassVar[str] = "foolbox_ddn"
    norms: ClassVar[tuple[str, ...]] = ("l2",)

    def __init__(self, steps: int = 50, init_epsilon: float = 1.0, gamma: float = 0.05) -> None:
        super().__init__()
        self.steps = check_int("steps", steps, 1)
        self.init_epsilon = check_positive("init_epsilon", init_epsilon)
        self.gamma = check_positive("gamma", gamma)

    def foolbox_attack(self, norm: str) -> Any:
        return fb.attacks.DDNAttack(
            init_epsilon=self.init_epsilon, steps=self.steps, gamma=self.gamma
        )
