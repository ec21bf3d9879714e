"""The in-place perturbation hook: for every built-in smoothing, ``perturb_`` (the engine's path)
writes what the fallback of a smoothing that implements only ``perturb`` writes, from the same
generator state; a third-party smoothing without the hook gets the fallback."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

from rs_plugin import (
    AdditiveNoise,
    AnisotropicGaussian,
    Blur,
    Brightness,
    Compose,
    Laplace,
    Rotation,
    Scaling,
    Smoothing,
    Translation,
)
from rs_plugin._registry import discover, load_smoothing

SIGMAS = {"rotation": 10.0, "translation": 1.0, "scaling": 0.1, "affine": 0.05}
SHAPE = (3, 6, 5)  # channels, height, width: odd sizes and several channels


def builtin_instances() -> list[tuple[str, Smoothing]]:
    """Every registered smoothing, plus the variants whose perturbation takes another path."""
    # The sound families take any input here (rounded to their grid): the tables use rand.
    rounding = {"round_inputs": True}
    built = [
        (name, load_smoothing(name, sigma=SIGMAS.get(name, 0.3), **rounding))
        if name.endswith("_sound")
        else (name, load_smoothing(name, sigma=SIGMAS.get(name, 0.3)))
        for name in sorted(discover("rs_plugin.smoothings"))
    ]
    extra: list[tuple[str, Smoothing]] = [
        ("anisotropic_gaussian[vector]", AnisotropicGaussian(torch.rand(SHAPE) + 0.1)),
        ("rotation[input]", Rotation(10.0, semantics="input", input_range=4, grid_step=2)),
        ("scaling[input]", Scaling(0.1, semantics="input", input_range=0.1, grid_step=0.05)),
        ("translation[bilinear]", Translation(1.0, interpolation="bilinear", padding="border")),
        ("blur[uniform]", Blur(0.5, noise="uniform")),
        ("compose", Compose(Rotation(10.0), Brightness(0.2))),
    ]
    return built + extra


INSTANCES = builtin_instances()
IDS = [name for name, _ in INSTANCES]


def _fallback(smoothing: Smoothing, out: torch.Tensor, x: torch.Tensor, seed: int) -> None:
    Smoothing.perturb_(smoothing, out, x, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("name", "smoothing"), INSTANCES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_in_place_path_writes_what_the_fallback_writes(name, smoothing, dtype):
    x = torch.rand(1, *SHAPE, dtype=dtype)
    fast = torch.full((37, *SHAPE), float("nan"), dtype=dtype)
    smoothing.perturb_(fast, x, torch.Generator().manual_seed(7))
    slow = torch.empty_like(fast)
    _fallback(smoothing, slow, x, 7)
    torch.testing.assert_close(fast, slow)
    assert not torch.equal(fast, x.expand_as(fast))  # it perturbed


@pytest.mark.parametrize(
    ("name", "smoothing"),
    [(n, s) for n, s in INSTANCES if isinstance(s, AdditiveNoise)],
    ids=[n for n, s in INSTANCES if isinstance(s, AdditiveNoise)],
)
def test_additive_noise_is_the_perturbation_of_zero(name, smoothing):
    """The engine adds the input itself after ``noise_``: noise_ must be perturb(0)."""
    noise = torch.empty(20, *SHAPE)
    smoothing.noise_(noise, torch.Generator().manual_seed(3))
    zero = smoothing.perturb(torch.zeros(20, *SHAPE), torch.Generator().manual_seed(3))
    torch.testing.assert_close(noise, zero)


class _ThirdParty(Smoothing):
    """A smoothing written against the old interface: ``perturb`` and ``radius`` only."""

    name: ClassVar[str] = "third_party"
    norm: ClassVar[str] = "l2"

    def perturb(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x + torch.rand(x.shape, generator=generator, dtype=x.dtype)

    def radius(self, p_lower: torch.Tensor, dim: int) -> torch.Tensor:
        return torch.zeros_like(p_lower)

    def config(self) -> dict[str, Any]:
        return {"name": self.name}


def test_a_smoothing_without_the_hook_gets_the_fallback():
    smoothing = _ThirdParty()
    x = torch.rand(1, *SHAPE)
    out = torch.empty(9, *SHAPE)
    smoothing.perturb_(out, x, torch.Generator().manual_seed(1))
    expected = smoothing.perturb(x.expand(9, *SHAPE), torch.Generator().manual_seed(1))
    assert torch.equal(out, expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_laplace_noise_is_finite_when_the_uniform_draw_is_zero(dtype):
    """A uniform draw of exactly 0 (u = −1/2) once gave infinite noise; in bfloat16 a draw is 0
    about once in 256, so 100 000 draws hit it for sure (float32 is checked for finiteness)."""
    out = torch.empty(100_000, dtype=dtype)
    probe = torch.empty_like(out).uniform_(generator=torch.Generator().manual_seed(3))
    if dtype == torch.bfloat16:
        assert bool((probe == 0).any())
    Laplace(0.5).noise_(out, torch.Generator().manual_seed(3))
    assert bool(torch.isfinite(out).all())
    assert float(out.abs().max()) <= Laplace(0.5).scale * 40
