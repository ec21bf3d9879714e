"""Kept votes: CERTIFY's samples drawn once, per noise block, and any stopping procedure replayed
on them (the sequential certifiers' procedures are functions of the votes,
:meth:`~rs_plugin.SequentialCertifier.stops`), so one fixed-n run prices every rule and every
tolerance on exactly the samples the certifiers would draw.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rs_plugin.certification.engine import (
    NOISE_BLOCK,
    STREAM_ESTIMATION,
    STREAM_SELECTION,
    stream_counts,
)
from rs_plugin.certification.sequential import SequentialCertifier
from rs_plugin.smoothings.gaussian import Gaussian

__all__ = ["SEED", "Votes", "record_votes", "replay"]

SEED = 0


@dataclass(frozen=True)
class Votes:
    """Fixed-n CERTIFY's votes, kept per noise block: ``selection`` (N, C) from the n0
    selection samples, ``blocks`` (N, B, C) from the n estimation samples, block b holding
    samples 256·b … 256·b + 255, and the seconds drawing them took."""

    selection: np.ndarray
    blocks: np.ndarray
    n: int
    seconds: float

    @property
    def top(self) -> np.ndarray:
        return self.selection.argmax(axis=1)

    def top_prefix(self) -> np.ndarray:
        """(N, B + 1) votes for the selected class among the first 0, 256, 512, … samples."""
        rows = np.arange(len(self.top))
        per_block = self.blocks[rows, :, self.top]
        return np.concatenate([np.zeros((len(rows), 1), np.int64), per_block.cumsum(1)], axis=1)


def record_votes(
    model: nn.Module, x: torch.Tensor, *, sigma: float, n0: int, n: int, batch_size: int
) -> Votes:
    """Draw CERTIFY's samples (seed :data:`SEED`, keys 0 … N − 1) and keep every block's votes."""
    smoothing, keys = Gaussian(sigma), list(range(x.shape[0]))

    def counts(stream: int, size: int, offset: int) -> np.ndarray:
        out = torch.zeros(x.shape[0], 10, dtype=torch.int64)
        for rows, part in stream_counts(
            model,
            smoothing,
            x,
            [(stream, size)],
            num_classes=10,
            batch_size=batch_size,
            seed=SEED,
            keys=keys,
            offset=offset,
        ):
            out[rows] = part[:, 0]
        return out.numpy()

    started = time.perf_counter()
    selection = counts(STREAM_SELECTION, n0, 0)
    blocks = [
        counts(STREAM_ESTIMATION, min(NOISE_BLOCK, n - start), start)
        for start in range(0, n, NOISE_BLOCK)
    ]
    return Votes(selection, np.stack(blocks, axis=1), n, time.perf_counter() - started)


def replay(
    votes: Votes, certifier: SequentialCertifier, *, alpha: float, dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower bound, samples, certified) per input: the certifier's stopping procedure run on
    the kept votes instead of the model."""
    prefix = votes.top_prefix()

    def position(t: int) -> int:
        return -(-t // NOISE_BLOCK)  # blocks covering the first t samples

    def draw(active: np.ndarray, done: int, size: int) -> np.ndarray:
        return prefix[active, position(done + size)] - prefix[active, position(done)]

    rows = prefix.shape[0]
    lower, samples, certified = np.zeros(rows), np.zeros(rows, np.int64), np.zeros(rows, bool)
    for stop in certifier.stops(draw, rows, n=votes.n, alpha=alpha, dim=dim):
        lower[stop.rows], samples[stop.rows], certified[stop.rows] = (
            stop.lower,
            stop.samples,
            stop.certified,
        )
    return lower, samples, certified
