"""What a certificate record may claim: checks of a file that may be forged.

A certificate file is data someone hands us. Before the audit attacks a record, or ``--resume``
builds on one, the record is checked against what any certifier could have issued:

* its fields are of the right kind: ``prediction`` an integer ≥ −1 (−1 = abstain), ``radius``
  a finite number ≥ 0 (or null for an abstention), ``alpha`` in (0, 1), and ``n``, ``n0``,
  ``count``, ``samples``, ``p_lower``, ``radii`` finite and in range where present; a field that
  is not is an error naming the record's line;
* its smoothing is the file's own (``{"name": ..., "sigma": ...}``, or a name with a
  ``sigma`` field), never silently replaced by defaults; flags that disagree are an error
  naming both (see :func:`record_smoothing`);
* it is *possible*: the prediction is one of the model's classes, and the radius is at most the
  sampling cap of the record's own n and α under its smoothing and norm — the radius at
  p_lower = α^{1/n}, the one-sided Clopper–Pearson bound when all n votes go to one class
  (:func:`~rs_plugin.certification.radii.sampling_cap`). No model can earn more with n samples at
  level α, so a larger radius cannot hold for any model: the audit reports it as a violation
  of its own kind (``verdict["impossible"]`` in report.json, a section of report.md), and
  ``--resume`` refuses the file; a record that names the votes its ``p_lower`` is computed
  from (``bound_count`` of ``bound_samples``) claims no more than their Clopper–Pearson bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from rs_plugin._validation import MAX_SAMPLES, RSValueError
from rs_plugin.certification.radii import sampling_cap
from rs_plugin.certification.stats import clopper_pearson_lower
from rs_plugin.smoothings.norms import complete_radii

__all__ = [
    "CANNOT_HOLD",
    "MAX_BUDGET_FRACTION",
    "MAX_RADIUS",
    "check_record",
    "impossibility",
    "impossible_certificates",
    "inconsistency",
    "mark_impossible",
    "record_smoothing",
    "record_validator",
]

CANNOT_HOLD = "cannot hold for any model"
# Radii are measured on float32 inputs: a radius float32 cannot hold is not a distance the audit
# can attack or plot (and no image domain is that wide). Budgets are fractions of the largest
# radius, at most this many times it.
MAX_RADIUS = 1e30
MAX_BUDGET_FRACTION = 1e6
# Relative slack on the cap: the record's radius and the cap are computed in float64 by
# different routes (a beta quantile, a power), which agree to far better than this.
_CAP_SLACK = 1e-6


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_whole(value: Any) -> bool:
    """An integer, or a float holding one (some certifiers record sample counts as floats)."""
    return _is_int(value) or (isinstance(value, float) and value.is_integer())


def check_record(record: Mapping[str, Any], where: str, parameter: str = "certificates") -> None:
    """Refuse a record whose fields are missing, non-numeric or non-finite (``where`` names its
    file and line)."""
    missing = [k for k in ("prediction", "radius", "alpha") if k not in record]
    if missing:
        raise RSValueError(
            parameter,
            "records with index, prediction (-1 = abstain), radius and alpha",
            f"a record without {missing} ({where})",
        )
    prediction, radius, alpha = record["prediction"], record["radius"], record["alpha"]
    if not _is_int(prediction) or prediction < -1:
        raise RSValueError(
            parameter, "a prediction: a class >= 0, or -1 to abstain", f"{where}: {prediction!r}"
        )
    if not (_is_number(radius) and math.isfinite(radius) and radius >= 0) and not (
        radius is None and prediction == -1
    ):
        raise RSValueError(parameter, "a radius: a finite number >= 0", f"{where}: {radius!r}")
    if radius is not None and radius > MAX_RADIUS:
        raise RSValueError(
            parameter,
            f"a radius: a finite number >= 0 and <= {MAX_RADIUS:g}",
            f"{where}: {radius!r}",
        )
    if not (_is_number(alpha) and 0 < alpha < 1):
        raise RSValueError(parameter, "an alpha: a number in (0, 1)", f"{where}: {alpha!r}")
    # A sequential certifier that stops before its estimation samples records the samples it
    # used, n = samples = 0 (the cap below then allows no radius). No certifier draws more than
    # MAX_SAMPLES per stream: a larger n would only raise the cap (to infinity in float64).
    whole = (("n", 0), ("n0", 1), ("samples", 0), ("n_max", 1), ("count", 0))
    for key, least in (*whole, ("bound_samples", 0), ("bound_count", 0)):
        value = record.get(key)
        if value is not None and not (_is_whole(value) and least <= value <= MAX_SAMPLES):
            raise RSValueError(
                parameter, f"{key}: an integer in [{least}, {MAX_SAMPLES}]", f"{where}: {value!r}"
            )
    p_lower = record.get("p_lower")
    if p_lower is not None and not (_is_number(p_lower) and 0 <= p_lower <= 1):
        raise RSValueError(parameter, "p_lower: a number in [0, 1]", f"{where}: {p_lower!r}")
    radii = record.get("radii")
    if radii is not None:
        bad = (
            [radii]
            if not isinstance(radii, dict)
            else [
                v
                for v in radii.values()
                if v is not None and not (_is_number(v) and math.isfinite(v) and v >= 0)
            ]
        )
        if bad:
            raise RSValueError(
                parameter, "radii: finite numbers >= 0 per norm", f"{where}: {bad[0]!r}"
            )


def record_smoothing(record: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    """The smoothing a record states, as ``{"name": ..., "sigma": ..., params}``; None when it
    states none (a converted file: the flags say it)."""
    stored = record.get("smoothing")
    if stored is None:
        if "sigma" in record:  # a σ that names no smoothing would be audited at the flags'
            raise RSValueError(
                "certificates",
                "a sigma beside the smoothing it belongs to (a 'smoothing' field)",
                f"{where}: sigma {record['sigma']!r} without a smoothing",
            )
        return None
    if isinstance(stored, str):
        stored = {"name": stored, **({"sigma": record["sigma"]} if "sigma" in record else {})}
    if not isinstance(stored, dict) or not isinstance(stored.get("name"), str):
        raise RSValueError(
            "certificates",
            'a smoothing: a name, or {"name": ..., "sigma": ...}',
            f"{where}: {stored!r}",
        )
    sigma = stored.get("sigma")
    if sigma is not None and not (_is_number(sigma) and math.isfinite(sigma) and sigma > 0):
        raise RSValueError("certificates", "a smoothing sigma: a number > 0", f"{where}: {sigma!r}")
    return dict(stored)


def impossibility(
    record: Mapping[str, Any], *, smoothing: Any, num_classes: int, dim: int, cap: bool = True
) -> str | None:
    """Why no model could have earned this (checked) record, or None when some model could.

    ``cap=False`` skips the sampling cap (certificates whose σ varies per input). A record
    without ``n`` is capped at its budget ``n_max``, or else at MAX_SAMPLES (the most any
    certifier here draws)."""
    prediction = int(record["prediction"])
    if prediction >= num_classes:
        return f"prediction {prediction} is not a class of a {num_classes}-class model"
    radius = float(record["radius"] or 0.0)
    if prediction < 0:
        return None if radius == 0 else f"an abstention (prediction -1) with radius {radius:g}"
    budget = record.get("n_max")
    drawn = [int(record[k]) for k in ("n", "samples") if record.get(k) is not None]
    if budget is not None and any(size > budget for size in drawn):
        return f"{max(drawn)} samples drawn with a budget of n_max = {int(budget)}"
    n = record.get("n")
    if budget is None and n is not None and drawn and max(drawn) > n:
        # a run of fixed n (no budget n_max) draws n estimation samples, never more
        return f"{max(drawn)} samples recorded by a run of n = {int(n)}"
    count = record.get("count")
    if count is not None and drawn and count > max(drawn):
        return f"count {int(count)} of the top class among {max(drawn)} samples"
    reason = _beyond_bound_votes(record, drawn)
    if reason is not None or not cap:
        return reason
    # A sequential certifier may record the samples it drew; the cap of the larger is sound.
    if drawn:
        size = max(drawn)
    else:
        size = int(budget) if budget is not None else MAX_SAMPLES
    limit = sampling_cap(smoothing, float(record["alpha"]), size, dim)
    if limit is not None and radius > limit * (1 + _CAP_SLACK):
        return (
            f"radius {radius:g} exceeds {limit:.6g}, the largest {smoothing.norm} radius "
            f"{size} samples can certify at alpha {record['alpha']:g} under {smoothing!r}"
        )
    return _beyond_p_lower(record, smoothing, radius, dim)


def _beyond_bound_votes(record: Mapping[str, Any], drawn: list[int]) -> str | None:
    """Why a record whose ``p_lower`` says it is Clopper–Pearson on ``bound_count`` top-class
    votes of ``bound_samples`` (the anytime certifier's radius mode) contradicts them, or None
    (also when it states neither)."""
    trials, votes = record.get("bound_samples"), record.get("bound_count")
    if trials is None and votes is None:
        return None
    if trials is None or votes is None or votes > trials or (drawn and trials > max(drawn)):
        return (
            f"bound_count {votes!r} of bound_samples {trials!r}, with {max(drawn, default=None)}"
            " samples drawn (both, the count at most the samples, at most those drawn)"
        )
    p_lower = record.get("p_lower")
    if p_lower is None:
        return None
    bound = float(clopper_pearson_lower(np.array([votes]), int(trials), float(record["alpha"]))[0])
    if float(p_lower) > bound * (1 + _CAP_SLACK):
        return (
            f"p_lower {float(p_lower):.6g} above {bound:.6g}, the Clopper–Pearson bound of "
            f"{int(votes)} votes of {int(trials)} at alpha {float(record['alpha']):g}"
        )
    return None


def _beyond_p_lower(
    record: Mapping[str, Any], smoothing: Any, radius: float, dim: int
) -> str | None:
    """Why the record's radii exceed what its own ``p_lower`` certifies under ``smoothing``, or
    None (also when it states no p_lower, or its smoothing certifies on a grid, not from
    p_lower)."""
    p_lower = record.get("p_lower")
    if p_lower is None or getattr(smoothing, "on_grid", False):
        return None
    p = torch.tensor([float(p_lower)], dtype=torch.float64)
    possible = complete_radii(smoothing.certified_radii(p, dim), dim)
    claimed = [(smoothing.norm, radius)]
    radii = record.get("radii")
    if isinstance(radii, dict):
        claimed += [(k, float(v)) for k, v in radii.items() if v is not None and k in possible]
    for norm, value in claimed:
        limit = float(possible[norm][0]) if norm in possible else math.inf
        if value > limit * (1 + _CAP_SLACK):
            return (
                f"{norm} radius {value:g} above {limit:.6g}, what its own p_lower "
                f"{float(p_lower):.6g} certifies under {smoothing!r}"
            )
    return None


def impossible_certificates(
    records: Sequence[Mapping[str, Any]],
    *,
    smoothing: Any,
    num_classes: int,
    dim: int,
    cap: bool = True,
) -> list[dict[str, Any]]:
    """``{"index", "reason"}`` for every record that cannot hold for any model."""
    found = []
    for record in records:
        reason = impossibility(
            record, smoothing=smoothing, num_classes=num_classes, dim=dim, cap=cap
        )
        if reason is not None:
            found.append({"index": int(record["index"]), "reason": reason})
    return found


def inconsistency(record: Mapping[str, Any], labels: Sequence[int] | None) -> str | None:
    """Why a (checked) record's derived fields disagree with its prediction, its radius or the
    data's labels, or None. The summary of a resumed run counts ``correct``, ``abstain`` and
    ``decision`` as stored, so they must be what the run would have written. ``labels`` are the
    whole dataset's: a record of an input it does not have is refused."""
    prediction = int(record["prediction"])
    abstain = record.get("abstain")
    if abstain is not None and (not isinstance(abstain, bool) or abstain != (prediction < 0)):
        return f"abstain {abstain!r} with prediction {prediction}"
    index = record.get("index")
    if labels is not None and isinstance(index, int) and index >= len(labels):
        return f"index {index}, beyond the data's {len(labels)} inputs"
    if labels is not None and isinstance(index, int) and 0 <= index:
        label = int(labels[index])
        if label < 0:  # an unlabeled input: no label, no correctness
            for key in ("label", "correct"):
                if record.get(key) is not None:
                    return f"{key} {record[key]!r} for an input the data leaves unlabeled"
        else:
            if "label" not in record or "correct" not in record:
                # the summary would count every unabstained prediction as correct
                return f"no label and correctness for an input labelled {label}"
            if record["label"] != label:
                return f"label {record['label']!r}, where the data's label is {label}"
            correct = record["correct"]
            if correct is not (prediction == label):
                return (
                    f"correct {correct!r} for prediction {prediction} of an input labelled {label}"
                )
    decision = record.get("decision")
    if decision is not None:
        if not _is_int(decision) or decision not in (0, 1):
            return f"decision {decision!r} (1 certified, 0 not)"
        wanted = record.get("decision_radius")
        radius = float(record["radius"] or 0.0)
        if decision == 1 and (
            prediction < 0
            or (isinstance(wanted, (int, float)) and radius < wanted * (1 - _CAP_SLACK))
        ):
            return (
                f"decision 1 (certified at {wanted!r}) with prediction {prediction}, "
                f"radius {radius:g}"
            )
    return None


def record_validator(
    *,
    smoothing: Any,
    num_classes: int,
    dim: int,
    cap: bool,
    path: Any,
    labels: Sequence[int] | None = None,
) -> Callable[[int, Mapping[str, Any]], None]:
    """The check ``--resume`` runs on every stored record (its line number and fields);
    ``labels`` (the whole dataset's, by index; negative for an unlabeled input) are checked
    against the records' ``label`` and ``correct``, and a record of an input beyond them is
    refused."""

    def validate(number: int, record: Mapping[str, Any]) -> None:
        where = f"{path} line {number}"
        check_record(record, where, "resume")
        reason = impossibility(
            record, smoothing=smoothing, num_classes=num_classes, dim=dim, cap=cap
        ) or inconsistency(record, labels)
        if reason is not None:
            raise RSValueError(
                "resume",
                "stored records this configuration could have issued",
                f"{where}: {reason} (a certificate that {CANNOT_HOLD})",
            )

    return validate


def mark_impossible(
    verdict: dict[str, Any], inputs: list[dict[str, Any]], found: list[dict]
) -> None:
    """Record impossible certificates in an audit report's verdict and rows: each is a
    violation, and the verdict is violated whatever the attacks found."""
    if not found:
        return
    verdict["impossible"] = found
    verdict["significantly_violated"] = True
    verdict["summary"] = (
        f"VIOLATED: {len(found)} certificate(s) {CANNOT_HOLD} (beyond what their own n and "
        f"alpha allow, or outside the model's classes); {verdict['summary']}"
    )
    reasons = {entry["index"]: entry["reason"] for entry in found}
    for row in inputs:
        reason = reasons.get(row.get("index"))
        if reason is not None:
            row["violation"] = True
            row["violated_by"] = [*row.get("violated_by", []), f"{CANNOT_HOLD}: {reason}"]
