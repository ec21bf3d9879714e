"""Plugin registry on Python entry points (read with ``importlib.metadata``).

Groups: ``rs_plugin.smoothings``, ``rs_plugin.attacks``, ``rs_plugin.certifiers``. The project
registers its own built-ins through the same groups a third party uses (see pyproject.toml).
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from rs_plugin._smoothing import Smoothing
from rs_plugin._validation import RSValueError

__all__ = ["GROUPS", "discover", "format_plugins", "load_smoothing"]

GROUPS = ("rs_plugin.smoothings", "rs_plugin.attacks", "rs_plugin.certifiers")


class DuplicatePluginError(RSValueError):
    """Two installed distributions register the same name in one group."""


def _provider(entry: EntryPoint) -> str:
    return entry.dist.name if entry.dist is not None else "<unknown distribution>"


def discover(group: str) -> dict[str, EntryPoint]:
    """Entry points of ``group`` by name; a name registered by two providers is an error."""
    found: dict[str, EntryPoint] = {}
    for entry in entry_points(group=group):
        previous = found.get(entry.name)
        if previous is not None and previous.value != entry.value:
            raise DuplicatePluginError(
                f"{group} name {entry.name!r}",
                "a name registered by one distribution only",
                f"{previous.value} from {_provider(previous)} and "
                f"{entry.value} from {_provider(entry)}",
            )
        found[entry.name] = entry
    return found


def load_smoothing(name: str, **params: Any) -> Smoothing:
    """Instantiate the smoothing registered as ``name`` with ``params`` (e.g. ``sigma``)."""
    available = discover("rs_plugin.smoothings")
    if name not in available:
        raise RSValueError("--smoothing", f"one of {sorted(available)}", name)
    factory = available[name].load()
    smoothing = factory(**params)
    if not isinstance(smoothing, Smoothing):
        raise RSValueError(
            "--smoothing",
            "an entry point that builds an rs_plugin.Smoothing",
            f"{name} -> {type(smoothing).__name__}",
        )
    return smoothing


def format_plugins() -> str:
    """Every installed plugin, one line each: group, name, object, provider."""
    lines = []
    for group in GROUPS:
        for name, entry in sorted(discover(group).items()):
            lines.append(f"{group:<24}{name:<16}{entry.value:<40}{_provider(entry)}")
    return "\n".join(lines) if lines else "no plugins installed"
