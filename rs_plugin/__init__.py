"""rs-plugin: randomized smoothing, certified, streamed on the model's device, and audited.

Public surface::

    from rs_plugin import Gaussian, SmoothedClassifier
    smoothed = SmoothedClassifier(model, Gaussian(0.25), num_classes=10)
    certificates = smoothed.certify(x, n0=100, n=100_000, alpha=0.001)

The package's parts (docs/architecture.md): :mod:`rs_plugin.smoothings` (noises and transforms)
← :mod:`rs_plugin.certification` (engine, statistics, the certifier contract and certifiers)
← :mod:`rs_plugin.auditing` (attacks, verdict, report) and :mod:`rs_plugin.runs` (the certify
job every engine shares) ← the adapters (ART, AutoAttack, Ray) ← :mod:`rs_plugin.cli`
(commands, flags, store), with :mod:`rs_plugin.bench` and :mod:`rs_plugin.data` beside them.
The names below are imported on first use, so ``import rs_plugin`` (and ``rs-plugin --help``)
costs no torch import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rs_plugin._registry import load_smoothing
    from rs_plugin._validation import RSValueError, RSWarning
    from rs_plugin.auditing.attack import Attack, AttackTarget, Candidates
    from rs_plugin.auditing.results import AuditReport, CertificateSet
    from rs_plugin.auditing.runner import Audit, audit
    from rs_plugin.auditing.semantic_attacks import SemanticGrid, SemanticRandom
    from rs_plugin.certification.base import RUN_OPTIONS, Certifier
    from rs_plugin.certification.certificates import Certificates, Predictions
    from rs_plugin.certification.classifier import SmoothedClassifier
    from rs_plugin.certification.conformance import check_certifier
    from rs_plugin.certification.engine import (
        NOISE_BLOCK,
        STREAM_ESTIMATION,
        STREAM_SELECTION,
        block_seed,
        stream_counts,
    )
    from rs_plugin.certification.grid import GridCertifier, cohen_certifier
    from rs_plugin.certification.memory import ANCER, DDRS, MemoryCertifier
    from rs_plugin.certification.radii import pack_certificates, sampling_cap
    from rs_plugin.certification.sequential import AnytimeCertifier, SequentialCertifier
    from rs_plugin.certification.stopping import AnytimeBounds, StagedBounds
    from rs_plugin.denoising.composition import DenoisedClassifier, denoised_for
    from rs_plugin.denoising.denoiser import ConditionalDenoiser
    from rs_plugin.smoothings.anisotropic import AnisotropicGaussian
    from rs_plugin.smoothings.base import AdditiveNoise, Smoothing
    from rs_plugin.smoothings.gaussian import Gaussian
    from rs_plugin.smoothings.geometric import Affine, Deformation, Rotation, Scaling, Translation
    from rs_plugin.smoothings.noises import ExpInf, Laplace, Uniform
    from rs_plugin.smoothings.norms import LP_NORMS, convert_radius, dual_norm, lp_norm
    from rs_plugin.smoothings.semantic import Blur, Brightness, Compose, Contrast, SemanticSmoothing
    from rs_plugin.smoothings.shadow import Shadow
    from rs_plugin.smoothings.sound import SoundGaussian, SoundLaplace, SoundNoise, SoundUniform
    from rs_plugin.smoothings.weather import Fog, HorizonFog

# Public name -> the module that defines it.
_PUBLIC = {
    "ANCER": "rs_plugin.certification.memory",
    "AdditiveNoise": "rs_plugin.smoothings.base",
    "Affine": "rs_plugin.smoothings.geometric",
    "AnisotropicGaussian": "rs_plugin.smoothings.anisotropic",
    "AnytimeBounds": "rs_plugin.certification.stopping",
    "AnytimeCertifier": "rs_plugin.certification.sequential",
    "Attack": "rs_plugin.auditing.attack",
    "AttackTarget": "rs_plugin.auditing.attack",
    "Audit": "rs_plugin.auditing.runner",
    "AuditReport": "rs_plugin.auditing.results",
    "Blur": "rs_plugin.smoothings.semantic",
    "Brightness": "rs_plugin.smoothings.semantic",
    "Candidates": "rs_plugin.auditing.attack",
    "CertificateSet": "rs_plugin.auditing.results",
    "Certificates": "rs_plugin.certification.certificates",
    "Certifier": "rs_plugin.certification.base",
    "Compose": "rs_plugin.smoothings.semantic",
    "ConditionalDenoiser": "rs_plugin.denoising.denoiser",
    "Contrast": "rs_plugin.smoothings.semantic",
    "DDRS": "rs_plugin.certification.memory",
    "Deformation": "rs_plugin.smoothings.geometric",
    "DenoisedClassifier": "rs_plugin.denoising.composition",
    "ExpInf": "rs_plugin.smoothings.noises",
    "Fog": "rs_plugin.smoothings.weather",
    "Gaussian": "rs_plugin.smoothings.gaussian",
    "GridCertifier": "rs_plugin.certification.grid",
    "HorizonFog": "rs_plugin.smoothings.weather",
    "LP_NORMS": "rs_plugin.smoothings.norms",
    "Laplace": "rs_plugin.smoothings.noises",
    "MemoryCertifier": "rs_plugin.certification.memory",
    "NOISE_BLOCK": "rs_plugin.certification.engine",
    "Predictions": "rs_plugin.certification.certificates",
    "RSValueError": "rs_plugin._validation",
    "RSWarning": "rs_plugin._validation",
    "RUN_OPTIONS": "rs_plugin.certification.base",
    "Rotation": "rs_plugin.smoothings.geometric",
    "STREAM_ESTIMATION": "rs_plugin.certification.engine",
    "STREAM_SELECTION": "rs_plugin.certification.engine",
    "Scaling": "rs_plugin.smoothings.geometric",
    "SemanticGrid": "rs_plugin.auditing.semantic_attacks",
    "SemanticRandom": "rs_plugin.auditing.semantic_attacks",
    "SemanticSmoothing": "rs_plugin.smoothings.semantic",
    "SequentialCertifier": "rs_plugin.certification.sequential",
    "Shadow": "rs_plugin.smoothings.shadow",
    "SmoothedClassifier": "rs_plugin.certification.classifier",
    "Smoothing": "rs_plugin.smoothings.base",
    "SoundGaussian": "rs_plugin.smoothings.sound",
    "SoundLaplace": "rs_plugin.smoothings.sound",
    "SoundNoise": "rs_plugin.smoothings.sound",
    "SoundUniform": "rs_plugin.smoothings.sound",
    "StagedBounds": "rs_plugin.certification.stopping",
    "Translation": "rs_plugin.smoothings.geometric",
    "Uniform": "rs_plugin.smoothings.noises",
    "audit": "rs_plugin.auditing.runner",
    "block_seed": "rs_plugin.certification.engine",
    "check_certifier": "rs_plugin.certification.conformance",
    "cohen_certifier": "rs_plugin.certification.grid",
    "denoised_for": "rs_plugin.denoising.composition",
    "convert_radius": "rs_plugin.smoothings.norms",
    "dual_norm": "rs_plugin.smoothings.norms",
    "load_smoothing": "rs_plugin._registry",
    "lp_norm": "rs_plugin.smoothings.norms",
    "pack_certificates": "rs_plugin.certification.radii",
    "sampling_cap": "rs_plugin.certification.radii",
    "stream_counts": "rs_plugin.certification.engine",
}

__all__ = [
    "ANCER",
    "DDRS",
    "LP_NORMS",
    "NOISE_BLOCK",
    "RUN_OPTIONS",
    "STREAM_ESTIMATION",
    "STREAM_SELECTION",
    "AdditiveNoise",
    "Affine",
    "AnisotropicGaussian",
    "AnytimeBounds",
    "AnytimeCertifier",
    "Attack",
    "AttackTarget",
    "Audit",
    "AuditReport",
    "Blur",
    "Brightness",
    "Candidates",
    "CertificateSet",
    "Certificates",
    "Certifier",
    "Compose",
    "ConditionalDenoiser",
    "Contrast",
    "Deformation",
    "DenoisedClassifier",
    "ExpInf",
    "Fog",
    "Gaussian",
    "GridCertifier",
    "HorizonFog",
    "Laplace",
    "MemoryCertifier",
    "Predictions",
    "RSValueError",
    "RSWarning",
    "Rotation",
    "Scaling",
    "SemanticGrid",
    "SemanticRandom",
    "SemanticSmoothing",
    "SequentialCertifier",
    "Shadow",
    "SmoothedClassifier",
    "Smoothing",
    "SoundGaussian",
    "SoundLaplace",
    "SoundNoise",
    "SoundUniform",
    "StagedBounds",
    "Translation",
    "Uniform",
    "audit",
    "block_seed",
    "check_certifier",
    "cohen_certifier",
    "convert_radius",
    "denoised_for",
    "dual_norm",
    "load_smoothing",
    "lp_norm",
    "pack_certificates",
    "sampling_cap",
    "stream_counts",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'rs_plugin' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
