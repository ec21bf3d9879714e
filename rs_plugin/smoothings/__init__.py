"""Smoothings: the distributions a smoothed classifier averages over, and their certificates.

What lives here: the interface every smoothing implements (:mod:`~rs_plugin.smoothings.base`:
perturb a batch, turn p_lower into a radius), isotropic Gaussian noise
(:mod:`~rs_plugin.smoothings.gaussian`), the other noise families
(:mod:`~rs_plugin.smoothings.noises`: Laplace, uniform, ExpInf) and the differential method's
radii for them (:mod:`~rs_plugin.smoothings.differential`), their modes sound in floating
point (:mod:`~rs_plugin.smoothings.sound`, sampled exactly by
:mod:`~rs_plugin.smoothings.lattice`), anisotropic Gaussian
(:mod:`~rs_plugin.smoothings.anisotropic`), ℓp-norm helpers and radius conversions
(:mod:`~rs_plugin.smoothings.norms`), and semantic transforms: image operations
(:mod:`~rs_plugin.smoothings.transforms`), the transform base class with photometric transforms
and compositions (:mod:`~rs_plugin.smoothings.semantic`), geometric transforms
(:mod:`~rs_plugin.smoothings.geometric`), cast shadows (:mod:`~rs_plugin.smoothings.shadow`) and
fog (:mod:`~rs_plugin.smoothings.weather`).

May import: torch, numpy, scipy, mpmath and :mod:`rs_plugin._validation`; nothing else of the
package.
"""
