"""Every randomized-smoothing class ART 1.20 has for PyTorch, computed by rs-plugin's core.

Change one import line::

    # from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
    from rs_plugin.adapters.art import PyTorchRandomizedSmoothing

and ART code that built, trained, predicted with and certified ART's class runs unchanged, with
the work done by :class:`rs_plugin.SmoothedClassifier` (noise streamed on the model's device,
seeded, memory flat in n). The same line serves ``PyTorchSmoothAdv``, ``PyTorchMACER`` and
``PyTorchSmoothMix`` (ART's trainers, their objectives from :mod:`rs_plugin.training`), and adds
``PyTorchConsistency`` (Jeong & Shin 2020), ``PyTorchCATRS`` (Jeong, Kim & Shin 2023) and
``PyTorchSmoothedClassifier`` (any core smoothing). The estimators live in
:mod:`rs_plugin.adapters.art_estimator`, the trainers in :mod:`rs_plugin.adapters.art_trainers`;
docs/art.md compares them with ART method by method.
"""

from rs_plugin.adapters.art_estimator import (
    OUTPUTS,
    PyTorchRandomizedSmoothing,
    PyTorchSmoothedClassifier,
    SmoothedLogProbabilities,
)
from rs_plugin.adapters.art_trainers import (
    PyTorchCATRS,
    PyTorchConsistency,
    PyTorchMACER,
    PyTorchSmoothAdv,
    PyTorchSmoothMix,
)

__all__ = [
    "OUTPUTS",
    "PyTorchCATRS",
    "PyTorchConsistency",
    "PyTorchMACER",
    "PyTorchRandomizedSmoothing",
    "PyTorchSmoothAdv",
    "PyTorchSmoothMix",
    "PyTorchSmoothedClassifier",
    "SmoothedLogProbabilities",
]
