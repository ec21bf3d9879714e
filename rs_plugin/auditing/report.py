"""The audit's report files: ``report.json`` (machine), ``report.md`` (a person, verdict first),
``curves.png`` (certified accuracy vs radius beside empirical robust accuracy vs budget) and
``distances.png`` (certified radius vs smallest adversarial distance per input, diagonal drawn).

Every number in ``report.md`` is formatted from the same dictionary ``report.json`` holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rs_plugin._validation import import_extra

__all__ = ["FILES", "format_markdown", "write_report"]

FILES = ("report.json", "report.md", "curves.png", "distances.png")
# Per-input rows shown in report.md (violations are always shown); report.json has them all.
_ROWS = 15


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _budget(value: float) -> str:
    """One rounding for budgets everywhere in the report."""
    return f"{value:.4g}"


def _tightness(verdict: dict[str, Any]) -> str:
    tight = verdict["tightness"]
    found, total = tight["inputs_with_adversarial"], verdict["certified_inputs"]
    if not found:
        return f"- No attack found an adversarial for any of the {total} certified inputs."
    return (
        f"- Smallest adversarial distance / certified radius, over every attack:"
        f" median {_num(tight['median_distance_over_radius'], 2)}"
        f" (min {_num(tight['min_distance_over_radius'], 2)},"
        f" max {_num(tight['max_distance_over_radius'], 2)}), for the {found} of {total}"
        " certified inputs where an attack found one (1 would mean the certificate is tight)."
    )


_NEXT_STEPS = [
    "## What to do next",
    "",
    "The certificates above are contradicted more often than their alpha allows. In order:",
    "",
    "1. Check the certificates belong to this model and smoothing: the same `--model` (its"
    " sha256 is stored with every record), the same `--smoothing`, `--sigma` and semantics, the"
    " same data and preprocessing. A certificate is a statement about one smoothed classifier.",
    "2. Read the Diagnostics above: a non-deterministic model (dropout or batch norm in training"
    " mode) or one that outputs probabilities breaks the assumptions of the check.",
    "3. Re-run with more PREDICT samples (`--predict-n`) and a smaller `--predict-alpha`: a"
    " violation PREDICT confirms again is not sampling noise.",
    "4. Look at the violating rows in the per-input table (and `report.json`): which attack, at"
    " what distance; re-certify those inputs with a larger `-n` and compare p_lower.",
    "5. If the certificates came from code of your own, check its radius formula against"
    " `rs-plugin certify` on the same inputs (a radius from p̂ instead of its lower bound, or"
    " the wrong norm, is the usual cause).",
    "",
]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _floating_point(settings: dict[str, Any]) -> str:
    """Whether the certificates were issued in the sound mode, and the probe's figure."""
    smoothing = settings.get("smoothing")
    if not isinstance(smoothing, dict):
        smoothing = {}
    if smoothing.get("sound_fp") is True:
        line = (
            f"- Floating point: issued in the sound mode (inputs on the grid of step "
            f"{smoothing.get('grid')}, exact integer noise and sums): they hold for the numbers "
            "the computer adds."
        )
    else:
        line = (
            "- Floating point: issued in the float mode (x + noise rounded in floating point): "
            "a model that reads the rounding can get false certificates (certify with --sound)."
        )
    probe = settings.get("fp_probe")
    if probe:
        largest = max(probe["fractions"].values(), default=0.0)
        verdict = "flagged" if probe["flagged"] else "not flagged"
        line += (
            f" Low-bit probe: the prediction changed on {largest:.2%} of {probe['samples']} "
            f"noisy samples under a last-bits change of the input ({verdict}; threshold "
            f"{probe['flag_fraction']:.0%})."
        )
    return line


def _impossible_lines(verdict: dict[str, Any]) -> list[str]:
    """The section on certificates that cannot hold for any model (see auditing/plausibility)."""
    found = verdict.get("impossible") or []
    if not found:
        return []
    lines = [
        "",
        "## Certificates that cannot hold for any model",
        "",
        f"{len(found)} record(s) claim more than any model could earn with the record's own"
        " samples and level, or a class the model does not have: no attack is needed to refute"
        " them, and each counts as a violation.",
        "",
    ]
    lines += [f"- input {entry['index']}: {entry['reason']}" for entry in found[:_ROWS]]
    if len(found) > _ROWS:
        lines.append(f"- ... and {len(found) - _ROWS} more (report.json lists them all)")
    return lines


def format_markdown(data: dict[str, Any]) -> str:
    """report.md from the JSON report."""
    verdict, settings = data["verdict"], data["settings"]
    norm = settings["norm"]
    lines = [
        "# Certificate audit",
        "",
        f"**{verdict['summary']}**",
        "",
        f"- Certified inputs: {verdict['certified_inputs']}; violations: {verdict['violations']};"
        f" expected at most {verdict['expected_violations_bound']:.3f} if every certificate holds;"
        f" one-sided p-value {verdict['p_value']:.3g} (significance {verdict['significance']:g}).",
        f"- Smoothing: `{json.dumps(settings['smoothing'])}`; radii in `{norm}`, semantics"
        f" `{settings['semantics']}`, certificates' alpha {settings['certificate_alpha']:g}.",
        _floating_point(settings),
        f"- Every candidate checked by PREDICT with n = {settings['predict_n']},"
        f" alpha = {settings['predict_alpha']:g} (an abstention is not a violation).",
        _tightness(verdict),
        f"- Budgets: {', '.join(_budget(b) for b in settings['budget_levels'])} (fractions"
        f" {', '.join(f'{f:g}' for f in settings['budget_fractions'])} of the largest radius),"
        " plus each input's own radius; soft smoothed classifier with"
        f" m = {settings['num_noise_samples']} noise samples; seed {settings['seed']};"
        f" {settings['seconds']:.1f} s.",
        "",
        "![certified vs empirical](curves.png) ![radius vs adversarial distance](distances.png)",
        *_impossible_lines(verdict),
        "",
        *(_NEXT_STEPS if verdict["significantly_violated"] else []),
        "## Diagnostics",
        "",
    ]
    if data["diagnostics"]:
        lines += [
            f"- **{d['check']}**: {d['finding']}. Fix: {d['fix']}." for d in data["diagnostics"]
        ]
    else:
        lines.append(
            "No findings (determinism, logit outputs, non-zero gradients, class count checked)."
        )
    lines += ["", "## Attacks", ""]
    lines += _table(
        [
            "attack",
            "PREDICT checks",
            "inputs with an adversarial",
            "violations",
            "median distance / radius",
            "base model median distance",
            "seconds",
        ],
        [
            [
                a["name"],
                str(a["checks"]),
                str(a["adversarial_inputs"]),
                str(a["violations"]),
                _num(a["median_distance_over_radius"]),
                _num(a["base_model_median_distance"]),
                f"{a['seconds']:.1f}",
            ]
            for a in data["attacks"]
        ],
    )
    curves = data["curves"]
    names = list(curves["empirical_robust_accuracy"])
    lines += ["", f"## Certified vs empirical robust accuracy ({norm})", ""]
    lines += _table(
        ["budget", "certified", *names],
        [
            [
                _budget(b),
                f"{curves['certified_accuracy_at_budgets'][j]:.3f}",
                *(f"{curves['empirical_robust_accuracy'][n][j]:.3f}" for n in names),
            ]
            for j, b in enumerate(curves["budgets"])
        ],
    )
    lines += _cap_lines(curves.get("sampling_cap"), settings)
    inputs = data["inputs"]
    shown = [r for r in inputs if r["violation"]]
    shown += [r for r in inputs if not r["violation"]][: max(0, _ROWS - len(shown))]
    lines += [
        "",
        f"## Per input ({len(shown)} of {len(inputs)} shown; all in report.json)",
        "",
    ]
    lines += _table(
        [
            "index",
            "label",
            "certified class",
            "radius",
            "smallest adversarial distance",
            "gap",
            "violation",
        ],
        [
            [
                str(r["index"]),
                str(r["label"]),
                str(r["prediction"]),
                _num(r["radius"]),
                _num(r["smallest_adversarial_distance"]),
                _num(r["gap"]),
                ", ".join(r["violated_by"]) if r["violation"] else "no",
            ]
            for r in shown
        ],
    )
    return "\n".join(lines) + "\n"


def _cap_label(settings: dict[str, Any], *, tex: bool = False) -> str:
    """σΦ⁻¹(α^{1/n}) for Gaussian noise, the radius at p_lower = α^{1/n} for the others."""
    if settings["smoothing"].get("name") == "gaussian":
        return r"$\sigma\,\Phi^{-1}(\alpha^{1/n})$" if tex else "σΦ⁻¹(α^{1/n})"
    return r"radius at $p_{lower} = \alpha^{1/n}$" if tex else "the radius at p_lower = α^{1/n}"


def _cap_lines(cap: float | None, settings: dict[str, Any]) -> list[str]:
    if cap is None:
        return []
    return [
        "",
        f"The certified curve drops to 0 at the **sampling cap** {_cap_label(settings)} ="
        f" {cap:.3f} (n = {settings['certificate_n']}, α = {settings['certificate_alpha']:g}):"
        " the radius when all n votes go to one class, the largest any input can be certified"
        " with n samples, whatever the model.",
    ]


def _plots(data: dict[str, Any], folder: Path) -> None:
    matplotlib = import_extra("matplotlib", "plots", "the audit report's plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves, norm = data["curves"], data["settings"]["norm"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curves["radius"], curves["certified_accuracy"], color="black", lw=2, label="certified")
    for name, values in curves["empirical_robust_accuracy"].items():
        style = "--" if name == "all attacks" else "-"
        ax.plot(curves["budgets"], values, style, marker="o", ms=4, label=f"empirical: {name}")
    cap = curves.get("sampling_cap")
    if cap is not None:
        ax.axvline(cap, color="grey", ls=":", lw=1)
        ax.annotate(
            f"sampling cap\n{_cap_label(data['settings'], tex=True)}\n= {cap:.3g}",
            (cap, 0.98),
            xytext=(-4, 0),
            textcoords="offset points",
            ha="right",
            va="top",
            fontsize=7,
            color="grey",
        )
    ax.set_xlabel(f"radius / attack budget ({norm})")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Certified accuracy vs empirical robust accuracy")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "curves.png", dpi=120)
    plt.close(fig)

    rows = [r for r in data["inputs"] if r["certified"]]
    found = [r for r in rows if r["smallest_adversarial_distance"] is not None]
    fig, ax = plt.subplots(figsize=(5, 5))
    top = max(
        [r["radius"] for r in rows] + [r["smallest_adversarial_distance"] for r in found] + [1e-3]
    )
    ax.plot([0, top], [0, top], color="grey", lw=1, label="distance = radius")
    ok = [r for r in found if not r["violation"]]
    bad = [r for r in found if r["violation"]]
    ax.scatter(
        [r["radius"] for r in ok],
        [r["smallest_adversarial_distance"] for r in ok],
        s=12,
        label="adversarial found beyond the radius",
    )
    if bad:
        ax.scatter(
            [r["radius"] for r in bad],
            [r["smallest_adversarial_distance"] for r in bad],
            s=16,
            color="red",
            label="violation (inside the radius)",
        )
    ax.set_xlabel(f"certified radius ({norm})")
    ax.set_ylabel(f"smallest adversarial distance ({norm})")
    ax.set_title(f"{len(found)} of {len(rows)} certified inputs with an adversarial")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "distances.png", dpi=120)
    plt.close(fig)


def write_report(data: dict[str, Any], folder: str | Path) -> list[Path]:
    """Write the four report files of an audit's JSON report ``data`` (``AuditReport.to_dict()``)
    into ``folder`` (created if needed); return their paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    (out / "report.md").write_text(format_markdown(data), encoding="utf-8")
    _plots(data, out)
    return [out / name for name in FILES]
