"""The interface every smoothing implements.

A smoothing knows two things, and the engine asks nothing else of it:

* how to perturb a batch of inputs on their device with a given ``torch.Generator``
  (:meth:`Smoothing.perturb`, and its in-place form :meth:`Smoothing.perturb_`, which the engine
  calls on slices of its reused batch buffer), and
* how to turn a lower confidence bound ``p_lower`` on the top-class probability into a certified
  radius, tagged with the norm (or parameter space) it is measured in (:meth:`Smoothing.radius`;
  a smoothing that certifies several norms directly also overrides
  :meth:`Smoothing.certified_radii`).

New noise families and semantic transforms subclass :class:`Smoothing` and override these
hooks; additive noises subclass :class:`AdditiveNoise` and implement only its ``noise_``, which
lets the engine add the input once per batch instead of once per noise block. Batching, seeding,
counting, statistics, abstention (on :meth:`Smoothing.target_lower_bound`) and the conversion of
radii between ℓp norms (:mod:`rs_plugin.smoothings.norms`) live elsewhere and never change for a
new smoothing.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch

from rs_plugin.smoothings.norms import complete_radii

__all__ = ["AdditiveNoise", "Smoothing", "sampled_scale"]


def sampled_scale(value: float | torch.Tensor) -> Any:
    """The noise scale a radius may use: ``value`` or, if smaller, ``value`` rounded to float32.

    The samplers multiply float32 noise by the scale in float32, so the law sampled has the
    float32 scale (σ = 0.12 samples with 0.11999999731779…, 2.2e-8 below); a radius computed
    with the float64 value would be up to 6e-8 of itself too large for it. (With float64 inputs
    the scale is exact and this is the smaller of the two, on the safe side.)
    """
    if isinstance(value, torch.Tensor):
        return torch.minimum(value, value.to(torch.float32).to(value.dtype))
    return min(float(value), float(torch.tensor(float(value), dtype=torch.float32)))


class Smoothing(abc.ABC):
    """Base class of every smoothing distribution.

    Subclasses set :attr:`name` (the lower-case registry name) and :attr:`norm` (the norm of the
    primary radius, e.g. ``"l2"``), store their hyperparameters unchanged in ``__init__`` and
    implement :meth:`perturb` and :meth:`radius`.
    """

    name: ClassVar[str]
    norm: ClassVar[str]

    @abc.abstractmethod
    def perturb(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return a perturbed copy of the batch ``x`` (shape (B, ...), same device and dtype).

        All randomness must come from ``generator``, which lives on ``x.device``; the result
        must be differentiable with respect to ``x`` where the perturbation allows it.
        """

    def perturb_(self, out: torch.Tensor, x: torch.Tensor, generator: torch.Generator) -> None:
        """Overwrite ``out`` (B, ...) with B perturbations of the one input ``x`` (1, ...).

        The engine's hook: it calls it once per noise block on a slice of its reused batch
        buffer, so a smoothing that writes in place costs no allocation per block. It must draw
        from ``generator`` exactly what ``perturb(x.expand(out.shape), generator)`` draws and
        write the same values (the engine's noise is defined by :meth:`perturb`). This fallback,
        for smoothings that implement only :meth:`perturb`, does exactly that through one
        temporary tensor.
        """
        out.copy_(self.perturb(x.expand(out.shape), generator))

    def check_inputs(self, x: torch.Tensor) -> None:
        """Raise :class:`~rs_plugin.RSValueError` for inputs ``x`` (N, ...) this smoothing cannot
        certify (e.g. off its grid); the engine calls it once before sampling. Accepts all."""
        return None

    def attack_point(self, x: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
        """The point an audit checks for the attack ``candidate`` (N, ...) of the inputs ``x``:
        one this smoothing's certificates speak about, no farther from ``x`` in any ℓp norm
        (a grid smoothing moves it onto the grid, towards ``x``). The candidate itself here."""
        return candidate

    @abc.abstractmethod
    def radius(self, p_lower: torch.Tensor, dim: int) -> torch.Tensor:
        """Certified radius (in :attr:`norm`) for lower bounds ``p_lower`` on p_A, shape (N,).

        ``dim`` is the number of coordinates of one input (some radii depend on it). Must be 0
        where ``p_lower <= 1/2`` and non-decreasing in ``p_lower``.
        """

    def certified_radii(self, p_lower: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
        """Every radius this smoothing certifies *directly*, keyed by norm (primary included).

        Override when the smoothing has its own certificate in more than one norm; radii that
        follow from another norm's by inclusion of balls are added by :meth:`radii`.
        """
        return {self.norm: self.radius(p_lower, dim)}

    def target_lower_bound(self, p_lower: torch.Tensor, dim: int) -> torch.Tensor:
        """A lower bound on the top class's probability under the law the certificate is
        about, from ``p_lower``, the bound under the law sampled; CERTIFY abstains where it is
        at most 1/2. The same law by default; a smoothing that samples an approximation of its
        law (:mod:`rs_plugin.smoothings.sound`) discounts the difference."""
        return p_lower

    def certificate_extras(self, p_lower: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
        """Further per-input values qualifying the certificate (e.g. an ellipsoid's volume)."""
        return {}

    def radii(self, p_lower: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
        """The direct radii plus every ℓp radius they imply (l1, l2, linf), keyed by norm."""
        return complete_radii(self.certified_radii(p_lower, dim), dim)

    def largest_radius(self, p_lower: float, dim: int) -> float:
        """The largest radius (in :attr:`norm`) any input can get when p_lower is at most
        ``p_lower`` (with n samples at level α, α^{1/n}: the sampling cap)."""
        p = torch.tensor([p_lower], dtype=torch.float64)
        return float(self.radius(p, dim)[0])

    @property
    def noise_scale(self) -> float | None:
        """The distribution's scale σ in the units its radius is measured in (the standard
        deviation per coordinate for additive noise, per parameter for a transform; the largest
        one when it differs per coordinate), or None when it has no such scale. Callers use it
        to check that noise stays finite in the model's dtype and to size budgets and summaries
        in units of σ."""
        return None

    @property
    def semantics_label(self) -> str:
        """What certificates are about, as records say it: additive noise certifies the input
        the model receives (``"input"``); semantic transforms override this."""
        return "input"

    @property
    def on_grid(self) -> bool:
        """True when the radius does not follow from p_lower alone and
        :class:`~rs_plugin.GridCertifier` certifies on a grid of transformed inputs
        (input-domain rotation and scaling, :mod:`rs_plugin.certification.grid`)."""
        return False

    def config(self) -> dict[str, Any]:
        """The smoothing's name and hyperparameters, as stored with every result."""
        return {"name": self.name}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({params})"


class AdditiveNoise(Smoothing):
    """A smoothing that adds noise drawn independently of the input: perturb(x) = x + ε.

    Subclasses implement :meth:`noise_` (and :meth:`radius`); :meth:`perturb` and
    :meth:`perturb_` follow from it. Knowing the noise is additive lets the engine fill a noise
    block with one in-place draw and add the input once per batch, so a batch costs a handful
    of large operations whatever the number of noise blocks in it.
    """

    @abc.abstractmethod
    def noise_(self, out: torch.Tensor, generator: torch.Generator) -> None:
        """Overwrite the contiguous tensor ``out`` (B, ...) with B noise draws ε from
        ``generator`` (which lives on ``out.device``), in ``out``'s dtype."""

    def perturb(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        self.noise_(noise, generator)
        return x + noise

    def perturb_(self, out: torch.Tensor, x: torch.Tensor, generator: torch.Generator) -> None:
        self.noise_(out, generator)
        out.add_(x)
