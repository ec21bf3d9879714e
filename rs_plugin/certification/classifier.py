"""The smoothed classifier: soft forward for attacks, CERTIFY and PREDICT of Cohen et al. 2019."""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from rs_plugin._validation import (
    MAX_SAMPLES,
    MAX_SEED,
    RSValueError,
    RSWarning,
    check_finite_inputs,
    check_int,
    check_noise_scale,
    check_open_unit,
)
from rs_plugin.certification.base import RUN_OPTIONS, Certifier
from rs_plugin.certification.batching import check_batch_size
from rs_plugin.certification.certificates import Certificates, Predictions
from rs_plugin.certification.engine import (
    STREAM_ESTIMATION,
    STREAM_PREDICT,
    STREAM_SELECTION,
    stream_counts,
)
from rs_plugin.certification.model_runner import VoteRunner, model_dtype, sampling_dtype
from rs_plugin.certification.probe import model_state, probe_model
from rs_plugin.certification.radii import pack_certificates
from rs_plugin.certification.stats import binomial_p_value, clopper_pearson_lower
from rs_plugin.smoothings.base import Smoothing

__all__ = ["SmoothedClassifier", "SmoothedLogProbabilities"]

# The options of the vote runner and the input check, as a run passes them.
VOTE_OPTIONS: Mapping[str, str] = {
    name: RUN_OPTIONS[name] for name in ("clip_values", "precision", "channels_last", "compile")
}


class SmoothedClassifier(nn.Module, Certifier):
    """g(x) = argmax_c P[f(perturb(x)) = c] for a base classifier f and a smoothing.

    ``forward`` is the *soft* smoothed classifier, the Monte-Carlo mean of softmax(f) over
    ``num_noise_samples`` perturbations (differentiable; for attacks and training). ``certify``
    and ``predict`` are CERTIFY and PREDICT of Cohen, Rosenfeld & Kolter 2019 on the hard
    smoothed classifier, streamed on the model's device by the engine.

    Args:
        model: base classifier mapping (B, ...) inputs to (B, num_classes) logits. A model
            with a ``check_smoothing(smoothing)`` method (a denoised classifier,
            :class:`~rs_plugin.denoising.DenoisedClassifier`) is asked to accept the smoothing
            here, before anything is sampled.
        smoothing: a :class:`~rs_plugin.Smoothing`, e.g. ``Gaussian(0.25)``.
        num_classes: number of classes the model outputs.
        num_noise_samples: perturbations averaged per input by ``forward``.
        clip_values: (low, high) range inputs must lie in, or None for no check. Noisy samples
            are not clipped (the certificate is about unclipped Gaussian noise).
        seed: seed of the noise ``forward`` uses when it is given no generator (so repeated
            calls are deterministic: common random numbers across attack steps).
        device: where to sample when the model has no parameters or buffers to tell.
        precision: ``"float32"``, ``"bfloat16"`` or ``"float16"``: autocast for the votes of
            CERTIFY and PREDICT (the certified classifier is then the reduced-precision one; see
            :mod:`rs_plugin.certification.model_runner`). ``forward`` is unaffected.
        channels_last: count votes with 4-D batches in the channels-last memory format.
        compile: count votes with ``torch.compile(model)`` (compiled on first use).

    Registered as the certifier ``cohen`` (through :class:`~rs_plugin.certification.grid.Cohen`,
    which picks :class:`~rs_plugin.GridCertifier` for a transform certified on a grid).
    """

    options: ClassVar[Mapping[str, str]] = VOTE_OPTIONS

    def __init__(
        self,
        model: nn.Module,
        smoothing: Smoothing,
        num_classes: int,
        *,
        num_noise_samples: int = 32,
        clip_values: tuple[float, float] | None = None,
        seed: int = 0,
        device: str | torch.device | None = None,
        precision: str = "float32",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise RSValueError("model", "a torch.nn.Module returning logits", model)
        if not isinstance(smoothing, Smoothing):
            raise RSValueError("smoothing", "an rs_plugin.Smoothing instance", smoothing)
        check_smoothing = getattr(model, "check_smoothing", None)
        if callable(check_smoothing):
            # A copy: a model that kept the smoothing could change σ before radii are computed.
            check_smoothing(copy.deepcopy(smoothing))
        if clip_values is not None and not (
            len(clip_values) == 2 and float(clip_values[0]) < float(clip_values[1])
        ):
            raise RSValueError(
                "clip_values", "None or a pair (low, high) with low < high", clip_values
            )
        self.model = model
        self.smoothing = smoothing
        self.num_classes = check_int("num_classes", num_classes, 2)
        self.num_noise_samples = check_int("num_noise_samples", num_noise_samples, 1)
        self.clip_values = (
            None if clip_values is None else (float(clip_values[0]), float(clip_values[1]))
        )
        self.seed = check_int("seed", seed, 0, MAX_SEED)
        self._device = None if device is None else torch.device(device)
        self.runner: VoteRunner = VoteRunner(
            model, precision=precision, channels_last=channels_last, compile=compile
        )
        self._probed: Any = None  # what the last passed probe was run on (see _probe)

    @property
    def device(self) -> torch.device:
        """The device samples are generated and evaluated on: the model's."""
        for tensor in list(self.model.parameters()) + list(self.model.buffers()):
            return tensor.device
        return self._device if self._device is not None else torch.device("cpu")

    def _dtype(self) -> torch.dtype:
        """The dtype the model takes its inputs in (:func:`model_dtype`)."""
        return model_dtype(self.model)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Soft smoothed classifier: mean over perturbations of softmax(f), shape (B, C).

        Differentiable in ``x``. The noise is drawn as the certifiers draw it, in float32 (float64
        for a float64 model), and each noisy batch cast to the model's dtype: the same f∘cast.
        Without ``generator`` the noise is seeded with ``self.seed`` on every call, so the
        function is deterministic.
        """
        narrow = self._dtype()
        work = sampling_dtype(self.model, narrow)
        x = x.to(work)
        if generator is None:
            generator = torch.Generator(device=x.device)
            generator.manual_seed(self.seed)
        m = self.num_noise_samples
        noisy = self.smoothing.perturb(x.repeat_interleave(m, dim=0), generator)
        probs = torch.softmax(self.model(noisy.to(narrow)).to(work), dim=1)
        return probs.view(x.shape[0], m, -1).mean(dim=1)

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
        """CERTIFY (Cohen et al. 2019) every input of ``x`` (shape (N, ...)), yielding the
        certificates of inputs as soon as they complete (:meth:`certify` returns them all).

        Selects the top class with ``n0`` samples, then estimates its probability with ``n``
        fresh, independent samples; p_lower is the one-sided 1 − α Clopper–Pearson bound, and the
        certificate abstains (prediction −1, radius 0) when p_lower < 1/2. With probability at
        least 1 − α over the sampling, each returned radius is a true robustness radius.

        ``keys`` (default 0..N−1) with ``seed`` determine each input's noise, so an input's
        certificate does not depend on the batch size or on which other inputs are certified.
        """
        if self.smoothing.on_grid:
            raise RSValueError(
                "smoothing",
                "a smoothing whose radius follows from p_lower; an input-domain rotation or "
                "scaling certifies on a grid: use rs_plugin.GridCertifier (or cohen_certifier)",
                self.smoothing,
            )
        n0, n, alpha = self.check_sizes(n0, n, alpha)
        x_t, key_list = self.prepare(x, batch_size=batch_size, seed=seed, keys=keys)
        for rows, counts in stream_counts(
            self.runner,
            self.smoothing,
            x_t,
            [(STREAM_SELECTION, n0), (STREAM_ESTIMATION, n)],
            num_classes=self.num_classes,
            batch_size=batch_size,
            seed=seed,
            keys=key_list,
        ):
            yield self._certificates(
                [key_list[r] for r in rows], counts, n0, n, alpha, dim=x_t[0].numel()
            )

    @staticmethod
    def check_sizes(n0: int, n: int, alpha: float) -> tuple[int, int, float]:
        """CERTIFY's sample sizes and level, checked."""
        return (
            check_int("n0", n0, 1, MAX_SAMPLES),
            check_int("n", n, 1, MAX_SAMPLES),
            check_open_unit("alpha", alpha),
        )

    def _certificates(
        self, keys: list[int], counts: torch.Tensor, n0: int, n: int, alpha: float, *, dim: int
    ) -> Certificates:
        selection, estimation = counts[:, 0], counts[:, 1]
        top = selection.argmax(dim=1)
        count = estimation.gather(1, top[:, None])[:, 0]
        p_lower = torch.from_numpy(clopper_pearson_lower(count.numpy(), n, alpha))
        return pack_certificates(
            self.smoothing, keys, top, p_lower, selection, estimation, n0, n, alpha, dim=dim
        )

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
        """PREDICT (Cohen et al. 2019): top class of ``n`` samples, or −1 to abstain.

        Abstains unless a two-sided binomial test rejects "top class and runner-up are equally
        likely" at level α; then, with probability at least 1 − α, the prediction is g(x).
        Its noise stream is independent of CERTIFY's for the same seed.
        """
        n = check_int("n", n, 1, MAX_SAMPLES)
        alpha = check_open_unit("alpha", alpha)
        x_t, key_list = self.prepare(x, batch_size=batch_size, seed=seed, keys=keys)
        counts = torch.zeros(x_t.shape[0], self.num_classes, dtype=torch.int64)
        for rows, part in stream_counts(
            self.runner,
            self.smoothing,
            x_t,
            [(STREAM_PREDICT, n)],
            num_classes=self.num_classes,
            batch_size=batch_size,
            seed=seed,
            keys=key_list,
        ):
            counts[rows] = part[:, 0]
        top2 = counts.topk(2, dim=1)
        p_value = torch.from_numpy(
            binomial_p_value(top2.values[:, 0].numpy(), top2.values.sum(dim=1).numpy())
        )
        top = top2.indices[:, 0]
        return Predictions(
            index=torch.tensor(key_list, dtype=torch.int64),
            prediction=torch.where(p_value > alpha, torch.full_like(top, -1), top),
            counts=counts,
            p_value=p_value,
            n=n,
            alpha=alpha,
        )

    def prepare(
        self,
        x: torch.Tensor | np.ndarray,
        *,
        batch_size: int | str,
        seed: int,
        keys: Sequence[int] | None,
    ) -> tuple[torch.Tensor, list[int]]:
        """Validate everything and probe the model once, before any sampling.

        Seeds and keys are hashed as 64-bit words, so both must lie in [0, 2⁶⁴ − 1] (larger
        ones would alias smaller ones), and keys must differ (equal keys give different inputs
        the same noise). The smoothing's σ must leave noise finite in the dtype it is drawn in.
        """
        check_batch_size(batch_size)
        check_int("seed", seed, 0, MAX_SEED)
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor):
            raise RSValueError("x", "a torch.Tensor or numpy array of shape (N, ...)", x)
        check_finite_inputs("x", x, self.clip_values)
        key_list = list(range(x.shape[0])) if keys is None else _check_keys(keys, x.shape[0])
        work = sampling_dtype(self.model, x.dtype)
        scale = self.smoothing.noise_scale
        if scale is not None:
            check_noise_scale("sigma", scale, work)
        if self.model.training:
            warnings.warn(
                "model was in training mode; put it in eval mode for sampling (dropout and "
                "batch-norm statistics would otherwise change the base classifier). Call "
                "model.eval() before certifying to silence this warning.",
                RSWarning,
                stacklevel=3,
            )
            self.model.eval()
        # Held and perturbed in float32 (float64 for float64 models or inputs); the vote runner
        # casts noisy batches to a narrower model's dtype, so the certified point is x itself.
        x_t = x.to(device=self.device, dtype=work)
        self._probe(x_t)
        return x_t, key_list

    def _probe(self, x: torch.Tensor) -> None:
        """One clean forward on a few inputs: check shapes, class count and logit outputs.

        Once per model and input shape: skipped while the model is the same object in the
        same state (:func:`~rs_plugin.certification.probe.model_state`) and the inputs have
        the shape, dtype and device of the last probe it passed (the engine checks every
        batch's output again).
        """
        state = model_state(self.model)
        seen = (id(self.model), state, self.num_classes, tuple(x.shape[1:]), x.dtype, x.device)
        if state is not None and seen == self._probed:
            return
        out = probe_model(self.model, x[:4].to(self._dtype()))
        if out.shape[1] != self.num_classes:
            raise RSValueError(
                "num_classes", f"the model's output width {out.shape[1]}", self.num_classes
            )
        row_sums = out.sum(dim=1)
        if bool(
            (out >= 0).all()
            and (out <= 1).all()
            and torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-4)
        ):
            warnings.warn(
                "the model seems to output probabilities (rows in [0, 1] summing to 1); the soft "
                "smoothed classifier applies softmax to the model's output, so return logits "
                "(drop the final softmax layer). Hard votes and certificates are unaffected.",
                RSWarning,
                stacklevel=4,
            )
        self._probed = seen


# Smallest probability whose log the soft classifier reports (keeps losses and gradients finite).
_TINY = 1e-20


class SmoothedLogProbabilities(nn.Module):
    """log of the soft smoothed classifier's class probabilities, shape (B, num_classes).

    What gradient attacks and ART see as the model's logits. ``smoothed`` is the core
    classifier; its ``forward`` averages softmax over ``smoothed.num_noise_samples``
    perturbations seeded by ``smoothed.seed``.
    """

    def __init__(self, smoothed: SmoothedClassifier) -> None:
        super().__init__()
        self.smoothed = smoothed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.smoothed(x).clamp_min(_TINY))


def _check_keys(keys: Sequence[int], count: int) -> list[int]:
    """One distinct integer in [0, 2⁶⁴ − 1] per input."""
    accepted = f"{count} distinct integers in [0, 2**64 - 1] (one per input)"
    try:
        key_list = [int(k) for k in keys]
    except (TypeError, ValueError) as error:
        raise RSValueError("keys", accepted, keys) from error
    if len(key_list) != count:
        raise RSValueError("keys", accepted, f"{len(key_list)} keys for {count} inputs")
    out_of_range = [k for k in key_list if not 0 <= k <= MAX_SEED]
    if out_of_range:
        raise RSValueError("keys", accepted, f"keys out of range: {out_of_range[:10]}")
    if len(set(key_list)) != count:
        repeated = sorted(k for k, times in Counter(key_list).items() if times > 1)
        raise RSValueError("keys", accepted, f"repeated keys: {repeated[:10]}")
    return key_list
