"""The table of docs/denoised.md from ``rs-plugin certify`` result files.

Usage::

    python examples/denoised_table.py NAME=FILE.jsonl [NAME=FILE.jsonl ...] [--radii 0,0.25,0.5,1]

Every file is read, and only the inputs present in *all* files are counted, so every cell is
measured on the same test images. For each file: the certified accuracy at each radius r (the
share of those inputs certified with the right class and radius >= r; at r = 0, certified with
the right class at any radius) with its 95 % Clopper–Pearson interval, and the average certified
radius (ACR: the mean over inputs of the radius when the class is right, else 0) with a 95 %
normal interval (mean ± 1.96 · standard deviation / √N).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from scipy.stats import beta


def clopper_pearson(hits: int, total: int, level: float = 0.95) -> tuple[float, float]:
    """The two-sided Clopper–Pearson interval for ``hits`` successes in ``total`` trials."""
    tail = (1 - level) / 2
    low = 0.0 if hits == 0 else float(beta.ppf(tail, hits, total - hits + 1))
    high = 1.0 if hits == total else float(beta.ppf(1 - tail, hits + 1, total - hits))
    return low, high


def read(path: Path) -> dict[int, dict]:
    records = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            records[int(record["index"])] = record
    return records


def row(name: str, records: list[dict], radii: list[float]) -> str:
    total = len(records)
    cells = [name]
    for r in radii:
        hits = sum(
            1
            for x in records
            if x["prediction"] == x["label"] and x["prediction"] >= 0 and x["radius"] >= r
        )
        low, high = clopper_pearson(hits, total)
        cells.append(f"{100 * hits / total:.1f} [{100 * low:.1f}, {100 * high:.1f}]")
    values = [
        x["radius"] if x["prediction"] == x["label"] and x["prediction"] >= 0 else 0.0
        for x in records
    ]
    mean = sum(values) / total
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / max(total - 1, 1))
    cells.append(f"{mean:.3f} ± {1.96 * spread / math.sqrt(total):.3f}")
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="NAME=FILE.jsonl")
    parser.add_argument("--radii", default="0,0.25,0.5,1")
    args = parser.parse_args()
    radii = [float(r) for r in args.radii.split(",")]
    named = [spec.rsplit("=", 1) for spec in args.files]
    loaded = {name: read(Path(path)) for name, path in named}
    common = sorted(set.intersection(*(set(records) for records in loaded.values())))
    if not common:
        raise SystemExit("no input is in every file")
    print(f"{len(common)} inputs in every file (indices {common[0]}..{common[-1]})")
    print()
    header = ["model", *(f"r = {r:g}" for r in radii), "ACR"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, records in loaded.items():
        print(row(name, [records[i] for i in common], radii))


if __name__ == "__main__":
    main()
