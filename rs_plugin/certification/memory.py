"""Sound certification with a σ chosen per input: the memory-based certifier (DDRS, ANCER).

Why the naive procedure is unsound (Súkeník et al. 2021): with σ = σ(x) chosen per input, the
classifier a user deploys is G(z) = g_{σ(z)}(z). Cohen's certificate for g_{σ(x)} at x says
nothing about g_{σ(z)} at the points z of the region, so a certificate for x can contain a point
z that G labels differently (``tests/certification/test_memory.py`` builds one).

The memory (Alfarra et al. 2022, DDRS; Eiras et al. 2022, ANCER, their memory-based procedure)
makes the deployed classifier and every certificate consistent. Each answered input leaves an
entry (centre x, σ, whitened radius R, class c): the region E = {z : ‖(z − x)/σ‖₂ < R}. The
invariant kept is **regions of different classes never intersect**. A new input x, whose own
CERTIFY with σ(x) gives class c and whitened radius R:

1. if x lies in a stored region of another class c_j, the memory answers: prediction c_j, and
   the ℓ2 ball of radius (R_j − ‖(x − x_j)/σ_j‖₂) · min σ_j around x, which lies inside E_j;
2. otherwise its own ellipsoid is shrunk (scaled about x) until a hyperplane normal to the line
   between the centres separates it from every stored region of another class — sufficient for
   disjointness, exact for isotropic σ — and stored (with radius 0 if nothing is left).

The certified classifier is the memory-backed G: G(z) is the class of any stored region that
contains z (unique, by the invariant), else g_{σ(z)}(z) — :meth:`MemoryCertifier.predict`. Every
reported certificate says G is constant on its region, which holds by construction for all later
queries, and the invariant makes it hold for the earlier ones. In addition, with probability at
least 1 − α over the sampling of each own certificate, g_{σ(x)} (the smoothed classifier with the
σ chosen for x, which is independent of the certification samples) is constant on the region,
so G's answers there are the smoothed classifier's. The order in which inputs arrive matters;
records are certified in the order given.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from rs_plugin._validation import RSValueError, check_int, check_positive
from rs_plugin.certification.base import Certifier, in_input_order
from rs_plugin.certification.certificates import Certificates, Predictions
from rs_plugin.certification.classifier import SmoothedClassifier
from rs_plugin.certification.regions import RegionStore
from rs_plugin.certification.sigma_search import (
    adam_reach,
    optimise_anisotropic_sigma,
    optimise_isotropic_sigma,
)
from rs_plugin.certification.stats import round_down, round_lower
from rs_plugin.smoothings.anisotropic import AnisotropicGaussian, ellipsoid_summary
from rs_plugin.smoothings.base import Smoothing
from rs_plugin.smoothings.gaussian import Gaussian

__all__ = ["ANCER", "DDRS", "MemoryCertifier"]

# Inputs whose σ is searched together (a batch for the model), before each is certified and
# yielded in turn: bounded memory, and a first record after one group, not the whole run.
_SIGMA_GROUP = 32


class MemoryCertifier(Certifier):
    """CERTIFY with a σ chosen per input, made sound by a memory of earlier certificates.

    Subclasses implement :meth:`choose_sigma`. Call :meth:`certify` (or :meth:`iter_certify`)
    with inputs in the order they arrive; :meth:`predict` answers from the memory first.

    Args:
        model: base classifier returning logits.
        smoothing: the isotropic Gaussian starting point, e.g. ``Gaussian(0.25)`` (other
            families are refused: the σ search and the memory's regions are Gaussian).
        num_classes: the model's output width.
        steps, lr: gradient-ascent steps and Adam learning rate (on log σ) of the σ search.
        num_noise_samples: noise samples per search step.
    """

    stateful = True

    def __init__(
        self,
        model: nn.Module,
        smoothing: Smoothing,
        num_classes: int,
        *,
        steps: int = 30,
        lr: float = 0.05,
        num_noise_samples: int = 32,
    ) -> None:
        # The σ search and the memory's regions are Gaussian (balls and ellipsoids): another
        # family would be certified as if it were Gaussian.
        if type(smoothing) is not Gaussian:
            raise RSValueError("smoothing", "an isotropic Gaussian, e.g. Gaussian(0.25)", smoothing)
        self.model = model
        self.smoothing = smoothing
        self.sigma = check_positive("sigma", smoothing.noise_scale)
        self.num_classes = check_int("num_classes", num_classes, 2)
        self.steps = check_int("steps", steps, 0)
        self.lr = check_positive("lr", lr)
        self.num_noise_samples = check_int("num_noise_samples", num_noise_samples, 1)
        self._classifier = SmoothedClassifier(model, smoothing, num_classes)
        self.memory = RegionStore()

    def clear(self) -> None:
        """Forget every stored certificate."""
        self.memory.clear()

    def __len__(self) -> int:
        return len(self.memory)

    def memory_entry(self, key: int) -> dict[str, Any] | None:
        """What the memory stored for the certified input ``key``, as JSON values, or None
        (:meth:`RegionStore.entry <rs_plugin.certification.regions.RegionStore.entry>`).

        Written with each record so that a resumed run can :meth:`restore` the memory the
        records were certified against.
        """
        return self.memory.entry(key)

    def restore(
        self,
        x: torch.Tensor,
        key: int,
        prediction: int,
        entry: Any,
        *,
        n: int | None = None,
        alpha: float | None = None,
    ) -> None:
        """Put back the entry :meth:`memory_entry` gave for the input ``x`` (one input, any
        shape) certified as ``prediction``; entries must be restored in the order they were
        stored. Raises :class:`RSValueError` (parameter ``resume``) for a malformed entry and
        for one no certification could have stored: a σ outside :meth:`sigma_limits`, or,
        given the record's ``n`` and ``alpha``, a whitened radius above Φ⁻¹(α^{1/n}), the
        most n samples certify at level α (every vote for one class)."""
        largest = math.inf
        if n is not None and alpha is not None:
            largest = float(
                torch.special.ndtri(torch.tensor(alpha, dtype=torch.float64) ** (1.0 / n))
            )
        self.memory.restore(
            x,
            key,
            prediction,
            entry,
            self.num_classes,
            largest_radius=largest,
            sigma_limits=self.sigma_limits(),
        )

    def sigma_limits(self) -> tuple[float, float]:
        """The least and the largest σ (per coordinate) :meth:`choose_sigma` can return;
        entries outside are refused on resume. Unbounded unless a subclass knows better."""
        return (0.0, math.inf)

    def cap_smoothing(self) -> Smoothing | None:
        """Gaussian noise at the largest σ the search can return: a record's radius, in any ℓp
        norm, is at most R · max σ (an own ellipsoid {‖(z − x)/σ‖₂ < R}, or a ball inside a
        stored one), and R at most Φ⁻¹(α^{1/n})."""
        high = self.sigma_limits()[1]
        return Gaussian(high) if math.isfinite(high) else None

    @abc.abstractmethod
    def choose_sigma(self, x: torch.Tensor, *, seed: int, keys: Sequence[int]) -> torch.Tensor:
        """Per-input σ for ``x`` (N, ...): (N, d) float64, d coordinates per input."""

    def certify_without_memory(
        self,
        x: torch.Tensor | np.ndarray,
        *,
        n0: int = 100,
        n: int = 100_000,
        alpha: float = 0.001,
        batch_size: int | str = "auto",
        seed: int = 0,
        keys: Sequence[int] | None = None,
        sigma: torch.Tensor | None = None,
    ) -> Certificates:
        """Each input's own certificate with its own σ: the *naive*, unsound procedure.

        For comparisons only (see the module docstring); ``sigma`` (N, d) or (N,) overrides the
        search. The memory is neither read nor changed.
        """
        x_t, key_list = self._classifier.prepare(x, batch_size=batch_size, seed=seed, keys=keys)
        parts = [
            self._own(x_t, row, key_list[row], n0, n, alpha, batch_size, seed, sigma_row)[0]
            for row, sigma_row in self._sigmas(x_t, key_list, seed, sigma)
        ]
        return Certificates.concat(parts)

    def _sigmas(
        self, x_t: torch.Tensor, key_list: list[int], seed: int, sigma: torch.Tensor | None
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """(row, σ of that input) in order: the user's σ, or the search run on groups of
        inputs (its result for an input does not depend on the group; see sigma_search)."""
        override = self._sigma_override(sigma, x_t)
        for start in range(0, len(key_list), _SIGMA_GROUP):
            stop = min(start + _SIGMA_GROUP, len(key_list))
            group = (
                override[start:stop]
                if override is not None
                else self.choose_sigma(x_t[start:stop], seed=seed, keys=key_list[start:stop])
            )
            for offset in range(stop - start):
                yield start + offset, group[offset]

    @staticmethod
    def _sigma_override(sigma: torch.Tensor | None, x_t: torch.Tensor) -> torch.Tensor | None:
        """A user's per-input σ as (N, d) float64, checked; None to search."""
        if sigma is None:
            return None
        dim = x_t[0].numel()
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(x_t.shape[0], -1)
        if sigma.shape[1] not in (1, dim):
            raise RSValueError("sigma", f"(N,) or (N, {dim}) per-input values", sigma.shape)
        return sigma.expand(-1, dim)

    def _own(
        self,
        x_t: torch.Tensor,
        row: int,
        key: int,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int | str,
        seed: int,
        sigma: torch.Tensor,
    ) -> tuple[Certificates, torch.Tensor, torch.Tensor]:
        """(own certificate, σ (d,), input flattened (d,)) of one prepared input with its σ,
        float64 on the CPU. One input at a time, so that each record can be written as soon as
        it is certified, and its certificate does not depend on which inputs come with it (a
        resumed run gives the records of an uninterrupted one)."""
        single = x_t[row : row + 1]
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(single[0].numel())
        smoothed = SmoothedClassifier(self.model, AnisotropicGaussian(sigma), self.num_classes)
        part = smoothed.certify(
            single, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed, keys=[key]
        )
        extra = dict(part.extra)
        extra["sigma_min"] = sigma.min().reshape(1)
        extra["sigma_max"] = sigma.max().reshape(1)
        flat = single.reshape(-1).to(torch.float64).cpu()
        return replace(part, extra=extra), sigma, flat

    def iter_certify(
        self,
        x: torch.Tensor | np.ndarray,
        *,
        n0: int = 100,
        n: int = 100_000,
        alpha: float = 0.001,
        batch_size: int | str = "auto",
        seed: int = 0,
        keys: Sequence[int] | None = None,
        sigma: torch.Tensor | None = None,
    ) -> Iterator[Certificates]:
        """Certify inputs in order through the memory, yielding each as soon as it is certified.

        ``sigma`` (N,) or (N, d) replaces the σ search (e.g. a rule of the user's own).
        """
        SmoothedClassifier.check_sizes(n0, n, alpha)
        x_t, key_list = self._classifier.prepare(x, batch_size=batch_size, seed=seed, keys=keys)
        for row, sigma_row in self._sigmas(x_t, key_list, seed, sigma):
            key = key_list[row]
            own, sigma_row, flat = self._own(
                x_t, row, key, n0, n, alpha, batch_size, seed, sigma_row
            )
            yield self._through_memory(own, sigma_row, flat, key)

    def certify(
        self,
        x: torch.Tensor | np.ndarray,
        *,
        n0: int = 100,
        n: int = 100_000,
        alpha: float = 0.001,
        batch_size: int | str = "auto",
        seed: int = 0,
        keys: Sequence[int] | None = None,
        sigma: torch.Tensor | None = None,
    ) -> Certificates:
        """Every record of :meth:`iter_certify` (``sigma`` as there), in the order of ``x``."""
        parts = self.iter_certify(
            x, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed, keys=keys, sigma=sigma
        )
        return in_input_order(list(parts), keys)

    def _through_memory(
        self, part: Certificates, sigma: torch.Tensor, point: torch.Tensor, key: int
    ) -> Certificates:
        c = int(part.prediction[0])
        found = self.memory.lookup(point)
        dim = point.numel()
        if c < 0 and found is None:  # abstain: nothing to store
            nothing = ellipsoid_summary(torch.zeros(1, dtype=torch.float64), sigma[None, :])
            return _replace(part, -1, nothing, sigma, from_memory=0.0, scale=math.nan)
        if found is not None and found[0] != c:
            prediction, inner = found
            ball = ellipsoid_summary(
                torch.tensor([inner], dtype=torch.float64), torch.ones(1, dim, dtype=torch.float64)
            )
            return _replace(part, prediction, ball, sigma, from_memory=1.0, scale=math.nan)
        whitened = float(round_down(torch.special.ndtri(part.p_lower.to(torch.float64)))[0])
        kept = self.memory.shrink(point, sigma, whitened, c)
        self.memory.add(point, sigma, kept, c, key)
        summary = ellipsoid_summary(torch.tensor([kept], dtype=torch.float64), sigma[None, :])
        scale = kept / whitened if whitened > 0 else 1.0
        return _replace(part, c, summary, sigma, from_memory=0.0, scale=scale)

    def predict(
        self,
        x: torch.Tensor | np.ndarray,
        *,
        n: int = 10_000,
        alpha: float = 0.001,
        batch_size: int | str = "auto",
        seed: int = 0,
        keys: Sequence[int] | None = None,
    ) -> Predictions:
        """The memory-backed classifier G: a stored region's class, else PREDICT with σ(x).

        Inputs answered from the memory draw no samples: their ``samples`` is 0, their counts
        are zero and their p_value is NaN (no test was run); the others drew ``n``. An input
        answered by PREDICT is stored as a point (radius 0), so no later certificate's region
        contains it with another class.
        """
        x_t, key_list = self._classifier.prepare(x, batch_size=batch_size, seed=seed, keys=keys)
        flat = x_t.reshape(x_t.shape[0], -1).to(torch.float64).cpu()
        prediction = torch.full((x_t.shape[0],), -1, dtype=torch.int64)
        counts = torch.zeros(x_t.shape[0], self.num_classes, dtype=torch.int64)
        p_value = torch.full((x_t.shape[0],), math.nan, dtype=torch.float64)
        samples = torch.zeros(x_t.shape[0], dtype=torch.int64)
        missing = []
        for row in range(x_t.shape[0]):
            found = self.memory.lookup(flat[row])
            if found is None:
                missing.append(row)
            else:
                prediction[row] = found[0]
        if missing:
            sigma = self.choose_sigma(x_t[missing], seed=seed, keys=[key_list[r] for r in missing])
            for i, row in enumerate(missing):
                answer = SmoothedClassifier(
                    self.model, AnisotropicGaussian(sigma[i]), self.num_classes
                ).predict(
                    x_t[row : row + 1],
                    n=n,
                    alpha=alpha,
                    batch_size=batch_size,
                    seed=seed,
                    keys=[key_list[row]],
                )
                prediction[row], counts[row] = answer.prediction[0], answer.counts[0]
                p_value[row], samples[row] = answer.p_value[0], n
                if answer.prediction[0] >= 0:  # G has answered here: later regions must agree
                    self.memory.add(flat[row], sigma[i], 0.0, int(answer.prediction[0]))
        return Predictions(
            index=torch.tensor(key_list, dtype=torch.int64),
            prediction=prediction,
            counts=counts,
            p_value=p_value,
            n=n,
            alpha=alpha,
            samples=samples,
        )


def _replace(
    part: Certificates,
    prediction: int,
    summary: dict[str, torch.Tensor],
    sigma: torch.Tensor,
    *,
    from_memory: float,
    scale: float,
) -> Certificates:
    """The record of one input after the memory: its class, region and how it was obtained
    (its ℓp radii rounded down and its proxy radius and log-volume lowered, as
    :func:`~rs_plugin.certification.radii.pack_certificates` does for every record)."""
    radii = {norm: round_down(summary[norm].to(torch.float64)) for norm in ("l1", "l2", "linf")}
    return replace(
        part,
        prediction=torch.tensor([prediction], dtype=torch.int64),
        radius=radii["l2"],
        radii=radii,
        extra={
            "sigma_min": sigma.min().reshape(1),
            "sigma_max": sigma.max().reshape(1),
            "proxy_radius": round_lower(summary["proxy_radius"].to(torch.float64)),
            "log_volume": round_lower(summary["log_volume"].to(torch.float64)),
            "from_memory": torch.tensor([from_memory], dtype=torch.int64),
            "shrink_factor": torch.tensor([scale], dtype=torch.float64),
        },
    )


class DDRS(MemoryCertifier):
    """Data-dependent isotropic σ (Alfarra et al. 2022), certified through the memory.

    Args:
        sigma_range: (low, high) multiples of the smoothing's σ the search may reach.
        Others: see :class:`MemoryCertifier`.
    """

    def __init__(
        self,
        model: nn.Module,
        smoothing: Smoothing,
        num_classes: int,
        *,
        sigma_range: tuple[float, float] = (0.5, 2.0),
        steps: int = 30,
        lr: float = 0.05,
        num_noise_samples: int = 32,
    ) -> None:
        super().__init__(
            model, smoothing, num_classes, steps=steps, lr=lr, num_noise_samples=num_noise_samples
        )
        low, high = (float(v) for v in sigma_range)
        if not 0 < low <= 1 <= high:
            raise RSValueError("sigma_range", "(low, high) with 0 < low <= 1 <= high", sigma_range)
        self.sigma_range = (low, high)

    def sigma_limits(self) -> tuple[float, float]:
        """[low·σ, high·σ]: the search is clamped to ``sigma_range`` (σ itself with 0 steps)."""
        if self.steps == 0:
            return (self.sigma, self.sigma)
        return (self.sigma_range[0] * self.sigma, self.sigma_range[1] * self.sigma)

    def choose_sigma(self, x: torch.Tensor, *, seed: int, keys: Sequence[int]) -> torch.Tensor:
        sigma = optimise_isotropic_sigma(
            self.model,
            x,
            sigma=self.sigma,
            low=self.sigma_range[0] * self.sigma,
            high=self.sigma_range[1] * self.sigma,
            steps=self.steps,
            lr=self.lr,
            num_noise_samples=self.num_noise_samples,
            seed=seed,
            keys=keys,
        )
        return sigma[:, None].expand(-1, x[0].numel())


class ANCER(DDRS):
    """Anisotropic per-input σ (Eiras et al. 2022) from a DDRS start, certified through the memory.

    The isotropic σ of each input is first chosen as by :class:`DDRS` (set ``sigma_range`` to
    (1, 1) to start from the smoothing's fixed σ), then every coordinate's σ is raised where
    that enlarges the ellipsoid (never below the isotropic start).
    """

    def sigma_limits(self) -> tuple[float, float]:
        """Every coordinate's σ is at least its isotropic start (≥ low·σ) and at most the start
        moved by what ``steps`` Adam steps of rate ``lr`` can add to log σ
        (:func:`~rs_plugin.certification.sigma_search.adam_reach`)."""
        low, high = super().sigma_limits()
        return (low, high * math.exp(adam_reach(self.steps, self.lr)))

    def choose_sigma(self, x: torch.Tensor, *, seed: int, keys: Sequence[int]) -> torch.Tensor:
        start = super().choose_sigma(x, seed=seed, keys=keys)[:, 0]
        return optimise_anisotropic_sigma(
            self.model,
            x,
            sigma=start,
            steps=self.steps,
            lr=self.lr,
            num_noise_samples=self.num_noise_samples,
            seed=seed,
            keys=keys,
        )
