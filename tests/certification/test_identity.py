"""A model's identity is what it computes: weights, buffers, code and configuration."""

from __future__ import annotations

import subprocess
import sys

import torch
from torch import nn

from rs_plugin.certification.identity import model_identity
from rs_plugin.runs import model_fingerprint

_EMPTY_SHA256 = "e3b0c44298fc1c14"


class Brightness(nn.Module):
    """Parameterless: logits from the mean brightness, scaled by a plain attribute."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(dim=1, keepdim=True) * self.scale
        return torch.cat([m, -m], dim=1)


class Darkness(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(dim=1, keepdim=True)
        return torch.cat([-m, m], dim=1)


def test_two_parameterless_models_never_share_a_hash():
    hashes = {
        model_identity(Brightness(1.0)),
        model_identity(Brightness(2.0)),
        model_identity(Darkness()),
        model_identity(nn.Sequential(nn.Flatten(), nn.ReLU())),
        model_identity(nn.Sequential(nn.Flatten(), nn.Tanh())),
    }
    assert len(hashes) == 5
    assert _EMPTY_SHA256 not in hashes
    assert model_fingerprint(Darkness()) == model_identity(Darkness())


def test_the_factory_and_hooks_are_part_of_the_identity():
    def make_a() -> nn.Module:
        return Darkness()

    def make_b() -> nn.Module:
        return Darkness()

    assert model_identity(Darkness(), factory=make_a) != model_identity(Darkness(), make_b)
    hooked = Darkness()
    hooked.register_forward_hook(lambda module, args, out: -out)
    assert model_identity(hooked) != model_identity(Darkness())


def test_a_torchscript_model_is_hashed_by_its_code(tmp_path):
    a = torch.jit.script(Darkness())
    b = torch.jit.script(Brightness(1.0))
    assert model_identity(a) != model_identity(b)
    assert _EMPTY_SHA256 not in (model_identity(a), model_identity(b))
    path = tmp_path / "a.pt"
    torch.jit.save(a, str(path))
    assert model_identity(torch.jit.load(str(path))) == model_identity(a)


def test_weights_change_the_hash():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    first = model_identity(model)
    with torch.no_grad():
        model.weight[0, 0] += 1e-3
    assert model_identity(model) != first


def test_the_same_model_has_the_same_hash_in_every_process(tmp_path):
    scripted = tmp_path / "dark.pt"
    torch.jit.save(torch.jit.script(Darkness()), str(scripted))
    program = (
        "import sys, torch\n"
        "from rs_plugin.certification.identity import model_identity\n"
        "from rs_plugin.data import load_demo_model\n"
        "from tests.certification.test_identity import Brightness\n"
        "print(model_identity(load_demo_model()), model_identity(Brightness(3.0)),\n"
        "      model_identity(torch.jit.load(sys.argv[1])))\n"
    )
    from rs_plugin.data import load_demo_model

    here = [
        model_identity(load_demo_model()),
        model_identity(Brightness(3.0)),
        model_identity(torch.jit.load(str(scripted))),
    ]
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", program, str(scripted)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.split() == here
