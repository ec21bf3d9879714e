"""Exact samplers of rounded continuous noise: integer thresholds, fair random bits, no floats.

For continuous noise g on the real line with CDF F (in grid units), the rounded noise
e = ⌊g + ½⌋ takes the integer value j with probability

    P(j) = F(j + ½) − F(j − ½).

:class:`RoundedNoise` samples a law Q that is P up to a total variation η it bounds rigorously:

1. **Integer thresholds.** T_j = ⌊2⁶³ · F(j + ½)⌋ for j = −J … J − 1, computed with mpmath at
   50 significant digits (F is erfc or exp, whose mpmath error is a few units in the 166th bit,
   so each T_j is within 1 + 2⁻¹⁷ of 2⁶³F(j + ½) even when the floor lands on the wrong side of
   an integer). The integer masses q_j = T_j − T_{j−1} (with T_{−J−1} = 0 and T_J = 2⁶³) sum to
   2⁶³ and define Q(j) = q_j / 2⁶³ on −J … J; the values outside are lumped into ±J.
2. **An exact alias table.** The K = 2J + 1 masses are padded with zeros to 2^B bins of capacity
   C = 2^(63 − B) each and split by Walker's alias method *in integers*: bin i keeps cut_i of its
   capacity for itself and gives C − cut_i to alias_i. Every step is an integer subtraction, so
   the table reproduces q_j exactly (tests enumerate it).
3. **Fair random bits.** U = ``int64.random_(generator)`` is uniform on [0, 2⁶³): PyTorch draws
   64 bits (two 32-bit words of MT19937 on the CPU, Philox on CUDA) and reduces them modulo 2⁶³,
   which is exact because 2⁶³ divides 2⁶⁴. The top B bits pick the bin i, the low 63 − B bits r
   are independent of them, and the sample is i if r < cut_i, else alias_i. So the sampler draws
   exactly Q, under the usual assumption that the generator's bits are fair.

**The TV bound.** Write a_j = F(j + ½) − T_j / 2⁶³ for the thresholds (|a_j| ≤ 2⁻⁶³(1 + 2⁻¹⁷))
and a_{−J−1} = F(−J − ½), a_J = F(J + ½) − 1 (the tails). Then Q(j) − P(j) = a_{j−1} − a_j on
−J … J and Q = 0 outside, so

    TV(Q, P) = ½ Σ_j |Q(j) − P(j)| ≤ 2J · 2⁻⁶³(1 + 2⁻¹⁷) + F(−J − ½) + 1 − F(J + ½) =: η.

J is chosen so that the tails are below 2⁻⁷⁰ (zero for bounded noise). For d independent
coordinates, TV(Qᵈ, Pᵈ) ≤ d · η (a coupling coordinate by coordinate), so a probability estimated
under Q is within d · η of the one under P. Voráček & Hein 2023 ("Sound randomized smoothing in
floating-point arithmetic", ICLR) sample discrete Gaussians exactly for the same purpose.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import mpmath
import torch

__all__ = ["RoundedNoise", "gaussian_cdf", "laplace_cdf", "rounded_noise", "uniform_cdf"]

_BITS = 63
_DIGITS = 50
_TAIL_BITS = 70
_THRESHOLD_SLACK = Fraction(1, 2**17)


def gaussian_cdf(scale: mpmath.mpf) -> Callable[[mpmath.mpf], mpmath.mpf]:
    """CDF of N(0, scale²)."""
    return lambda t: mpmath.erfc(-t / (scale * mpmath.sqrt(2))) / 2


def laplace_cdf(scale: mpmath.mpf) -> Callable[[mpmath.mpf], mpmath.mpf]:
    """CDF of the Laplace law of scale b (density e^{−|t|/b} / 2b)."""
    return lambda t: mpmath.exp(t / scale) / 2 if t < 0 else 1 - mpmath.exp(-t / scale) / 2


def uniform_cdf(half_width: mpmath.mpf) -> Callable[[mpmath.mpf], mpmath.mpf]:
    """CDF of the uniform law on [−λ, λ]."""
    return lambda t: min(max((t + half_width) / (2 * half_width), mpmath.mpf(0)), mpmath.mpf(1))


class RoundedNoise:
    """Exact sampler of e = ⌊g + ½⌋ for continuous noise g (law Q, TV(Q, P) ≤ :attr:`eta`).

    Args:
        cdf: F, the CDF of g in grid units, evaluated on mpmath numbers.
        support: J, the largest |e| sampled (values beyond are lumped into ±J); choose it so
            that P(|e| > J) is negligible (it enters :attr:`eta`).
    """

    def __init__(self, cdf: Callable[[mpmath.mpf], mpmath.mpf], support: int) -> None:
        self.support = int(support)
        with mpmath.workdps(_DIGITS):
            j = self.support
            thresholds = [
                int(mpmath.floor(mpmath.ldexp(cdf(mpmath.mpf(v) + 0.5), _BITS)))
                for v in range(-j, j)
            ]
            # Tails rounded up: mpmath's error is far below the 2⁻⁶⁰ added.
            tail = cdf(mpmath.mpf(-j) - 0.5) + (1 - cdf(mpmath.mpf(j) + 0.5))
            tail_bound = Fraction(str(mpmath.nstr(tail, 30))) + Fraction(1, 2**100)
            self._target = [
                cdf(mpmath.mpf(v) + 0.5) - cdf(mpmath.mpf(v) - 0.5) for v in range(-j, j + 1)
            ]
        edges = [0, *thresholds, 2**_BITS]
        self.masses = [b - a for a, b in itertools.pairwise(edges)]
        if min(self.masses) < 0:
            raise ArithmeticError("thresholds are not monotone: the CDF is not a CDF")
        eta = 2 * j * Fraction(1, 2**_BITS) * (1 + _THRESHOLD_SLACK) + tail_bound
        self.eta = float(eta) * (1 + 2**-40)  # float64 rounding, on the safe side
        self.cut, self.alias, self.index_bits = _alias_table(self.masses)
        self._device_tables: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._buffers: dict[str, Any] = {}

    def probabilities(self) -> list[Fraction]:
        """Q(j) for j = −J … J, exactly (the sampled law)."""
        return [Fraction(q, 2**_BITS) for q in self.masses]

    def target(self) -> list[float]:
        """P(j) = F(j + ½) − F(j − ½) for j = −J … J (the law of ⌊g + ½⌋), in float64."""
        return [float(p) for p in self._target]

    def table_probabilities(self) -> list[Fraction]:
        """The law the alias table implements, recomputed from (cut, alias) alone."""
        capacity = 2 ** (_BITS - self.index_bits)
        mass = [0] * len(self.cut)
        for i, (keep, other) in enumerate(zip(self.cut, self.alias, strict=True)):
            mass[i] += keep
            mass[other] += capacity - keep
        return [Fraction(m, 2**_BITS) for m in mass[: len(self.masses)]]

    def sample_indices(
        self, shape: torch.Size | tuple[int, ...], generator: torch.Generator
    ) -> torch.Tensor:
        """int64 tensor of ``shape`` of e + J ∈ [0, 2J], drawn on the generator's device."""
        bits = torch.empty(shape, dtype=torch.int64, device=generator.device)
        return self.decode(bits.random_(generator=generator))

    def decode(self, bits: torch.Tensor) -> torch.Tensor:
        """e + J for 63-bit integers ``bits`` (int64 in [0, 2⁶³)), consumed in place: the alias
        map that sends a uniform ``bits`` to the law Q."""
        cut, alias = self._tables(bits.device)
        index = bits >> (_BITS - self.index_bits)
        keep = bits.bitwise_and_((1 << (_BITS - self.index_bits)) - 1) < torch.take(cut, index)
        return torch.where(keep, index, torch.take(alias, index))

    def sample_(self, out: torch.Tensor, generator: torch.Generator) -> None:
        """Overwrite ``out`` with draws of e + J (exact small integers in ``out``'s dtype): the
        same draws as :meth:`sample_indices`, through reused scratch buffers (large temporary
        tensors would be mapped and unmapped on every block)."""
        cut, alias = self._tables(generator.device)
        bits, index, other, keep = self._scratch(tuple(out.shape), generator.device)
        bits.random_(generator=generator)
        torch.bitwise_right_shift(bits, _BITS - self.index_bits, out=index)
        bits.bitwise_and_((1 << (_BITS - self.index_bits)) - 1)
        torch.lt(bits, torch.take(cut, index, out=other), out=keep)
        torch.take(alias, index, out=other)
        out.copy_(torch.where(keep, index, other, out=other))

    def _scratch(self, shape: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
        key = (shape, str(device), threading.get_ident())  # one thread's buffers at a time
        if self._buffers.get("key") != key:
            self._buffers = {
                "key": key,
                "tensors": tuple(
                    torch.empty(shape, dtype=dtype, device=device)
                    for dtype in (torch.int64, torch.int64, torch.int64, torch.bool)
                ),
            }
        tensors: tuple[torch.Tensor, ...] = self._buffers["tensors"]
        return tensors

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._device_tables:
            self._device_tables[key] = (
                torch.tensor(self.cut, dtype=torch.int64, device=device),
                torch.tensor(self.alias, dtype=torch.int64, device=device),
            )
        return self._device_tables[key]

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_device_tables"] = {}
        state["_buffers"] = {}
        return state


def _alias_table(masses: list[int]) -> tuple[list[int], list[int], int]:
    """Walker's alias table in integers: (cut, alias, index bits) reproducing ``masses``."""
    index_bits = max(1, math.ceil(math.log2(len(masses))))
    bins = 2**index_bits
    capacity = 2 ** (_BITS - index_bits)
    left = masses + [0] * (bins - len(masses))
    cut = [capacity] * bins
    alias = list(range(bins))
    small = [i for i in range(bins) if left[i] < capacity]
    large = [i for i in range(bins) if left[i] >= capacity]
    while small and large:
        s, g = small.pop(), large.pop()
        cut[s], alias[s] = left[s], g
        left[g] -= capacity - left[s]
        (small if left[g] < capacity else large).append(g)
    # Whatever remains holds exactly its capacity (the masses sum to bins · capacity).
    for i in small + large:
        if left[i] != capacity:
            raise ArithmeticError("alias table: masses do not sum to 2**63")
    return cut, alias, index_bits


@functools.lru_cache(maxsize=32)
def rounded_noise(family: str, scale: Fraction) -> RoundedNoise:
    """The cached sampler of the rounded ``family`` noise with the given scale in grid units:
    the standard deviation (gaussian), the Laplace scale b (laplace) or the half-width λ
    (uniform)."""
    with mpmath.workdps(_DIGITS):
        s = mpmath.mpf(scale.numerator) / scale.denominator
        if family == "gaussian":
            # P(|g| > t) ≤ 2 e^{−t²/2s²} ≤ 2⁻⁷⁰ for t ≥ s √(2 · 71 ln 2).
            support = math.ceil(float(s) * math.sqrt(2 * (_TAIL_BITS + 1) * math.log(2))) + 1
            return RoundedNoise(gaussian_cdf(s), support)
        if family == "laplace":
            support = math.ceil(float(s) * (_TAIL_BITS + 1) * math.log(2)) + 1
            return RoundedNoise(laplace_cdf(s), support)
        if family == "uniform":
            return RoundedNoise(uniform_cdf(s), math.ceil(float(s) + 0.5))
    raise ValueError(f"unknown family {family!r}")
