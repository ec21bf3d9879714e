"""Plugin registry on Python entry points (read with ``importlib.metadata``).

The project registers its own built-ins through the same groups a third party uses (see
pyproject.toml and the example package in ``examples/plugin_package``):

* ``rs_plugin.smoothings``: a :class:`~rs_plugin.Smoothing` subclass or factory, called with the
  smoothing's hyperparameters: ``sigma=...`` for noise, a transform's scale by the keyword its
  class names in ``scale_keyword`` (``degrees=...`` for rotation; :func:`scale_keyword`).
* ``rs_plugin.certifiers``: a :class:`~rs_plugin.Certifier` subclass (the contract in
  :mod:`rs_plugin.certification.base`), built by a run with exactly the options it declares
  (built-in: ``cohen``, ``grid``, ``sequential``, ``anytime``, ``ddrs``, ``ancer``).
* ``rs_plugin.attacks``: an audit attack, a :class:`~rs_plugin.Attack` subclass or factory called
  with its keyword settings; ``rs-plugin audit --attacks`` and :func:`rs_plugin.audit` run it
  against every certificate (built-in: ``pgd``, ``autoattack``, ``art_autoattack``,
  ``deepfool``, ``cw_l2``, ``semantic_grid``, ``semantic_random``; with the ``foolbox`` extra,
  the attacks of :mod:`rs_plugin.adapters.foolbox`).

A name registered by two distributions is ambiguous: loading it is an error naming both
providers, while every other name keeps working and ``rs-plugin plugins`` lists the clash.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from rs_plugin._validation import MissingExtraError, RSValueError
from rs_plugin.smoothings.base import Smoothing

__all__ = [
    "GROUPS",
    "DuplicatePluginError",
    "clashes",
    "discover",
    "format_plugins",
    "is_builtin",
    "load_plugin",
    "load_smoothing",
    "scale_keyword",
]

GROUPS = ("rs_plugin.smoothings", "rs_plugin.attacks", "rs_plugin.certifiers")


class DuplicatePluginError(RSValueError):
    """Two installed distributions register the same name in one group (message names both)."""

    def __init__(self, group: str, first: EntryPoint, second: EntryPoint) -> None:
        super().__init__(
            f"{group} name {first.name!r}", "a name registered by one distribution only", None
        )
        self.args = (
            f"{self.parameter}: expected {self.accepted}; received {first.value} from "
            f"{_provider(first)} and {second.value} from {_provider(second)} (uninstall one)",
        )


def _provider(entry: EntryPoint) -> str:
    return entry.dist.name if entry.dist is not None else "<unknown distribution>"


def _scan(group: str) -> tuple[dict[str, EntryPoint], dict[str, list[EntryPoint]]]:
    """(names registered once, names registered differently by several providers)."""
    by_name: dict[str, list[EntryPoint]] = {}
    for entry in entry_points(group=group):
        same = [e for e in by_name.get(entry.name, []) if e.value == entry.value]
        if not same:  # the same target listed twice (e.g. two metadata copies) is one entry
            by_name.setdefault(entry.name, []).append(entry)
    unique = {name: entries[0] for name, entries in by_name.items() if len(entries) == 1}
    clashing = {name: entries for name, entries in by_name.items() if len(entries) > 1}
    return unique, clashing


def discover(group: str) -> dict[str, EntryPoint]:
    """Entry points of ``group`` by name, leaving out names that several providers register
    (see :func:`clashes`)."""
    return _scan(group)[0]


def clashes(group: str) -> dict[str, list[EntryPoint]]:
    """Names of ``group`` that several distributions register, with every registration."""
    return _scan(group)[1]


def load_plugin(group: str, name: str, parameter: str) -> Any:
    """The object registered as ``name`` in ``group``; ``parameter`` names the user's option."""
    if group not in GROUPS:
        raise RSValueError("group", f"one of {GROUPS}", group)
    available, clashing = _scan(group)
    if name in clashing:
        first, second = clashing[name][:2]
        raise DuplicatePluginError(group, first, second)
    if name not in available:
        raise RSValueError(parameter, f"one of {sorted(available)}", name)
    entry = available[name]
    try:
        return entry.load()
    except MissingExtraError:  # an extra of this package: its own message names the pip line
        raise
    except Exception as error:  # a broken third-party plugin: one error naming it, exit 2
        lines = str(error).strip().splitlines()
        raise RSValueError(
            parameter,
            "a plugin that loads",
            f"{name} ({entry.value} from {_provider(entry)}): {type(error).__name__}: "
            f"{lines[0] if lines else ''}",
        ) from error


def is_builtin(group: str, name: str) -> bool:
    """Whether ``name`` in ``group`` is one of this package's own plugins (its object lives in
    ``rs_plugin``). A file may select a built-in by name; a third-party one is imported only
    when the user names it on the command line."""
    entry = discover(group).get(name)
    return entry is not None and entry.value.split(":")[0].split(".")[0] == "rs_plugin"


def scale_keyword(factory: Any) -> str:
    """The keyword a smoothing factory takes its noise scale by: its ``scale_keyword``
    (``degrees``, ``pixels``, ...) or ``sigma``, the standard deviation of additive noise."""
    return str(getattr(factory, "scale_keyword", "sigma"))


def load_smoothing(name: str, **params: Any) -> Smoothing:
    """Instantiate the smoothing registered as ``name`` with ``params`` (e.g. ``sigma``).

    For code written before transforms named their scale, ``sigma=`` given to a transform
    whose keyword is another (``load_smoothing("rotation", sigma=15)``) is passed as that
    keyword (``degrees=15``); a run refuses it (:class:`rs_plugin.runs.CertifyJob`).
    """
    factory = load_plugin("rs_plugin.smoothings", name, "smoothing")
    keyword = scale_keyword(factory)
    if keyword != "sigma" and "sigma" in params and keyword not in params:
        params[keyword] = params.pop("sigma")
    smoothing = factory(**params)
    if not isinstance(smoothing, Smoothing):
        raise RSValueError(
            "smoothing",
            "an entry point that builds an rs_plugin.Smoothing",
            f"{name} -> {type(smoothing).__name__}",
        )
    return smoothing


def format_plugins() -> str:
    """Every installed plugin, one line each: group, name, object, provider; a name that several
    distributions register is listed once per provider, marked as a clash."""
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for group in GROUPS:
        unique, clashing = _scan(group)
        entries = [(name, entry, "") for name, entry in unique.items()]
        for name, registered in clashing.items():
            entries += [(name, entry, "  CLASH") for entry in registered]
            providers = " and ".join(f"{_provider(e)} ({e.value})" for e in registered)
            notes.append(
                f"{group} name {name!r} is registered by {providers}: it cannot be loaded until "
                "one is uninstalled; every other name works"
            )
        for name, entry, mark in sorted(entries, key=lambda row: row[0]):
            rows.append((group, name, entry.value, _provider(entry) + mark))
    if not rows:
        return "no plugins installed"
    widths = [max(len(row[i]) for row in rows) + 2 for i in range(3)]
    lines = [
        "".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + row[3]
        for row in rows
    ]
    return "\n".join(lines + [f"warning: {note}" for note in notes])
