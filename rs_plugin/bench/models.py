"""The models ``rs-plugin bench`` times: the digits CNN that ships with the package, and the sizes
users certify (a LeNet for 1×28×28, a CIFAR ResNet-20 for 3×32×32, an ImageNet ResNet-50 for
3×224×224), with seeded random weights where none ship.

Certification time depends on the architecture and the input size, not on the weights: every
sample costs one forward pass whatever it computes. The models are built on the ``meta`` device
and initialised from a seeded generator (no global random state is read or advanced). Residual
branches end in a batch norm whose scale starts at 0, so random deep networks keep finite,
input-dependent logits (the engine stops on non-finite ones); the arithmetic is unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from rs_plugin._validation import RSValueError
from rs_plugin.data._lenet import LeNet

__all__ = ["BENCH_MODELS", "BenchModel", "LeNet", "ResNet20", "ResNet50", "bench_inputs"]


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    )


class _Residual(nn.Module):
    """relu(branch(x) + shortcut(x)); the shortcut projects when the shape changes."""

    def __init__(self, branch: nn.Sequential, shortcut: nn.Module) -> None:
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.branch(x) + self.shortcut(x))


def _basic(c_in: int, c_out: int, stride: int) -> _Residual:
    branch = nn.Sequential(
        _conv_bn(c_in, c_out, 3, stride), nn.ReLU(), _conv_bn(c_out, c_out, 3, 1)
    )
    shortcut = nn.Identity() if stride == 1 and c_in == c_out else _conv_bn(c_in, c_out, 1, stride)
    return _Residual(branch, shortcut)


def _bottleneck(c_in: int, width: int, stride: int) -> _Residual:
    c_out = 4 * width
    branch = nn.Sequential(
        _conv_bn(c_in, width, 1, 1),
        nn.ReLU(),
        _conv_bn(width, width, 3, stride),
        nn.ReLU(),
        _conv_bn(width, c_out, 1, 1),
    )
    shortcut = nn.Identity() if stride == 1 and c_in == c_out else _conv_bn(c_in, c_out, 1, stride)
    return _Residual(branch, shortcut)


class ResNet20(nn.Module):
    """He et al. 2016's CIFAR ResNet-20 for 3×32×32: a 3×3 stem (16), three stages of three
    basic blocks (16, 32, 64 channels), global average pooling, fc → 10 (1×1 projections)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 16, 3, 1), nn.ReLU()]
        c_in = 16
        for stage, width in enumerate((16, 32, 64)):
            for block in range(3):
                layers.append(_basic(c_in, width, 2 if stage and not block else 1))
                c_in = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ResNet50(nn.Module):
    """He et al. 2016's ImageNet ResNet-50 for 3×224×224: a 7×7 stem, bottleneck stages of
    3, 4, 6, 3 blocks (widths 64–512, expansion 4), global average pooling, fc → 1000."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 64, 7, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
        c_in = 64
        for stage, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
            for block in range(blocks):
                layers.append(_bottleneck(c_in, width, 2 if stage and not block else 1))
                c_in = 4 * width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _initialise(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """He-normal weights from ``generator``, zero biases, identity batch norms (scale 0 at the
    end of each residual branch)."""
    tails = [m.branch[-1] for m in model.modules() if isinstance(m, _Residual)]
    last_norms = {id(tail[-1]) for tail in tails if isinstance(tail, nn.Sequential)}
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(0.0 if id(module) in last_norms else 1.0)
                module.bias.zero_()
                module.reset_running_stats()
    return model


def _shipped_digits(device: torch.device, seed: int) -> nn.Module:
    from rs_plugin.data import load_demo_model

    return load_demo_model().to(device).eval()


def _random(factory: Callable[[], nn.Module]) -> Callable[[torch.device, int], nn.Module]:
    def build(device: torch.device, seed: int) -> nn.Module:
        with torch.device("meta"):
            model = factory()
        model = model.to_empty(device=device)
        return _initialise(model, torch.Generator(device=device).manual_seed(seed)).eval()

    return build


@dataclass(frozen=True)
class BenchModel:
    """A model the bench times, with its default workload on a CPU (inputs, n, batch size)."""

    name: str
    description: str
    input_shape: tuple[int, ...]
    num_classes: int
    weights: str
    inputs: int
    n: int
    batch_size: int
    build: Callable[[torch.device, int], nn.Module]


_RANDOM = "random, seeded (certification speed does not depend on the weights)"

BENCH_MODELS: dict[str, BenchModel] = {
    model.name: model
    for model in (
        BenchModel(
            "digits",
            "digits CNN (conv 16, conv 32, fc 64), the package's demo model",
            (1, 8, 8),
            10,
            "trained, shipped with the package",
            10,
            10_000,
            1000,
            _shipped_digits,
        ),
        BenchModel(
            "lenet",
            "LeNet (conv 20, conv 50, fc 500)",
            (1, 28, 28),
            10,
            _RANDOM,
            1,
            10_000,
            1000,
            _random(LeNet),
        ),
        BenchModel(
            "resnet20",
            "CIFAR ResNet-20",
            (3, 32, 32),
            10,
            _RANDOM,
            1,
            1_000,
            500,
            _random(ResNet20),
        ),
        BenchModel(
            "resnet50",
            "ImageNet ResNet-50",
            (3, 224, 224),
            1000,
            _RANDOM,
            1,
            200,
            50,
            _random(ResNet50),
        ),
    )
}


def bench_inputs(model: BenchModel, count: int, device: torch.device) -> torch.Tensor:
    """The first ``count`` digits test images for the digits CNN; seeded uniform images in
    [0, 1] for the others (the time does not depend on the pixels either)."""
    if model.name == "digits":
        from rs_plugin.data import load_digits

        x = load_digits("test")[0]
        if count > x.shape[0]:
            raise RSValueError("--inputs", f"at most {x.shape[0]} for the digits model", count)
        return x[:count].to(device)
    generator = torch.Generator().manual_seed(1)
    return torch.rand((count, *model.input_shape), generator=generator).to(device)
