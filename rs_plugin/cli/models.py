"""``--model``: the text that names a model, turned into the model.

``demo`` (the model shipped for ``--data``), ``clean`` (Fashion-MNIST's LeNet trained without
noise, for denoised smoothing), a TorchScript file, or ``package.module:factory``
(a module found on ``sys.path`` or in the working folder, which is searched for that one import
only). ``--denoiser`` names a denoiser the same way, with ``demo`` and ``mse`` the shipped ones.
The library itself takes models as ``torch.nn.Module`` objects; this text format is the command
line's.
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

__all__ = ["load_denoiser_for", "load_model", "load_model_for"]


def load_model_for(spec: str, data: str) -> nn.Module:
    """:func:`load_model`, except that ``demo`` is the model shipped for ``data``
    (:func:`rs_plugin.data.shipped_model`). A run's ``model_loader``."""
    if spec == "demo":
        return shipped_model(data)
    if spec == "clean":
        return load_clean_classifier()
    return load_model(spec)


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
