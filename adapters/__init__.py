"""Bridges to host ecosystems, imported as ``rs_plugin.adapters.*``: ART, AutoAttack, Foolbox
and Ray.

An adapter converts at the boundary and calls the core; no smoothing logic lives here.

What lives here: the ART facade users import (:mod:`~rs_plugin.adapters.art`) over ART's
estimators (:mod:`~rs_plugin.adapters.art_estimator`) and trainers
(:mod:`~rs_plugin.adapters.art_trainers`); audit attacks run through ART
(:mod:`~rs_plugin.adapters.art_attacks`) and through pyautoattack
(:mod:`~rs_plugin.adapters.autoattack`); the smoothed classifier as a Foolbox model and Foolbox
attacks as audit attacks (:mod:`~rs_plugin.adapters.foolbox`); the Ray engine of
``rs-plugin certify --engine ray`` (:mod:`~rs_plugin.adapters.ray`) and its bounded waits
(:mod:`~rs_plugin.adapters.ray_health`). Each needs its extra
(``art``, ``audit``, ``foolbox``, ``ray``); importing one
without it raises an ImportError naming the ``pip install 'rs-plugin[extra]'`` line.
"""

__all__: list[str] = []
