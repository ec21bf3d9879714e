"""The device a run certifies on, checked against the machine before anything loads."""

from __future__ import annotations

import torch

from rs_plugin._validation import RSValueError

__all__ = ["resolve_device"]


def resolve_device(name: str | None) -> str:
    """``cpu``, ``cuda`` or ``cuda:K``; the default is ``cuda`` when there is one."""
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise RSValueError("device", "'cpu', 'cuda' or 'cuda:K'", name)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RSValueError("device", "a device present on this machine (no CUDA here)", name)
    index = name.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        raise RSValueError(
            "device", f"cuda:K with K < {torch.cuda.device_count()} (GPUs here)", name
        )
    return name
