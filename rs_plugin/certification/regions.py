"""The memory of a data-dependent certifier: the regions it has certified, kept disjoint.

Each entry is a region E = {z : ‖(z − x)/σ‖₂ < R} (centre x, per-coordinate σ, whitened radius
R) labelled with a class. :class:`RegionStore` answers the two questions the memory-based
certifier (:mod:`rs_plugin.certification.memory`) asks, and stores what it decides:

* :meth:`RegionStore.lookup`: does a point lie in a stored region, and how far inside;
* :meth:`RegionStore.shrink`: how far a new region may reach before it could meet a region of
  another class (a separating hyperplane test: sufficient for disjointness, exact for balls).

Entries are written with each record (:meth:`RegionStore.entry`) and read back on resume
(:meth:`RegionStore.restore`), so a resumed run certifies against exactly the stored regions.
Storage grows by doubling, so adding an entry costs O(d), not O(entries).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rs_plugin._validation import RSValueError
from rs_plugin.smoothings.norms import norm_rounding_error

__all__ = ["RegionStore"]

# Relative slack on the limits of a restored entry: its σ was searched as log σ in float32,
# whose rounding moves σ by about |log σ| · 6e-8 relative (1e-5 covers σ up to e^100).
_SLACK = 1e-5


_EPS = torch.finfo(torch.float64).eps


class RegionStore:
    """Labelled regions {z : ‖(z − x)/σ‖₂ < R} in float64 on the CPU, in insertion order."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget every region."""
        self._count = 0
        self._buffers: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._by_key: dict[int, int] = {}  # key of a certified input -> its entry

    def __len__(self) -> int:
        return self._count

    def add(
        self,
        center: torch.Tensor,
        sigma: torch.Tensor,
        whitened: float,
        c: int,
        key: int | None = None,
    ) -> None:
        """Store the region of centre (d,), σ (d,) and whitened radius, labelled ``c``; ``key``
        names the certified input it belongs to (None for a point PREDICT answered)."""
        if key is not None:
            self._by_key[key] = self._count
        if self._buffers is None or self._count == self._buffers[0].shape[0]:
            capacity = max(64, 2 * self._count)
            dim = center.numel()
            grown = (
                torch.empty(capacity, dim, dtype=torch.float64),
                torch.empty(capacity, dim, dtype=torch.float64),
                torch.empty(capacity, dtype=torch.float64),
                torch.empty(capacity, dtype=torch.int64),
            )
            if self._buffers is not None:
                for new, old in zip(grown, self._buffers, strict=True):
                    new[: self._count] = old[: self._count]
            self._buffers = grown
        centers, sigmas, radii, classes = self._buffers
        centers[self._count], sigmas[self._count] = center, sigma
        radii[self._count], classes[self._count] = whitened, c
        self._count += 1

    def _arrays(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stored entries: centres (M, d), σ (M, d), whitened radii (M,), classes (M,)."""
        assert self._buffers is not None  # callers check len(self) first
        centers, sigmas, radii, classes = self._buffers
        m = self._count
        return centers[:m], sigmas[:m], radii[:m], classes[:m]

    def entry(self, key: int) -> dict[str, Any] | None:
        """What was stored for the certified input ``key``, as JSON values, or None.

        ``{"whitened_radius": R, "sigma": σ}`` (σ a number when isotropic, else one per
        coordinate); with the input itself and the record's prediction it is the region.
        """
        position = self._by_key.get(key)
        if position is None:
            return None
        _, sigmas, radii, _ = self._arrays()
        sigma = sigmas[position]
        shown: float | list[float] = (
            float(sigma[0]) if bool((sigma == sigma[0]).all()) else sigma.tolist()
        )
        return {"whitened_radius": float(radii[position]), "sigma": shown}

    def restore(
        self,
        x: torch.Tensor,
        key: int,
        prediction: int,
        entry: Any,
        num_classes: int,
        *,
        largest_radius: float = math.inf,
        sigma_limits: tuple[float, float] = (0.0, math.inf),
    ) -> None:
        """Put back the :meth:`entry` of the input ``x`` (any shape) certified as
        ``prediction``. Raises :class:`RSValueError` (parameter ``resume``) for a malformed
        entry, or one no certification could have stored: a whitened radius above
        ``largest_radius`` (what the record's samples can certify) or a σ outside
        ``sigma_limits`` (what the certifier's σ search can reach), each up to a relative 1e-5
        (σ is searched in the model's float32)."""
        point = x.reshape(-1).to(torch.float64).cpu()
        dim = point.numel()
        received = f"input {key}: class {prediction!r}, memory {entry!r}"
        if not isinstance(entry, dict) or not isinstance(prediction, int) or prediction < 0:
            raise RSValueError(
                "resume", "records of a memory certifier (with their memory entry)", received
            )
        try:
            radius = float(entry["whitened_radius"])
            sigma = torch.as_tensor(entry["sigma"], dtype=torch.float64).reshape(-1)
        except (KeyError, TypeError, ValueError) as error:
            raise RSValueError(
                "resume", "a memory entry {whitened_radius, sigma}", received
            ) from error
        if (
            not math.isfinite(radius)
            or radius < 0
            or sigma.numel() not in (1, dim)
            or not bool(torch.isfinite(sigma).all() and (sigma > 0).all())
            or prediction >= num_classes
        ):
            raise RSValueError(
                "resume",
                f"a whitened radius >= 0 and {dim} (or 1) finite σ > 0 for a class below "
                f"{num_classes}",
                received,
            )
        low, high = sigma_limits
        if radius > largest_radius * (1 + _SLACK) or not bool(
            (sigma >= low * (1 - _SLACK)).all() and (sigma <= high * (1 + _SLACK)).all()
        ):
            raise RSValueError(
                "resume",
                f"a memory entry a certification could store: whitened radius <= "
                f"{largest_radius:.6g} (the record's samples) and σ in [{low:.6g}, {high:.6g}] "
                "(the certifier's search)",
                received,
            )
        self.add(point, sigma.expand(dim), radius, prediction, key)

    def lookup(self, point: torch.Tensor) -> tuple[int, float] | None:
        """(class, inner ℓ2 radius around ``point``) of the stored region containing it, if any."""
        if not self._count:
            return None
        centers, sigmas, whitened, classes = self._arrays()
        offset = point[None, :] - centers
        # the whitened distance rounded up (it sums d squares: relative error below
        # norm_rounding_error), so that R − distance, a small difference near the boundary, is never
        # above the exact one (computed directly it was up to 16 % too large there)
        error = norm_rounding_error(offset.shape[1])
        distance = torch.linalg.vector_norm(offset / sigmas, dim=1) * (1.0 + error)
        inside_by = whitened - distance
        inside = (inside_by > 0) | (offset.abs().amax(dim=1) == 0)
        if not bool(inside.any()):
            return None
        inner = torch.where(
            inside, inside_by.clamp(min=0) * sigmas.amin(dim=1) * (1.0 - 4 * _EPS), -1.0
        )
        best = int(inner.argmax())
        return int(classes[best]), float(inner[best])

    def shrink(self, point: torch.Tensor, sigma: torch.Tensor, whitened: float, c: int) -> float:
        """Largest whitened radius ≤ ``whitened`` whose ellipsoid misses other classes' regions.

        Separation test: the hyperplane normal to u = (x_j − x)/‖x_j − x‖ separates the
        ellipsoids when their support functions along u and −u add up to at most ‖x_j − x‖;
        an ellipsoid {‖(z − x)/σ‖₂ < R} reaches R·‖σ ⊙ u‖₂ along u. Exact for balls.
        """
        if not self._count or whitened <= 0:
            return max(whitened, 0.0)
        centers, sigmas, radii, classes = self._arrays()
        others = classes != c
        if not bool(others.any()):
            return whitened
        offset = centers[others] - point[None, :]
        distance = torch.linalg.vector_norm(offset, dim=1)
        u = offset / distance.clamp(min=1e-300)[:, None]
        reach_other = radii[others] * torch.linalg.vector_norm(sigmas[others] * u, dim=1)
        reach_own = torch.linalg.vector_norm(sigma[None, :] * u, dim=1)
        # Each norm is within a relative norm_rounding_error of its exact value (u's own length
        # included): the gap distance − reach_other, small when the regions nearly touch, is
        # taken with the distance rounded down and the reaches up (directly, it was up to 6 %
        # too large, and the new region overlapped the other class's).
        error = 2 * norm_rounding_error(offset.shape[1])
        gap = distance * (1.0 - error) - reach_other * (1.0 + error)
        allowed = (gap / (reach_own * (1.0 + error)) * (1.0 - 4 * _EPS)).clamp(min=0.0)
        return min(whitened, float(allowed.min()))
