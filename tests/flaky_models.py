"""Model factories for the Ray tests, imported by Ray workers through PYTHONPATH."""

from __future__ import annotations

import os

import torch
from torch import nn

from rs_plugin.data import load_demo_model


class FailsOncePerProcess(nn.Module):
    """The demo model, except that the first sampling batch in each process raises."""

    failed = False

    def __init__(self, always: bool = False) -> None:
        super().__init__()
        self.model = load_demo_model()
        self.always = always

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 4 and (self.always or not FailsOncePerProcess.failed):
            FailsOncePerProcess.failed = True
            raise RuntimeError("transient failure injected by the test")
        return self.model(x)


def fails_once() -> nn.Module:
    return FailsOncePerProcess().eval()


def always_fails() -> nn.Module:
    return FailsOncePerProcess(always=True).eval()


class KillsItsWorkerOnBrightInputs(nn.Module):
    """A linear model on 1×8×8 inputs whose process dies (os._exit) as soon as a batch holds
    a sample brighter than 0.5 on average: one input of a dark dataset that always kills."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)
        with torch.no_grad():  # always class 9, deterministically
            self.linear.weight.zero_()
            self.linear.bias.copy_(torch.arange(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x.flatten(1).mean(dim=1) > 0.5).any()):
            os._exit(1)
        return self.linear(x.flatten(1))


def kills_on_bright() -> nn.Module:
    return KillsItsWorkerOnBrightInputs().eval()


def unseeded() -> nn.Module:
    """A linear model initialised from the process's own RNG state: every process that builds
    it gets other weights (a factory a driver and its Ray workers disagree on)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()


class Slow(nn.Module):
    """The demo model, 3 s slower on every sampling batch (a shard outlasting a short stall
    limit)."""

    def __init__(self) -> None:
        super().__init__()
        self.model = load_demo_model()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 4:
            import time

            time.sleep(3.0)
        return self.model(x)


def slow() -> nn.Module:
    return Slow().eval()
