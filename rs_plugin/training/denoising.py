"""Training a denoiser D for a frozen classifier f (Salman et al. 2020, "Denoised smoothing: a
provable defense for pretrained classifiers"), noise-conditional over a range of σ.

The model the loop trains is the denoiser, called as ``denoiser(x̃, σ)`` with σ of shape (B,)
(:class:`~rs_plugin.denoising.ConditionalDenoiser`). Each input x gets a noise level σᵢ drawn
uniformly from ``sigma_range`` (or the smoothing's own σ when ``sigma_range`` is None) and the
noisy input x̃ = x + (σᵢ/σ_s)·ε, ε drawn by the smoothing's ``noise_`` at its scale σ_s, so the
noise has the smoothing's family at level σᵢ (any :class:`~rs_plugin.smoothings.base.AdditiveNoise`
whose ``noise_scale`` scales its draws linearly, as Gaussian, Laplace and uniform noise do).
The losses, averaged over the batch:

* MSE: ‖D(x̃, σᵢ) − x‖² / d (the mean squared error per coordinate);
* stability: CE(f(D(x̃, σᵢ)), argmax f(x)), the classifier's cross-entropy on the denoised
  input against its own clean prediction (Salman et al.'s L_Stab);
* their sum, stability + MSE weighted by ``mse_weight``.

The classifier stays frozen: it runs in eval mode through ``torch.func.functional_call`` on
detached copies of its parameters, so neither its weights, its buffers nor their gradients are
touched, and its mode is restored after every step.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from rs_plugin._validation import RSValueError, check_positive
from rs_plugin.smoothings.base import AdditiveNoise, Smoothing
from rs_plugin.training.objective import Objective

__all__ = ["DENOISER_LOSSES", "DenoiserObjective"]

DENOISER_LOSSES = ("mse", "stability", "stability+mse")


class DenoiserObjective(Objective):
    """The loss of one step of a denoiser: MSE, stability, or stability + MSE.

    Args:
        smoothing: the additive smoothing whose noise family the denoiser learns to remove.
        loss: ``"mse"``, ``"stability"`` or ``"stability+mse"``.
        classifier: the frozen classifier f (needed by the stability losses, refused by MSE).
        sigma_range: (low, high), σᵢ ~ U[low, high] per input; None: the smoothing's σ.
        mse_weight: the weight of the MSE term in ``"stability+mse"``.
    """

    name: ClassVar[str] = "denoiser"

    def __init__(
        self,
        smoothing: Smoothing,
        *,
        loss: str = "mse",
        classifier: nn.Module | None = None,
        sigma_range: tuple[float, float] | None = (0.0, 1.0),
        mse_weight: float = 1.0,
    ) -> None:
        super().__init__(smoothing)
        if not isinstance(smoothing, AdditiveNoise) or not smoothing.noise_scale:
            raise RSValueError(
                "smoothing", "an additive noise with a noise_scale (Gaussian, Laplace, ...)",
                smoothing,
            )  # fmt: skip
        if loss not in DENOISER_LOSSES:
            raise RSValueError("loss", f"one of {DENOISER_LOSSES}", loss)
        if loss == "mse" and classifier is not None:
            raise RSValueError("classifier", "None for the MSE loss", type(classifier).__name__)
        if loss != "mse" and not isinstance(classifier, nn.Module):
            raise RSValueError("classifier", f"a torch.nn.Module for loss {loss!r}", classifier)
        if sigma_range is not None:
            try:
                low, high = (float(v) for v in sigma_range)
            except (TypeError, ValueError):
                raise RSValueError(
                    "sigma_range", "None or a pair (low, high)", sigma_range
                ) from None
            if not 0.0 <= low <= high < float("inf"):
                raise RSValueError("sigma_range", "None or 0 <= low <= high < inf", sigma_range)
            sigma_range = (low, high)
        self.loss_name = loss
        self.classifier = classifier
        self.sigma_range = sigma_range
        self.mse_weight = check_positive("mse_weight", mse_weight)

    def noisy(
        self, x: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̃, σ): the noisy inputs (B, ...) and their noise levels (B,)."""
        assert isinstance(self.smoothing, AdditiveNoise)
        scale = float(self.smoothing.noise_scale or 1.0)
        noise = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        self.smoothing.noise_(noise, generator)
        if self.sigma_range is None:
            sigma = torch.full((len(x),), scale, dtype=x.dtype, device=x.device)
            return x + noise, sigma
        low, high = self.sigma_range
        u = torch.rand(len(x), dtype=x.dtype, device=x.device, generator=generator)
        sigma = low + (high - low) * u
        factor = (sigma / scale).reshape(-1, *([1] * (x.ndim - 1)))
        return x + noise * factor, sigma

    def loss(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator,
        epoch: int,
    ) -> torch.Tensor:
        noisy, sigma = self.noisy(x, generator)
        denoised = model(noisy, sigma)
        mse = F.mse_loss(denoised, x)
        if self.loss_name == "mse":
            return mse
        stability = self._stability(x, denoised)
        if self.loss_name == "stability":
            return stability
        return stability + self.mse_weight * mse

    def _stability(self, x: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        classifier = self.classifier
        assert classifier is not None
        frozen = {k: v.detach() for k, v in classifier.named_parameters()}
        frozen.update({k: v.detach() for k, v in classifier.named_buffers()})
        mode = classifier.training
        classifier.eval()
        try:
            with torch.no_grad():
                target = functional_call(classifier, frozen, (x,)).argmax(dim=1)
            logits = functional_call(classifier, frozen, (denoised,))
        finally:
            classifier.train(mode)
        return F.cross_entropy(logits, target)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "loss": self.loss_name,
            "sigma_range": None if self.sigma_range is None else list(self.sigma_range),
            "mse_weight": self.mse_weight,
        }
