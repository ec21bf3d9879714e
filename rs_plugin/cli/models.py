"""``--model``: the text that names a model, turned into the model.

``demo`` (the model shipped for ``--data`` and ``--sigma``), ``clean`` (Fashion-MNIST's LeNet
trained without noise, for denoised smoothing), a TorchScript file, or ``package.module:factory``
(a module found on ``sys.path`` or in the working folder, which is searched for that one import
only), and ``--weights``: a state dict (``torch.save(model.state_dict())``, read with
``weights_only=True``: data, never code) loaded into that model. A state dict passed as
``--model`` is refused with the one line that says so. ``--denoiser`` names a denoiser the way
``--model`` names a model, with ``demo`` and ``mse`` the shipped ones. The library itself takes
models as ``torch.nn.Module`` objects; this text format is the command line's.
"""

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
from rs_plugin.data import (
    SHIPPED_DENOISERS,
    load_clean_classifier,
    load_shipped_denoiser,
    shipped_model,
)

__all__ = ["load_denoiser_for", "load_model", "load_model_for", "load_weights"]


def load_model_for(
    spec: str, data: str, sigma: float | None = None, weights: str | None = None
) -> nn.Module:
    """:func:`load_model`, except that ``demo`` is the model shipped for ``data`` and the noise
    level ``sigma`` (:func:`rs_plugin.data.shipped_model`), with ``weights`` (a state-dict file)
    loaded into it when given. A run's ``model_loader`` (``functools.partial`` binds
    ``weights``)."""
    if spec == "demo":
        model = shipped_model(data, sigma)
    elif spec == "clean":
        model = load_clean_classifier()
    else:
        model = load_model(spec)
    if weights is not None:
        load_weights(model, weights)
    return model


def _read_state_dict(path: str) -> object:
    """What ``torch.load(path, weights_only=True)`` reads (tensors and containers only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_weights(model: nn.Module, path: str) -> nn.Module:
    """Load the state dict saved in ``path`` into ``model`` (every key, matching shapes)."""
    if not Path(path).is_file():
        raise RSValueError("weights", "an existing state-dict file", path)
    try:
        state = _read_state_dict(path)
    except Exception as error:  # not a torch.save file, or one holding code
        raise RSValueError(
            "weights",
            "a state dict saved with torch.save(model.state_dict()) (tensors only)",
            f"{path}: {type(error).__name__}: {_first_line(error)}",
        ) from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RSValueError(
            "weights",
            "a state dict: a mapping of parameter names to tensors",
            f"{path} holding a {type(state).__name__}",
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise RSValueError(
            "weights",
            "a state dict with exactly the model's parameter names and shapes",
            f"{path}: {_first_line(error)}",
        ) from error
    return model.eval()


def load_denoiser_for(spec: str, data: str) -> nn.Module:
    """``--denoiser``: a shipped denoiser (``demo``, ``mse``), a TorchScript file or
    ``package.module:factory``, called as ``denoiser(x, sigma)``. A run's ``denoiser_loader``."""
    if spec in SHIPPED_DENOISERS:
        return load_shipped_denoiser(spec)
    try:
        return load_model(spec)
    except RSValueError as error:
        raise RSValueError(
            "denoiser",
            f"one of {SHIPPED_DENOISERS}, a TorchScript file or 'package.module:factory'",
            f"{spec} ({error.received})",
        ) from error


def load_model(spec: str) -> nn.Module:
    """``demo``, a TorchScript file, or ``package.module:factory`` returning an ``nn.Module``.

    The spec is what the user typed (``--model``): a module is looked up on ``sys.path`` and
    then in the current working folder (as ``python -m`` would, for the console script too),
    but only for that one import. Every failure is an :class:`RSValueError` that shows the real
    error: a module that is missing, a module whose own code fails (a syntax error, a missing
    dependency), a factory that needs arguments, raises, or returns something else.
    """
    if spec == "demo":
        return shipped_model("digits")
    if Path(spec).is_file():
        try:
            model = torch.jit.load(spec, map_location="cpu")
        except RuntimeError as error:
            if _is_state_dict(spec):
                raise RSValueError(
                    "model",
                    "a TorchScript file (torch.jit.save) or 'package.module:factory'",
                    f"{spec}, a state dict (weights without the network's code): pass "
                    f"--model package.module:factory that builds the network and --weights {spec}",
                ) from error
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


def _is_state_dict(path: str) -> bool:
    """True when ``path`` is a torch.save file of tensors by name (read as data only)."""
    try:
        state = _read_state_dict(path)
    except Exception:
        return False
    return isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())


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
