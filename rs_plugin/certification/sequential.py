"""Sequential CERTIFY: the same 1 − α guarantee with fewer samples, valid under optional stopping.

Estimation samples are drawn for the inputs still undecided; a stopping procedure looks at all
the counts so far (:mod:`rs_plugin.certification.stopping`) and its bounds hold whatever it
decides, so the lower bound reported when an input stops is a valid 1 − α bound and the radius
computed from it holds with probability at least 1 − α (the selection samples n0 are
independent of all of them, as in CERTIFY).

* :class:`SequentialCertifier` (``sequential``): doubling stages 256, 512, …, n with
  Clopper–Pearson bounds at α spent geometrically over the stages (a union bound), in both modes.
* :class:`AnytimeCertifier` (``anytime``): in decision mode, a check after every batch with an
  anytime-valid confidence sequence (a one-sided mixture martingale, no union bound) and an
  early "not certified" where the budget is not expected to certify; in radius mode, a pilot
  that fixes each input's sample size, the bound computed on the samples after it.

The two modes:

* **decision mode** (``radius=r``): "is this input certified at radius r?" Stop as soon as the
  lower bound certifies r, or the upper bound shows the radius cannot reach r.
* **radius mode** (``tolerance=t``): stop once more samples are expected to add at most t to
  the radius (the budget's).

Samples come from the same noise stream and positions as fixed-n CERTIFY with the same seed, so
an input that runs to the budget sees exactly the fixed-n run's samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from rs_plugin._validation import (
    MAX_SAMPLES,
    RSValueError,
    check_int,
    check_open_unit,
    check_positive,
)
from rs_plugin.certification.base import RUN_OPTIONS, Certifier
from rs_plugin.certification.certificates import Certificates
from rs_plugin.certification.classifier import VOTE_OPTIONS, SmoothedClassifier
from rs_plugin.certification.engine import STREAM_ESTIMATION, STREAM_SELECTION, stream_counts
from rs_plugin.certification.radii import pack_certificates
from rs_plugin.certification.stopping import (
    AnytimeBounds,
    DecisionRule,
    Draw,
    RadiusRule,
    StagedBounds,
    Stop,
    run_checks,
    run_pilot,
)
from rs_plugin.smoothings.base import Smoothing

__all__ = ["FUTILITY", "AnytimeCertifier", "SequentialCertifier"]

# AnytimeCertifier's default level for giving up early in decision mode (see its docstring).
FUTILITY = 0.01


class SequentialCertifier(Certifier):
    """CERTIFY with staged, alpha-spent sample sizes (see the module docstring).

    Registered as the certifier ``sequential``. Exactly one of ``radius`` (decision mode) and
    ``tolerance`` (radius mode) is given; ``n`` of :meth:`certify` is the budget (the last
    stage). Records carry ``samples`` (estimation samples used, an integer) in ``extra``, and in
    decision mode ``decision`` (the integer 1 when certified at ``radius``, else 0). A record's
    ``n`` is the samples it used; the budget is the run's ``n_max``.

    Args:
        model: base classifier returning logits.
        smoothing: the smoothing (any).
        num_classes: the model's output width.
        radius: decision mode: the radius to decide (> 0, in the smoothing's norm).
        tolerance: radius mode: the radius gain below which sampling stops (> 0).
        clip_values, precision, channels_last, compile: as for
            :class:`~rs_plugin.SmoothedClassifier` (how the votes are computed; the stopping
            rules see only the votes).
    """

    options: ClassVar[Mapping[str, str]] = {
        name: RUN_OPTIONS[name] for name in ("radius", "tolerance", *VOTE_OPTIONS)
    }
    samples_vary: ClassVar[bool] = True

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Exactly one of ``radius`` (decision mode) and ``tolerance`` (radius mode)."""
        radius, tolerance = options.get("radius"), options.get("tolerance")
        if (radius is None) == (tolerance is None):
            raise RSValueError(
                "radius/tolerance",
                "exactly one: radius R (decision mode) or tolerance T (radius mode)",
                {"radius": radius, "tolerance": tolerance},
            )

    def __init__(
        self,
        model: nn.Module,
        smoothing: Smoothing,
        num_classes: int,
        *,
        radius: float | None = None,
        tolerance: float | None = None,
        clip_values: tuple[float, float] | None = None,
        precision: str = "float32",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        self.check_options({"radius": radius, "tolerance": tolerance})
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
            model,
            smoothing,
            num_classes,
            clip_values=clip_values,
            precision=precision,
            channels_last=channels_last,
            compile=compile,
        )
        self.model = model
        self.smoothing = smoothing
        self.num_classes = self._classifier.num_classes

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
    ) -> Iterator[Certificates]:
        """Sequential CERTIFY of every input of ``x``, yielding the inputs that stop at each
        stage (stage order; :meth:`certify` returns them in the order of ``x``)."""
        for _, part in self._stages(
            x, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed, keys=keys
        ):
            yield part

    def stops(self, draw: Draw, rows: int, *, n: int, alpha: float, dim: int) -> Iterator[Stop]:
        """The whole stopping procedure on ``rows`` inputs: ``draw(active, done, size)`` gives
        the top-class votes among samples ``done … done + size − 1`` of the inputs ``active``.
        The certifier runs it on the model's votes; the tests on Bernoulli draws, the bench on
        kept votes."""
        if self.radius is not None:
            rule: DecisionRule | RadiusRule = DecisionRule(
                self.smoothing, dim, self.radius, futility=None
            )
        else:
            assert self.tolerance is not None
            rule = RadiusRule(self.smoothing, dim, self.tolerance)
        return run_checks(StagedBounds(n, alpha), rule, draw, rows)

    def _stages(
        self,
        x: torch.Tensor | np.ndarray,
        *,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int | str,
        seed: int,
        keys: Sequence[int] | None,
    ) -> Iterator[tuple[np.ndarray, Certificates]]:
        n0 = check_int("n0", n0, 1, MAX_SAMPLES)
        n = check_int("n", n, 1, MAX_SAMPLES)
        alpha = check_open_unit("alpha", alpha)
        x_t, key_list = self._classifier.prepare(x, batch_size=batch_size, seed=seed, keys=keys)
        dim = x_t[0].numel()
        selection = self._counts(x_t, key_list, STREAM_SELECTION, n0, 0, batch_size, seed)
        top = selection.argmax(dim=1)
        estimation = torch.zeros(x_t.shape[0], self.num_classes, dtype=torch.int64)

        def draw(active: np.ndarray, done: int, size: int) -> np.ndarray:
            counts = self._counts(
                x_t[active],
                [key_list[a] for a in active],
                STREAM_ESTIMATION,
                size,
                done,
                batch_size,
                seed,
            )
            estimation[active] += counts
            return counts.gather(1, top[active][:, None])[:, 0].numpy()

        for stop in self.stops(draw, x_t.shape[0], n=n, alpha=alpha, dim=dim):
            yield (
                stop.rows,
                self._pack(stop, key_list, top, selection, estimation, n0, n, alpha, dim),
            )

    def _counts(
        self,
        x: torch.Tensor,
        keys: Sequence[int],
        stream: int,
        size: int,
        offset: int,
        batch_size: int | str,
        seed: int,
    ) -> torch.Tensor:
        counts = torch.zeros(x.shape[0], self.num_classes, dtype=torch.int64)
        for rows, part in stream_counts(
            self._classifier.runner,
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
        stop: Stop,
        keys: list[int],
        top: torch.Tensor,
        selection: torch.Tensor,
        estimation: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        dim: int,
    ) -> Certificates:
        rows = stop.rows
        index = torch.from_numpy(rows)
        extra = {"samples": torch.full((len(rows),), stop.samples, dtype=torch.int64)}
        if self.radius is not None:
            extra["decision"] = torch.from_numpy(stop.certified.astype(np.int64))
        if stop.bound_samples is not None and stop.bound_count is not None:
            # p_lower is Clopper–Pearson on these votes alone (after the pilot).
            trials = torch.full((len(rows),), stop.bound_samples, dtype=torch.int64)
            extra["bound_samples"] = trials
            extra["bound_count"] = torch.from_numpy(np.asarray(stop.bound_count, dtype=np.int64))
        return pack_certificates(
            self.smoothing,
            [keys[r] for r in rows],
            top[index],
            torch.from_numpy(np.asarray(stop.lower, dtype=np.float64)),
            selection[index],
            estimation[index],
            n0,
            n,
            alpha,
            dim=dim,
            extra=extra,
        )


class AnytimeCertifier(SequentialCertifier):
    """Sequential CERTIFY without a union bound over stages.

    Registered as the certifier ``anytime``; the same interface and records as
    :class:`SequentialCertifier`.

    * Decision mode (``radius``): the bounds come from the one-sided mixture martingale of
      :mod:`rs_plugin.certification.confidence_sequence`, valid at every check at once with
      probability at least 1 − α, checked after every batch of samples
      (:func:`~rs_plugin.certification.stopping.anytime_sizes`). An input also stops, not
      certified, once the budget n is not expected to certify it: even if its remaining samples
      voted for its class at the rate of a level-``futility`` upper bound on p_A (before its
      first sample: even if every one did). A "not certified" answer is always sound;
      ``futility`` only trades samples against rarely giving up on an input the budget would
      have certified.
    * Radius mode (``tolerance``): a pilot of 1024 samples estimates p_A and fixes the number T
      of further samples (the fewest expected to come within ``tolerance`` of the radius the
      whole budget would give); the lower bound is Clopper–Pearson at level α on those T
      samples alone, valid because T was fixed before they were drawn
      (:func:`~rs_plugin.certification.stopping.run_pilot`). Measured on the digits model, this
      lost less radius for the same samples than the rules we tried that check bounds as
      samples arrive (staged or confidence-sequence bounds, tolerance against the budget or
      against twice the samples; ``docs/benchmarks.md``): near p_A = 1 the radius keeps growing
      with n, and a bound valid at every check pays for that validity at each of them.
      Records count every vote (``count``, ``counts_estimation``, ``samples`` include the
      pilot's); ``p_lower`` uses the votes after the pilot: ``bound_count`` top-class votes of
      ``bound_samples``, from which Clopper–Pearson at ``alpha`` gives it back.

    Args:
        model: base classifier returning logits.
        smoothing: the smoothing (any whose radius follows from p_lower).
        num_classes: the model's output width.
        radius: decision mode: the radius to decide (> 0, in the smoothing's norm).
        tolerance: radius mode: the expected radius gain below which sampling stops (> 0).
        clip_values, precision, channels_last, compile: as for
            :class:`SequentialCertifier`.
        futility: decision mode: level of the upper bound behind giving up early, in (0, 1).
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
        precision: str = "float32",
        channels_last: bool = False,
        compile: bool = False,
        futility: float = FUTILITY,
    ) -> None:
        super().__init__(
            model,
            smoothing,
            num_classes,
            radius=radius,
            tolerance=tolerance,
            clip_values=clip_values,
            precision=precision,
            channels_last=channels_last,
            compile=compile,
        )
        self.futility = check_open_unit("futility", futility)

    def stops(self, draw: Draw, rows: int, *, n: int, alpha: float, dim: int) -> Iterator[Stop]:
        if self.radius is not None:
            rule = DecisionRule(self.smoothing, dim, self.radius, futility=self.futility)
            return run_checks(AnytimeBounds(n, alpha), rule, draw, rows)
        assert self.tolerance is not None
        return run_pilot(
            n=n,
            alpha=alpha,
            smoothing=self.smoothing,
            dim=dim,
            tolerance=self.tolerance,
            draw=draw,
            rows=rows,
        )
