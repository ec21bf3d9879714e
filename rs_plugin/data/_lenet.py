"""The LeNet of the randomized-smoothing papers' MNIST and Fashion-MNIST tables.

Jeong & Shin 2020, Jeong et al. 2021 and Jeong, Kim & Shin 2023 (CAT-RS) train and certify this
network on 1×28×28 images in [0, 1], with no input normalisation (their Fashion-MNIST
normalisation layer is the identity, so the noise is added to the raw pixels):

    conv 5×5 (1 → 20), ReLU, max-pool 2 → conv 5×5 (20 → 50), ReLU, max-pool 2
    → flatten (50·4·4 = 800) → fc 800 → 500, ReLU → fc 500 → 10 logits.

431 080 parameters (1.7 MB in float32).
"""

from __future__ import annotations

import torch
from torch import nn

from rs_plugin._validation import check_int

__all__ = ["LeNet", "build_lenet"]


class LeNet(nn.Module):
    """LeNet for 1×28×28 inputs: conv 5×5 (20) → pool → conv 5×5 (50) → pool → fc 500 → 10.

    Input (B, 1, 28, 28), output (B, ``num_classes``) logits.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 20, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(50 * 4 * 4, 500),
            nn.ReLU(),
            nn.Linear(500, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def build_lenet(seed: int = 0, num_classes: int = 10) -> LeNet:
    """A :class:`LeNet` with PyTorch's default initialisation drawn from ``seed``.

    The global RNG is used inside a fork and restored afterwards, so the caller's random state
    is neither read nor advanced; the same seed gives the same weights on the same torch build.
    """
    seed = check_int("seed", seed, 0)
    num_classes = check_int("num_classes", num_classes, 2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LeNet(num_classes)
