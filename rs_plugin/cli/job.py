"""A certify job: what to load and how to certify it, shared by the in-process and Ray engines.

A :class:`CertifyJob` is a small picklable description (model spec, data spec, smoothing, sample
sizes, seed). Each engine loads it once per process with :meth:`CertifyJob.load` and turns input
indices into records with :func:`iter_records`; because every input's noise is derived from
(seed, index), any split of the indices across processes or restarts gives the same records.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn

from rs_plugin._registry import load_plugin, load_smoothing
from rs_plugin._validation import (
    MAX_SEED,
    RSValueError,
    check_int,
    check_noise_scale,
    check_open_unit,
    check_positive,
)
from rs_plugin.certification.certificates import Certificates
from rs_plugin.certification.classifier import SmoothedClassifier
from rs_plugin.certification.grid import GridCertifier, cohen_certifier
from rs_plugin.certification.identity import model_identity
from rs_plugin.certification.memory import MemoryCertifier
from rs_plugin.certification.model_runner import (
    PRECISIONS,
    available_cores,
    busy_cores,
    threads_for_load,
)
from rs_plugin.certification.probe import probe_model
from rs_plugin.certification.sequential import AnytimeCertifier, SequentialCertifier
from rs_plugin.smoothings.base import Smoothing

__all__ = [
    "CertifyJob",
    "Loaded",
    "Threads",
    "announce_threads",
    "data_fingerprint",
    "iter_records",
    "model_fingerprint",
    "parse_threads",
    "restore_memory",
]

# Inputs handed to the engine at once: enough for batches to mix inputs, bounded in memory.
_CHUNK = 512
# Certifiers with a decision mode (--radius) and a radius mode (--tolerance).
_SEQUENTIAL = ("sequential", "anytime")


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


def resolve_device(name: str | None) -> str:
    """``cpu``, ``cuda`` or ``cuda:K``; the default is ``cuda`` when there is one."""
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise RSValueError("--device", "'cpu', 'cuda' or 'cuda:K'", name)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RSValueError("--device", "a device present on this machine (no CUDA here)", name)
    index = name.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        raise RSValueError(
            "--device", f"cuda:K with K < {torch.cuda.device_count()} (GPUs here)", name
        )
    return name


class Certifier(Protocol):
    """What a job needs of a certifier from the ``rs_plugin.certifiers`` group."""

    model: nn.Module
    smoothing: Smoothing

    def iter_certify(
        self,
        x: torch.Tensor,
        *,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int,
        seed: int,
        keys: Sequence[int],
    ) -> Iterator[Certificates]: ...


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


def is_stateful(name: str) -> bool:
    """True for certifiers whose answers depend on the inputs certified before (a memory)."""
    factory = load_plugin("rs_plugin.certifiers", name, "--certifier")
    return isinstance(factory, type) and issubclass(factory, MemoryCertifier)


class Loaded(NamedTuple):
    """What :meth:`CertifyJob.load` returns: the certifier, the inputs and labels (``--limit``
    applied) and the fingerprint of the whole dataset (before ``--limit``)."""

    certifier: Certifier
    x: torch.Tensor
    y: torch.Tensor
    data_sha256: str


@dataclass(frozen=True)
class CertifyJob:
    """Everything a process needs to certify inputs of a dataset, as plain values."""

    model: str
    data: str
    smoothing: str
    sigma: float
    n0: int
    n: int
    alpha: float
    batch_size: int
    seed: int
    limit: int | None
    device: str
    certifier: str = "cohen"
    radius: float | None = None
    tolerance: float | None = None
    precision: str = "float32"
    channels_last: bool = False
    compile: bool = False
    semantics: str | None = None
    smoothing_params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        check_positive("--sigma", self.sigma)
        self.build_smoothing()  # every smoothing parameter is checked before anything loads
        check_int("--n0", self.n0, 1)
        check_int("-n", self.n, 1)
        check_open_unit("--alpha", self.alpha)
        check_int("--batch-size", self.batch_size, 1)
        check_int("--seed", self.seed, 0, MAX_SEED)
        if self.limit is not None:
            check_int("--limit", self.limit, 1)
        if self.precision not in PRECISIONS:
            raise RSValueError("--precision", f"one of {sorted(PRECISIONS)}", self.precision)
        for flag, value in (("--radius", self.radius), ("--tolerance", self.tolerance)):
            if value is not None:
                check_positive(flag, value)
                if self.certifier not in _SEQUENTIAL:
                    raise RSValueError(flag, "only with --certifier sequential or anytime", value)
        if self.certifier in _SEQUENTIAL and (self.radius is None) == (self.tolerance is None):
            raise RSValueError(
                f"--certifier {self.certifier}",
                "exactly one of --radius R (decision mode) and --tolerance T (radius mode)",
                {"--radius": self.radius, "--tolerance": self.tolerance},
            )

    def build_smoothing(self) -> Smoothing:
        """The smoothing named by --smoothing with --sigma, --semantics and its parameters."""
        params = dict(self.smoothing_params)
        if self.semantics is not None:
            params["semantics"] = self.semantics
        try:
            return load_smoothing(self.smoothing, sigma=self.sigma, **params)
        except TypeError as error:
            accepted = sorted(params)
            raise RSValueError(
                "--semantics/--smoothing-param",
                f"keywords that --smoothing {self.smoothing} accepts ({error})",
                accepted,
            ) from error

    def load(self) -> Loaded:
        """Load model and data once; return the certifier, inputs, labels and data fingerprint.

        Everything a run could trip over is checked here, before a record is written.
        """
        from rs_plugin.data import load_dataset, load_model_for

        smoothing = self.build_smoothing()
        model = load_model_for(self.model, self.data).to(self.device)
        x, y = load_dataset(self.data, "test")
        data_sha256 = data_fingerprint(x, y)
        if self.limit is not None:
            x, y = x[: self.limit], y[: self.limit]
        # Certifiers feed inputs in the model's floating dtype; so does the probe.
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), x.dtype)
        num_classes = self._probe(model, x[:2].to(dtype))
        check_noise_scale("--sigma", self.sigma, dtype)
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise RSValueError(
                "--data",
                f"labels in [0, {num_classes - 1}] (the model's classes)",
                f"labels in [{int(y.min())}, {int(y.max())}]",
            )
        factory = load_plugin("rs_plugin.certifiers", self.certifier, "--certifier")
        if factory not in (SmoothedClassifier, GridCertifier) and not self._plain_runner():
            raise RSValueError(
                "--precision/--channels-last/--compile",
                "the defaults unless --certifier cohen or grid",
                f"--certifier {self.certifier}",
            )
        certifier: Certifier
        if factory is SmoothedClassifier or factory is GridCertifier:
            # cohen: Cohen et al.'s CERTIFY, on a grid of transformed inputs for a transform
            # certified in the input domain.
            build = cohen_certifier if factory is SmoothedClassifier else GridCertifier
            certifier = build(
                model,
                smoothing,
                num_classes,
                clip_values=(0.0, 1.0),
                precision=self.precision,
                channels_last=self.channels_last,
                compile=self.compile,
            )
        elif factory is SequentialCertifier or factory is AnytimeCertifier:
            certifier = factory(
                model,
                smoothing,
                num_classes,
                radius=self.radius,
                tolerance=self.tolerance,
                clip_values=(0.0, 1.0),
            )
        else:
            certifier = factory(model, smoothing, num_classes)
        return Loaded(certifier, x, y, data_sha256)

    def _probe(self, model: nn.Module, x: torch.Tensor) -> int:
        """The model's number of classes, from one forward pass on two inputs (one when the
        dataset holds one), with an error saying what failed."""
        out = probe_model(
            model,
            x[:2].to(self.device),
            model_name=f"--model {self.model}",
            model_parameter="--model",
            inputs_name="--data",
        )
        if out.shape[1] < 2:
            raise RSValueError(
                "--model", "a model returning logits for at least 2 classes", tuple(out.shape)
            )
        return int(out.shape[1])

    def _plain_runner(self) -> bool:
        return self.precision == "float32" and not self.channels_last and not self.compile

    def config(self, smoothed: Certifier, data_sha256: str) -> dict[str, Any]:
        """The run configuration stored with every record (and checked on resume).

        The data enters by its content (``data_sha256``); how it was named is
        :meth:`provenance`, stored but not compared.
        """
        return {
            "model": self.model,
            "model_sha256": model_fingerprint(smoothed.model),
            "data_sha256": data_sha256,
            "smoothing": smoothed.smoothing.config(),
            "certifier": self.certifier,
            **({"decision_radius": self.radius} if self.radius is not None else {}),
            **({"tolerance": self.tolerance} if self.tolerance is not None else {}),
            # Only a reduced precision changes the certified classifier; layout and compilation
            # change kernels only (and files written before these options resume unchanged).
            **({"precision": self.precision} if self.precision != "float32" else {}),
            "n0": self.n0,
            "n": self.n,
            "alpha": self.alpha,
            "seed": self.seed,
        }

    def provenance(self) -> dict[str, Any]:
        """Fields stored with every record but not compared on resume."""
        return {"data": self.data}


def iter_records(
    job: CertifyJob,
    smoothed: Certifier,
    x: torch.Tensor,
    y: torch.Tensor,
    indices: Sequence[int],
) -> Iterator[dict[str, Any]]:
    """Certify ``x[indices]``, yielding one record per input as soon as it is done.

    ``seconds`` is the wall time since the previous completion divided among the inputs that
    completed together (batches mix inputs, so per-input time is an apportioned figure). A
    memory certifier's records carry its ``memory`` entry (see :func:`restore_memory`).
    """
    memory = smoothed if isinstance(smoothed, MemoryCertifier) else None
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
            for record in part.to_records():
                label = int(y[record["index"]])
                correct = record["prediction"] == label and not record["abstain"]
                record.update(label=label, correct=correct, seconds=seconds)
                if memory is not None:
                    record["memory"] = memory.memory_entry(record["index"])
                yield record


def restore_memory(
    smoothed: Certifier, x: torch.Tensor, records: Iterable[Mapping[str, Any]]
) -> None:
    """Rebuild a memory certifier's memory from its records, in the order they were written.

    A no-op for other certifiers. Resuming DDRS or ANCER certifies the remaining inputs against
    exactly the regions the stored records claim.
    """
    if not isinstance(smoothed, MemoryCertifier):
        return
    for record in records:
        index = int(record["index"])
        if "memory" not in record:
            raise RSValueError(
                "--resume",
                "records of a memory certifier, each with its memory entry",
                f"the record of input {index} has no 'memory' field",
            )
        if record["memory"] is not None:
            if index >= len(x):
                raise RSValueError(
                    "--limit",
                    "a limit covering every input a memory certifier's file already holds",
                    f"{len(x)} inputs, and the file holds input {index}",
                )
            smoothed.restore(x[index], index, record["prediction"], record["memory"])


class Threads(NamedTuple):
    """The torch thread count ``--threads`` chose, and why."""

    number: int
    why: str


def parse_threads(value: str) -> Threads:
    """``--threads``: ``auto`` (the cores other work leaves free now) or an integer >= 1."""
    if value == "auto":
        cores = available_cores()
        busy = busy_cores(cores)
        count = threads_for_load(cores=cores, load=busy)
        return Threads(count, f"auto: {busy:.1f} of {cores} cores busy with other work now")
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise RSValueError("--threads", "auto or an integer >= 1", value)
    return Threads(count, f"--threads {count}")


def announce_threads(command: str, threads: Threads) -> None:
    """Once every input is checked, before the work: the thread count --threads chose."""
    print(
        f"{command}: {threads.number} torch thread(s) ({threads.why})", file=sys.stderr, flush=True
    )
