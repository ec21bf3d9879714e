"""A model's identity is what it computes: weights, buffers, code and configuration."""

from __future__ import annotations

import functools
import subprocess
import sys
import types

import pytest
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


# --- what a model computes with, beyond its state dict and its class's source ---------------


class _NonPersistent(nn.Module):
    shift: torch.Tensor

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([shift]), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :2] + self.shift


class _TensorAttribute(nn.Module):
    def __init__(self, w: list[float]) -> None:
        super().__init__()
        self.w = torch.tensor(w)  # a plain attribute, neither parameter nor buffer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :2] * self.w


class _DictAttribute(nn.Module):
    def __init__(self, sign: int) -> None:
        super().__init__()
        self.config = {"sign": sign}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :2] * self.config["sign"]


class _Partial(nn.Module):
    def __init__(self, top: float) -> None:
        super().__init__()
        self.act = functools.partial(torch.clamp, max=top)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x.flatten(1)[:, :2])


def _scaled_by(k: float):
    return lambda t: t * k


class _Closure(nn.Module):
    def __init__(self, k: float) -> None:
        super().__init__()
        self.f = _scaled_by(k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x.flatten(1)[:, :2])


class _ScriptAttribute(nn.Module):
    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :2] * self.k


@pytest.mark.parametrize(
    "pair",
    [
        lambda: (_NonPersistent(0.0), _NonPersistent(5.0)),
        lambda: (_TensorAttribute([1.0, 1.0]), _TensorAttribute([1.0, -1.0])),
        lambda: (_DictAttribute(1), _DictAttribute(-1)),
        lambda: (_Partial(0.0), _Partial(9.0)),
        lambda: (_Closure(1.0), _Closure(-1.0)),
        lambda: tuple(torch.jit.script(_ScriptAttribute(k)) for k in (1.0, -1.0)),
    ],
    ids=["non-persistent buffer", "tensor attribute", "dict", "partial", "closure", "script"],
)
def test_models_that_compute_differently_have_different_identities(pair):
    first, second = pair()
    x = torch.ones(1, 4)
    assert not torch.equal(first(x), second(x))  # they do compute differently
    assert model_identity(first) != model_identity(second)
    twin, _ = pair()
    assert model_identity(first) == model_identity(twin)  # and the hash is of that, not of ids


_BASE_AND_HELPER = """
import pytest
import torch
from torch import nn

def helper(t):
    return t * SIGN

class Base(nn.Module):
    def scale(self, t):
        return t * BASE

class Model(Base):
    def forward(self, x):
        return self.scale(helper(x.flatten(1)[:, :2]))

def build(): return Model()
"""


def test_the_code_of_base_classes_and_module_helpers_is_part_of_the_identity(tmp_path):
    """Only the model class's own source was hashed: a base class or a module-level helper
    that computes otherwise kept the identity. Three versions of one module (same name, same
    model class source) that differ in the helper or in the base class."""
    identities, outputs = [], []
    for number, (sign, base) in enumerate((("1.0", "1.0"), ("-1.0", "1.0"), ("1.0", "-1.0"))):
        path = tmp_path / f"version_{number}.py"
        path.write_text(_BASE_AND_HELPER.replace("SIGN", sign).replace("BASE", base))
        module = types.ModuleType("identity_model")
        module.__file__ = str(path)
        sys.modules["identity_model"] = module
        try:
            exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
            model = module.build()
            identities.append(model_identity(model))
            outputs.append(model(torch.ones(1, 4)))
        finally:
            del sys.modules["identity_model"]
    assert not torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[0], outputs[2])
    assert len(set(identities)) == 3
