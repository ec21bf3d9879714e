"""Benchmarks behind ``rs-plugin bench``: speed against the floor (the fastest batch size of the
bare noise-and-forward loop) and ART (:mod:`~rs_plugin.bench.speed`, each model in every
condition by :mod:`~rs_plugin.bench.model_bench`), peak memory per n
(:mod:`~rs_plugin.bench.memory`), sequential against fixed-n certification
(:mod:`~rs_plugin.bench.sequential`, on votes kept by :mod:`~rs_plugin.bench.votes`), radii
against the literature (:mod:`~rs_plugin.bench.radii`) and the sound-in-floating-point mode
beside the float mode (:mod:`~rs_plugin.bench.sound`). The timed methods live in
:mod:`~rs_plugin.bench.methods`, the timed models in :mod:`~rs_plugin.bench.models`, how timings
are taken in :mod:`~rs_plugin.bench.timing` and the targets met or missed in
:mod:`~rs_plugin.bench.report`.

May import every part of the core, the data package and (for the comparison with ART) the ART
adapter; nothing imports it but the command line.
"""
