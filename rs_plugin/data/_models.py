"""Reference models: the embedded digits CNN, the shipped Fashion-MNIST CNN, and loading a
user's model from a path or factory."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from rs_plugin._validation import RSValueError

__all__ = [
    "DEMO_SIGMA",
    "DEMO_WEIGHTS",
    "FASHION_SIGMA",
    "FASHION_WEIGHTS",
    "DemoCNN",
    "FashionCNN",
    "load_demo_model",
    "load_fashion_model",
    "load_model",
    "load_model_for",
]

DEMO_WEIGHTS = Path(__file__).with_name("demo_cnn.pt")
DEMO_SIGMA = 0.25
FASHION_WEIGHTS = Path(__file__).with_name("fashion_cnn.pt")
FASHION_SIGMA = 0.25
# `--model demo` means the model shipped for the data: these --data values get their own.
_DEMO_BY_DATA = {"fashion-mnist": "fashion"}


class DemoCNN(nn.Module):
    """A small CNN for 1×8×8 digits images in [0, 1], returning 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FashionCNN(nn.Module):
    """A LeNet-size CNN for 1×28×28 images in [0, 1] (Fashion-MNIST), returning 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_demo_model(weights: str | Path = DEMO_WEIGHTS) -> DemoCNN:
    """The embedded CNN, trained on digits with Gaussian noise σ = 0.25, in eval mode."""
    model = DemoCNN()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def load_fashion_model(weights: str | Path = FASHION_WEIGHTS) -> FashionCNN:
    """The shipped Fashion-MNIST CNN (trained by :mod:`rs_plugin.data.train_fashion` for
    σ = ``FASHION_SIGMA``), in eval mode."""
    model = FashionCNN()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def load_model_for(spec: str, data: str) -> nn.Module:
    """:func:`load_model`, except that ``demo`` is the model shipped for ``data``: the
    Fashion-MNIST CNN for ``fashion-mnist``, the digits CNN otherwise."""
    if spec == "demo" and _DEMO_BY_DATA.get(data) == "fashion":
        return load_fashion_model()
    return load_model(spec)


def load_model(spec: str) -> nn.Module:
    """``demo``, a TorchScript file, or ``package.module:factory`` returning an ``nn.Module``.

    The spec is what the user typed (``--model``): a module is looked up on ``sys.path`` and
    then in the current working folder (as ``python -m`` would, for the console script too),
    but only for that one import. Every failure is an :class:`RSValueError` that shows the real
    error: a module that is missing, a module whose own code fails (a syntax error, a missing
    dependency), a factory that needs arguments, raises, or returns something else.
    """
    if spec == "demo":
        return load_demo_model()
    if Path(spec).is_file():
        try:
            model = torch.jit.load(spec, map_location="cpu")
        except RuntimeError as error:
            raise RSValueError(
                "model", "a TorchScript file (torch.jit.save)", f"{spec}: {_first_line(error)}"
            ) from error
        return model.eval()
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise RSValueError(
            "model", "'demo', an existing TorchScript file, or 'package.module:factory'", spec
        )
    module = _import_named_module(module_name, spec)
    try:
        factory = getattr(module, attr)
    except AttributeError as error:
        raise RSValueError(
            "model", f"a factory that module {module_name} defines", f"{spec}: no {attr!r}"
        ) from error
    if not callable(factory):
        raise RSValueError("model", "a callable factory", f"{spec}, a {type(factory).__name__}")
    try:
        inspect.signature(factory).bind()
    except TypeError as error:
        raise RSValueError(
            "model", "a factory callable without arguments", f"{spec}: {error}"
        ) from error
    except ValueError:  # no signature to inspect (some builtins): calling it will tell
        pass
    try:
        model = factory()
    except SystemExit as error:  # sys.exit in user code must not end the run without a word
        raise RSValueError(
            "model",
            "a factory that returns a torch.nn.Module",
            f"{spec} called sys.exit({error.code!r}) instead of returning a model",
        ) from error
    except Exception as error:
        raise RSValueError(
            "model",
            "a factory that returns a torch.nn.Module",
            f"{spec} raised {type(error).__name__}: {error}",
        ) from error
    if not isinstance(model, nn.Module):
        raise RSValueError(
            "model",
            "a factory returning a torch.nn.Module",
            f"{spec} -> {type(model).__name__}: {_first_line(model)}",
        )
    return model.eval()


def _first_line(value: object) -> str:
    lines = str(value).strip().splitlines()
    return lines[0] if lines else ""


def _import_named_module(module_name: str, spec: str) -> ModuleType:
    """Import the module the user named, with the working folder searched last for it."""
    folder = os.getcwd()
    added = folder not in sys.path
    if added:
        sys.path.append(folder)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        # Not found is about the named module (or a package above it); a module that *was*
        # found but imports something missing is that module's own error.
        parts = module_name.split(".")
        named = {".".join(parts[: i + 1]) for i in range(len(parts))}
        if error.name in named:
            raise RSValueError(
                "model",
                "'package.module:factory' with a module importable from sys.path or the "
                f"working folder {folder}",
                f"{spec}: no module named {error.name!r}",
            ) from error
        raise _module_failed(spec, error) from error
    except (Exception, SystemExit) as error:  # SyntaxError, its own ImportError, sys.exit
        raise _module_failed(spec, error) from error
    finally:
        if added:
            sys.path.remove(folder)


def _module_failed(spec: str, error: BaseException) -> RSValueError:
    shown = str(error)
    if isinstance(error, SyntaxError):  # the full path, not only the file's name
        shown = f"{error.msg} ({error.filename}, line {error.lineno})"
    return RSValueError(
        "model",
        "a factory module that imports without error",
        f"{spec}: importing it raised {type(error).__name__}: {shown}",
    )
