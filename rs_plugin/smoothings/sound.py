"""Smoothings that are sound in floating point: grid inputs, exact integer noise, exact sums.

**The hole they close.** The float families add ``x + fl(σ·n)`` in float32. Rounding makes the
low-order bits of the noisy input depend on x, and a base classifier can read them: Voráček &
Hein ("Sound randomized smoothing in floating-point arithmetic", ICLR 2023) build one that the
ordinary certificate covers at a radius larger than the distance to an adversarial example
(``examples/fp_counterexample.py`` does it against this library's Gaussian mode).

**The construction.** Inputs live on a grid of step h (default 1/255): x = k·h with k an integer
vector. Noise is drawn in grid units as e = ⌊g + ½⌋ with g the continuous noise of the family
scaled to grid units (g = ε/h), by the exact integer sampler of
:mod:`rs_plugin.smoothings.lattice`. The model receives fl(fl(k + e) · h): k + e is an integer
sum, exact in float32 while |k + e| < 2²⁴, and the multiplication by h is a deterministic
function of the integer k + e. So the base classifier the engine runs is

    f̃(m) = f(fl(m · h))   for integer vectors m,

and, since ⌊k + g + ½⌋ = k + ⌊g + ½⌋ for integer k, the sound smoothed classifier at k is

    g̃(k) = argmax_c P[f̃(⌊k + g + ½⌋) = c],

the **ordinary continuous smoothing** of the deterministic function φ(y) = f̃(⌊y + ½⌋) of real
y, evaluated at the grid point k. Every certificate proven for continuous additive noise and an
arbitrary (measurable) base classifier therefore holds for φ verbatim: Gaussian ℓ2 (Cohen et al.
2019), Laplace ℓ1/ℓ2/ℓ∞ and uniform ℓ1/ℓ∞ (Yang et al. 2020) — for every real perturbation of
y, hence for every perturbed grid input k′ = k + δ/h, where φ's smoothing is again g̃.
Floating point enters nowhere: the only float computation is f̃ itself, which the certificate
treats as an arbitrary function of the integer it is given.

**What is sampled.** The sampler draws a law Q per coordinate with TV(Q, P) ≤ η (P the law of
⌊g + ½⌋; η ≈ 10⁻¹⁶, see :mod:`~rs_plugin.smoothings.lattice`), so over d coordinates the
probability of any class under Q is within dη of its probability under P. The radius is therefore
computed from p_lower − dη (on the safe side): with probability at least 1 − α over the
sampling, the returned radius certifies g̃ (Clopper–Pearson bounds p_Q; p_P ≥ p_Q − dη).
PREDICT's test is about Q; the two laws' class probabilities differ by at most dη.

**Inputs.** An input off the grid (farther than 10⁻³ steps from a multiple of h) is refused
with an :class:`~rs_plugin.RSValueError` naming the grid, unless ``round_inputs=True``, which
certifies its nearest grid point (the smoothed classifier of a rounded input is that of its grid
point; the certificate covers every grid input within the radius of it).

Which families and certifiers are sound in floating point is tabulated in docs/smoothings.md.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, ClassVar

import torch

from rs_plugin._validation import RSValueError, check_positive
from rs_plugin.smoothings.base import AdditiveNoise, Smoothing
from rs_plugin.smoothings.gaussian import Gaussian
from rs_plugin.smoothings.lattice import RoundedNoise, rounded_noise
from rs_plugin.smoothings.noises import Laplace, Uniform

__all__ = ["SoundGaussian", "SoundLaplace", "SoundNoise", "SoundUniform", "parse_grid"]

DEFAULT_GRID = "1/255"
MIN_STEPS_PER_SIGMA = Fraction(1, 2**20)  # coarser grids leave the noise almost always 0
MAX_STEPS_PER_SIGMA = 4096  # finer grids make the rounded noise's table too long to build
# An input is on the grid when it lies within this many steps of a multiple of the step: far
# above float32's rounding of k/255 (about 1.5e-5 steps), far below any real off-grid value.
GRID_TOLERANCE = 1e-3


def parse_grid(grid: Any) -> Fraction:
    """The grid step as an exact fraction: ``"1/255"``, ``Fraction(1, 255)``, 0.0625 or 1."""
    try:
        step = Fraction(grid) if not isinstance(grid, float) else Fraction(str(grid))
    except (TypeError, ValueError, ZeroDivisionError):
        step = Fraction(0)
    if isinstance(grid, bool) or step <= 0:
        raise RSValueError("grid", "a step > 0 such as '1/255', 1/16 or 0.5", grid)
    return step


class SoundNoise(Smoothing):
    """Base class of the sound-in-floating-point families (derivation in the module docstring).

    Subclasses set :attr:`family` (the continuous family whose certificate applies) and
    implement :meth:`_law` (the rounded noise in grid units). Not an
    :class:`~rs_plugin.AdditiveNoise`: the engine must not add the input in floating point, so
    every block goes through :meth:`perturb_`, which sums integers.

    Args:
        sigma: per-coordinate standard deviation of the continuous noise, in input units (> 0).
        grid: the input grid's step h (default ``"1/255"``), as a fraction or number.
        round_inputs: certify the nearest grid point of an off-grid input instead of refusing it
            (True or False; "true" or "false" as the command line's --smoothing-param gives it).
    """

    family: ClassVar[type[AdditiveNoise]]
    sound_fp: ClassVar[bool] = True

    def __init__(
        self, sigma: float, *, grid: Any = DEFAULT_GRID, round_inputs: bool | str = False
    ) -> None:
        self.sigma = check_positive("sigma", sigma)
        self.grid = parse_grid(grid)
        steps = Fraction(self.sigma) / self.grid
        if not MIN_STEPS_PER_SIGMA <= steps <= MAX_STEPS_PER_SIGMA:
            raise RSValueError(
                "grid",
                f"a step with sigma/grid in [{MIN_STEPS_PER_SIGMA}, {MAX_STEPS_PER_SIGMA}] "
                "(the noise's table grows with sigma/grid: 6 s at 4 096 per sigma)",
                f"{grid} with sigma {self.sigma:g}",
            )
        flag = {"true": True, "false": False}.get(str(round_inputs).lower())
        if flag is None or not isinstance(round_inputs, (bool, str)):
            raise RSValueError("round_inputs", "True or False", round_inputs)
        self.round_inputs = flag
        self.continuous = self.family(self.sigma)  # type: ignore[call-arg]
        self.law: RoundedNoise = self._law()

    @property
    def noise_scale(self) -> float:
        return self.sigma

    def _law(self) -> RoundedNoise:
        raise NotImplementedError

    @property
    def step(self) -> float:
        """h as a float64 (the factor applied to the integer k + e)."""
        return float(self.grid)

    @property
    def eta(self) -> float:
        """The per-coordinate total-variation bound η between sampled and target noise."""
        return self.law.eta

    def check_inputs(self, x: torch.Tensor) -> None:
        """Refuse inputs off the grid (unless rounding was asked) and inputs whose integer sums
        would not be exact in ``x``'s dtype; called once before any sampling."""
        if x.numel() == 0:
            return
        scaled = self._in_steps(x)
        k = torch.round(scaled)
        largest = float(k.abs().max()) + self.law.support
        exact = 2.0 / torch.finfo(x.dtype).eps if x.is_floating_point() else 2.0**24
        if largest >= exact:
            raise RSValueError(
                "x",
                f"inputs within {exact:.0f} - {self.law.support} steps of {self.grid} from 0 "
                f"(integer sums exact in {x.dtype})",
                f"an input {float(k.abs().max()):.0f} steps from 0",
            )
        if self.round_inputs:
            return
        off = float((scaled - k).abs().max())
        if off > GRID_TOLERANCE:
            raise RSValueError(
                "x",
                f"inputs on the grid of step {self.grid} (within {GRID_TOLERANCE} steps of a "
                "multiple): give the data's step as grid (--grid, e.g. 1/16 for digits), or "
                "round_inputs=True to certify the nearest grid point",
                f"an input {off:.3g} steps off the grid",
            )

    def attack_point(self, x: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
        """The grid point k + trunc(c/h − k) (k = x's grid point): every coordinate moved
        towards k, so no farther from k in any ℓp norm than the candidate c."""
        k = torch.round(self._in_steps(x))
        moved = torch.trunc(self._in_steps(candidate) - k)
        return ((k + moved) * self.step).to(candidate.dtype)

    def _in_steps(self, x: torch.Tensor) -> torch.Tensor:
        """x / h in float64 (h's numerator and denominator are exact integers)."""
        return x.detach().to(torch.float64) / self.grid.numerator * self.grid.denominator

    def _grid_index(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return torch.round(self._in_steps(x)).sub_(self.law.support).to(dtype)

    def perturb_(self, out: torch.Tensor, x: torch.Tensor, generator: torch.Generator) -> None:
        # out ← (e + J) exact integers, + (k − J) exact integer sum, · h: a function of k + e.
        self.law.sample_(out, generator)
        out.add_(self._grid_index(x, out.dtype)).mul_(self.step)

    def perturb(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        self.perturb_(out, x, generator)
        if x.requires_grad:
            # Straight-through for attacks on the soft classifier; adds an exact zero.
            return out + (x - x.detach())
        return out

    def discounted(self, p_lower: torch.Tensor, dim: int) -> torch.Tensor:
        """p_lower − d·η rounded down: a lower bound on the target law's probability."""
        p = p_lower.to(torch.float64) - dim * self.eta
        return torch.nextafter(p, torch.zeros_like(p))

    def target_lower_bound(self, p_lower: torch.Tensor, dim: int) -> torch.Tensor:
        return self.discounted(p_lower, dim)

    def radius(self, p_lower: torch.Tensor, dim: int) -> torch.Tensor:
        return self.continuous.radius(self.discounted(p_lower, dim), dim)

    def certified_radii(self, p_lower: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
        return self.continuous.certified_radii(self.discounted(p_lower, dim), dim)

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sigma": self.sigma,
            "grid": str(self.grid),
            "round_inputs": self.round_inputs,
            "sound_fp": True,
        }


class SoundGaussian(SoundNoise):
    """Gaussian noise rounded to the input grid, ℓ2 radius σ Φ⁻¹(p_lower − dη), sound in
    floating point (see the module docstring). Registered as ``gaussian_sound``; the CLI spells
    it ``--smoothing gaussian --sound [--grid 1/255]``."""

    name: ClassVar[str] = "gaussian_sound"
    norm: ClassVar[str] = "l2"
    family = Gaussian

    def _law(self) -> RoundedNoise:
        return rounded_noise("gaussian", Fraction(self.sigma) / self.grid)


class SoundLaplace(SoundNoise):
    """Laplace noise (scale b = σ/√2) rounded to the input grid; Laplace's ℓ1, ℓ2 and ℓ∞ radii
    at p_lower − dη. Registered as ``laplace_sound``."""

    name: ClassVar[str] = "laplace_sound"
    norm: ClassVar[str] = "l1"
    family = Laplace

    def _law(self) -> RoundedNoise:
        scale = self.sigma / math.sqrt(2.0)  # the float the continuous family's radii use
        return rounded_noise("laplace", Fraction(scale) / self.grid)


class SoundUniform(SoundNoise):
    """Uniform noise on [−σ√3, σ√3] rounded to the input grid; the uniform family's ℓ1 and ℓ∞
    radii at p_lower − dη. Registered as ``uniform_sound``."""

    name: ClassVar[str] = "uniform_sound"
    norm: ClassVar[str] = "l1"
    family = Uniform

    def _law(self) -> RoundedNoise:
        half_width = self.sigma * math.sqrt(3.0)
        return rounded_noise("uniform", Fraction(half_width) / self.grid)
