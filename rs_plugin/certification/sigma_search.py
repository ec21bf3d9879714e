"""Per-input σ by gradient ascent on a certified-radius surrogate (DDRS and ANCER).

Both maximise, on the soft smoothed classifier with m reparametrised noise samples per step,
the surrogate radius  ρ(σ) · (Φ⁻¹(p̂_A) − Φ⁻¹(p̂_B)) / 2  where p̂_A, p̂_B are the two largest
mean softmax probabilities and ρ is

* DDRS (Alfarra et al. 2022): the isotropic σ itself, kept in [σ_low, σ_high];
* ANCER (Eiras et al. 2022): the geometric mean of the per-coordinate σ (the ellipsoid's proxy
  radius), with every σᵢ kept ≥ the isotropic σ it starts from, so the ellipsoid always contains
  the isotropic ball it started as.

The noise comes from a generator per input seeded from (seed, key), a stream independent of the
certification samples, so the σ chosen for an input is independent of the samples that certify
it, and does not depend on the batch it was optimised in.

The chosen σ is a function of the input: certifying with it needs the memory of
:mod:`rs_plugin.certification.memory` to be sound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from rs_plugin.certification.engine import STREAM_ANISOTROPIC, STREAM_SIGMA, block_seed
from rs_plugin.certification.model_runner import model_dtype

__all__ = ["ADAM_BETAS", "adam_reach", "optimise_anisotropic_sigma", "optimise_isotropic_sigma"]

_P_CLAMP = 1e-4
ADAM_BETAS = (0.9, 0.999)


def adam_reach(steps: int, lr: float) -> float:
    """The farthest ``steps`` steps of Adam (rate ``lr``, :data:`ADAM_BETAS`, no weight
    decay) can move one coordinate, whatever the gradients: lr · Σ_t B_t.

    Step t moves a coordinate by lr · m̂_t / (√v̂_t + ε), with m̂_t = m_t / (1 − β1^t),
    v̂_t = v_t / (1 − β2^t), m_t = (1 − β1) Σ_i β1^{t−i} g_i and v_t = (1 − β2) Σ_i β2^{t−i} g_i².
    Cauchy–Schwarz on Σ_i (β1^{t−i} β2^{−(t−i)/2}) (β2^{(t−i)/2} g_i) bounds |m_t| / √v_t by
    (1 − β1) / √(1 − β2) · √(Σ_{j<t} (β1²/β2)^j), so
    B_t = (1 − β1) √(1 − β2^t) √(Σ_{j<t} (β1²/β2)^j) / ((1 − β1^t) √(1 − β2)) (B_1 = 1).
    """
    beta1, beta2 = ADAM_BETAS
    total, geometric = 0.0, 0.0
    for t in range(1, steps + 1):
        geometric += (beta1 * beta1 / beta2) ** (t - 1)
        total += (
            (1 - beta1)
            * math.sqrt((1 - beta2**t) * geometric)
            / ((1 - beta1**t) * math.sqrt(1 - beta2))
        )
    return lr * total


def _generators(
    seed: int, stream: int, keys: Sequence[int], device: torch.device
) -> list[torch.Generator]:
    generators = []
    for key in keys:
        generator = torch.Generator(device=device)
        generator.manual_seed(block_seed(seed, stream, int(key), 0))
        generators.append(generator)
    return generators


def _margin(
    model: nn.Module, x: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """(Φ⁻¹(p̂_A) − Φ⁻¹(p̂_B)) / 2 of the soft smoothed classifier, per input, differentiable in σ.

    ``x`` (B, ...), ``sigma`` broadcastable to (B, 1, ...), ``noise`` (B, m, ...).
    """
    batch, m = noise.shape[:2]
    noisy = (x.unsqueeze(1) + sigma.unsqueeze(1) * noise).flatten(0, 1)
    logits = model(noisy.to(model_dtype(model)))  # cast as the vote runner does
    probs = torch.softmax(logits.to(noisy.dtype), dim=1).view(batch, m, -1).mean(dim=1)
    top = probs.topk(2, dim=1).values.clamp(_P_CLAMP, 1.0 - _P_CLAMP)
    return 0.5 * (torch.special.ndtri(top[:, 0]) - torch.special.ndtri(top[:, 1]))


def _draw(
    generators: list[torch.Generator], shape: tuple[int, ...], like: torch.Tensor
) -> torch.Tensor:
    return torch.stack(
        [torch.randn(shape, generator=g, device=like.device, dtype=like.dtype) for g in generators]
    )


def _ascend(optimiser: torch.optim.Optimizer, param: torch.Tensor, objective: torch.Tensor) -> None:
    # autograd.grad, not backward: the model's parameters must not accumulate gradients.
    (param.grad,) = torch.autograd.grad(-objective.sum(), [param])
    optimiser.step()


def optimise_isotropic_sigma(
    model: nn.Module,
    x: torch.Tensor,
    *,
    sigma: float,
    low: float,
    high: float,
    steps: int,
    lr: float,
    num_noise_samples: int,
    seed: int,
    keys: Sequence[int],
) -> torch.Tensor:
    """DDRS: one σ per input in [low, high], starting at ``sigma``; returns (N,) float64."""
    generators = _generators(seed, STREAM_SIGMA, keys, x.device)
    log_sigma = torch.full(
        (x.shape[0],), math.log(sigma), dtype=x.dtype, device=x.device, requires_grad=True
    )
    optimiser = torch.optim.Adam([log_sigma], lr=lr, betas=ADAM_BETAS)
    view = (-1,) + (1,) * (x.dim() - 1)
    for _ in range(steps):
        noise = _draw(generators, (num_noise_samples, *x.shape[1:]), x)
        value = log_sigma.exp()
        objective = value * _margin(model, x, value.view(view), noise)
        _ascend(optimiser, log_sigma, objective)
        with torch.no_grad():
            log_sigma.clamp_(math.log(low), math.log(high))
    return log_sigma.detach().exp().to(torch.float64).cpu()


def optimise_anisotropic_sigma(
    model: nn.Module,
    x: torch.Tensor,
    *,
    sigma: torch.Tensor,
    steps: int,
    lr: float,
    num_noise_samples: int,
    seed: int,
    keys: Sequence[int],
) -> torch.Tensor:
    """ANCER: per-coordinate σ (N, d) ≥ the isotropic start ``sigma`` (N,); float64 on the CPU."""
    generators = _generators(seed, STREAM_ANISOTROPIC, keys, x.device)
    floor = torch.log(sigma.to(device=x.device, dtype=x.dtype)).view(-1, 1)
    log_sigma = floor.expand(x.shape[0], x[0].numel()).clone().requires_grad_(True)
    optimiser = torch.optim.Adam([log_sigma], lr=lr, betas=ADAM_BETAS)
    for _ in range(steps):
        noise = _draw(generators, (num_noise_samples, *x.shape[1:]), x)
        value = log_sigma.exp()
        proxy = torch.exp(log_sigma.mean(dim=1))
        objective = proxy * _margin(model, x, value.view(x.shape), noise)
        _ascend(optimiser, log_sigma, objective)
        with torch.no_grad():
            log_sigma.copy_(torch.maximum(log_sigma, floor))
    return log_sigma.detach().exp().to(torch.float64).cpu()
