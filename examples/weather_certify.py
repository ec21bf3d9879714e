"""Certify Fashion-MNIST classifiers against cast shadows and fog, and audit the certificates.

One run per family (``--family shadow``, ``fog`` or ``horizon_fog``): a FashionCNN is trained
(seeded) with noise augmentation by the family's own smoothing, then it and the shipped
noise-trained model (Gaussian pixel noise, for contrast) are certified on the first ``--inputs``
test images with CERTIFY (n0, n, α as given), and the audit (grid and random search over the
parameter within each input's certified radius, every candidate checked by PREDICT) runs on the
first ``--audit-inputs`` of them. Each run writes ``<family>.json``; ``--report`` then reads them
and writes the Markdown table and the figure of example images at their certified radius.

    python examples/weather_certify.py --family shadow --out-dir out/weather
    python examples/weather_certify.py --family fog --out-dir out/weather
    python examples/weather_certify.py --family horizon_fog --out-dir out/weather
    python examples/weather_certify.py --report --out-dir out/weather   # table.md, weather.png
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rs_plugin import (
    Audit,
    CertificateSet,
    Fog,
    HorizonFog,
    SemanticSmoothing,
    Shadow,
    SmoothedClassifier,
)
from rs_plugin.data import FashionCNN, load_dataset
from rs_plugin.data._models import load_fashion_model
from rs_plugin.training.augmentation import NoiseAugmentation
from rs_plugin.training.loop import train

# The certified families: σ in the parameter's unit (log-transmission, 1/depth).
SIGMA = {"shadow": 0.5, "fog": 0.5, "horizon_fog": 0.5}
# The shadow falls on the left half (angle 180°: the direction of the shadowed side), edge
# through the centre, 2-pixel soft edge.
SHADOW_ANGLE, SHADOW_OFFSET, SHADOW_SOFTNESS = 180.0, 0.0, 2.0
RADII = (0.25, 0.5, 0.75, 1.0)
UNITS = {"shadow": "log-transmission", "fog": "1/depth", "horizon_fog": "1/depth"}


def smoothing_for(family: str) -> SemanticSmoothing:
    if family == "shadow":
        return Shadow(
            SIGMA["shadow"], angle=SHADOW_ANGLE, offset=SHADOW_OFFSET, softness=SHADOW_SOFTNESS
        )
    if family == "horizon_fog":
        return HorizonFog(SIGMA["horizon_fog"], airlight=1.0)
    return Fog(SIGMA["fog"], airlight=1.0)


def train_model(family: str, epochs: int, train_size: int, seed: int = 0) -> nn.Module:
    x, y = load_dataset("fashion-mnist", "train")
    x, y = x[:train_size], y[:train_size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FashionCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    objective = NoiseAugmentation(smoothing_for(family))
    return train(
        model, objective, x, y, optimizer=optimizer, epochs=epochs, generators=seed,
        scheduler=schedule,
    )  # fmt: skip


def _first(certificates: CertificateSet, k: int) -> CertificateSet:
    return dataclasses.replace(
        certificates,
        index=certificates.index[:k],
        prediction=certificates.prediction[:k],
        radius=certificates.radius[:k],
    )


def certify_and_audit(
    model: nn.Module,
    family: str,
    x: torch.Tensor,
    y: torch.Tensor,
    args: argparse.Namespace,
    *,
    audit_inputs: int,
) -> dict[str, Any]:
    smoothing = smoothing_for(family)
    started = time.process_time()
    certs = SmoothedClassifier(model, smoothing, 10).certify(
        x, n0=args.n0, n=args.n, alpha=args.alpha, batch_size=1100, seed=0
    )
    certify_cpu = time.process_time() - started
    correct = certs.prediction == y
    result: dict[str, Any] = {
        "smoothing": smoothing.config(),
        "norm": smoothing.norm,
        "inputs": len(y),
        "clean": float(correct.double().mean()),
        "certified": {
            f"{r:g}": float((correct & (certs.radius >= r)).double().mean()) for r in RADII
        },
        "radius": certs.radius.tolist(),
        "correct": correct.tolist(),
        "certify_cpu_s": certify_cpu,
    }
    k = audit_inputs
    if k > 0:
        started = time.process_time()
        report = Audit(
            model, smoothing, 10, budgets=(0.5, 1.0), predict_n=args.predict_n,
            predict_alpha=args.alpha, batch_size=1000, seed=0,
        ).run(x[:k], y[:k], _first(CertificateSet.from_certificates(certs), k))  # fmt: skip
        data = report.to_dict()
        curves = data["curves"]
        certified = [row for row in data["inputs"] if row["certified"]]
        result["audit"] = {
            "inputs": k,
            "certified_inputs": len(certified),
            # PREDICT checks per attack, and per certified input within its radius (the clean
            # check counts one): the audit attacked every certificate when the minimum is > 1.
            "checks": {a["name"]: a["checks"] for a in data["attacks"]},
            "min_checks_within_radius": min(
                (row["checks_within_radius"] for row in certified), default=0
            ),
            "violations": data["verdict"]["violations"],
            "expected_violations_bound": data["verdict"]["expected_violations_bound"],
            "budgets": curves["budgets"],
            "certified_at_budgets": curves["certified_accuracy_at_budgets"],
            "empirical_robust_accuracy": curves["empirical_robust_accuracy"]["all attacks"],
            "cpu_s": time.process_time() - started,
        }
    return result


def run_family(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    x, y = load_dataset("fashion-mnist", "test")
    x, y = x[: args.inputs], y[: args.inputs]
    out: dict[str, Any] = {
        "family": args.family,
        "settings": {
            "n0": args.n0,
            "n": args.n,
            "alpha": args.alpha,
            "inputs": args.inputs,
            "audit_inputs": args.audit_inputs,
            "predict_n": args.predict_n,
            "contrast_inputs": args.contrast_inputs,
            "epochs": args.epochs,
            "train_size": args.train_size,
            "threads": args.threads,
        },
        "models": {},
    }
    suffix = "_contrast" if args.contrast_only else ""
    path = args.out_dir / f"{args.family}{suffix}.json"

    def record(label: str, result: dict[str, Any]) -> None:
        out["models"][label] = result
        path.write_text(json.dumps(out, indent=1))  # after each model: a late stop keeps it
        print(
            label, json.dumps({k: v for k, v in result.items() if k not in ("radius", "correct")})
        )

    if not args.contrast_only:
        started = time.process_time()
        trained = train_model(args.family, args.epochs, args.train_size)
        train_cpu = time.process_time() - started
        result = certify_and_audit(trained, args.family, x, y, args, audit_inputs=args.audit_inputs)
        record(f"{args.family}-trained", {**result, "train_cpu_s": train_cpu})
    if args.contrast_inputs > 0:
        k = args.contrast_inputs
        shipped = load_fashion_model().eval()
        record(
            "noise-trained (shipped)",
            certify_and_audit(shipped, args.family, x[:k], y[:k], args, audit_inputs=0),
        )


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| perturbation | model | inputs | clean | " + " | ".join(f"r ≥ {r:g}" for r in RADII)
        + " | audit: empirical robust accuracy at 0.5 / 1.0 × max radius (certified) | "
        "violations | CPU time (train / certify / audit) |",
        "|---|---|---|---|" + "---|" * len(RADII) + "---|---|---|",
    ]  # fmt: skip
    for family in results:
        name = family["family"]
        for label, res in family["models"].items():
            cells = " | ".join(f"{res['certified'][f'{r:g}']:.1%}" for r in RADII)
            audit = res.get("audit")
            if audit:
                emp = " / ".join(
                    f"{e:.1%} ({c:.1%})"
                    for e, c in zip(
                        audit["empirical_robust_accuracy"][1:],
                        audit["certified_at_budgets"][1:],
                        strict=True,
                    )
                )
                emp = f"{emp} on {audit['inputs']} inputs"
                violations = str(audit["violations"])
                audit_cpu = f"{audit['cpu_s']:.0f} s"
            else:
                emp, violations, audit_cpu = "not audited", "–", "–"
            train_cpu = f"{res['train_cpu_s']:.0f} s" if "train_cpu_s" in res else "shipped"
            lines.append(
                f"| {name} ({UNITS[name]}, σ = {res['smoothing']['sigma']:g}) | {label} | "
                f"{res['inputs']} | {res['clean']:.1%} | {cells} | {emp} | {violations} | "
                f"{train_cpu} / {res['certify_cpu_s']:.0f} s / {audit_cpu} |"
            )
    return "\n".join(lines) + "\n"


def figure(path: Path, results: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, _ = load_dataset("fashion-mnist", "test")
    rows = []
    for family in results:
        name = family["family"]
        res = family["models"].get(f"{name}-trained")
        if res is None:
            continue
        radius = torch.tensor(res["radius"]) * torch.tensor(res["correct"]).double()
        for i in radius.argsort(descending=True)[:: max(1, len(radius) // 4)][:3].tolist():
            rows.append((name, i, float(radius[i])))
    fig, axes = plt.subplots(len(rows), 3, figsize=(5.0, 1.7 * len(rows)), squeeze=False)
    for row, (name, i, r) in enumerate(rows):
        smoothing = smoothing_for(name)
        # The physical side: darker shadows, denser fog (the certificate also covers −r..0,
        # the inverse operation, which leaves [0, 1]).
        params = torch.tensor([[0.0], [r / 2], [r]], dtype=torch.float32)
        images = smoothing.apply(x[i : i + 1].expand(3, -1, -1, -1), params)
        for col in range(3):
            ax = axes[row, col]
            ax.imshow(images[col, 0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            symbol = "s" if name == "shadow" else "β"
            ax.set_title(f"{name} {symbol} = {float(params[col, 0]):.2f}", fontsize=7)
        axes[row, 0].set_ylabel(f"test #{i}", fontsize=7)
    fig.suptitle("Fashion-MNIST: clean, half and the whole certified radius", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=tuple(SIGMA), default=None)
    parser.add_argument("--report", action="store_true", help="write table.md and weather.png")
    parser.add_argument("--out-dir", type=Path, default=Path("out/weather"))
    parser.add_argument("--inputs", type=int, default=500)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("-n", "--n", type=int, default=1000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--audit-inputs", type=int, default=100)
    parser.add_argument("--predict-n", type=int, default=200)
    parser.add_argument(
        "--contrast-inputs", type=int, default=500, help="inputs for the shipped noise model"
    )
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-size", type=int, default=15_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--contrast-only",
        action="store_true",
        help="certify only the shipped model (writes <family>_contrast.json, merged by --report)",
    )
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.family is not None:
        run_family(args)
    if args.report:
        results = []
        for family in SIGMA:
            parts = [args.out_dir / f"{family}{suffix}.json" for suffix in ("", "_contrast")]
            found = [json.loads(p.read_text()) for p in parts if p.exists()]
            if found:
                merged = found[0]
                for extra in found[1:]:
                    merged["models"].update(extra["models"])
                results.append(merged)
        text = table(results)
        (args.out_dir / "table.md").write_text(text, encoding="utf-8")
        figure(args.out_dir / "weather.png", results)
        print(text)


if __name__ == "__main__":
    main()
