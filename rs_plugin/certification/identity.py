"""A model's identity: a hash of what it computes, not of its weights alone.

Certificates are stored with the identity of the model that earned them, and ``--resume`` and
the audit refuse records of another model. Weights alone do not identify a function: every
parameterless model (a fixed filter, a TorchScript graph of constants, a wrapper whose
behaviour lives in code) would share the hash of nothing. The identity therefore covers

* every tensor of the state dict (name, dtype, shape and bytes): weights and buffers;
* the code: for TorchScript modules their compiled code, for Python modules each module
  class's qualified name and source, the source of its forward hooks and of callables it holds;
* each module's plain configuration attributes (numbers, strings, booleans and tuples of them),
  so two instances of one class configured differently differ;
* the factory that built the model, when given: its qualified name and source.

Two models that differ in any of these get different identities; the same model gets the same
identity in every process (nothing in the hash depends on memory addresses or on the order
Python happens to iterate a set).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["model_identity"]

_SIMPLE = (bool, int, float, str, type(None))
# Attributes every nn.Module holds that are covered otherwise (tensors, children, hooks).
_SKIPPED = frozenset({"training", "_parameters", "_buffers", "_modules", "dump_patches"})


def model_identity(model: nn.Module, factory: Callable[..., Any] | None = None) -> str:
    """SHA-256 (first 16 hex digits) of the model's weights, buffers, code and configuration,
    and of ``factory``'s qualified name and source when given."""
    digest = hashlib.sha256()

    def add(label: str, text: str) -> None:
        digest.update(f"{label}\0{len(text)}\0{text}\0".encode())

    for name, tensor in model.state_dict().items():
        add("tensor", f"{name} {tensor.dtype} {tuple(tensor.shape)}")
        digest.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    sources: dict[type, str] = {}
    for path, module in model.named_modules():
        add("module", path)
        code = _script_code(module)
        if code is not None:
            add("script", code)
            continue
        cls = type(module)
        add("class", f"{cls.__module__}.{cls.__qualname__}")
        if cls not in sources:  # one source read per class, however many instances
            sources[cls] = _source(cls)
        add("source", sources[cls])
        for key in sorted(vars(module)):
            if key in _SKIPPED:
                continue
            value = vars(module)[key]
            if key.endswith("hooks") and isinstance(value, dict):
                for hook in value.values():
                    add(f"hook {key}", _callable(hook))
            elif _is_plain(value):
                add(f"attribute {key}", repr(value))
            elif callable(value) and not isinstance(value, nn.Module):
                add(f"callable {key}", _callable(value))
    if factory is not None:
        add("factory", _callable(factory))
    return digest.hexdigest()[:16]


def _script_code(module: nn.Module) -> str | None:
    """The TorchScript code of a scripted or traced module (None for a Python module)."""
    if not isinstance(module, torch.jit.ScriptModule):
        return None
    try:
        return str(module.code)
    except (AttributeError, RuntimeError):  # a module with no forward of its own
        return str(getattr(module, "original_name", type(module).__qualname__))


def _is_plain(value: Any) -> bool:
    if isinstance(value, _SIMPLE):
        return True
    if isinstance(value, (tuple, list)):
        return all(_is_plain(v) for v in value)
    return False


def _callable(value: Any) -> str:
    target = getattr(value, "__func__", value)  # a bound method: its function
    name = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}"
    if not hasattr(target, "__qualname__"):
        name = f"{type(target).__module__}.{type(target).__qualname__}"
        target = type(target)
    return f"{name}\n{_source(target)}"


def _source(obj: Any) -> str:
    """The source of a class or function; where there is none (a REPL, ``exec``), the bytecode
    of its functions; for a built-in, nothing (its name stands for it)."""
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        pass
    functions = vars(obj).values() if isinstance(obj, type) else [obj]
    codes = [getattr(f, "__code__", None) for f in functions]
    return "\n".join(_code_text(c) for c in codes if c is not None)


def _code_text(code: Any) -> str:
    consts = [_code_text(c) if hasattr(c, "co_code") else repr(c) for c in code.co_consts]
    return f"{code.co_name} {code.co_code.hex()} {code.co_names} {consts}"
