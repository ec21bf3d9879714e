"""Certification: sampling votes under a smoothing and turning them into certificates.

What lives here: the Monte-Carlo engine that streams perturbed batches and counts votes
(:mod:`~rs_plugin.certification.engine`), how the model is called for votes (precision, layout,
compilation: :mod:`~rs_plugin.certification.model_runner`), confidence bounds and tests
(:mod:`~rs_plugin.certification.stats`), the certificate records
(:mod:`~rs_plugin.certification.certificates`), the smoothed classifier with CERTIFY and
PREDICT (:mod:`~rs_plugin.certification.classifier`), and the certifiers built on it:
input-domain grid certificates of interpolating transforms
(:mod:`~rs_plugin.certification.grid`), sequential certification
(:mod:`~rs_plugin.certification.sequential`, with its stopping rules in
:mod:`~rs_plugin.certification.stopping` and anytime-valid bounds in
:mod:`~rs_plugin.certification.confidence_sequence`), data-dependent σ with a memory
(:mod:`~rs_plugin.certification.memory`) and its σ search
(:mod:`~rs_plugin.certification.sigma_search`).

May import: :mod:`rs_plugin.smoothings` and :mod:`rs_plugin._validation`; never the audit, the
command line or an adapter.
"""
