"""Between command-line text and the library's parameters, in one place.

The library's errors name its own parameters (``smoothing``, ``n``, ``attacks``,
``certificates``, ...); :func:`as_flags` shows such an error with the flag a user typed
instead (``--smoothing``, ``-n``, ...), through the one table :data:`FLAGS`.
:func:`parse_smoothing_params` turns ``--smoothing-param KEY=VALUE`` text into keywords.
Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rs_plugin._validation import RSValueError

__all__ = ["FLAGS", "as_flags", "parse_smoothing_params"]

# Library parameter -> the command-line flag that sets it.
FLAGS = {
    "address": "--ray-address",
    "alpha": "--alpha",
    "attacks": "--attacks",
    "batch_size": "--batch-size",
    "budgets": "--budgets",
    "certificates": "--certificates",
    "certifier": "--certifier",
    "channels_last": "--channels-last",
    "compile": "--compile",
    "data": "--data",
    "device": "--device",
    "engine": "--engine",
    "grid": "--grid",
    "limit": "--limit",
    "model": "--model",
    "n": "-n",
    "n0": "--n0",
    "num_noise_samples": "--noise-samples",
    "precision": "--precision",
    "predict_alpha": "--predict-alpha",
    "predict_n": "--predict-n",
    "radius": "--radius",
    "resume": "--resume",
    "seed": "--seed",
    "semantics": "--semantics",
    "sigma": "--sigma",
    "significance": "--significance",
    "smoothing": "--smoothing",
    "smoothing_params": "--smoothing-param",
    "stall_timeout": "--stall-timeout",
    "tolerance": "--tolerance",
    "weights": "--weights",
    "workers": "--workers",
}


def as_flags(error: RSValueError) -> str:
    """The error's message with its parameter (or ``a/b`` parameters) named by their flags."""
    text = str(error)
    parameter = error.parameter
    flags = "/".join(FLAGS.get(name, name) for name in parameter.split("/"))
    if flags == parameter or not text.startswith(f"{parameter}:"):
        return text
    return flags + text[len(parameter) :]


def parse_smoothing_params(pairs: Sequence[str]) -> tuple[tuple[str, Any], ...]:
    """``KEY=VALUE`` strings as (key, value) pairs, values as int, float or text."""
    parsed: list[tuple[str, Any]] = []
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise RSValueError("--smoothing-param", "KEY=VALUE with a keyword name", pair)
        value: Any = text
        for convert in (int, float):
            try:
                value = convert(text)
                break
            except ValueError:
                continue
        parsed.append((key, value))
    return tuple(parsed)
