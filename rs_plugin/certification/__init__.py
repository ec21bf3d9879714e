"""Certification: sampling votes under a smoothing and turning them into certificates.

What lives here: the certifier contract (:mod:`~rs_plugin.certification.base`) and the
conformance checks every registered certifier passes
(:mod:`~rs_plugin.certification.conformance`); the Monte-Carlo engine that streams perturbed
batches and counts votes, with every noise stream id (:mod:`~rs_plugin.certification.engine`);
its batch size, fixed or measured on the model (``"auto"``:
:mod:`~rs_plugin.certification.batching`), and the C library's allocator kept from returning
freed activations to the kernel between batches (:mod:`~rs_plugin.certification.allocator`);
how the model is called for votes (precision, layout, compilation:
:mod:`~rs_plugin.certification.model_runner`) and on how many threads
(:mod:`~rs_plugin.certification.threads`); the one model probe, on a copy of the inputs
(:mod:`~rs_plugin.certification.probe`), and a model's identity
(:mod:`~rs_plugin.certification.identity`); confidence bounds and tests
(:mod:`~rs_plugin.certification.stats`, :mod:`~rs_plugin.certification.stopping`,
:mod:`~rs_plugin.certification.confidence_sequence`); the certificate records
(:mod:`~rs_plugin.certification.certificates`) and how a lower bound becomes one, with the
sampling cap (:mod:`~rs_plugin.certification.radii`); the smoothed classifier with CERTIFY and
PREDICT (:mod:`~rs_plugin.certification.classifier`), and the certifiers built on it:
input-domain grid certificates of interpolating transforms
(:mod:`~rs_plugin.certification.grid`), sequential certification
(:mod:`~rs_plugin.certification.sequential`), data-dependent σ with a memory
(:mod:`~rs_plugin.certification.memory`), the memory's regions
(:mod:`~rs_plugin.certification.regions`) and its σ search
(:mod:`~rs_plugin.certification.sigma_search`).

May import: :mod:`rs_plugin.smoothings` and :mod:`rs_plugin._validation`; never the audit, the
command line or an adapter.
"""
