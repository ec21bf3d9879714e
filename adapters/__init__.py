"""Bridges to host ecosystems, imported as ``rs_plugin.adapters.*``: ART, AutoAttack, Foolbox
and Ray.

An adapter converts at the boundary and calls the core; no smoothing logic lives here.
"""

__all__: list[str] = []
