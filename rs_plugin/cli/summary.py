"""Summaries of certificate records: certified accuracy at radii, abstentions, average radius."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["format_summary", "summarize"]


def summarize(
    records: Iterable[Mapping[str, Any]],
    radii: Sequence[float],
    *,
    largest: float | None = None,
    decision_radius: float | None = None,
) -> dict[str, Any]:
    """Aggregate per-input records (fields ``correct``, ``abstain``, ``radius``).

    Certified accuracy at r is the fraction of inputs predicted correctly with radius ≥ r;
    the average certified radius counts wrong or abstained inputs as radius 0. Records of
    inputs without labels (no ``correct``) give ``labels: False`` and, instead of accuracies,
    ``certified_fraction``: the fraction of inputs whose prediction (whatever it is) is
    certified at radius ≥ r; the average radius then counts abstentions as 0. ``largest`` is the
    largest radius any input can be certified at under the run's settings (the sampling cap, or
    the range of an input-domain grid): radii above it, always 0%, are left out and the cap is
    reported instead. With ``decision_radius`` (sequential decision mode) the fraction of inputs
    decided certified at that radius and correctly classified is reported too.
    """
    rows = list(records)
    total = len(rows)
    if total == 0:
        return {"inputs": 0}

    def fraction(count: int) -> float:
        return count / total

    # Records of inputs without labels have no `correct`: what holds for any prediction.
    labeled = all("correct" in r for r in rows)

    def counted(r: Mapping[str, Any]) -> bool:
        return bool(r["correct"]) if labeled else not r["abstain"]

    shown = [r for r in radii if largest is None or r <= largest]
    extra: dict[str, Any] = {}
    if largest is not None:
        extra["largest_certifiable_radius"] = largest
    if decision_radius is not None:
        extra["decision_radius"] = decision_radius
        extra["decided_certified"] = fraction(
            sum(counted(r) and float(r.get("decision") or 0.0) == 1.0 for r in rows)
        )
    if rows and all("samples" in r for r in rows):  # a sequential run records it on each
        extra["average_samples"] = sum(float(r["samples"]) for r in rows) / total
    certified = {
        f"{radius:g}": fraction(sum(counted(r) and float(r["radius"]) >= radius for r in rows))
        for radius in shown
    }
    average = sum(float(r["radius"]) for r in rows if counted(r)) / total
    if not labeled:
        extra["labels"] = False
    return {
        "inputs": total,
        **({"clean_accuracy": fraction(sum(counted(r) for r in rows))} if labeled else {}),
        "abstention_rate": fraction(sum(bool(r["abstain"]) for r in rows)),
        ("certified_accuracy" if labeled else "certified_fraction"): certified,
        "average_certified_radius": average,
        **extra,
    }


def _unit(units: str | None) -> str:
    """The text after a radius: ``°`` for degrees, `` px`` for pixels, else ``(units)``."""
    if not units:
        return ""
    return {"degrees": "°", "pixels": " px"}.get(units, f" ({units})")


def format_summary(summary: Mapping[str, Any], norm: str, units: str | None = None) -> str:
    """A plain-text table for people; ``units`` (a semantic smoothing's parameter units) follow
    every radius, e.g. ``rotation radius >= 7.5°`` or ``fog radius >= 0.12 (beta, 1/depth)``."""
    if summary["inputs"] == 0:
        return "no inputs certified"
    labeled = summary.get("labels", True)
    lines = [f"{'inputs':<44}{summary['inputs']:>10}"]
    if labeled:
        lines.append(f"{'clean smoothed accuracy':<44}{summary['clean_accuracy']:>10.1%}")
    else:
        lines.append("no labels in the data: predictions and radii only, no accuracy")
    lines.append(f"{'abstentions':<44}{summary['abstention_rate']:>10.1%}")
    unit = _unit(units)
    rows = summary["certified_accuracy" if labeled else "certified_fraction"]
    for radius, accuracy in rows.items():
        what = "certified accuracy" if labeled else "certified"
        label = f"{what}, {norm} radius >= {radius}{unit}"
        lines.append(f"{label:<44}{accuracy:>10.1%}")
    if "decided_certified" in summary:
        label = f"decided certified at {norm} radius {summary['decision_radius']:g}"
        lines.append(f"{label:<44}{summary['decided_certified']:>10.1%}")
    label = "average certified radius" + (f" ({units})" if units else "")
    lines.append(f"{label:<44}{summary['average_certified_radius']:>10.4f}")
    if "largest_certifiable_radius" in summary:
        label = f"largest certifiable {norm} radius (cap)"
        lines.append(f"{label:<44}{summary['largest_certifiable_radius']:>10.4g}")
    if "average_samples" in summary:
        lines.append(f"{'estimation samples per input':<44}{summary['average_samples']:>10.0f}")
    if "samples_per_second" in summary:
        lines.append(f"{'samples per second':<44}{summary['samples_per_second']:>10.0f}")
    return "\n".join(lines)
