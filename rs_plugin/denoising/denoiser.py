"""A small noise-conditional residual denoiser for single-channel or colour images in [0, 1].

D(x̃, σ) = x̃ − R([x̃, σ·1]): the network R predicts the noise in x̃ (residual learning, Zhang et
al. 2017, "Beyond a Gaussian denoiser", DnCNN) from the noisy image and one extra constant input
channel holding σ, the standard deviation of the noise it should remove. Trained over a range of
σ (:attr:`ConditionalDenoiser.sigma_range`), one denoiser serves every smoothing in that range:
the one-shot idea of Carlini et al. 2023 ("(Certified!!) Adversarial robustness for free!"),
with a small convolutional network in place of their diffusion model.

Layout (``width`` w, ``depth`` k): conv 3×3 (C + 1 → w) at full resolution, a stride-2 conv
3×3 (w → 2w), k convs 3×3 (2w → 2w) at half resolution, a stride-2 transposed conv (2w → w)
back to full resolution concatenated with the first features, and two convs 3×3 down to C
channels; ReLU between. The half-resolution body gives a receptive field of about 4k + 11
pixels at a fraction of a full-resolution DnCNN's cost: on 1×28×28 inputs, k = 4 takes about
8 M multiply-adds per image with w = 16 and 2 M with w = 8, the default (LeNet: 2.3 M). Any
even height and width are accepted.

The denoiser records what it was trained for (:attr:`ConditionalDenoiser.noise`, the
smoothing's name, and :attr:`ConditionalDenoiser.sigma_range`) so that a composition refuses a
smoothing it was not trained for (:mod:`rs_plugin.denoising.composition`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rs_plugin._validation import RSValueError, check_int

__all__ = ["ConditionalDenoiser", "build_denoiser"]


class ConditionalDenoiser(nn.Module):
    """D(x̃, σ) = x̃ − R([x̃, σ·1]), trained for ``noise`` with σ in ``sigma_range``.

    Args:
        channels: image channels C (1 for Fashion-MNIST, 3 for CIFAR-10).
        width: feature channels at full resolution (twice as many at half resolution).
        depth: convolutions at half resolution (>= 1).
        noise: the name of the smoothing family it is trained for (``Smoothing.name``).
        sigma_range: (low, high), the closed interval of σ it is trained for, 0 <= low <= high.

    ``forward(x, sigma)``: ``x`` (B, C, H, W) with H and W even, ``sigma`` a float or a tensor of
    shape (B,); returns (B, C, H, W).
    """

    sigma_bounds: torch.Tensor

    def __init__(
        self,
        channels: int = 1,
        width: int = 8,
        depth: int = 4,
        *,
        noise: str = "gaussian",
        sigma_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        self.channels = check_int("channels", channels, 1)
        self.width = check_int("width", width, 1)
        self.depth = check_int("depth", depth, 1)
        if not isinstance(noise, str) or not noise:
            raise RSValueError("noise", "the name of a smoothing family", noise)
        try:
            low, high = (float(v) for v in sigma_range)
        except (TypeError, ValueError):
            raise RSValueError("sigma_range", "a pair (low, high)", sigma_range) from None
        if not 0.0 <= low <= high < float("inf"):
            raise RSValueError("sigma_range", "a pair 0 <= low <= high < inf", sigma_range)
        self.noise = noise
        # A buffer, so the trained range travels with the weights in the state dict.
        self.register_buffer("sigma_bounds", torch.tensor([low, high], dtype=torch.float64))
        w = self.width
        self.head = nn.Sequential(nn.Conv2d(channels + 1, w, 3, padding=1), nn.ReLU())
        body: list[nn.Module] = [nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU()]
        for _ in range(depth):
            body += [nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU()]
        body += [nn.ConvTranspose2d(2 * w, w, 2, stride=2), nn.ReLU()]
        self.body = nn.Sequential(*body)
        self.tail = nn.Sequential(
            nn.Conv2d(2 * w, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, channels, 3, padding=1)
        )

    @property
    def sigma_range(self) -> tuple[float, float]:
        """The closed interval of σ the denoiser was trained for."""
        low, high = self.sigma_bounds.tolist()
        return float(low), float(high)

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        level = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        level = level.reshape(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[2:])
        features = self.head(torch.cat([x, level], dim=1))
        residual = self.tail(torch.cat([features, self.body(features)], dim=1))
        return x - residual

    def config(self) -> dict[str, Any]:
        """The architecture and what it was trained for, as plain values."""
        return {
            "channels": self.channels,
            "width": self.width,
            "depth": self.depth,
            "noise": self.noise,
            "sigma_range": list(self.sigma_range),
        }


def build_denoiser(
    seed: int = 0,
    *,
    channels: int = 1,
    width: int = 8,
    depth: int = 4,
    noise: str = "gaussian",
    sigma_range: tuple[float, float] = (0.0, 1.0),
) -> ConditionalDenoiser:
    """A :class:`ConditionalDenoiser` with PyTorch's default initialisation drawn from ``seed``
    (the caller's global RNG state is restored); the other arguments are its constructor's."""
    seed = check_int("seed", seed, 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ConditionalDenoiser(channels, width, depth, noise=noise, sigma_range=sigma_range)
