"""The trainer table: train every certified-training objective on Fashion-MNIST, certify, compare.

For each σ and each trainer (Gaussian augmentation, SmoothAdv, MACER, consistency, SmoothMix;
settings in ``rs_plugin.data.train_fashion.fashion_objective``), trains the LeNet-size
``FashionCNN`` on the first ``--train-size`` training images for ``--epochs`` epochs (same
epochs, optimiser and seed for all), then certifies the first ``--inputs`` test images with
CERTIFY (n0, n, α) under the same Gaussian σ. Reports clean accuracy (the smoothed classifier's
accuracy, abstentions counted wrong), certified accuracy at the ``--radii`` and the average
certified radius (ACR), each with a 95% confidence interval over the choice of test inputs
(Clopper–Pearson for accuracies, normal approximation for ACR).

Writes into ``--out-dir``: ``results.jsonl`` (one line per model, as soon as it is done),
``trainer_table.md`` and the weights ``fashion_<trainer>_<sigma>.pt``.

    python examples/train_certified.py --out-dir out/trainers
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rs_plugin import Gaussian, SmoothedClassifier
from rs_plugin.certification.stats import clopper_pearson_lower, clopper_pearson_upper
from rs_plugin.data import FASHION_MNIST_DIR, load_idx
from rs_plugin.data.train_fashion import (
    FASHION_EPOCHS,
    FASHION_TRAIN_SIZE,
    TRAINERS,
    fashion_objective,
    train_fashion_model,
)

NAMES = {
    "gaussian": "Gaussian augmentation",
    "smoothadv": "SmoothAdv",
    "macer": "MACER",
    "consistency": "Consistency",
    "smoothmix": "SmoothMix",
}


def interval(successes: int, trials: int) -> tuple[float, float]:
    """Two-sided 95% Clopper–Pearson interval of a proportion."""
    k = np.array([successes])
    return (
        float(clopper_pearson_lower(k, trials, 0.025)[0]),
        float(clopper_pearson_upper(k, trials, 0.025)[0]),
    )


def evaluate(
    model: torch.nn.Module, sigma: float, x: torch.Tensor, y: torch.Tensor, args: Any
) -> dict[str, Any]:
    """CERTIFY the inputs; the table's figures with their intervals."""
    smoothed = SmoothedClassifier(model, Gaussian(sigma), 10, clip_values=(0.0, 1.0))
    certificates = smoothed.certify(
        x, n0=args.n0, n=args.n, alpha=args.alpha, batch_size=args.batch_size, seed=args.seed
    )
    correct = (certificates.prediction == y).numpy()
    radius = certificates.radius.numpy()
    total = len(y)
    figures: dict[str, Any] = {"clean": correct.mean(), "clean_ci": interval(correct.sum(), total)}
    for r in args.radii:
        hits = int((correct & (radius >= r)).sum())
        figures[f"certified_{r:g}"] = hits / total
        figures[f"certified_{r:g}_ci"] = interval(hits, total)
    contribution = np.where(correct, radius, 0.0)
    acr, spread = float(contribution.mean()), float(contribution.std(ddof=1))
    half = 1.96 * spread / math.sqrt(total)
    figures["acr"], figures["acr_ci"] = acr, (max(0.0, acr - half), acr + half)
    figures["abstentions"] = float((certificates.prediction < 0).double().mean())
    return figures


def _cell(value: float, ci: tuple[float, float], percent: bool) -> str:
    if percent:
        return f"{100 * value:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def table(rows: list[dict[str, Any]], radii: list[float]) -> str:
    header = ["σ", "trainer", "clean acc. %", *[f"cert. acc. r={r:g} %" for r in radii], "ACR"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"{row['sigma']:g}", NAMES[row["trainer"]]]
        cells.append(_cell(row["clean"], row["clean_ci"], True))
        cells += [_cell(row[f"certified_{r:g}"], row[f"certified_{r:g}_ci"], True) for r in radii]
        cells.append(_cell(row["acr"], row["acr_ci"], False))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigmas", default="0.25,0.5")
    parser.add_argument("--trainers", default=",".join(TRAINERS))
    parser.add_argument("--epochs", type=int, default=FASHION_EPOCHS)
    parser.add_argument("--train-size", type=int, default=FASHION_TRAIN_SIZE)
    parser.add_argument("--inputs", type=int, default=200, help="first K test images")
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--radii", default="0.25,0.5,0.75,1.0")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--data-dir", type=Path, default=FASHION_MNIST_DIR)
    parser.add_argument("--out-dir", type=Path, default=Path("out/trainers"))
    args = parser.parse_args(argv)
    args.radii = [float(r) for r in args.radii.split(",")]
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sigmas = [float(s) for s in args.sigmas.split(",")]
    trainers = args.trainers.split(",")
    for trainer in trainers:
        fashion_objective(trainer, sigmas[0], epochs=args.epochs)  # unknown names fail now
    args.out_dir.mkdir(parents=True, exist_ok=True)
    x, y = load_idx(args.data_dir, "test")
    x, y = x[: args.inputs], y[: args.inputs]
    rows = []
    with (args.out_dir / "results.jsonl").open("w", encoding="utf-8") as log:
        for sigma in sigmas:
            for trainer in trainers:
                cpu, wall = time.process_time(), time.perf_counter()
                model = train_fashion_model(
                    trainer=trainer,
                    sigma=sigma,
                    epochs=args.epochs,
                    train_size=args.train_size,
                    seed=args.seed,
                    data_dir=args.data_dir,
                )
                train_cpu, train_wall = time.process_time() - cpu, time.perf_counter() - wall
                torch.save(model.state_dict(), args.out_dir / f"fashion_{trainer}_{sigma:g}.pt")
                cpu, wall = time.process_time(), time.perf_counter()
                row = {"sigma": sigma, "trainer": trainer, **evaluate(model, sigma, x, y, args)}
                row["seconds"] = {
                    "train_cpu": train_cpu,
                    "train_wall": train_wall,
                    "certify_cpu": time.process_time() - cpu,
                    "certify_wall": time.perf_counter() - wall,
                }
                row["objective"] = fashion_objective(trainer, sigma, epochs=args.epochs).config()
                rows.append(row)
                log.write(json.dumps(row, default=float) + "\n")
                log.flush()
                print(table([row], args.radii).splitlines()[-1], flush=True)
    text = table(rows, args.radii)
    (args.out_dir / "trainer_table.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
