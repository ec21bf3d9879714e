"""``rs-plugin bench --sound``: the sound-in-floating-point mode beside the float mode.

Two measurements:

* **speed**: CERTIFY's samples per second with ``Gaussian(σ)`` and with ``SoundGaussian(σ)`` on
  each bench model, in interleaved repeats on the same inputs (rounded to the 1/255 grid; the
  digits images are on their own 1/16 grid), and the ratio sound / float (median of the runs);
* **certified accuracy**: on the shipped digits model (grid 1/16) and the Fashion-MNIST CNN of
  docs/art.md's trainer table (grid 1/255), both modes certify the same first test inputs with
  the same seed; the fraction certified correct at ℓ2 radius 0.25 and 0.5 and the average
  certified radius (ACR: the radius of correct certificates, 0 otherwise, averaged over inputs).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch

from rs_plugin._validation import MAX_SAMPLES, check_int
from rs_plugin.bench.models import BENCH_MODELS, bench_inputs
from rs_plugin.bench.timing import interleaved
from rs_plugin.certification.classifier import SmoothedClassifier
from rs_plugin.smoothings.base import Smoothing
from rs_plugin.smoothings.gaussian import Gaussian
from rs_plugin.smoothings.sound import SoundGaussian

__all__ = ["format_sound", "run_sound_bench"]

RADII = (0.25, 0.5)
ALPHA = 0.001


def _grid(name: str) -> str:
    return "1/16" if name == "digits" else "1/255"


def _speed(
    names: list[str], *, sigma: float, n: int, repeats: int, device: torch.device
) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for name in names:
        spec = BENCH_MODELS[name]
        model = spec.build(device, 0).eval()
        step = 16 if name == "digits" else 255
        x = torch.round(bench_inputs(spec, 1, device) * step) / step
        modes: dict[str, Smoothing] = {
            "float": Gaussian(sigma),
            "sound": SoundGaussian(sigma, grid=_grid(name)),
        }
        classifiers = {
            mode: SmoothedClassifier(model, smoothing, spec.num_classes)
            for mode, smoothing in modes.items()
        }
        samples = n + 100

        def certify(
            c: SmoothedClassifier, x: torch.Tensor = x, size: int = spec.batch_size
        ) -> Callable[[], object]:
            return lambda: c.certify(x, n0=100, n=n, alpha=ALPHA, batch_size=size, seed=0)

        times = interleaved(
            {mode: certify(c) for mode, c in classifiers.items()},
            repeats,
            device=device,
            warm_up=True,
        )
        rate = {mode: samples / statistics.median(runs) for mode, runs in times.items()}
        rows[name] = {
            "samples_per_second": rate,
            "ratio_sound_over_float": rate["sound"] / rate["float"],
            "runs_seconds": times,
        }
    return rows


def _accuracy(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, grid: str, *, sigma: float, n: int
) -> dict[str, Any]:
    result: dict[str, Any] = {"grid": grid, "inputs": int(x.shape[0])}
    for mode, smoothing in (("float", Gaussian(sigma)), ("sound", SoundGaussian(sigma, grid=grid))):
        certs = SmoothedClassifier(model, smoothing, 10).certify(
            x, n0=100, n=n, alpha=ALPHA, batch_size=1000, seed=0
        )
        correct = (certs.prediction == y).to(torch.float64)
        radius = certs.radius.to(torch.float64) * correct
        result[mode] = {
            "certified_accuracy": {
                str(r): float((radius >= r).to(torch.float64).mean()) for r in RADII
            },
            "acr": float(radius.mean()),
        }
    return result


def check_sound_settings(*, n: int, inputs: int, repeats: int) -> None:
    """Refuse settings :func:`run_sound_bench` cannot run, before any benchmark does."""
    check_int("--sound-n", n, 1, MAX_SAMPLES)
    check_int("--sound-inputs", inputs, 1)
    check_int("--repeats", repeats, 1)


def run_sound_bench(
    *,
    models: list[str],
    sigma: float,
    n: int,
    repeats: int,
    inputs: int,
    device: str = "cpu",
) -> dict[str, Any]:
    """Both measurements; ``inputs`` test images per shipped model for the accuracy table."""
    check_sound_settings(n=n, inputs=inputs, repeats=repeats)
    from rs_plugin.data import load_dataset, load_demo_model, load_digits, load_fashion_model

    where = torch.device(device)
    accuracy: dict[str, Any] = {}
    x, y = load_digits("test")
    accuracy["digits"] = _accuracy(
        load_demo_model().to(where).eval(),
        x[:inputs].to(where),
        y[:inputs].to(where),
        "1/16",
        sigma=sigma,
        n=n,
    )
    x, y = load_dataset("fashion-mnist", "test")
    accuracy["fashion-mnist"] = _accuracy(
        load_fashion_model().to(where).eval(),
        x[:inputs].to(where),
        y[:inputs].to(where),
        "1/255",
        sigma=sigma,
        n=n,
    )
    return {
        "sound": {
            "sigma": sigma,
            "n": n,
            "speed": _speed(models, sigma=sigma, n=n, repeats=repeats, device=where),
            "accuracy": accuracy,
        }
    }


def format_sound(result: dict[str, Any]) -> list[str]:
    """The text table of :func:`run_sound_bench`'s result."""
    sound = result["sound"]
    lines = [
        "",
        f"Sound mode vs float mode (Gaussian sigma {sound['sigma']}, n = {sound['n']}):",
        f"{'model':<12} {'float samples/s':>16} {'sound samples/s':>16} {'sound/float':>12}",
    ]
    for name, row in sound["speed"].items():
        rate = row["samples_per_second"]
        lines.append(
            f"{name:<12} {rate['float']:>16.0f} {rate['sound']:>16.0f} "
            f"{row['ratio_sound_over_float']:>12.2f}"
        )
    lines.append(
        f"{'data':<14} {'mode':<6} {'grid':<6} "
        + " ".join(f"{'acc@' + str(r):>9}" for r in RADII)
        + f" {'ACR':>7}"
    )
    for data, row in sound["accuracy"].items():
        for mode in ("float", "sound"):
            acc = row[mode]["certified_accuracy"]
            lines.append(
                f"{data:<14} {mode:<6} {row['grid']:<6} "
                + " ".join(f"{acc[str(r)]:>9.3f}" for r in RADII)
                + f" {row[mode]['acr']:>7.4f}"
            )
    return lines
