"""Fingerprints of what a run certified: the model and the data, by content.

Stored with every record; ``--resume`` and the audit compare them before trusting a file.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

__all__ = ["data_fingerprint", "model_fingerprint"]


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) over the model's parameters and buffers."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()[:16]


def data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """SHA-256 (first 16 hex digits) over a dataset's inputs and labels as loaded.

    Of the content, not the path: the same file named by a relative or an absolute path has one
    fingerprint, and new content under an old path has another.
    """
    digest = hashlib.sha256()
    for tensor in (x, y):
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()[:16]
