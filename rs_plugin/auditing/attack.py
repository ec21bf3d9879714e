"""The contract of an audit attack: what it is given and what it must return.

An attack registered in the ``rs_plugin.attacks`` entry-point group is a factory (usually the
class) called with keyword settings and returning an :class:`Attack`. The audit
(:mod:`rs_plugin.auditing.runner`) hands it an :class:`AttackTarget`, the inputs, their reference
classes and one budget per input, and gets back one candidate per input. The audit, not the attack,
measures each candidate's distance in the certificate's space and checks it with a fresh PREDICT,
so an attack that overshoots its budget or returns junk cannot produce a false violation; it can
only fail to find one.

Budgets and distances are in the certificate's space: an ℓp norm of the input (``l1``, ``l2``,
``linf``) for additive noises, or a transform's parameter space (``rotation`` in degrees,
``affine:l2``, ...) for semantic smoothings, whose attacks return the parameters they used.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from rs_plugin._registry import load_plugin
from rs_plugin._validation import RSValueError
from rs_plugin.certification.classifier import SmoothedClassifier
from rs_plugin.smoothings.base import Smoothing
from rs_plugin.smoothings.norms import LP_NORMS, lp_norm

__all__ = ["Attack", "AttackTarget", "Candidates", "budget_groups", "load_attack", "project"]


@dataclass(frozen=True)
class AttackTarget:
    """What an attack may use.

    Attributes:
        smoothed: the smoothed classifier; ``smoothed(x)`` is the soft smoothed classifier (mean
            softmax over ``smoothed.num_noise_samples`` seeded perturbations, differentiable),
            ``smoothed.model`` the base classifier (logits), ``smoothed.smoothing`` the smoothing.
        norm: the space budgets and distances are measured in (the certificates' ``norm``).
        semantics: the certificates' semantics (``input``, ``parametric``, ``parametric=input``).
        clip_values: the valid input range (low, high); candidates must stay inside it.
        seed: seed for the attack's own randomness (random starts, random search).
    """

    smoothed: SmoothedClassifier
    norm: str
    semantics: str
    clip_values: tuple[float, float]
    seed: int

    @property
    def model(self) -> nn.Module:
        return self.smoothed.model

    @property
    def smoothing(self) -> Smoothing:
        return self.smoothed.smoothing

    @property
    def num_classes(self) -> int:
        return self.smoothed.num_classes


@dataclass(frozen=True)
class Candidates:
    """One adversarial candidate per input.

    Attributes:
        x: (N, ...) the inputs the smoothed classifier is to be evaluated at (for a semantic
            attack, the transformed images T(x, params)).
        params: (N, k) transform parameters for semantic attacks (distances and parametric
            checks use them), else None.
        base_distance: (N,) optional per-input figure the attack measured on its own (e.g. the
            base model's minimal adversarial ℓ2 distance found by DeepFool), reported as is.
    """

    x: torch.Tensor
    params: torch.Tensor | None = None
    base_distance: torch.Tensor | None = None


class Attack(abc.ABC):
    """Base class of audit attacks: implement :meth:`generate` (and :meth:`applies_to`).

    ``generate`` is called once per budget level with every input; rows whose budget is 0 must
    come back unchanged (the audit does not check them). Randomness comes from
    ``target.seed``, never the global RNG.
    """

    name: ClassVar[str]
    # The norms (l1, l2, linf) the attack can work in; the audit picks the certificates' norm.
    norms: ClassVar[tuple[str, ...]] = LP_NORMS
    # Whether it follows the soft smoothed classifier's gradients (the audit then checks that
    # they are not zero), and whether it uses AutoAttack's DLR losses (3 classes or more).
    gradients: ClassVar[bool] = False
    dlr: ClassVar[bool] = False
    # Whether it needs the base model's input gradients (transfer attacks): a model without
    # any is then refused before the first attack instead of failing inside it.
    base_gradients: ClassVar[bool] = False

    def applies_to(self, smoothing: Smoothing) -> str | None:
        """None when this attack can audit certificates of ``smoothing``, else the reason."""
        if smoothing.norm not in LP_NORMS:
            return (
                f"certificates in {smoothing.norm!r} are not input-space lp balls "
                "(use semantic_grid or semantic_random)"
            )
        if smoothing.norm not in self.norms:
            return f"{self.name} attacks in {self.norms}, not {smoothing.norm}"
        return None

    @abc.abstractmethod
    def generate(
        self, target: AttackTarget, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor
    ) -> Candidates:
        """Candidates for inputs ``x`` (N, ...) of reference classes ``y`` (N,) within the
        per-input budgets ``eps`` (N,) in ``target.norm`` (0: leave the row unchanged)."""

    def config(self) -> dict[str, object]:
        """The attack's settings as reported (name plus its constructor's keywords)."""
        settings = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return {"name": self.name, **settings}

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({settings})"


def project(
    x: torch.Tensor,
    x_adv: torch.Tensor,
    eps: torch.Tensor,
    norm: str,
    clip_values: tuple[float, float],
) -> torch.Tensor:
    """x_adv moved into the ``norm`` ball of radius ``eps`` (per row) around x, then clipped.

    ℓ2 and ℓ∞ projections are exact; ℓ1 is rescaled onto the ball (a valid, not nearest,
    point). Clipping after projecting keeps ℓ∞ and ℓ1 within budget and ℓ2 too (clipping to a
    box containing x never increases the distance to x).
    """
    if norm not in LP_NORMS:
        raise RSValueError("norm", f"one of {LP_NORMS}", norm)
    delta = (x_adv - x).to(torch.float64)
    shape = (-1,) + (1,) * (x.ndim - 1)
    budget = eps.to(torch.float64).view(shape)
    if norm == "linf":
        delta = torch.maximum(torch.minimum(delta, budget), -budget)
    else:
        length = lp_norm(delta, norm).view(shape)
        delta = delta * torch.clamp(budget / length.clamp_min(1e-30), max=1.0)
    low, high = clip_values
    return (x.to(torch.float64) + delta).clamp(low, high).to(x.dtype)


def budget_groups(eps: torch.Tensor) -> list[tuple[float, torch.Tensor]]:
    """(budget, rows) for each distinct positive budget, for attacks that take one ``eps``."""
    return [(float(v), torch.nonzero(eps == v)[:, 0]) for v in torch.unique(eps[eps > 0])]


def load_attack(name: str, **params: Any) -> Attack:
    """Instantiate the audit attack registered as ``name`` in ``rs_plugin.attacks``."""
    factory = load_plugin("rs_plugin.attacks", name, "attacks")
    attack = factory(**params)
    if not isinstance(attack, Attack):
        raise RSValueError(
            "attacks",
            "an entry point that builds an rs_plugin.Attack",
            f"{name} -> {type(attack).__name__}",
        )
    return attack
