"""The one model probe: a clean forward pass on a private copy of a few inputs.

Every entry point (the smoothed classifier, the ART estimators, the command line) checks the
model once before any sampling: it must run on inputs of the given shape and dtype and return a
``(B, num_classes)`` tensor of finite logits. The model may be hostile or careless (in-place
normalisation, ``x -= mean`` inside ``forward``, is common), so the probe hands it a copy that
nothing else uses: whatever the model writes to its input, the tensor being certified is
unchanged.

A smoothed classifier probes once per model state (:func:`model_state`) and input shape, not
on every call: what the probe checks is checked again on every batch the engine runs (the
output's shape before any vote is counted, non-finite logits per sample), so a model that
changes between calls cannot slip past it; the probe is there for the early, clear error.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch

from rs_plugin._validation import RSValueError

__all__ = ["model_state", "probe_model"]


def probe_model(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    model_name: str = "model",
    model_parameter: str = "model",
    inputs_name: str = "x",
    require_finite: bool = True,
) -> torch.Tensor:
    """The model's logits on a copy of ``x`` (shape (B, C)), after checking what it returned.

    Args:
        model: the base classifier (already in the mode it will be sampled in).
        x: the probe inputs, (B, ...); never passed to the model itself, only a clone of it.
        model_name: how errors name the model (``"model"``, ``"--model demo"``).
        model_parameter: the parameter an error about the model's output names (``"model"``).
        inputs_name: how errors name the inputs' parameter (``"x"``, ``"data"``).
        require_finite: refuse NaN or infinite logits on the clean inputs.

    Raises:
        RSValueError: the model raised on the inputs (named with its shape and dtype), returned
            something else than a (B, C) tensor, or returned non-finite logits.
    """
    copy = x.detach().clone()
    try:
        with torch.inference_mode():
            out = model(copy)
    except Exception as error:  # the model's own code: any failure is the user's to see
        raise RSValueError(
            inputs_name,
            f"inputs on which the forward pass runs ({model_name})",
            f"{model_name} raised {type(error).__name__}: {error} (on inputs of shape "
            f"{tuple(x.shape)} and dtype {x.dtype})",
        ) from error
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        shown = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise RSValueError(
            model_parameter,
            f"a model returning logits of shape (B, num_classes), B = {x.shape[0]} here",
            f"{model_name} returned {shown} for {x.shape[0]} inputs",
        )
    if require_finite and not bool(torch.isfinite(out).all()):
        raise RSValueError(
            model_parameter,
            "a model returning finite logits",
            f"non-finite logits on the clean inputs {tuple(range(x.shape[0]))} of the probe",
        )
    return out.detach().clone()


def model_state(model: torch.nn.Module) -> Hashable | None:
    """What identifies the state of ``model``'s parameters and buffers: each tensor's identity,
    storage, shape and version counter (which every in-place write, an optimiser step or
    ``load_state_dict``, advances). None when a tensor keeps no version counter (made in
    inference mode): such a model has no state to compare, and is probed every time."""
    try:
        return tuple(
            (id(tensor), tensor.data_ptr(), tuple(tensor.shape), tensor._version)
            for tensor in (*model.parameters(), *model.buffers())
        )
    except RuntimeError:
        return None
