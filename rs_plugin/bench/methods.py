"""What the bench times: each method certifies (or does the least certification needs for) the same
inputs × (n0 + n) noisy samples of the same model.

* ``floor_fresh``: per batch, fresh Gaussian noise drawn in place into a reused buffer, the input
  added, forward, argmax; no counting, no statistics. The least any certification must do. The
  bench times it at every candidate batch size; *the floor* is the fastest of them.
* ``floor_reused``: the same forwards and argmaxes on one noisy batch made once (no noise cost;
  what "the bare forward pass" usually means).
* ``engine``: :meth:`rs_plugin.SmoothedClassifier.certify` at a batch size or ``"auto"`` (the
  default; its probe settled once, as in every run after a process's first);
  ``engine_cold``: ``"auto"`` with the cached choice set aside for every run, so each run
  pays for its own probe (a process's first run), and put back after it.
* ``reference``: a per-input loop in the shape of the papers' reference code (Cohen et al.'s
  ``Smooth.certify``): for each input, repeat it into a batch, add fresh noise, forward, argmax,
  copy the votes to the host and count them, first n0 then n samples, then the Clopper–Pearson
  bound. Written here from that description, with a seeded generator.
* ``art``: ART 1.20's ``PyTorchRandomizedSmoothing.certify`` (``sample_size`` = n0); ``adapter``:
  ``rs_plugin.adapters.art.PyTorchRandomizedSmoothing``, built and called the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy import stats

from rs_plugin._validation import import_extra
from rs_plugin.certification.batching import probing_afresh
from rs_plugin.certification.classifier import SmoothedClassifier

__all__ = [
    "art_certify",
    "batch_sizes",
    "engine_certify",
    "engine_cold",
    "estimator",
    "floor_fresh",
    "floor_reused",
    "reference_certify",
]

ALPHA = 0.001


def batch_sizes(total: int, batch_size: int) -> list[int]:
    """Full batches of ``batch_size`` and one smaller last batch covering ``total`` samples."""
    full, rest = divmod(total, batch_size)
    return [batch_size] * full + ([rest] if rest else [])


def floor_fresh(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigma: float,
    total: int,
    batch_size: int,
) -> Callable[[], None]:
    buffer = torch.empty((batch_size, *x.shape[1:]), dtype=x.dtype, device=x.device)
    generator = torch.Generator(device=x.device).manual_seed(0)
    sizes = batch_sizes(total, batch_size)
    row = x[:1]

    def run() -> None:
        with torch.inference_mode():
            for size in sizes:
                batch = buffer[:size]
                batch.normal_(0.0, sigma, generator=generator).add_(row)
                model(batch).argmax(dim=1)

    return run


def floor_reused(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigma: float,
    total: int,
    batch_size: int,
) -> Callable[[], None]:
    generator = torch.Generator(device=x.device).manual_seed(0)
    noise = torch.randn((batch_size, *x.shape[1:]), generator=generator, device=x.device)
    noisy = x[:1] + sigma * noise.to(x.dtype)
    sizes = batch_sizes(total, batch_size)

    def run() -> None:
        with torch.inference_mode():
            for size in sizes:
                model(noisy[:size]).argmax(dim=1)

    return run


def engine_certify(
    smoothed: SmoothedClassifier, x: torch.Tensor, n0: int, n: int, batch_size: int | str
) -> Callable[[], Any]:
    def run() -> Any:
        return smoothed.certify(x, n0=n0, n=n, alpha=ALPHA, batch_size=batch_size, seed=0)

    return run


def engine_cold(
    smoothed: SmoothedClassifier, x: torch.Tensor, n0: int, n: int
) -> Callable[[], Any]:
    """``"auto"`` as a process's first run: a fresh probe, whose state is dropped after the
    run (the settled runs timed beside it keep theirs)."""

    def run() -> Any:
        with probing_afresh(smoothed.model):
            return smoothed.certify(x, n0=n0, n=n, alpha=ALPHA, batch_size="auto", seed=0)

    return run


def reference_certify(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigma: float,
    n0: int,
    n: int,
    batch_size: int,
    num_classes: int,
) -> Callable[[], list[tuple[int, float]]]:
    generator = torch.Generator(device=x.device).manual_seed(0)

    def votes(single: torch.Tensor, samples: int) -> np.ndarray:
        counts = np.zeros(num_classes, dtype=np.int64)
        left = samples
        while left > 0:
            size = min(batch_size, left)
            left -= size
            batch = single.repeat((size,) + (1,) * (single.ndim - 1))
            noise = torch.randn(batch.shape, generator=generator, device=x.device) * sigma
            predicted = model(batch + noise).argmax(dim=1)
            counts += np.bincount(predicted.cpu().numpy(), minlength=num_classes)
        return counts

    def run() -> list[tuple[int, float]]:
        out = []
        with torch.no_grad():
            for single in x:
                top = int(votes(single[None], n0).argmax())
                count = int(votes(single[None], n)[top])
                p_lower = float(stats.beta.ppf(ALPHA, count, n - count + 1)) if count else 0.0
                radius = sigma * float(stats.norm.ppf(p_lower))
                out.append((top, radius) if p_lower >= 0.5 else (-1, 0.0))
        return out

    return run


def estimator(
    kind: str,
    model: torch.nn.Module,
    shape: tuple[int, ...],
    num_classes: int,
    sigma: float,
    n0: int,
    device: torch.device,
) -> Any:
    """ART's ``PyTorchRandomizedSmoothing`` (``kind="art"``) or ours, with identical arguments
    (the one-line swap)."""
    if kind == "art":
        module = import_extra(
            "art.estimators.certification.randomized_smoothing", "bench", "the bench's ART rows"
        )
    else:
        module = import_extra("rs_plugin.adapters.art", "bench", "the bench's adapter rows")
    return module.PyTorchRandomizedSmoothing(
        model=model,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=shape,
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
        sample_size=n0,
        scale=sigma,
        alpha=ALPHA,
    )


def art_certify(estimator: Any, x: np.ndarray, n: int, batch_size: int | str) -> Callable[[], Any]:
    def run() -> Any:
        return estimator.certify(x, n=n, batch_size=batch_size)

    return run
