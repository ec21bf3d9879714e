"""An rs-plugin certifier shipped by a third-party distribution (see pyproject.toml).

A certifier subclasses :class:`rs_plugin.Certifier`, implements :meth:`iter_certify`, and
declares the options its constructor accepts; ``rs-plugin certify --certifier
example_hoeffding`` (with ``--engine ray``, ``--resume``) and ``rs-plugin audit`` then run it
like a built-in. :func:`rs_plugin.check_certifier` is the conformance suite it passes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from rs_plugin import (
    RUN_OPTIONS,
    STREAM_ESTIMATION,
    STREAM_SELECTION,
    Certificates,
    Certifier,
    SmoothedClassifier,
    Smoothing,
    pack_certificates,
    stream_counts,
)

__all__ = ["HoeffdingCertifier"]


class HoeffdingCertifier(Certifier):
    """CERTIFY with Hoeffding's bound instead of Clopper–Pearson's.

    The top class is selected on ``n0`` samples; on ``n`` further independent samples with k
    votes for it, Hoeffding's inequality P[k/n − p_A ≥ t] ≤ exp(−2nt²) gives the lower bound
    p_lower = k/n − √(ln(1/α) / (2n)), which holds with probability at least 1 − α; the radius
    is the smoothing's at p_lower, and the record abstains when p_lower < 1/2. Looser than
    Clopper–Pearson (a smaller radius for the same votes), but as sound.

    Args:
        model, smoothing, num_classes: as for :class:`rs_plugin.SmoothedClassifier`.
        clip_values: the range inputs must lie in, or None.
    """

    options: ClassVar[Mapping[str, str]] = {"clip_values": RUN_OPTIONS["clip_values"]}

    def __init__(
        self,
        model: nn.Module,
        smoothing: Smoothing,
        num_classes: int,
        *,
        clip_values: tuple[float, float] | None = None,
    ) -> None:
        # The built-in classifier checks the inputs and holds the vote runner; its certify is
        # not used.
        self._classifier = SmoothedClassifier(
            model, smoothing, num_classes, clip_values=clip_values
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
        n0, n, alpha = self._classifier.check_sizes(n0, n, alpha)
        x_t, key_list = self._classifier.prepare(x, batch_size=batch_size, seed=seed, keys=keys)
        margin = math.sqrt(math.log(1.0 / alpha) / (2.0 * n))
        for rows, counts in stream_counts(
            self._classifier.runner,
            self.smoothing,
            x_t,
            [(STREAM_SELECTION, n0), (STREAM_ESTIMATION, n)],
            num_classes=self.num_classes,
            batch_size=batch_size,
            seed=seed,
            keys=key_list,
        ):
            selection, estimation = counts[:, 0], counts[:, 1]
            top = selection.argmax(dim=1)
            votes = estimation.gather(1, top[:, None])[:, 0].to(torch.float64)
            p_lower = (votes / n - margin).clamp(0.0, 1.0)
            yield pack_certificates(
                self.smoothing,
                [key_list[r] for r in rows],
                top,
                p_lower,
                selection,
                estimation,
                n0,
                n,
                alpha,
                dim=x_t[0].numel(),
            )
