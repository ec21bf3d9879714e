"""Re-train the embedded digits CNN reproducibly: ``python -m rs_plugin.data.train_demo``.

Gaussian noise augmentation at σ = 0.25 (Cohen et al. 2019: train on the noise you certify with),
Adam, fixed seed. Every random draw (weight initialisation, shuffling, noise) comes from the
given seed; the global RNG state is restored afterwards. On the same torch build and thread count
the weights come out bit-identical.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from rs_plugin.data._datasets import load_digits
from rs_plugin.data._models import DEMO_SIGMA, DEMO_WEIGHTS, DemoCNN
from rs_plugin.smoothings.base import Smoothing
from rs_plugin.smoothings.gaussian import Gaussian

__all__ = ["train_demo_model", "train_with_noise"]


def train_with_noise(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    smoothing: Smoothing,
    *,
    seed: int = 0,
    epochs: int = 40,
    batch_size: int = 64,
    lr: float = 2e-3,
) -> nn.Module:
    """Train ``model`` on (x, y) with ``smoothing``'s noise on every batch (Adam, cosine
    schedule); shuffling and noise come from a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad()
            loss_fn(model(smoothing.perturb(x[index], generator)), y[index]).backward()
            optimizer.step()
        schedule.step()
    return model.eval()


def train_demo_model(
    *,
    seed: int = 0,
    epochs: int = 40,
    sigma: float = DEMO_SIGMA,
    batch_size: int = 64,
    lr: float = 2e-3,
    smoothing: Smoothing | None = None,
) -> DemoCNN:
    """Train :class:`DemoCNN` on the digits training split with noise augmentation.

    The noise is ``smoothing``'s (train on the noise you certify with), by default
    ``Gaussian(sigma)``; its draws come from the seeded generator.
    """
    x, y = load_digits("train")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DemoCNN()
    noise = Gaussian(sigma) if smoothing is None else smoothing
    train_with_noise(model, x, y, noise, seed=seed, epochs=epochs, batch_size=batch_size, lr=lr)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEMO_WEIGHTS, help="where to save weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args(argv)
    model = train_demo_model(seed=args.seed, epochs=args.epochs)
    torch.save(model.state_dict(), args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
