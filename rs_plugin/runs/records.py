"""A run's records: one JSON-ready dict per certified input, and a memory rebuilt from them.

Any certifier of the contract (:class:`~rs_plugin.certification.base.Certifier`) goes through
the same two functions; a stateful one's records carry its memory entry, which
:func:`restore_memory` puts back on resume.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch

from rs_plugin._validation import RSValueError
from rs_plugin.certification.base import Certifier
from rs_plugin.certification.batching import AUTO, batch_size_in_use
from rs_plugin.data import UNLABELED
from rs_plugin.runs.job import CertifyJob

__all__ = ["batch_size_used", "iter_records", "restore_memory"]

# Inputs handed to the engine at once: enough for batches to mix inputs, bounded in memory.
_CHUNK = 512


def iter_records(
    job: CertifyJob,
    smoothed: Certifier,
    x: torch.Tensor,
    y: torch.Tensor,
    indices: Sequence[int],
) -> Iterator[dict[str, Any]]:
    """Certify ``x[indices]``, yielding one record per input as soon as it is done.

    A labelled input's record has ``label`` and ``correct``; an unlabelled one's (label
    :data:`~rs_plugin.data.UNLABELED`) has neither. ``seconds`` is the wall time since the
    previous completion divided among the inputs that completed together (batches mix inputs,
    so per-input time is an apportioned figure). ``batch_size`` is the samples per forward
    pass: the job's integer, or the size ``"auto"`` ran its latest batches at (its settled
    choice once the probe is done; the counts do not depend on it). A stateful certifier's
    records carry its ``memory`` entry (see :func:`restore_memory`).
    """
    for start in range(0, len(indices), _CHUNK):
        chunk = [int(i) for i in indices[start : start + _CHUNK]]
        last = time.perf_counter()
        for part in smoothed.iter_certify(
            x[chunk],
            n0=job.n0,
            n=job.n,
            alpha=job.alpha,
            batch_size=job.batch_size,
            seed=job.seed,
            keys=chunk,
        ):
            now = time.perf_counter()
            seconds = (now - last) / len(part)
            last = now
            used = batch_size_used(job.batch_size, smoothed.model)
            for record in part.to_records():
                label = int(y[record["index"]])
                if label != UNLABELED:  # an input without a label has no correctness
                    correct = record["prediction"] == label and not record["abstain"]
                    record.update(label=label, correct=correct)
                record.update(seconds=seconds, batch_size=used)
                if smoothed.stateful:
                    record["memory"] = smoothed.memory_entry(record["index"])
                yield record


def batch_size_used(batch_size: int | str, model: Any) -> int | str:
    """The samples per forward pass a run of ``model`` uses: ``batch_size`` when it is an
    integer; for ``"auto"``, the size of its latest batches (``"auto"`` before any ran)."""
    if batch_size != AUTO:
        return batch_size
    used = batch_size_in_use(model)
    return AUTO if used is None else used


def restore_memory(
    smoothed: Certifier, x: torch.Tensor, records: Iterable[Mapping[str, Any]]
) -> None:
    """Rebuild a stateful certifier's memory from its records, in the order they were written.

    A no-op for other certifiers. Resuming DDRS or ANCER certifies the remaining inputs against
    exactly the regions the stored records claim, once each claim is found possible (its
    record's n and α bound the radius, the certifier's search the σ).
    """
    if not smoothed.stateful:
        return
    for record in records:
        index = int(record["index"])
        if "memory" not in record:
            raise RSValueError(
                "resume",
                "records of a memory certifier, each with its memory entry",
                f"the record of input {index} has no 'memory' field",
            )
        if record["memory"] is not None:
            if index >= len(x):
                raise RSValueError(
                    "limit",
                    "a limit covering every input a memory certifier's file already holds",
                    f"{len(x)} inputs, and the file holds input {index}",
                )
            smoothed.restore(
                x[index],
                index,
                record["prediction"],
                record["memory"],
                n=record.get("n"),
                alpha=record.get("alpha"),
            )
