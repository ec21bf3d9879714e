"""A certify job: what to load and how to certify it, shared by the in-process and Ray engines.

A :class:`CertifyJob` is a small picklable description (model spec, data spec, smoothing, sample
sizes, seed). Each engine loads it once per process with :meth:`CertifyJob.load` and turns input
indices into records with :func:`iter_records`; because every input's noise is derived from
(seed, index), any split of the indices across processes or restarts gives the same records.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from rs_plugin._registry import load_plugin, load_smoothing
from rs_plugin._validation import RSValueError, check_int, check_open_unit, check_positive
from rs_plugin.certification.certificates import Certificates
from rs_plugin.certification.classifier import SmoothedClassifier
from rs_plugin.certification.grid import GridCertifier, cohen_certifier
from rs_plugin.certification.memory import MemoryCertifier
from rs_plugin.certification.model_runner import PRECISIONS
from rs_plugin.certification.sequential import SequentialCertifier
from rs_plugin.smoothings.base import Smoothing

__all__ = ["CertifyJob", "iter_records", "model_fingerprint"]

# Inputs handed to the engine at once: enough for batches to mix inputs, bounded in memory.
_CHUNK = 512


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
        check_int("--seed", self.seed, 0)
        if self.limit is not None:
            check_int("--limit", self.limit, 1)
        if self.precision not in PRECISIONS:
            raise RSValueError("--precision", f"one of {sorted(PRECISIONS)}", self.precision)
        for flag, value in (("--radius", self.radius), ("--tolerance", self.tolerance)):
            if value is not None:
                check_positive(flag, value)
                if self.certifier != "sequential":
                    raise RSValueError(flag, "only with --certifier sequential", value)
        if self.certifier == "sequential" and (self.radius is None) == (self.tolerance is None):
            raise RSValueError(
                "--certifier sequential",
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

    def load(self) -> tuple[Certifier, torch.Tensor, torch.Tensor]:
        """Load model and data once; return the certifier, inputs and labels."""
        from rs_plugin.data import load_dataset, load_model_for

        smoothing = self.build_smoothing()
        model = load_model_for(self.model, self.data).to(self.device)
        x, y = load_dataset(self.data, "test")
        if self.limit is not None:
            x, y = x[: self.limit], y[: self.limit]
        with torch.inference_mode():
            try:
                num_classes = int(model(x[:1].to(self.device)).shape[1])
            except RuntimeError as error:
                raise RSValueError(
                    "--data",
                    f"inputs of the shape --model {self.model} accepts",
                    f"{self.data} with inputs of shape {tuple(x.shape[1:])}",
                ) from error
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
        elif factory is SequentialCertifier:
            certifier = SequentialCertifier(
                model,
                smoothing,
                num_classes,
                radius=self.radius,
                tolerance=self.tolerance,
                clip_values=(0.0, 1.0),
            )
        else:
            certifier = factory(model, smoothing, num_classes)
        return certifier, x, y

    def _plain_runner(self) -> bool:
        return self.precision == "float32" and not self.channels_last and not self.compile

    def config(self, smoothed: Certifier) -> dict[str, Any]:
        """The run configuration stored with every record (and checked on resume)."""
        return {
            "model": self.model,
            "model_sha256": model_fingerprint(smoothed.model),
            "data": self.data,
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


def iter_records(
    job: CertifyJob,
    smoothed: Certifier,
    x: torch.Tensor,
    y: torch.Tensor,
    indices: Sequence[int],
) -> Iterator[dict[str, Any]]:
    """Certify ``x[indices]``, yielding one record per input as soon as it is done.

    ``seconds`` is the wall time since the previous completion divided among the inputs that
    completed together (batches mix inputs, so per-input time is an apportioned figure).
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
            for record in part.to_records():
                label = int(y[record["index"]])
                correct = record["prediction"] == label and not record["abstain"]
                record.update(label=label, correct=correct, seconds=seconds)
                yield record
