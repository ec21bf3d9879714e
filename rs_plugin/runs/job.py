"""A certify job: what to load and how to certify it, shared by every engine (here, Ray).

A :class:`CertifyJob` is a small picklable description (model spec, data spec, smoothing, sample
sizes, seed, certifier and its options). Each engine loads it once per process with
:meth:`CertifyJob.load` and turns input indices into records with
:func:`~rs_plugin.runs.records.iter_records`; because every input's noise is derived from
(seed, index), any split of the indices across processes or restarts gives the same records.

The certifier is found by name in the ``rs_plugin.certifiers`` group and receives exactly the
options it declares (:attr:`~rs_plugin.certification.base.Certifier.options`); an option the
job sets that the certifier does not declare is refused before anything loads. Errors name the
job's parameters (its field names).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from rs_plugin._registry import load_plugin, load_smoothing, scale_keyword
from rs_plugin._validation import (
    MAX_SAMPLES,
    MAX_SEED,
    RSValueError,
    check_int,
    check_noise_scale,
    check_open_unit,
    check_positive,
)
from rs_plugin.certification.base import Certifier
from rs_plugin.certification.batching import check_batch_size
from rs_plugin.certification.engine import NOISE_VERSION
from rs_plugin.certification.model_runner import PRECISIONS, model_dtype, sampling_dtype
from rs_plugin.certification.probe import probe_model
from rs_plugin.runs.fingerprints import data_fingerprint, model_fingerprint
from rs_plugin.smoothings.base import Smoothing

__all__ = ["DEFAULT_SIGMA", "CertifyJob", "Loaded", "load_certifier", "load_shipped_model"]

# The noise level of a run that names none, for smoothings whose scale is ``sigma`` (additive
# noise, in input units). A transform's scale has its own keyword and default.
DEFAULT_SIGMA = 0.25

# The options a job sets, with the value that means "not set" (a certifier that does not
# declare an option refuses it only when it is set). `clip_values` is always passed where
# declared: the data a job loads lies in [0, 1].
_UNSET: dict[str, Any] = {
    "radius": None,
    "tolerance": None,
    "precision": "float32",
    "channels_last": False,
    "compile": False,
}
_CLIP_VALUES = (0.0, 1.0)


def load_shipped_model(spec: str, data: str, sigma: float | None = None) -> nn.Module:
    """The default ``model_loader``: ``demo`` is the reference model shipped for ``data`` and
    the noise level ``sigma`` (:func:`rs_plugin.data.shipped_model`); other specs need a loader
    that knows them (the command line passes :func:`rs_plugin.cli.models.load_model_for`)."""
    from rs_plugin.data import shipped_model

    if spec != "demo":
        raise RSValueError("model", "'demo', or a model_loader that resolves this model spec", spec)
    return shipped_model(data, sigma)


def load_shipped_denoiser_spec(spec: str, data: str) -> nn.Module:
    """The default ``denoiser_loader``: ``demo`` and ``mse``, the denoisers shipped for
    Fashion-MNIST (:func:`rs_plugin.data.load_shipped_denoiser`); other specs need a loader
    that knows them (the command line passes :func:`rs_plugin.cli.models.load_denoiser_for`)."""
    from rs_plugin.data import SHIPPED_DENOISERS, load_shipped_denoiser

    if spec not in SHIPPED_DENOISERS:
        raise RSValueError(
            "denoiser", f"one of {SHIPPED_DENOISERS}, or a denoiser_loader that resolves it", spec
        )
    return load_shipped_denoiser(spec)


def load_certifier(name: str) -> type[Certifier]:
    """The :class:`~rs_plugin.certification.base.Certifier` subclass registered as ``name`` in
    the ``rs_plugin.certifiers`` group."""
    factory = load_plugin("rs_plugin.certifiers", name, "certifier")
    if not (isinstance(factory, type) and issubclass(factory, Certifier)):
        raise RSValueError(
            "certifier",
            "a name registered to a subclass of rs_plugin.Certifier",
            f"{name} -> {factory!r}",
        )
    return factory


class Loaded(NamedTuple):
    """What :meth:`CertifyJob.load` returns: the certifier, the inputs and labels (``limit``
    applied; :data:`rs_plugin.data.UNLABELED` for inputs without one), the fingerprint of
    the whole dataset (before ``limit``) and its labels, by which a stored record of any input
    of the dataset is checked (a resumed file may hold more inputs than this run's ``limit``,
    never inputs the dataset does not have)."""

    certifier: Certifier
    x: torch.Tensor
    y: torch.Tensor
    data_sha256: str
    all_labels: list[int]


def _narrow_model(model: nn.Module) -> dict[str, str]:
    """``{"model_dtype": ...}`` for a model narrower than float32, else nothing."""
    dtype = model_dtype(model)
    if dtype in (torch.float16, torch.bfloat16):
        return {"model_dtype": str(dtype).removeprefix("torch.")}
    return {}


# Inputs per call of a sound smoothing's grid check when the data loads.
_GRID_CHECK_CHUNK = 1024


@dataclass(frozen=True)
class CertifyJob:
    """Everything a process needs to certify inputs of a dataset, as plain values.

    ``model`` is a spec that ``model_loader(model, data, sigma)`` turns into the model in each
    process (a module-level function, so that the job pickles for Ray; ``sigma`` is the job's,
    None when unset, so that ``demo`` can be the shipped model trained for that noise level);
    by default only ``demo``.
    ``sigma`` is additive noise's standard deviation (None: :data:`DEFAULT_SIGMA`); a semantic
    smoothing refuses it and takes its scale by its own keyword in ``smoothing_params``
    (``("degrees", 15.0)`` for rotation), or its default.
    ``denoiser``, when set, is a spec that ``denoiser_loader(denoiser, data)`` turns into a
    denoiser put in front of the model for the job's smoothing (denoised smoothing,
    :func:`rs_plugin.denoising.denoised_for`); by default the shipped ``demo`` and ``mse``.
    """

    model: str
    data: str
    smoothing: str
    sigma: float | None
    n0: int
    n: int
    alpha: float
    batch_size: int | str
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
    model_loader: Callable[[str, str, float | None], nn.Module] = load_shipped_model
    denoiser: str | None = None
    denoiser_loader: Callable[[str, str], nn.Module] = load_shipped_denoiser_spec

    def __post_init__(self) -> None:
        if self.sigma is not None:
            check_positive("sigma", self.sigma)
        self.build_smoothing()  # every smoothing parameter is checked before anything loads
        check_int("n0", self.n0, 1, MAX_SAMPLES)
        check_int("n", self.n, 1, MAX_SAMPLES)
        check_open_unit("alpha", self.alpha)
        check_batch_size(self.batch_size)
        check_int("seed", self.seed, 0, MAX_SEED)
        if self.limit is not None:
            check_int("limit", self.limit, 1)
        if self.precision not in PRECISIONS:
            raise RSValueError("precision", f"one of {sorted(PRECISIONS)}", self.precision)
        for name in ("radius", "tolerance"):
            value = getattr(self, name)
            if value is not None:
                check_positive(name, value)
        self.certifier_options()

    @property
    def stateful(self) -> bool:
        """True when the certifier keeps a memory (every input, in order, in one process)."""
        return load_certifier(self.certifier).stateful

    def certifier_options(self) -> dict[str, Any]:
        """The options the certifier declares, with this job's values, checked by the
        certifier; an option set here that it does not declare is refused."""
        factory = load_certifier(self.certifier)
        declared = factory.options
        for name, unset in _UNSET.items():
            value = getattr(self, name)
            if name not in declared and value != unset:
                raise RSValueError(
                    name,
                    f"no {name} with certifier {self.certifier!r}, whose options are "
                    f"{sorted(declared) or 'none'}",
                    value,
                )
        values = {"clip_values": _CLIP_VALUES, **{name: getattr(self, name) for name in _UNSET}}
        options = {name: value for name, value in values.items() if name in declared}
        factory.check_options(options)
        return options

    def build_smoothing(self) -> Smoothing:
        """The smoothing named ``smoothing`` with ``sigma``, ``semantics`` and its parameters."""
        params = dict(self.smoothing_params)
        if self.semantics is not None:
            params["semantics"] = self.semantics
        factory = load_plugin("rs_plugin.smoothings", self.smoothing, "smoothing")
        keyword = scale_keyword(factory)
        if keyword == "sigma":
            if "sigma" in params:  # one way to set it, or the other would be dropped silently
                raise RSValueError(
                    "smoothing_params",
                    f"no sigma (set the noise's standard deviation with sigma, --sigma, for "
                    f"smoothing {self.smoothing!r})",
                    f"sigma={params['sigma']!r}",
                )
            params["sigma"] = DEFAULT_SIGMA if self.sigma is None else self.sigma
        elif self.sigma is not None:
            default = getattr(factory, "default_scale", None)
            units = getattr(factory, "units", None)  # a property where it depends on options
            raise RSValueError(
                "sigma",
                f"no sigma with smoothing {self.smoothing!r} (sigma is the standard deviation "
                f"of additive noise): its scale is {keyword}, in "
                f"{units if isinstance(units, str) else 'its own units'}"
                f"{'' if default is None else f' (default {default:g})'}, set in "
                f"smoothing_params as {keyword}=VALUE (--smoothing-param {keyword}=VALUE)",
                self.sigma,
            )
        try:
            return load_smoothing(self.smoothing, **params)
        except TypeError as error:
            accepted = sorted(params)
            raise RSValueError(
                "semantics/smoothing_params",
                f"keywords that smoothing {self.smoothing} accepts ({error})",
                accepted,
            ) from error

    def load(self) -> Loaded:
        """Load model and data once; return the certifier, inputs, labels and data fingerprint.

        Everything a run could trip over is checked here, before a record is written.
        """
        from rs_plugin.data import is_labeled, load_dataset

        smoothing = self.build_smoothing()
        model = self.model_loader(self.model, self.data, self.sigma)
        if self.denoiser is not None:
            from rs_plugin.denoising import denoised_for

            denoiser = self.denoiser_loader(self.denoiser, self.data).eval()
            model = denoised_for(model, denoiser, smoothing)
        model = model.to(self.device)
        x, y = load_dataset(self.data, "test")
        data_sha256 = data_fingerprint(x, y)
        all_labels = y.tolist()
        if self.limit is not None:
            x, y = x[: self.limit], y[: self.limit]
        # The model sees inputs in its own floating dtype (so does the probe); the certifiers
        # hold inputs and draw noise in the sampling dtype, where a sound grid must hold them.
        dtype = model_dtype(model)
        num_classes = self._probe(model, x[:2].to(dtype))
        work = sampling_dtype(model, x.dtype)
        if self.sigma is not None:
            check_noise_scale("sigma", self.sigma, work)
        check_inputs = getattr(smoothing, "check_inputs", None)
        if check_inputs is not None:  # a sound smoothing's grid: every input, before any record
            try:  # in chunks: the check's float64 temporaries are a few times the chunk's size
                for chunk in x.split(_GRID_CHECK_CHUNK):
                    check_inputs(chunk.to(work))
            except RSValueError as error:
                raise RSValueError(
                    "data", f"{error.accepted} (smoothing {smoothing!r})", error.received
                ) from error
        if is_labeled(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise RSValueError(
                "data",
                f"labels in [0, {num_classes - 1}] (the model's classes), or no labels",
                f"labels in [{int(y.min())}, {int(y.max())}]",
            )
        factory = load_certifier(self.certifier)
        if self.denoiser is not None and factory.stateful:
            # A memory certifier samples with a σ of its own per input; a denoiser is trained
            # for the job's one σ and refuses the others (after the σ search of the first input).
            raise RSValueError(
                "denoiser",
                "no denoiser with a certifier that chooses σ per input (ddrs, ancer)",
                f"{self.denoiser} with {self.certifier}",
            )
        certifier = factory.build(model, smoothing, num_classes, **self.certifier_options())
        return Loaded(certifier, x, y, data_sha256, all_labels)

    def _probe(self, model: nn.Module, x: torch.Tensor) -> int:
        """The model's number of classes, from one forward pass on two inputs (one when the
        dataset holds one), with an error saying what failed."""
        out = probe_model(
            model,
            x[:2].to(self.device),
            model_name=f"--model {self.model}",
            model_parameter="model",
            inputs_name="data",
        )
        if out.shape[1] < 2:
            raise RSValueError(
                "model", "a model returning logits for at least 2 classes", tuple(out.shape)
            )
        return int(out.shape[1])

    def config(self, smoothed: Certifier, data_sha256: str) -> dict[str, Any]:
        """The run configuration stored with every record (and checked on resume).

        The data enters by its content (``data_sha256``); how it was named is
        :meth:`provenance`, stored but not compared.
        """
        return {
            "model": self.model,
            **({"denoiser": self.denoiser} if self.denoiser is not None else {}),
            "model_sha256": model_fingerprint(smoothed.model),
            "data_sha256": data_sha256,
            "smoothing": smoothed.smoothing.config(),
            "certifier": self.certifier,
            **({"decision_radius": self.radius} if self.radius is not None else {}),
            **({"tolerance": self.tolerance} if self.tolerance is not None else {}),
            # Only a reduced precision changes the certified classifier; layout and compilation
            # change kernels only (and files written before these options resume unchanged).
            **({"precision": self.precision} if self.precision != "float32" else {}),
            # A float16/bfloat16 model's noise is drawn in float32 and cast (files written when
            # it was drawn in the model's dtype do not resume: their config lacks this field).
            **_narrow_model(smoothed.model),
            "n0": self.n0,
            # A certifier that stops early records the samples each input used as its `n`.
            **({"n_max": self.n} if load_certifier(self.certifier).samples_vary else {"n": self.n}),
            "alpha": self.alpha,
            "seed": self.seed,
            "noise_version": NOISE_VERSION,
        }

    def provenance(self) -> dict[str, Any]:
        """Fields stored with every record but not compared on resume: how the data was named,
        and the memory layout and compilation when set (they change kernels, not the certified
        classifier, so a resumed file may mix them as it may mix thread counts; each record
        says how it was computed)."""
        kernels = {name: True for name in ("channels_last", "compile") if getattr(self, name)}
        return {"data": self.data, **kernels}
