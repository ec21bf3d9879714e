"""rs-plugin: randomized smoothing, certified, streamed on the model's device, and audited.

Public surface::

    from rs_plugin import Gaussian, SmoothedClassifier
    smoothed = SmoothedClassifier(model, Gaussian(0.25), num_classes=10)
    certificates = smoothed.certify(x, n0=100, n=100_000, alpha=0.001)
"""

from rs_plugin._anisotropic import AnisotropicGaussian
from rs_plugin._attack import Attack, AttackTarget, Candidates
from rs_plugin._audit import Audit, AuditReport, CertificateSet, audit
from rs_plugin._certificates import Certificates, Predictions
from rs_plugin._classifier import SmoothedClassifier
from rs_plugin._engine import NOISE_BLOCK, block_seed
from rs_plugin._geometric import Affine, Deformation, Rotation, Scaling, Translation
from rs_plugin._memory import ANCER, DDRS, MemoryCertifier
from rs_plugin._noises import ExpInf, Laplace, Uniform
from rs_plugin._norms import LP_NORMS, convert_radius, dual_norm, lp_norm
from rs_plugin._registry import load_smoothing
from rs_plugin._semantic import Blur, Brightness, Compose, Contrast, SemanticSmoothing
from rs_plugin._semantic_attacks import SemanticGrid, SemanticRandom
from rs_plugin._sequential import SequentialCertifier, StagedBounds
from rs_plugin._smoothing import Gaussian, Smoothing
from rs_plugin._validation import RSValueError, RSWarning

__all__ = [
    "ANCER",
    "DDRS",
    "LP_NORMS",
    "NOISE_BLOCK",
    "Affine",
    "AnisotropicGaussian",
    "Attack",
    "AttackTarget",
    "Audit",
    "AuditReport",
    "Blur",
    "Brightness",
    "Candidates",
    "CertificateSet",
    "Certificates",
    "Compose",
    "Contrast",
    "Deformation",
    "ExpInf",
    "Gaussian",
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
    "SmoothedClassifier",
    "Smoothing",
    "StagedBounds",
    "Translation",
    "Uniform",
    "audit",
    "block_seed",
    "convert_radius",
    "dual_norm",
    "load_smoothing",
    "lp_norm",
]
__version__ = "0.1.0"
