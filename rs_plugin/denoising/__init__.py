"""Denoised smoothing: certify a classifier trained on clean data by smoothing f∘D.

What lives here: a small noise-conditional residual denoiser D(x̃, σ) that records the noise it
was trained for (:mod:`~rs_plugin.denoising.denoiser`), and the composition f(D(x, σ)) that any
certifier smooths as an ordinary base model, refusing a smoothing its denoiser was not trained
for (:mod:`~rs_plugin.denoising.composition`; Salman et al. 2020, Carlini et al. 2023). The
objectives that train a denoiser for a frozen classifier live in
:mod:`rs_plugin.training.denoising`.

May import: :mod:`rs_plugin.smoothings` and :mod:`rs_plugin._validation`; never certification,
training, the data package, the audit, the command line or an adapter.
"""

from rs_plugin.denoising.composition import DenoisedClassifier, denoised_for
from rs_plugin.denoising.denoiser import ConditionalDenoiser, build_denoiser

__all__ = ["ConditionalDenoiser", "DenoisedClassifier", "build_denoiser", "denoised_for"]
