"""How the engine runs the base model on noisy batches: precision, memory format, compilation.

How many threads torch runs on is the other lever (:mod:`rs_plugin.certification.threads`).

These options change only how the votes of CERTIFY and PREDICT are computed. With a reduced
``precision`` the smoothed classifier being certified is the one whose base classifier is the
model run under autocast in that precision (its votes can differ from float32's on inputs near a
decision boundary); the certificate is exact for that classifier. ``channels_last`` and
``compile`` change kernels, not the function, up to floating-point rounding.

Noise is drawn, and inputs are held, in the sampling dtype (:func:`sampling_dtype`): float32, or
float64 when the model or the inputs are float64. A model whose parameters are in a narrower
dtype (``model.half()``, ``model.bfloat16()``) gets each noisy batch cast to that dtype here, so
the base classifier certified is f∘cast: the certified point is the input itself (not its
float16 rounding, up to 2⁻¹² of each coordinate away) and the noise has the float32 σ the radii
assume (float16 rounds σ = 0.06 down to 0.0599976, which made radii up to 4e-5 of themselves too
large).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from rs_plugin._validation import RSValueError, model_dtype

__all__ = ["PRECISIONS", "VoteRunner", "model_dtype", "sampling_dtype"]

PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def sampling_dtype(model: nn.Module, inputs: torch.dtype) -> torch.dtype:
    """The dtype inputs are held and noise is drawn in: float64 when the model's parameters or
    the inputs are float64, else float32 (never narrower: a float16 model's noise is drawn in
    float32 and cast by :class:`VoteRunner`)."""
    return torch.float64 if torch.float64 in (model_dtype(model), inputs) else torch.float32


class VoteRunner:
    """Calls the base model for vote counting (a plain callable, not a submodule, so the
    smoothed classifier's state dict holds the model once).

    Args:
        model: the base classifier.
        precision: ``"float32"`` (no autocast), ``"bfloat16"`` or ``"float16"`` (autocast on the
            inputs' device type).
        channels_last: run 4-D batches in the channels-last memory format (and the model too).
        compile: compile the model with ``torch.compile`` on first use.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        precision: str = "float32",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise RSValueError("precision", f"one of {sorted(PRECISIONS)}", precision)
        self.model = model
        self.precision = precision
        self.channels_last = bool(channels_last)
        self.compile_model = bool(compile)
        self._compiled: Any = None
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def _callable(self) -> Any:
        if not self.compile_model:
            return self.model
        if self._compiled is None:
            self._compiled = torch.compile(self.model)
        return self._compiled

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        dtype_in = model_dtype(self.model)
        if x.dtype != dtype_in:
            x = x.to(dtype_in)  # the base classifier is f∘cast (see the module's docstring)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = PRECISIONS[self.precision]
        context = (
            torch.autocast(device_type=x.device.type, dtype=dtype)
            if dtype is not None
            else contextlib.nullcontext()
        )
        with context:
            logits = self._callable()(x)
        return logits.float() if isinstance(logits, torch.Tensor) else logits

    def is_plain(self) -> bool:
        """True when the runner is the model itself (float32, default layout, not compiled)."""
        return self.precision == "float32" and not self.channels_last and not self.compile_model
