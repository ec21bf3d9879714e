"""Fingerprints of what a run certified: the model and the data, by content.

Stored with every record; ``--resume`` and the audit compare them before trusting a file.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from rs_plugin.certification.identity import model_identity

__all__ = ["data_fingerprint", "model_fingerprint"]


def model_fingerprint(model: nn.Module) -> str:
    """The model's identity: weights, buffers, code and configuration (see model_identity)."""
    return model_identity(model)


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
