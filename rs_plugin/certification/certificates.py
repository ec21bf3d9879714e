"""Result records of CERTIFY and PREDICT: tensors per input plus the settings they hold under."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["Certificates", "Predictions"]


class _PerInputRecord:
    """Comparison, indexing and conversion of a record act on its ``prediction`` tensor, so the
    idioms a user writes for a tensor of classes work: ``record == y`` is the (N,) agreement with
    labels ``y`` (an abstention, −1, never equals a label), ``record[i]`` is input i's prediction,
    iteration and ``numpy.asarray(record)`` give the predictions. Other fields stay attributes."""

    prediction: torch.Tensor

    def _other(self, other: object) -> torch.Tensor:
        if isinstance(other, _PerInputRecord):
            return other.prediction
        return torch.as_tensor(other)

    def __eq__(self, other: object) -> torch.Tensor:  # type: ignore[override]
        return self.prediction == self._other(other)

    def __ne__(self, other: object) -> torch.Tensor:  # type: ignore[override]
        return self.prediction != self._other(other)

    __hash__ = None  # type: ignore[assignment]

    def __getitem__(self, index: Any) -> torch.Tensor:
        return self.prediction[index]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.prediction)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = self.prediction.numpy()
        return array if dtype is None else array.astype(dtype)


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN or infinity; an undefined value is written as null."""
    return value if math.isfinite(value) else None


def _json_value(value: torch.Tensor) -> int | float | None:
    """A per-input value as its meaning: an integer (counts, decisions, flags: integer or
    boolean tensors) or a finite float (null when undefined)."""
    if value.dtype == torch.bool or not value.dtype.is_floating_point:
        return int(value)
    return _finite_or_none(float(value))


@dataclass(frozen=True, eq=False)
class Certificates(_PerInputRecord):
    """Output of CERTIFY for N inputs.

    With probability at least 1 − ``alpha`` over the sampling, for each input with
    ``prediction != -1`` the smoothed classifier predicts ``prediction`` everywhere within
    ``radius`` (measured in ``norm``) of the input. ``prediction == -1`` means abstain (radius 0).
    The record compares and indexes like ``prediction``: ``certificates == y`` is the per-input
    agreement with labels, ``certificates[i]`` input i's class; ``take`` selects whole records.

    Attributes:
        index: (N,) int64, the key of each input (its index in the dataset).
        prediction: (N,) int64, the certified class, or −1 to abstain.
        radius: (N,) float64, certified radius in ``norm`` (0 when abstaining).
        p_lower: (N,) float64, one-sided 1 − α Clopper–Pearson lower bound on p_A.
        count: (N,) int64, estimation samples that voted for the selected class.
        counts_selection: (N, C) int64, votes of the n0 selection samples.
        counts_estimation: (N, C) int64, votes of the n estimation samples.
        norm: the norm (or parameter space) of ``radius``, e.g. ``"l2"``.
        n0, n, alpha: the sample sizes and the failure probability.
        radii: (N,) float64 radius per norm: the ones the smoothing certifies directly and every
            ℓp radius they imply by inclusion of balls (``radii[norm]`` equals ``radius``).
        certified_norms: the norms in ``radii`` certified directly (the rest are conversions).
        extra: further (N,) per-input values that qualify the certificate, e.g. the σ chosen
            for each input by data-dependent smoothing, or an ellipsoid's proxy radius.
        semantics: what the radius is about: ``"input"`` (the smoothed classifier of the input
            the model receives, every additive noise), ``"parametric"`` (a semantic transform's
            parameters around the clean input, :mod:`rs_plugin.smoothings.semantic`) or
            ``"parametric=input"`` (a transform that composes exactly: both at once).
    """

    index: torch.Tensor
    prediction: torch.Tensor
    radius: torch.Tensor
    p_lower: torch.Tensor
    count: torch.Tensor
    counts_selection: torch.Tensor
    counts_estimation: torch.Tensor
    norm: str
    n0: int
    n: int
    alpha: float
    radii: dict[str, torch.Tensor] = field(default_factory=dict)
    certified_norms: tuple[str, ...] = ()
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    semantics: str = "input"

    def __len__(self) -> int:
        return int(self.prediction.shape[0])

    @property
    def abstain(self) -> torch.Tensor:
        """(N,) bool, True where CERTIFY abstained."""
        return self.prediction < 0

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per input."""
        records = []
        for i in range(len(self)):
            records.append(
                {
                    "index": int(self.index[i]),
                    "prediction": int(self.prediction[i]),
                    "radius": float(self.radius[i]),
                    "norm": self.norm,
                    "p_lower": float(self.p_lower[i]),
                    "count": int(self.count[i]),
                    "n0": self.n0,
                    "n": int(self.extra["samples"][i]) if "samples" in self.extra else self.n,
                    "alpha": self.alpha,
                    "abstain": bool(self.prediction[i] < 0),
                    "radii": {k: float(v[i]) for k, v in self.radii.items()},
                    "certified_norms": list(self.certified_norms),
                    "semantics": self.semantics,
                    **{k: _json_value(v[i]) for k, v in self.extra.items()},
                }
            )
        return records

    def take(self, index: torch.Tensor | list[int]) -> Certificates:
        """The records at positions ``index``, in that order."""
        pick = torch.as_tensor(index, dtype=torch.int64)
        return Certificates(
            index=self.index[pick],
            prediction=self.prediction[pick],
            radius=self.radius[pick],
            p_lower=self.p_lower[pick],
            count=self.count[pick],
            counts_selection=self.counts_selection[pick],
            counts_estimation=self.counts_estimation[pick],
            norm=self.norm,
            n0=self.n0,
            n=self.n,
            alpha=self.alpha,
            radii={k: v[pick] for k, v in self.radii.items()},
            certified_norms=self.certified_norms,
            extra={k: v[pick] for k, v in self.extra.items()},
            semantics=self.semantics,
        )

    @staticmethod
    def concat(parts: list[Certificates]) -> Certificates:
        """Join records of the same run (same norm, n0, n, alpha) in the given order."""
        first = parts[0]
        return Certificates(
            index=torch.cat([p.index for p in parts]),
            prediction=torch.cat([p.prediction for p in parts]),
            radius=torch.cat([p.radius for p in parts]),
            p_lower=torch.cat([p.p_lower for p in parts]),
            count=torch.cat([p.count for p in parts]),
            counts_selection=torch.cat([p.counts_selection for p in parts]),
            counts_estimation=torch.cat([p.counts_estimation for p in parts]),
            norm=first.norm,
            n0=first.n0,
            n=first.n,
            alpha=first.alpha,
            radii={k: torch.cat([p.radii[k] for p in parts]) for k in first.radii},
            certified_norms=first.certified_norms,
            extra={k: torch.cat([p.extra[k] for p in parts]) for k in first.extra},
            semantics=first.semantics,
        )


@dataclass(frozen=True, eq=False)
class Predictions(_PerInputRecord):
    """Output of PREDICT for N inputs.

    With probability at least 1 − ``alpha`` over the sampling, each non-abstained ``prediction``
    is the smoothed classifier's top class (Cohen et al. 2019, Proposition 2). The record
    compares and indexes like ``prediction``: ``predictions == y`` is the per-input agreement
    with labels ``y`` (an abstention never agrees), ``predictions[i]`` input i's class or −1.

    Attributes:
        index: (N,) int64 input keys.
        prediction: (N,) int64, predicted class or −1 to abstain.
        counts: (N, C) int64 votes of the n samples.
        p_value: (N,) float64, two-sided binomial test of top class vs runner-up.
        n, alpha: sample size and failure probability.
        samples: (N,) int64 noise samples each input actually drew: ``n``, or 0 where the
            answer came without sampling (from a memory of earlier certificates; its counts
            are then zero and its p_value NaN). None when every input drew ``n``.
    """

    index: torch.Tensor
    prediction: torch.Tensor
    counts: torch.Tensor
    p_value: torch.Tensor
    n: int
    alpha: float
    samples: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.prediction.shape[0])

    @property
    def abstain(self) -> torch.Tensor:
        """(N,) bool, True where PREDICT abstained."""
        return self.prediction < 0
