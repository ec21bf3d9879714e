"""Attacks on semantic certificates: worst-of-k grid and random search over transform parameters.

For a budget b in the certificate's parameter space, each attack tries parameters φ with
‖φ‖ ≤ b and keeps, per input, the one where the soft smoothed classifier gives the reference
class the lowest probability. The candidate handed to the audit is the transformed image
T(x, φ) together with φ:

* input-domain certificates (``input``, ``parametric=input``): the score is the soft smoothed
  classifier of the image the model receives, E[softmax f(perturb(T(x, φ)))];
* parametric certificates: the score is the parameter-smoothed classifier centred at φ,
  E[softmax f(T(x, φ + ε))], the function the certificate speaks about.

Radii in σ units (:class:`~rs_plugin.smoothings.semantic.Compose`, a :class:`Shadow` over several
parameters: the certified set is ‖δ/σ‖ < ρ) are searched in those units: proposals u with
‖u‖ ≤ b become the parameters φ = σ ⊙ u (each in its own unit), so the search fills the certified
ellipsoid (ℓ2) or box (ℓ∞) in parameter space, and distances are measured back as ‖φ/σ‖.

Both attacks are gradient-free (transforms such as nearest-neighbour resampling have no useful
gradient), so they are the semantic counterparts of the worst-of-k evaluation of Engstrom et al.
2019 used by TSS and DeformRS.
"""

from __future__ import annotations

import abc
import math
from typing import ClassVar

import torch

from rs_plugin._validation import RSValueError, check_int
from rs_plugin.auditing.attack import Attack, AttackTarget, Candidates
from rs_plugin.certification.model_runner import model_dtype
from rs_plugin.smoothings.base import Smoothing
from rs_plugin.smoothings.norms import LP_NORMS, lp_norm
from rs_plugin.smoothings.semantic import SemanticSmoothing

__all__ = [
    "SemanticGrid",
    "SemanticRandom",
    "ShiftedParameters",
    "parameter_distance",
    "parameter_scales",
    "parametric_soft",
]

# Images evaluated per forward pass while scoring (candidates × noise samples).
_CHUNK = 8192
# Rounding allowed when checking that a transformed image stays within the clip values.
_RANGE_SLACK = 1e-6


def parameter_norm(norm: str) -> str:
    """The ℓp norm of a parameter-space certificate: ``rotation`` → l2 (one parameter, |φ|),
    ``affine:linf`` → linf."""
    _, sep, suffix = norm.partition(":")
    if not sep:
        return "l2"
    if suffix not in LP_NORMS:
        raise RSValueError("norm", "a parameter space 'name' or 'name:l1|l2|linf'", norm)
    return suffix


def parameter_scales(smoothing: SemanticSmoothing) -> torch.Tensor | None:
    """(k,) float64 σ_j dividing each parameter when the radii are in σ units, else None."""
    if not smoothing.sigma_units:
        return None
    return torch.tensor(smoothing.parameter_sigmas, dtype=torch.float64)


def parameter_distance(
    params: torch.Tensor, norm: str, scales: torch.Tensor | None = None
) -> torch.Tensor:
    """(N,) distance of parameters (N, k) from the identity in the certificate's ``norm``,
    measured in σ units (‖φ/σ‖) when ``scales`` (k,) gives the σ_j (:func:`parameter_scales`)."""
    d = params.to(torch.float64)
    if scales is not None:
        d = d / scales.to(d.device)
    return lp_norm(d, parameter_norm(norm))


def parametric_soft(
    target: AttackTarget, x: torch.Tensor, params: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """(N, C) soft parameter-smoothed classifier centred at ``params``: the mean over m draws ε
    of softmax f(T(x, params + ε))."""
    smoothing = target.smoothing
    if not isinstance(smoothing, SemanticSmoothing):
        raise RSValueError("smoothing", "a semantic smoothing", smoothing)
    m = target.smoothed.num_noise_samples
    shifted = ShiftedParameters(smoothing, params.repeat_interleave(m, dim=0))
    images = shifted.perturb(x.repeat_interleave(m, dim=0), generator)
    logits = target.model(images.to(model_dtype(target.model)))  # cast as the vote runner does
    probs = torch.softmax(logits.to(images.dtype), dim=1)
    return probs.view(x.shape[0], m, -1).mean(dim=1)


class _ParameterSearch(Attack):
    """Shared scoring and selection; subclasses propose the parameters to try."""

    def applies_to(self, smoothing: Smoothing) -> str | None:
        if not isinstance(smoothing, SemanticSmoothing):
            return "certificates of an input-space noise (use pgd, autoattack, deepfool, cw_l2)"
        return None

    @abc.abstractmethod
    def proposals(
        self, k: int, budget: torch.Tensor, norm: str, generator: torch.Generator
    ) -> torch.Tensor:
        """(N, P, k) parameters with ‖φ‖ ≤ budget (N,) in ``norm`` (σ units where the radii
        are: :meth:`generate` scales them to the parameters' own units)."""

    @torch.no_grad()
    def generate(
        self, target: AttackTarget, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor
    ) -> Candidates:
        smoothing = target.smoothing
        if not isinstance(smoothing, SemanticSmoothing):
            raise RSValueError("smoothing", "a semantic smoothing", smoothing)
        generator = torch.Generator(device=x.device)
        generator.manual_seed(target.seed)
        k = smoothing.num_parameters
        norm = parameter_norm(target.norm)
        phis = self.proposals(k, eps.to(torch.float64), norm, generator)
        scales = parameter_scales(smoothing)
        if scales is not None:
            phis = phis * scales
        phis = phis.to(x.dtype)
        count = phis.shape[1]
        m = target.smoothed.num_noise_samples
        rows = max(1, _CHUNK // (count * m))
        best = torch.zeros(x.shape[0], k, dtype=x.dtype, device=x.device)
        for start in range(0, x.shape[0], rows):
            part = slice(start, start + rows)
            xs = x[part].repeat_interleave(count, dim=0)
            flat = phis[part].reshape(-1, k)
            if target.semantics == "parametric":
                # Common random numbers: every candidate is scored with the same draws.
                generator.manual_seed(target.seed)
                probs = parametric_soft(target, xs, flat, generator)
            else:
                images = smoothing.apply(xs, flat)
                probs = target.smoothed(images)
            labels = y[part].repeat_interleave(count)
            score = probs.gather(1, labels[:, None])[:, 0].view(-1, count)
            if target.semantics != "parametric":
                # An image outside the input range is no input at all: never a candidate.
                score = score.masked_fill(~_in_range(images, target).view(-1, count), math.inf)
            pick = score.argmin(dim=1)
            best[part] = phis[part][torch.arange(pick.shape[0]), pick]
        active = (eps > 0).to(x.dtype)[:, None]
        best = best * active
        images = smoothing.apply(x, best)
        if target.semantics == "parametric":
            images = images.clamp(*target.clip_values)
        else:
            # An input-domain certificate speaks of T(x, φ) itself: clipping it would check an
            # image outside the certified family (fog's inverse side leaves [0, 1]), so a
            # parameter whose image leaves the input range is dropped instead.
            active = active * _in_range(images, target).to(x.dtype)[:, None]
            best = best * active
        images = torch.where(active.view(-1, *([1] * (x.ndim - 1))) > 0, images, x)
        return Candidates(x=images, params=best)


def _in_range(images: torch.Tensor, target: AttackTarget) -> torch.Tensor:
    """(N,) whether each image lies within the target's clip values (up to rounding)."""
    low, high = target.clip_values
    flat = images.flatten(1)
    return (flat >= low - _RANGE_SLACK).all(dim=1) & (flat <= high + _RANGE_SLACK).all(dim=1)


class SemanticGrid(_ParameterSearch):
    """Worst of a grid of parameters within the budget.

    One parameter: ``points`` values evenly spaced on [−b, b] (both ends included). k parameters:
    ±b/j along each axis for j = 1..``points`` // 2 (the points where each coordinate alone
    spends the budget, and fractions of it).

    Args:
        points: grid values per parameter (>= 2).
    """

    name: ClassVar[str] = "semantic_grid"

    def __init__(self, points: int = 9) -> None:
        self.points = check_int("points", points, 2)

    def proposals(
        self, k: int, budget: torch.Tensor, norm: str, generator: torch.Generator
    ) -> torch.Tensor:
        if k == 1:
            steps = torch.linspace(-1.0, 1.0, self.points, dtype=torch.float64)
            return (budget[:, None] * steps)[:, :, None]
        levels = torch.arange(1, max(1, self.points // 2) + 1, dtype=torch.float64)
        axes = torch.eye(k, dtype=torch.float64)
        unit = torch.cat([axes, -axes])[None, :, :] / levels[:, None, None]
        unit = unit.reshape(-1, k)
        return budget[:, None, None] * unit[None]


class SemanticRandom(_ParameterSearch):
    """Worst of ``samples`` parameters drawn uniformly in the budget's ball (Gaussian directions
    normalised in the certificate's norm, radius b·U^(1/k); uniform in the box for ℓ∞).

    Args:
        samples: parameters tried per input and budget (>= 1).
    """

    name: ClassVar[str] = "semantic_random"

    def __init__(self, samples: int = 32) -> None:
        self.samples = check_int("samples", samples, 1)

    def proposals(
        self, k: int, budget: torch.Tensor, norm: str, generator: torch.Generator
    ) -> torch.Tensor:
        shape = (budget.shape[0], self.samples, k)
        if norm == "linf":
            u = torch.rand(shape, generator=generator, dtype=torch.float64)
            return budget[:, None, None] * (2.0 * u - 1.0)
        direction = torch.randn(shape, generator=generator, dtype=torch.float64)
        if norm == "l1":
            direction = direction.sign() * -torch.log(
                torch.rand(shape, generator=generator, dtype=torch.float64)
            )
        length = lp_norm(direction.reshape(-1, k), norm).view(shape[0], shape[1], 1)
        u = torch.rand((shape[0], shape[1], 1), generator=generator, dtype=torch.float64)
        return budget[:, None, None] * direction / length.clamp_min(1e-30) * u ** (1.0 / k)


class ShiftedParameters(Smoothing):
    """The parameter smoothing of ``base`` centred at ``params`` instead of the identity:
    perturb(x) = T(x, params + ε). ``params`` is (k,) for every row, or (B, k) one per row of
    the batch. PREDICT with it evaluates the parametric smoothed classifier at one candidate's
    parameters (the audit's check of a parametric certificate).
    """

    name: ClassVar[str] = "shifted_parameters"

    def __init__(self, base: SemanticSmoothing, params: torch.Tensor) -> None:
        self.base = base
        self.params = params.reshape(-1, base.num_parameters)
        self.norm = base.norm  # type: ignore[misc]

    def perturb(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = self.base.sample_parameters(x.shape[0], generator, x.device, x.dtype)
        return self.base.apply(x, noise + self.params.to(x))

    def radius(self, p_lower: torch.Tensor, dim: int) -> torch.Tensor:
        raise RSValueError("smoothing", "a smoothing centred at the identity to certify", self)
