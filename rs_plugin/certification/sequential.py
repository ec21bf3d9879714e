"""Sequential CERTIFY: the same 1 − α guarantee with fewer samples, valid under optional stopping.

Estimation samples are drawn in stages of doubling size, n_1 = 256, n_2 = 512, …, n_K = n (the
last stage capped at the budget n). After stage k the one-sided Clopper–Pearson bounds on p_A
are computed at level α_k = α · 2^{k − K} (so Σ α_k < α; the last stage gets α/2, the one before
α/4, …). By the union bound, with probability at least 1 − α *every* stage's lower bound is below
p_A at once, so whatever rule decides when to stop — it may look at all the counts so far — the
lower bound reported at the stopping stage is a valid 1 − α bound, and the radius computed from it
holds with probability at least 1 − α (a properly alpha-spent staged test; the selection samples
n0 are independent of all of them, as in CERTIFY).

Two stopping rules:

* **decision mode** (``radius=r``): "is this input certified at radius r?" Stop as soon as the
  lower bound certifies r, or the upper bound (same α_k) shows the radius cannot reach r.
* **radius mode** (``tolerance=t``): stop once the radius the last stage would give if p_A were
  at its current upper bound exceeds the current radius by at most t (more samples are unlikely
  to raise the radius by more than t).

Samples come from the same noise stream and positions as fixed-n CERTIFY with the same seed, so
an input that runs all stages sees exactly the fixed-n run's samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from rs_plugin._validation import RSValueError, check_int, check_open_unit, check_positive
from rs_plugin.certification.certificates import Certificates
from rs_plugin.certification.classifier import (
    STREAM_ESTIMATION,
    STREAM_SELECTION,
    SmoothedClassifier,
    pack_certificates,
)
from rs_plugin.certification.engine import NOISE_BLOCK, stream_counts
from rs_plugin.certification.stats import clopper_pearson_lower, clopper_pearson_upper
from rs_plugin.smoothings.base import Smoothing

__all__ = ["SequentialCertifier", "StagedBounds"]


class StagedBounds:
    """Stage sizes n_k and their levels α_k (Σ α_k < α), with the bounds after each stage.

    Args:
        n: the budget, the size of the last stage (≥ 1).
        alpha: total failure probability, shared by all stages.
        first: size of the first stage (a multiple of NOISE_BLOCK for the engine).
    """

    def __init__(self, n: int, alpha: float, first: int = NOISE_BLOCK) -> None:
        self.n = check_int("n", n, 1)
        self.alpha = check_open_unit("alpha", alpha)
        sizes = [first]
        while sizes[-1] < n:
            sizes.append(sizes[-1] * 2)
        sizes[-1] = n
        self.sizes = sizes
        stages = len(sizes)
        # Geometric spending: α/2 for the last stage, α/4 for the one before, … (measured on the
        # digits model: giving the last stage 0.9 α instead cost the early stages more than the
        # last one gained, in both modes).
        self.alphas = [alpha * 2.0 ** (k - stages) for k in range(stages)]

    def __len__(self) -> int:
        return len(self.sizes)

    def bounds(self, successes: np.ndarray, stage: int) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) Clopper–Pearson bounds at level α_stage after ``sizes[stage]`` trials."""
        trials, level = self.sizes[stage], self.alphas[stage]
        return (
            clopper_pearson_lower(successes, trials, level),
            clopper_pearson_upper(successes, trials, level),
        )


def stop_decision(
    smoothing: Smoothing, lower: np.ndarray, upper: np.ndarray, radius: float, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """(stop, certified) for decision mode at radius ``radius``."""
    low = smoothing.radius(torch.from_numpy(lower), dim).numpy()
    high = smoothing.radius(torch.from_numpy(upper), dim).numpy()
    certified = low >= radius
    return certified | (high < radius), certified


def stop_radius(
    smoothing: Smoothing,
    bounds: StagedBounds,
    lower: np.ndarray,
    upper: np.ndarray,
    estimate: np.ndarray,
    tolerance: float,
    dim: int,
) -> np.ndarray:
    """Stop where the last stage is expected to add at most ``tolerance`` to the radius.

    "Expected": the radius the last stage gives if its frequency equals the current estimate
    ``estimate`` (successes / trials so far). Any rule is valid here; this one trades samples
    against the radius the full budget would give.
    """
    current = smoothing.radius(torch.from_numpy(lower), dim).numpy()
    expected = np.floor(estimate * bounds.n)
    best = clopper_pearson_lower(expected, bounds.n, bounds.alphas[-1])
    attainable = smoothing.radius(torch.from_numpy(best), dim).numpy()
    return (attainable - current <= tolerance) | (upper < 0.5)


class SequentialCertifier:
    """CERTIFY with staged, alpha-spent sample sizes (see the module docstring).

    Registered as the certifier ``sequential``. Exactly one of ``radius`` (decision mode) and
    ``tolerance`` (radius mode) is given; ``n`` of :meth:`certify` is the budget (the last
    stage). Records carry ``samples`` (estimation samples used) in ``extra``, and in decision
    mode ``decision`` (1 when certified at ``radius``, else 0). Their ``n`` is the budget.

    Args:
        model: base classifier returning logits.
        smoothing: the smoothing (any).
        num_classes: the model's output width.
        radius: decision mode: the radius to decide (> 0, in the smoothing's norm).
        tolerance: radius mode: the radius gain below which sampling stops (> 0).
        clip_values: as for :class:`~rs_plugin.SmoothedClassifier`.
    """

    def __init__(
        self,
        model: nn.Module,
        smoothing: Smoothing,
        num_classes: int,
        *,
        radius: float | None = None,
        tolerance: float | None = None,
        clip_values: tuple[float, float] | None = None,
    ) -> None:
        if (radius is None) == (tolerance is None):
            raise RSValueError(
                "radius/tolerance",
                "exactly one: --radius R (decision mode) or --tolerance T (radius mode)",
                {"radius": radius, "tolerance": tolerance},
            )
        if smoothing.on_grid:
            raise RSValueError(
                "smoothing",
                "a smoothing whose radius follows from p_lower (input-domain rotation and scaling "
                "certify on a grid: use GridCertifier, or semantics='parametric')",
                smoothing,
            )
        self.radius = None if radius is None else check_positive("radius", radius)
        self.tolerance = None if tolerance is None else check_positive("tolerance", tolerance)
        self._classifier = SmoothedClassifier(
            model, smoothing, num_classes, clip_values=clip_values
        )
        self.model = model
        self.smoothing = smoothing
        self.num_classes = self._classifier.num_classes

    def certify(
        self,
        x: torch.Tensor | np.ndarray,
        *,
        n0: int = 100,
        n: int = 100_000,
        alpha: float = 0.001,
        batch_size: int = 1000,
        seed: int = 0,
        keys: Sequence[int] | None = None,
    ) -> Certificates:
        """Sequential CERTIFY of every input of ``x``, in the order of ``x``."""
        stages = list(
            self._stages(x, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed, keys=keys)
        )
        joined = Certificates.concat([part for _, part in stages])
        positions = torch.from_numpy(np.concatenate([rows for rows, _ in stages]))
        return joined.take(torch.argsort(positions))

    def iter_certify(
        self,
        x: torch.Tensor | np.ndarray,
        *,
        n0: int = 100,
        n: int = 100_000,
        alpha: float = 0.001,
        batch_size: int = 1000,
        seed: int = 0,
        keys: Sequence[int] | None = None,
    ) -> Iterator[Certificates]:
        """Like :meth:`certify`, yielding the inputs that stop at each stage (stage order)."""
        for _, part in self._stages(
            x, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed, keys=keys
        ):
            yield part

    def _stages(
        self,
        x: torch.Tensor | np.ndarray,
        *,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int,
        seed: int,
        keys: Sequence[int] | None,
    ) -> Iterator[tuple[np.ndarray, Certificates]]:
        n0 = check_int("n0", n0, 1)
        bounds = StagedBounds(n, alpha)
        x_t, key_list = self._classifier.prepare(x, batch_size=batch_size, seed=seed, keys=keys)
        dim = x_t[0].numel()
        rows = x_t.shape[0]
        selection = self._counts(x_t, key_list, STREAM_SELECTION, n0, 0, batch_size, seed)
        top = selection.argmax(dim=1)
        estimation = torch.zeros(rows, self.num_classes, dtype=torch.int64)
        active = np.arange(rows)
        done = 0
        for stage, size in enumerate(bounds.sizes):
            counts = self._counts(
                x_t[active],
                [key_list[a] for a in active],
                STREAM_ESTIMATION,
                size - done,
                done,
                batch_size,
                seed,
            )
            estimation[active] += counts
            done = size
            successes = estimation[active].gather(1, top[active][:, None])[:, 0].numpy()
            lower, upper = bounds.bounds(successes, stage)
            decision = np.zeros(len(active), dtype=bool)
            if stage == len(bounds) - 1:
                stop = np.ones(len(active), dtype=bool)
                if self.radius is not None:
                    decision = stop_decision(self.smoothing, lower, upper, self.radius, dim)[1]
            elif self.radius is not None:
                stop, decision = stop_decision(self.smoothing, lower, upper, self.radius, dim)
            else:
                assert self.tolerance is not None
                stop = stop_radius(
                    self.smoothing, bounds, lower, upper, successes / size, self.tolerance, dim
                )
            if stop.any():
                yield (
                    active[stop],
                    self._pack(
                        active[stop],
                        key_list,
                        top,
                        selection,
                        estimation,
                        lower[stop],
                        size,
                        decision[stop],
                        n0,
                        bounds,
                        dim,
                    ),
                )
            active = active[~stop]
            if not len(active):
                return

    def _counts(
        self,
        x: torch.Tensor,
        keys: Sequence[int],
        stream: int,
        size: int,
        offset: int,
        batch_size: int,
        seed: int,
    ) -> torch.Tensor:
        counts = torch.zeros(x.shape[0], self.num_classes, dtype=torch.int64)
        for rows, part in stream_counts(
            self.model,
            self.smoothing,
            x,
            [(stream, size)],
            num_classes=self.num_classes,
            batch_size=batch_size,
            seed=seed,
            keys=keys,
            offset=offset,
        ):
            counts[rows] = part[:, 0]
        return counts

    def _pack(
        self,
        rows: np.ndarray,
        keys: list[int],
        top: torch.Tensor,
        selection: torch.Tensor,
        estimation: torch.Tensor,
        lower: np.ndarray,
        samples: int,
        decision: np.ndarray,
        n0: int,
        bounds: StagedBounds,
        dim: int,
    ) -> Certificates:
        index = torch.from_numpy(rows)
        extra = {"samples": torch.full((len(rows),), float(samples), dtype=torch.float64)}
        if self.radius is not None:
            extra["decision"] = torch.from_numpy(decision.astype(np.float64))
        return pack_certificates(
            self.smoothing,
            [keys[r] for r in rows],
            top[index],
            torch.from_numpy(np.asarray(lower, dtype=np.float64)),
            selection[index],
            estimation[index],
            n0,
            bounds.n,
            bounds.alpha,
            dim=dim,
            extra=extra,
        )
