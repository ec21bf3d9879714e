"""Auditing: attack every certificate and check what the attacks find with PREDICT.

What lives here: the attack contract and the attack registry lookup
(:mod:`~rs_plugin.auditing.attack`), gradient-free semantic searches
(:mod:`~rs_plugin.auditing.semantic_attacks`), pre-flight diagnostics of the model
(:mod:`~rs_plugin.auditing.diagnostics`) and its floating-point probe
(:mod:`~rs_plugin.auditing.fp_probe`), what a certificate record may claim
(:mod:`~rs_plugin.auditing.plausibility`), the runner that spends budgets and checks candidates
(:mod:`~rs_plugin.auditing.runner`), the certificate set, verdict and curves
(:mod:`~rs_plugin.auditing.results`), the report files (:mod:`~rs_plugin.auditing.report`) and
the default budgets and attacks (:mod:`~rs_plugin.auditing.defaults`), the batched PREDICT checks
of candidates (:mod:`~rs_plugin.auditing.checking`) and the progress every long command shows
on standard error, a bar or lines in a log (:mod:`~rs_plugin.auditing.progress`).

May import: :mod:`rs_plugin.certification`, :mod:`rs_plugin.smoothings`,
:mod:`rs_plugin._registry` and :mod:`rs_plugin._validation`. Attacks that need ART or AutoAttack
live in ``rs_plugin.adapters`` and reach the audit through the ``rs_plugin.attacks`` entry points.
"""
