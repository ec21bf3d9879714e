"""Shared analytic models: classifiers whose smoothed behaviour is known in closed form."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from rs_plugin import Smoothing, cohen_certifier


class LinearModel(nn.Module):
    """f(x) = 1 if w·x + b > 0 else 0, as two logits (−z, z) scaled by ``scale``.

    Under Gaussian noise N(0, σ²I) the smoothed classifier equals f, with
    p_A = Φ(|w·x + b| / (σ‖w‖₂)), and the true ℓ2 robustness radius is |w·x + b| / ‖w‖₂.
    """

    w: torch.Tensor

    def __init__(self, w: torch.Tensor, b: float, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("w", w.flatten().to(torch.float32))
        self.b = float(b)
        self.scale = scale

    def margin(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w + self.b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.scale * self.margin(x)
        return torch.stack([-z, z], dim=1)

    def true_radius(self, x: torch.Tensor) -> torch.Tensor:
        return (self.margin(x).abs() / self.w.norm()).double()

    def label(self, x: torch.Tensor) -> torch.Tensor:
        return (self.margin(x) > 0).long()


class ConstantModel(nn.Module):
    """Votes for class ``target`` whatever the input."""

    logits: torch.Tensor

    def __init__(self, num_classes: int = 10, target: int = 3) -> None:
        super().__init__()
        logits = torch.zeros(num_classes)
        logits[target] = 5.0
        self.register_buffer("logits", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


def binomial_upper_tail(k: int, trials: int, p: float) -> float:
    """P[Binomial(trials, p) >= k], exactly (sums in log space)."""
    if k <= 0:
        return 1.0
    total = 0.0
    for i in range(k, trials + 1):
        log_term = (
            math.lgamma(trials + 1)
            - math.lgamma(i + 1)
            - math.lgamma(trials - i + 1)
            + i * math.log(p)
            + (trials - i) * math.log1p(-p)
        )
        total += math.exp(log_term)
    return min(total, 1.0)


def assert_art_adapter_matches_core(smoothing: Smoothing, inputs: int) -> np.ndarray:
    """The ART estimator with ``smoothing`` on the demo model certifies like the core and has
    finite, non-zero loss gradients; returns its radii."""
    from rs_plugin.adapters.art import PyTorchSmoothedClassifier
    from rs_plugin.data import load_demo_model, load_digits

    model = load_demo_model()
    est = PyTorchSmoothedClassifier(
        model,
        torch.nn.CrossEntropyLoss(),
        (1, 8, 8),
        10,
        clip_values=(0.0, 1.0),
        sample_size=30,
        device_type="cpu",
        smoothing=smoothing,
    )
    x = load_digits("test")[0][:inputs]
    prediction, radius = est.certify(x.numpy(), n=300)
    core = cohen_certifier(model.eval(), smoothing, 10).certify(x, n0=30, n=300, batch_size=32)
    np.testing.assert_array_equal(prediction, core.prediction.numpy())
    np.testing.assert_allclose(radius, core.radius.numpy())
    grad = est.loss_gradient(x.numpy(), np.arange(inputs))
    assert grad.shape == x.shape and np.isfinite(grad).all() and np.abs(grad).sum() > 0
    return radius
