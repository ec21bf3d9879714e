"""What ``rs-plugin bench`` concludes from its timings: the targets met or missed, notes where
figures that should agree do not, and the text a person reads (the JSON holds the same)."""

from __future__ import annotations

from typing import Any

__all__ = ["TARGETS", "format_result", "notes_and_targets"]

# (ratio, bound, "max" or "min", models it applies to or None for all): the project's speed
# targets, stated on medians from interleaved repeats.
TARGETS: tuple[tuple[str, float, str, tuple[str, ...] | None], ...] = (
    ("engine_over_floor", 1.05, "max", None),
    ("art_over_engine", 1.0, "min", None),
    ("art_best_over_engine", 1.0, "min", None),
    ("reference_over_engine", 1.0, "min", None),
)
# A method whose slowest repeat took this much longer than its fastest ran while the machine's
# speed changed; ratios involving it are less certain than the medians suggest.
_SPREAD = 1.25


def notes_and_targets(model: str, result: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Each target checked in each condition, and the notes on figures that disagree."""
    targets: list[dict[str, Any]] = []
    notes: list[str] = []
    for key, condition in result["conditions"].items():
        ratios, seconds = condition["ratios"], condition["seconds"]
        for ratio, bound, side, models in TARGETS:
            if ratio not in ratios or (models is not None and model not in models):
                continue
            value = ratios[ratio]
            met = value <= bound if side == "max" else value >= bound
            targets.append(
                {
                    "condition": key,
                    "label": condition["label"],
                    "ratio": ratio,
                    "value": value,
                    side: bound,
                    "met": met,
                }
            )
        for name, s in seconds.items():
            if s["max"] > _SPREAD * s["min"]:
                notes.append(
                    f"{key}: {name} ranged {s['min']:.3g}-{s['max']:.3g} s over its repeats "
                    "(the machine's speed changed during the run); ratios with it are uncertain"
                )
        adapter = ratios.get("adapter_over_engine")
        if adapter is not None and abs(adapter - 1.0) > 0.1:
            notes.append(
                f"{key}: the adapter (which calls the engine on the same samples, plus NumPy "
                f"conversions) took {adapter:.2f}x the engine's time; they should agree within "
                "~10%: the difference is the machine's, see the ranges"
            )
        floor_batch = condition["floor_batch"]
        swept = condition["sweep"]["floor"]["by_batch"][str(floor_batch)]["median"]
        if abs(seconds["floor"]["median"] / swept - 1.0) > 0.1:
            notes.append(
                f"{key}: the floor at batch {floor_batch} took {seconds['floor']['median']:.3g} "
                f"s beside the other methods and {swept:.3g} s in the sweep; the machine's speed "
                "changed between the two rounds"
            )
        if condition["label"] == "busy" and not condition["own_busy_loop"]:
            notes.append(
                f"{key}: other processes kept {condition['other_cores']:.2f} cores busy on "
                "average during this condition: it ran on a busy machine"
            )
    return targets, notes


_COLUMNS = (
    ("floor", "floor"),
    ("engine", "engine"),
    ("engine_cold", "engine cold"),
    ("engine_at_floor_batch", "engine @floor b"),
    ("reference", "ref. loop"),
    ("art", "ART b32"),
    ("art_best", "ART best b"),
    ("adapter", "adapter"),
)
_RATIOS = (
    ("engine_over_floor", "engine/floor"),
    ("engine_cold_over_floor", "cold/floor"),
    ("engine_at_floor_batch_over_floor", "@floor b/floor"),
    ("art_over_engine", "ART b32/engine"),
    ("art_best_over_engine", "ART best/engine"),
    ("reference_over_engine", "ref/engine"),
)


def _model_lines(name: str, r: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"{name}: {r['model']}, input {'x'.join(map(str, r['input_shape']))}, "
        f"{r['parameters']:,} parameters, weights {r['weights']}",
        f"  {r['inputs']} inputs x (n0 {r['n0']} + n {r['n']}) = {r['samples']:,} samples; "
        "seconds: median [min-max] of interleaved repeats",
    ]
    for key, c in r["conditions"].items():
        lines.append(
            f"  {key}: {c['label']} (other processes {c['other_cores']:.2f} cores busy, load "
            f"average {c['load_average_before']:.2f} -> {c['load_average_after']:.2f}"
            + (", beside the bench's own busy loop)" if c["own_busy_loop"] else ")")
        )
        for kind, sweep in c["sweep"].items():
            rates = ", ".join(
                f"{size}: {row['samples_per_second']:,.0f}"
                for size, row in sweep["by_batch"].items()
            )
            lines.append(f"    {kind} samples/s by batch: {rates}; best {sweep['best_batch']}")
        lines.append(f"    engine (auto) settled on batch {c['engine_batch']}")
    present = [(key, label) for key, label in _COLUMNS if key in _first(r)["seconds"]]
    lines.append(f"  {'condition':<30}" + "".join(f"{label:>25}" for _, label in present))
    for key, c in r["conditions"].items():
        cells = "".join(f"{_cell(c['seconds'][k]):>25}" for k, _ in present if k in c["seconds"])
        lines.append(f"  {key:<30}{cells}")
    lines.append(f"  {'ratios (medians)':<30}" + "".join(f"{label:>17}" for _, label in _RATIOS))
    for key, c in r["conditions"].items():
        cells = "".join(
            f"{c['ratios'][k]:>17.3f}" if k in c["ratios"] else f"{'-':>17}" for k, _ in _RATIOS
        )
        lines.append(f"  {key:<30}{cells}")
    for threads, slow in r["slowdown_under_load"].items():
        lines.append(
            f"  slowdown beside the busy loop, {threads}: "
            + ", ".join(f"{k} {v:.2f}x" for k, v in slow.items())
        )
    missed = [t for t in r["targets"] if not t["met"]]
    lines.append(
        f"  targets: {len(r['targets']) - len(missed)} of {len(r['targets'])} met"
        + "".join(
            f"; missed {t['ratio']} {t['value']:.3f} ({t['condition']}, {t['label']}, target "
            f"{'<=' if 'max' in t else '>='} {t.get('max', t.get('min'))})"
            for t in missed
        )
    )
    lines += [f"  note: {note}" for note in r["notes"]]
    return lines


def _first(r: dict[str, Any]) -> dict[str, Any]:
    return next(iter(r["conditions"].values()))


def _cell(s: dict[str, Any]) -> str:
    return f"{s['median']:.3g} [{s['min']:.3g}-{s['max']:.3g}]"


def format_result(result: dict[str, Any]) -> str:
    """The bench's findings as text: machine, per-model tables, memory, sequential, radii."""
    machine, s = result["machine"], result["settings"]
    lines = [
        f"machine: {machine['cpu']} ({machine['cores']} cores), device {machine['device']}, "
        f"torch {machine['torch']}; load average {machine['load_average_at_start'][0]:.2f} at "
        f"start, {machine['load_average_at_end'][0]:.2f} at end",
        f"sigma {s['sigma']}, threads {s['threads']}, {s['repeats']} interleaved repeats"
        + (", also beside a busy-loop process (--under-load)" if s["under_load"] else ""),
        "floor = fresh noise + forward + argmax per batch at its fastest batch size; engine = "
        "certify by default (batch auto, settled); engine cold = a process's first certify (its "
        "probe included); ref. loop = the papers' per-input loop; b32 = batch size 32",
    ]
    for name, model in result["models"].items():
        lines += _model_lines(name, model)
    lines += [
        "",
        f"{'engine / floor (first model, first condition)':<48}"
        f"{result['engine_over_forward']:>9.3f} x",
        "engine peak RSS after certify of one digits input (growth during it): "
        + ", ".join(
            f"n={m}: {peak:.0f} MB ({result['peak_memory_growth_mb'][m]:.1f})"
            for m, peak in result["peak_memory_mb"].items()
        ),
    ]
    if "swap_in" in result:
        w = result["swap_in"]
        lines += [
            "swap-in: ART's PyTorchRandomizedSmoothing vs rs_plugin.adapters.art's, each with its "
            "default batch size (32; auto), timed in the same interleaved rounds",
            f"{'  certify':<36}{w['art_seconds']:>9.3f} s vs "
            f"{w['adapter_seconds']:.3f} s = {w['art_over_adapter']:.2f} x",
            f"{'  peak RSS growth, n=' + str(s['memory_n']):<36}"
            f"{w['art_peak_increase_mb']:>9.1f} MB vs {w['adapter_peak_increase_mb']:.1f} MB",
        ]
    if "sequential" in result:
        from rs_plugin.bench.sequential import format_sequential

        lines += format_sequential(result)
    if "radius_ratio" in result:
        from rs_plugin.bench.radii import format_radii

        lines += format_radii(result)
    if "sound" in result:
        from rs_plugin.bench.sound import format_sound

        lines += format_sound(result)
    return "\n".join(lines)
