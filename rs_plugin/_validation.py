"""One error type and one warning type for the whole package, and the checks that raise them.

Every user error is an :class:`RSValueError` (a ``ValueError``) whose message names the parameter,
what is accepted and what was received. Checks run before any sampling starts. A feature whose
optional dependency is not installed raises :class:`MissingExtraError` (an ``ImportError``) naming
the ``pip install 'rs-plugin[extra]'`` line that installs it (:func:`import_extra`). The module
imports no tensor library at import time (the command line's ``--help`` loads it).
"""

from __future__ import annotations

import importlib
import math
import numbers
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "MAX_SAMPLES",
    "MAX_SEED",
    "MAX_THREADS",
    "MAX_WORKERS",
    "MissingExtraError",
    "RSValueError",
    "RSWarning",
    "check_finite_inputs",
    "check_int",
    "check_noise_scale",
    "check_open_unit",
    "check_positive",
    "import_extra",
    "model_dtype",
]


class RSValueError(ValueError):
    """A parameter or input was rejected; the message says which, what is accepted and what came."""

    def __init__(self, parameter: str, accepted: str, received: Any) -> None:
        self.parameter = parameter
        self.accepted = accepted
        self.received = received
        super().__init__(f"{parameter}: expected {accepted}; received {_show(received)}")


class RSWarning(UserWarning):
    """Something will work but probably not as the user meant; the message says how to fix it."""


class MissingExtraError(ImportError):
    """``feature`` needs a package of the optional extra ``extra``, which is not installed.

    The one-line message names the missing module and the command that installs it, the way
    scikit-learn's ``check_matplotlib_support`` does: ``pip install 'rs-plugin[extra]'``.
    """

    def __init__(self, feature: str, extra: str, missing: str) -> None:
        self.feature = feature
        self.extra = extra
        super().__init__(
            f"{feature}: {missing} is not installed; install it with "
            f"pip install 'rs-plugin[{extra}]'",
            name=missing,
        )


def import_extra(module: str, extra: str, feature: str) -> ModuleType:
    """Import and return ``module``, an optional dependency of ``feature`` from the extra
    ``extra``; raise :class:`MissingExtraError` naming the pip line if it (or one of its own
    dependencies) is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(feature, extra, error.name or module) from error


# A received value is shown whole up to this length: the part of a message that says what to fix
# is often at its end. Longer values (a list of a million keys) keep their start and end.
_SHOWN = 2000


def _show(value: Any) -> str:
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # a tensor or an array
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    if len(text) <= _SHOWN:
        return text
    half = _SHOWN // 2
    return f"{text[:half]} ... ({len(text) - 2 * half} characters) ... {text[-half:]}"


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is a finite real number > 0."""
    if not _is_real(value) or not math.isfinite(float(value)) or float(value) <= 0:
        raise RSValueError(name, "a finite number > 0", value)
    return float(value)


def check_open_unit(name: str, value: Any) -> float:
    """Return ``value`` as a float if it lies in the open interval (0, 1)."""
    if not _is_real(value) or not 0.0 < float(value) < 1.0:
        raise RSValueError(name, "a number in the open interval (0, 1)", value)
    return float(value)


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer >= ``minimum`` (and <= ``maximum``)."""
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or value < minimum
        or (maximum is not None and int(value) > maximum)
    ):
        accepted = f"an integer >= {minimum}"
        if maximum is not None:
            accepted = f"an integer in [{minimum}, {maximum}]"
        raise RSValueError(name, accepted, value)
    return int(value)


# Seeds and keys are hashed as 64-bit words (rs_plugin.certification.engine.block_seed): larger
# ones would alias smaller ones and give different runs or inputs the same noise.
MAX_SEED = 2**64 - 1

# Samples per noise stream of one input: 2**23 blocks of 256, which block_seed maps one to one
# onto the 32 bits a CPU generator is seeded with (rs_plugin.certification.engine), and few
# enough that the confidence sequences' (trials, successes) keys fit an int64.
MAX_SAMPLES = 2**31
MAX_THREADS = 4096  # torch takes a C int for its thread count; no machine here has more cores
# Ray actors of one run: each loads the model and the data. Ray refuses a local cluster of more
# than 1e14 CPUs after starting its processes; far fewer actors already exhaust any one machine.
MAX_WORKERS = 4096

# A margin far above the largest standard sample of the noise families here (Gaussian samples
# from 53-bit uniforms stay below 9, Laplace's -log(u) below 37): σ times it must be finite in
# the model's dtype, else noise overflows to inf and votes become meaningless.
NOISE_TAIL = 1e6


def check_noise_scale(name: str, scale: float, dtype: torch.dtype) -> float:
    """Refuse a noise scale whose samples could overflow ``dtype`` (inf or NaN noise)."""
    import torch

    limit = float(torch.finfo(dtype).max) / NOISE_TAIL if dtype.is_floating_point else math.inf
    if not math.isfinite(scale) or scale > limit:
        raise RSValueError(
            name,
            f"a noise level <= {limit:.3g}, so that noise samples stay finite in {dtype}",
            scale,
        )
    return scale


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype the model takes its inputs in: its ``input_dtype`` attribute when it declares
    one (a composition, e.g. a denoiser before a classifier), else its first floating-point
    parameter's, else its first floating-point buffer's, else float32."""
    import itertools

    import torch

    declared = getattr(model, "input_dtype", None)
    if isinstance(declared, torch.dtype):
        return declared
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if torch.is_floating_point(tensor):
            return tensor.dtype
    return torch.float32


def check_finite_inputs(
    name: str, x: torch.Tensor, clip_values: tuple[float, float] | None
) -> None:
    """Reject NaN/inf entries and, when a clip range is declared, values outside it."""
    import torch

    if not torch.is_floating_point(x):
        raise RSValueError(name, "a floating-point tensor", x)
    if x.ndim < 2:
        raise RSValueError(name, "a batch of inputs of rank >= 2 (N, ...)", x)
    if x.shape[0] == 0:
        raise RSValueError(name, "at least one input (N >= 1)", x)
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise RSValueError(name, "finite values (no NaN or inf)", f"{bad} non-finite entries")
    if clip_values is not None:
        low, high = clip_values
        x_min, x_max = float(x.min()), float(x.max())
        if x_min < low or x_max > high:
            raise RSValueError(
                name,
                f"values inside clip_values [{low}, {high}]",
                f"values in [{x_min:.4g}, {x_max:.4g}]",
            )
