"""A model's identity: a hash of what it computes, not of its weights alone.

Certificates are stored with the identity of the model that earned them, and ``--resume`` and
the audit refuse records of another model. Weights alone do not identify a function: every
parameterless model (a fixed filter, a TorchScript graph of constants, a wrapper whose
behaviour lives in code) would share the hash of nothing. The identity therefore covers

* every tensor of the state dict (name, dtype, shape and bytes): weights and buffers, and the
  buffers left out of it (``persistent=False``);
* the code: for TorchScript modules their compiled code and the values of the attributes it
  reads; for Python modules each module class's qualified name and source, the sources of its
  base classes outside torch and of the functions and classes of its own module its methods
  name, the source of its forward hooks and of callables it holds (with a partial's arguments
  and a closure's plain or tensor values);
* each module's configuration attributes (numbers, strings, booleans, tensors, and tuples,
  lists and dicts of them), so two instances of one class configured differently differ;
* the factory that built the model, when given: its qualified name and source.

Two models that differ in any of these get different identities; the same model gets the same
identity in every process (nothing in the hash depends on memory addresses or on the order
Python happens to iterate a set).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["model_identity"]

_SIMPLE = (bool, int, float, str, type(None))
# Attributes every nn.Module holds that are covered otherwise (tensors, children, hooks).
_SKIPPED = frozenset({"training", "_parameters", "_buffers", "_modules", "dump_patches"})
# torch's own bookkeeping of every module (hook registries, the non-persistent buffer names).
_MODULE_INTERNALS = frozenset(vars(nn.Module()))


def model_identity(model: nn.Module, factory: Callable[..., Any] | None = None) -> str:
    """SHA-256 (first 16 hex digits) of the model's weights, buffers, code and configuration,
    and of ``factory``'s qualified name and source when given."""
    digest = hashlib.sha256()

    def add(label: str, text: str) -> None:
        digest.update(f"{label}\0{len(text)}\0{text}\0".encode())

    def add_tensor(label: str, name: str, tensor: torch.Tensor) -> None:
        add(label, f"{name} {tensor.dtype} {tuple(tensor.shape)}")
        digest.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )

    def add_value(label: str, value: Any) -> bool:
        """Hash a configuration value; False when it is not one (a module, an object)."""
        if isinstance(value, torch.Tensor):
            add_tensor(label, "", value)
        elif _is_plain(value):
            add(label, repr(value))
        elif isinstance(value, dict) and all(isinstance(k, str) for k in value):
            add(label, f"dict {len(value)}")
            for k in sorted(value):
                if not add_value(f"{label}[{k!r}]", value[k]):
                    add(f"{label}[{k!r}]", type(value[k]).__qualname__)
        elif isinstance(value, (tuple, list)) and all(
            isinstance(v, torch.Tensor) or _is_plain(v) for v in value
        ):
            add(label, f"{type(value).__name__} {len(value)}")
            for i, v in enumerate(value):
                add_value(f"{label}[{i}]", v)
        else:
            return False
        return True

    state = model.state_dict()
    for name, tensor in state.items():
        add_tensor("tensor", name, tensor)
    for name, tensor in model.named_buffers(remove_duplicate=False):
        if name not in state:  # registered with persistent=False: it computes all the same
            add_tensor("buffer", name, tensor)
    sources: dict[type, str] = {}
    for path, module in model.named_modules():
        add("module", path)
        code = _script_code(module)
        if code is not None:
            add("script", code)
            own = {n for n, _ in module.named_children()}
            own |= {n for n, _ in module.named_parameters(recurse=False)}
            own |= {n for n, _ in module.named_buffers(recurse=False)}
            for key in sorted(set(re.findall(r"\bself\.(\w+)", code)) - own - {"training"}):
                if hasattr(module, key):
                    add_value(f"script attribute {key}", getattr(module, key))
            continue
        cls = type(module)
        add("class", f"{cls.__module__}.{cls.__qualname__}")
        if cls not in sources:  # one source read per class, however many instances
            sources[cls] = _class_sources(cls)
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
            elif not isinstance(value, nn.Module) and key not in _MODULE_INTERNALS:
                add_value(f"attribute {key}", value)
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
    if isinstance(value, functools.partial):
        bound = {k: _value_text(v) for k, v in sorted(value.keywords.items())}
        args = [_value_text(v) for v in value.args]
        return f"partial {args} {bound}\n{_callable(value.func)}"
    target = getattr(value, "__func__", value)  # a bound method: its function
    name = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}"
    if not hasattr(target, "__qualname__"):
        name = f"{type(target).__module__}.{type(target).__qualname__}"
        target = type(target)
    text = f"{name}\n{_source(target)}"
    cells = getattr(target, "__closure__", None) or ()
    if cells:  # a closure computes with the values it captured
        captured = []
        for cell in cells:
            try:
                captured.append(_value_text(cell.cell_contents))
            except ValueError:  # an empty cell
                captured.append("<empty>")
        text += f"\nclosure {captured}"
    return text


def _value_text(value: Any) -> str:
    """A captured value as text: plain values by repr, tensors by dtype, shape and a digest of
    their bytes, anything else by its type."""
    if _is_plain(value):
        return repr(value)
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        return f"tensor {value.dtype} {tuple(value.shape)} {hashlib.sha256(data).hexdigest()}"
    if callable(value) and not isinstance(value, nn.Module):
        return _callable(value)
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _class_sources(cls: type) -> str:
    """The class's source, those of its bases outside torch, and those of the functions and
    classes of its own module that its methods name (helpers its forward calls)."""
    parts = [_source(cls)]
    for base in cls.__mro__[1:]:
        if not _library(base):
            parts.append(f"base {base.__module__}.{base.__qualname__}\n{_source(base)}")
    namespace = vars(sys.modules[cls.__module__]) if cls.__module__ in sys.modules else {}
    named: set[str] = set()
    for klass in (c for c in cls.__mro__ if not _library(c)):
        for attribute in vars(klass).values():
            code = getattr(getattr(attribute, "__func__", attribute), "__code__", None)
            if code is not None:
                named |= _names(code)
    for name in sorted(named):
        helper = namespace.get(name)
        if (
            (inspect.isfunction(helper) or inspect.isclass(helper))
            and getattr(helper, "__module__", None) == cls.__module__
            and helper is not cls
        ):
            parts.append(f"helper {name}\n{_source(helper)}")
    return "\n".join(parts)


def _library(cls: type) -> bool:
    module = getattr(cls, "__module__", "") or ""
    return module == "builtins" or module == "torch" or module.startswith("torch.")


def _names(code: Any) -> set[str]:
    """The global names a code object and the code nested in it refer to."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            names |= _names(const)
    return names


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
