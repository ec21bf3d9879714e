"""Model factories for the Ray tests, imported by Ray workers through PYTHONPATH."""

from __future__ import annotations

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
