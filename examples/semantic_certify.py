"""Certify against rotation, scaling, translation and brightness on digits and Fashion-MNIST.

One CNN per dataset is trained (seeded) on a mixture of the transforms' noise plus Gaussian pixel
noise, then certified with each transform smoothing: parametric certificates (DeformRS) for all,
input-domain ones (the rotated or scaled image the model receives, grid certificate) for rotation
and scaling. Writes a Markdown table and a figure of example images across the certified range.

    python examples/semantic_certify.py --out-dir out/semantic   # docs/semantic.md's run
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from rs_plugin import (
    Brightness,
    Certificates,
    Rotation,
    Scaling,
    SemanticSmoothing,
    Translation,
    cohen_certifier,
)
from rs_plugin.data import DemoCNN, FashionCNN, load_dataset

SIGMA = {"rotation": 15.0, "scaling": 0.2, "brightness": 0.2}
# Translation noise in pixels: a quarter of an 8-pixel digit is too much to learn.
SHIFT = {"digits": 0.5, "fashion-mnist": 2.0}
ADDITIVE = 0.25
RADII = {
    "rotation": (10.0, 20.0, 30.0),
    "scaling": (0.1, 0.2),
    "translation:l2": (0.5, 1.0, 2.0),
    "brightness": (0.1, 0.2, 0.4),
}


def augment(x: torch.Tensor, generator: torch.Generator, shift: float) -> torch.Tensor:
    """Training noise: each image gets one transform's noise (drawn at random) and pixel noise."""
    out = x + ADDITIVE * torch.randn(x.shape, generator=generator)
    parts: list[SemanticSmoothing] = [
        Rotation(SIGMA["rotation"]),
        Scaling(SIGMA["scaling"]),
        Translation(shift),
        Brightness(SIGMA["brightness"]),
    ]
    pick = torch.randint(len(parts), (x.shape[0],), generator=generator)
    for i, smoothing in enumerate(parts):
        rows = (pick == i).nonzero()[:, 0]
        if rows.numel():
            out[rows] = smoothing.perturb(out[rows], generator)
    return out


def train(model: nn.Module, data: str, epochs: int, seed: int = 0) -> nn.Module:
    x, y = load_dataset(data, "train")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), 64):
            index = order[start : start + 64]
            optimizer.zero_grad()
            noisy = augment(x[index], generator, SHIFT[data])
            loss = nn.functional.cross_entropy(model(noisy), y[index])
            loss.backward()
            optimizer.step()
        schedule.step()
    return model.eval()


def smoothings(data: str, input_step: dict[str, float]) -> list[tuple[str, SemanticSmoothing]]:
    return [
        ("rotation", Rotation(SIGMA["rotation"])),
        (
            "rotation",
            Rotation(
                SIGMA["rotation"],
                semantics="input",
                additive_sigma=ADDITIVE,
                input_range=30.0,
                grid_step=input_step["rotation"],
            ),
        ),
        ("scaling", Scaling(SIGMA["scaling"])),
        (
            "scaling",
            Scaling(
                SIGMA["scaling"],
                semantics="input",
                additive_sigma=ADDITIVE,
                input_range=0.2,
                grid_step=input_step["scaling"],
            ),
        ),
        ("translation:l2", Translation(SHIFT[data])),
        ("brightness", Brightness(SIGMA["brightness"])),
    ]


def accuracy(certs: Certificates, y: torch.Tensor, radius: float) -> float:
    return float(((certs.prediction == y) & (certs.radius >= radius)).double().mean())


def run(
    data: str, model: nn.Module, inputs: int, n: int, n_grid: int, step: dict[str, float]
) -> tuple[list[str], dict[str, Certificates], torch.Tensor, torch.Tensor]:
    x, y = load_dataset(data, "test")
    x, y = x[:inputs], y[:inputs]
    rows, results = [], {}
    for key, smoothing in smoothings(data, step):
        samples = n_grid if smoothing.on_grid else n
        started = time.perf_counter()
        certs = cohen_certifier(model, smoothing, 10).certify(
            x, n0=100, n=samples, alpha=0.001, batch_size=2000
        )
        seconds = time.perf_counter() - started
        results[f"{key}[{smoothing.semantics_label}]"] = certs
        # One cell for all radii: every row has the header's eight columns.
        cells = "; ".join(f"≥ {r:g}: {accuracy(certs, y, r):.1%}" for r in RADII[key])
        clean = float((certs.prediction == y).double().mean())
        grid = f", {int(certs.extra['grid_points'][0])} grid points" if smoothing.on_grid else ""
        rows.append(
            f"| {data} | {key} | σ = {smoothing.sigma:g} | {smoothing.semantics_label} | "
            f"n = {samples}{grid} | {clean:.1%} | {cells} | {seconds:.0f} s |"
        )
    return rows, results, x, y


def figure(path: Path, panels: list[tuple[str, SemanticSmoothing, torch.Tensor, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = (-1.0, -0.5, 0.0, 0.5, 1.0)
    fig, axes = plt.subplots(len(panels), 5, figsize=(7.5, 1.6 * len(panels)))
    for row, (title, smoothing, image, radius) in enumerate(panels):
        params = torch.tensor([[f * radius] for f in fractions])
        images = smoothing.apply(image[None].expand(5, -1, -1, -1), params)
        for col, (f, shown) in enumerate(zip(fractions, images, strict=True)):
            ax = axes[row, col]
            ax.imshow(shown[0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{f * radius:+.3g}", fontsize=8)
        axes[row, 0].set_ylabel(title, fontsize=7)
    fig.suptitle("Images across each input's certified range (input-domain certificates)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("out/semantic"))
    parser.add_argument("--digits-inputs", type=int, default=100)
    parser.add_argument("--fashion-inputs", type=int, default=50)
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--n-grid", type=int, default=400)
    parser.add_argument("--digits-epochs", type=int, default=40)
    parser.add_argument("--fashion-epochs", type=int, default=2)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    table = [
        "| data | transform | noise | semantics | samples | clean | certified accuracy "
        "at radius | time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    panels: list[tuple[str, SemanticSmoothing, torch.Tensor, float]] = []
    plan: list[tuple[str, type[nn.Module], int, int, float, float]] = [
        ("digits", DemoCNN, args.digits_inputs, args.digits_epochs, 1.0, 0.01),
        ("fashion-mnist", FashionCNN, args.fashion_inputs, args.fashion_epochs, 1.0, 0.01),
    ]
    for data, architecture, inputs, epochs, rot_step, scale_step in plan:
        if inputs == 0:
            continue
        torch.manual_seed(0)  # the initial weights too: a rerun gives the same table
        started = time.perf_counter()
        model = train(architecture(), data, epochs)
        print(f"{data}: trained in {time.perf_counter() - started:.0f} s", flush=True)
        step = {"rotation": rot_step, "scaling": scale_step}
        rows, results, x, y = run(data, model, inputs, args.n, args.n_grid, step)
        table += rows
        print("\n".join(rows), flush=True)
        for key in ("rotation[input]", "scaling[input]"):
            certs = results[key]
            good = ((certs.prediction == y) & (certs.radius > 0)).nonzero()[:, 0]
            if good.numel():
                i = int(good[certs.radius[good].argmax()])
                name = key.split("[")[0]
                smoothing: SemanticSmoothing = Rotation(1.0) if name == "rotation" else Scaling(0.1)
                title = f"{data}\n{name} ±{float(certs.radius[i]):.3g}"
                panels.append((title, smoothing, x[i], float(certs.radius[i])))
    (args.out_dir / "table.md").write_text("\n".join(table) + "\n")
    if panels:
        figure(args.out_dir / "semantic.png", panels)
    print("\n".join(table))


if __name__ == "__main__":
    main()
