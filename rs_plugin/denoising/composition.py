"""Denoised smoothing: a frozen classifier behind a denoiser, f(D(x, σ)), as one base model.

Salman et al. 2020 ("Denoised smoothing: a provable defense for pretrained classifiers") smooth
the composition f∘D of a classifier f trained on clean data and a denoiser D: g(x) = argmax_c
P[f(D(x + ε, σ)) = c], ε ~ N(0, σ²I). Every certificate of randomized smoothing holds for any
base classifier, so f∘D is certified exactly as any model is (with probability at least 1 − α
over the sampling, by whichever certifier runs it); the denoiser only raises p_A, and with it
the radius.

:class:`DenoisedClassifier` is that composition, an ordinary ``nn.Module`` returning f's logits.
It is smoothing-aware in one way: D must be told the σ of the noise it removes, and a smoothing
whose noise D was not trained for (another family, or σ outside D's trained range) gives a
wrong base model silently. So the composition records its σ, :meth:`DenoisedClassifier.
check_smoothing` refuses any smoothing but the one it was built for, and every
:class:`~rs_plugin.SmoothedClassifier` (hence every certifier, the ART estimators and the
command line) calls that check when it is built. :func:`denoised_for` builds the composition
from the smoothing itself.

Each forward checks what the denoiser returned (its shape equals its input's, every value
finite), so the model probe every entry point runs before sampling catches a broken denoiser.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from rs_plugin._validation import RSValueError, check_positive, model_dtype
from rs_plugin.smoothings.base import Smoothing

__all__ = ["DenoisedClassifier", "denoised_for"]

# Relative tolerance between the composition's σ and the smoothing's (float round-off only).
_SIGMA_RTOL = 1e-6


class DenoisedClassifier(nn.Module):
    """f(D(x, σ)): ``classifier`` f applied to ``denoiser`` D's estimate of the clean input.

    Args:
        classifier: f, (B, C, H, W) → (B, num_classes) logits, used as it is (never trained here).
        denoiser: D, called as ``denoiser(x, sigma)`` with ``sigma`` a float, returning a tensor
            of x's shape. Its optional attributes ``noise`` (the smoothing family's name) and
            ``sigma_range`` ((low, high)) say what it was trained for and are enforced
            (:class:`~rs_plugin.denoising.ConditionalDenoiser` has both).
        sigma: the standard deviation of the smoothing noise D removes, inside ``sigma_range``.

    ``forward(x)``: (B, ...) → (B, num_classes). Raises :class:`RSValueError` when D's output
    has another shape than its input or holds NaN or infinite values.
    """

    def __init__(self, classifier: nn.Module, denoiser: nn.Module, sigma: float) -> None:
        super().__init__()
        if not isinstance(classifier, nn.Module):
            raise RSValueError("classifier", "a torch.nn.Module returning logits", classifier)
        if not isinstance(denoiser, nn.Module):
            raise RSValueError(
                "denoiser", "a torch.nn.Module called as denoiser(x, sigma)", denoiser
            )
        self.classifier = classifier
        self.denoiser = denoiser
        # In eval mode when both parts are (nn.Module starts in training mode).
        self.training = bool(classifier.training or denoiser.training)
        self.sigma = check_positive("sigma", sigma)
        trained = trained_sigma_range(denoiser)
        if trained is not None and not _within(self.sigma, trained):
            raise RSValueError(
                "sigma",
                f"a σ inside the denoiser's trained range [{trained[0]}, {trained[1]}]",
                self.sigma,
            )

    @property
    def noise(self) -> str | None:
        """The smoothing family the denoiser was trained for (None when it does not say)."""
        noise = getattr(self.denoiser, "noise", None)
        return noise if isinstance(noise, str) else None

    def check_smoothing(self, smoothing: Smoothing) -> None:
        """Refuse a smoothing other than the one this composition was built for: another noise
        family than the denoiser's, or a σ other than :attr:`sigma` (RSValueError naming both)."""
        if not isinstance(smoothing, Smoothing):
            raise RSValueError("smoothing", "an rs_plugin.Smoothing instance", smoothing)
        scale = smoothing.noise_scale
        family = self.noise
        mine = f"{family or 'additive'} noise with σ = {self.sigma}"
        if family is not None and smoothing.name != family:
            raise RSValueError(
                "smoothing", f"the denoiser's {mine}", f"{smoothing!r} (family {smoothing.name!r})"
            )
        if scale is None or not math.isclose(scale, self.sigma, rel_tol=_SIGMA_RTOL):
            raise RSValueError("smoothing", f"the denoiser's {mine}", repr(smoothing))

    @property
    def input_dtype(self) -> torch.dtype:
        """The denoiser's dtype: the one the composition takes its inputs in."""
        return model_dtype(self.denoiser)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        denoised = self.denoiser(x.to(self.input_dtype), self.sigma)
        if not isinstance(denoised, torch.Tensor) or denoised.shape != x.shape:
            shape = tuple(denoised.shape) if isinstance(denoised, torch.Tensor) else denoised
            raise RSValueError(
                "denoiser", f"a denoiser returning its input's shape {tuple(x.shape)}", shape
            )
        if not bool(torch.isfinite(denoised).all()):
            raise RSValueError(
                "denoiser", "a denoiser returning finite values", "NaN or infinite values"
            )
        return self.classifier(denoised.to(model_dtype(self.classifier)))

    def config(self) -> dict[str, Any]:
        """σ and what the denoiser says it was trained for, as plain values."""
        trained = trained_sigma_range(self.denoiser)
        return {
            "sigma": self.sigma,
            "noise": self.noise,
            "sigma_range": None if trained is None else list(trained),
        }


def trained_sigma_range(denoiser: nn.Module) -> tuple[float, float] | None:
    """The denoiser's ``sigma_range`` as two floats, or None when it has none."""
    trained = getattr(denoiser, "sigma_range", None)
    if trained is None:
        return None
    low, high = (float(v) for v in trained)
    return low, high


def _within(sigma: float, trained: tuple[float, float]) -> bool:
    low, high = trained
    slack = _SIGMA_RTOL * max(abs(high), 1.0)
    return low - slack <= sigma <= high + slack


def denoised_for(
    classifier: nn.Module, denoiser: nn.Module, smoothing: Smoothing
) -> DenoisedClassifier:
    """The composition for ``smoothing``: σ is the smoothing's noise scale; a smoothing whose
    family or σ the denoiser was not trained for is refused (RSValueError naming both)."""
    if not isinstance(smoothing, Smoothing):
        raise RSValueError("smoothing", "an rs_plugin.Smoothing instance", smoothing)
    family = getattr(denoiser, "noise", None)
    trained = trained_sigma_range(denoiser)
    scale = smoothing.noise_scale
    wanted = (
        f"{family or 'additive'} noise"
        + ("" if trained is None else f" with σ in [{trained[0]}, {trained[1]}]")
        + " (what the denoiser was trained for)"
    )
    if scale is None or (isinstance(family, str) and smoothing.name != family):
        raise RSValueError("smoothing", wanted, repr(smoothing))
    if trained is not None and not _within(scale, trained):
        raise RSValueError("smoothing", wanted, repr(smoothing))
    composed = DenoisedClassifier(classifier, denoiser, scale)
    composed.check_smoothing(smoothing)
    return composed
