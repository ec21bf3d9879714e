"""``rs-plugin bench``: the engine's certify time against the physical floor and against ART.

In one run, on the same model (the embedded digits CNN) and the same inputs, it times:

* the engine's CERTIFY (n0 + n noisy samples per input, streamed, on-device noise);
* the *floor*: bare forward passes over the same number of pre-made noisy samples, at the best of
  several batch sizes, no noise generation, no counting;
* ART's ``PyTorchRandomizedSmoothing.certify`` on the same model and inputs (``sample_size`` =
  n0, as ART uses it for selection);
* the swap-in: ART's class against ``rs_plugin.adapters.art.PyTorchRandomizedSmoothing`` built
  with the same arguments and called the same way, at the bench's batch size and at ART's
  default ``certify`` batch size (32), and the extra peak memory (RSS) each one's ``certify``
  needs for one input at ``--memory-n`` samples, each measured in a fresh process.

Each timing is the best of ``--repeats`` runs; ratios are computed from these timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from rs_plugin._validation import check_int, check_positive
from rs_plugin.bench.memory import memory_sizes, peak_mb
from rs_plugin.certification.classifier import SmoothedClassifier
from rs_plugin.smoothings.gaussian import Gaussian

__all__ = ["bench_command", "run_bench"]

_FLOOR_BATCHES = (256, 1000, 4000, 10000)


def _best_time(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _floor_seconds(
    model: Any, x: torch.Tensor, sigma: float, size: int, total: int, repeats: int
) -> float:
    """Best time of bare forwards over ``total`` pre-made noisy samples in batches of ``size``."""
    noisy = x[:1] + sigma * torch.randn((size, *x.shape[1:]), generator=torch.Generator())
    full, rest = divmod(total, size)

    def forward() -> None:
        with torch.inference_mode():
            for _ in range(full):
                model(noisy)
            if rest:
                model(noisy[:rest])

    forward()  # warm-up (and compilation, for a compiled model)
    return _best_time(forward, repeats)


def _compiled(
    model: torch.nn.Module,
    x: torch.Tensor,
    sigma: float,
    n0: int,
    n: int,
    batch_size: int,
    repeats: int,
    total: int,
) -> dict[str, Any]:
    """Engine and floor with ``torch.compile``: the engine's runner and the floor's model are
    compiled separately, each warmed up (compiled) before timing, at the bench's batch size."""
    smoothed = SmoothedClassifier(model, Gaussian(sigma), 10, compile=True)
    smoothed.certify(x, n0=n0, n=n, batch_size=batch_size)  # compile both batch shapes
    engine = _best_time(lambda: smoothed.certify(x, n0=n0, n=n, batch_size=batch_size), repeats)
    floor = _floor_seconds(torch.compile(model), x, sigma, batch_size, total, repeats)
    return {
        "engine_seconds": engine,
        "forward_seconds": floor,
        "forward_batch": batch_size,
        "engine_over_forward": engine / floor,
        "engine_samples_per_second": total / engine,
    }


def run_bench(
    *,
    inputs: int = 20,
    n0: int = 100,
    n: int = 10_000,
    batch_size: int = 1000,
    sigma: float = 0.25,
    repeats: int = 3,
    art: bool = True,
    memory_n: int = 200_000,
    compile: bool = False,
) -> dict[str, Any]:
    """Time engine, floor and (optionally) ART on the demo model; return figures and ratios."""
    from rs_plugin.data import load_demo_model, load_digits

    inputs = check_int("--inputs", inputs, 1)
    repeats = check_int("--repeats", repeats, 1)
    memory_n = check_int("--memory-n", memory_n, 1)
    check_positive("--sigma", sigma)
    model = load_demo_model()
    x, y = load_digits("test")
    x, y = x[:inputs], y[:inputs]
    smoothed = SmoothedClassifier(model, Gaussian(sigma), 10, clip_values=(0.0, 1.0))
    total = inputs * (n0 + n)

    smoothed.certify(x[:1], n0=n0, n=n0, batch_size=batch_size)  # warm-up
    certificates = smoothed.certify(x, n0=n0, n=n, batch_size=batch_size)
    engine = _best_time(lambda: smoothed.certify(x, n0=n0, n=n, batch_size=batch_size), repeats)

    floor = {
        str(size): _floor_seconds(model, x, sigma, size, total, repeats)
        for size in sorted({*_FLOOR_BATCHES, batch_size})
    }
    best_size = min(floor, key=lambda k: floor[k])

    result: dict[str, Any] = {
        "machine": _machine(),
        "settings": {
            "model": "demo",
            "inputs": inputs,
            "n0": n0,
            "n": n,
            "batch_size": batch_size,
            "sigma": sigma,
            "repeats": repeats,
            "memory_n": memory_n,
        },
        "samples": total,
        "engine_seconds": engine,
        "forward_seconds": floor[best_size],
        "forward_seconds_by_batch": floor,
        "forward_best_batch": int(best_size),
        "engine_over_forward": engine / floor[best_size],
        "engine_samples_per_second": total / engine,
    }
    if compile:
        result["compiled"] = _compiled(model, x, sigma, n0, n, batch_size, repeats, total)
    # Memory as n grows: the engine's certify of one input in a fresh process per n.
    peaks = {m: peak_mb("engine", m, batch_size, sigma, n0) for m in memory_sizes(memory_n)}
    result["peak_memory_mb"] = {str(m): peak for m, (peak, _) in peaks.items()}
    result["peak_memory_growth_mb"] = {str(m): growth for m, (_, growth) in peaks.items()}
    if art:
        art_seconds, art_prediction = _time_art(model, x, sigma, n0, n, batch_size, repeats)
        confident = certificates.prediction >= 0
        result["art_seconds"] = art_seconds
        result["art_over_engine"] = art_seconds / engine
        if compile:
            result["compiled"]["art_over_engine"] = (
                art_seconds / result["compiled"]["engine_seconds"]
            )
        result["agreement_with_art_on_certified"] = (
            float(
                (torch.from_numpy(art_prediction)[confident] == certificates.prediction[confident])
                .double()
                .mean()
            )
            if bool(confident.any())
            else None
        )
        result["swap_in"] = _swap_in(
            model, x, sigma, n0, n, batch_size, repeats, memory_n, art_seconds
        )
    return result


def _estimator(
    kind: str, model: torch.nn.Module, shape: tuple[int, ...], sigma: float, n0: int
) -> Any:
    """ART's class or ours, built with identical arguments (the one-line swap)."""
    if kind == "art":
        from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
    else:
        from rs_plugin.adapters.art import PyTorchRandomizedSmoothing
    return PyTorchRandomizedSmoothing(
        model=model,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=shape,
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
        sample_size=n0,
        scale=sigma,
        alpha=0.001,
    )


def _swap_in(
    model: torch.nn.Module,
    x: torch.Tensor,
    sigma: float,
    n0: int,
    n: int,
    batch_size: int,
    repeats: int,
    memory_n: int,
    art_seconds: float,
) -> dict[str, Any]:
    """ART's class vs ours; ART at ``batch_size`` was already timed (``art_seconds``)."""
    shape = tuple(x.shape[1:])
    x_np = x.numpy()
    theirs = _estimator("art", model, shape, sigma, n0)
    ours = _estimator("rs_plugin", model, shape, sigma, n0)
    out: dict[str, Any] = {}
    for label, size in (("", batch_size), ("_batch32", 32)):
        ours.certify(x_np[:1], n=n0, batch_size=size)  # warm-up
        art_s = (
            art_seconds
            if not label
            else _best_time(partial(theirs.certify, x_np, n=n, batch_size=size), repeats)
        )
        ours_s = _best_time(partial(ours.certify, x_np, n=n, batch_size=size), repeats)
        out[f"art_seconds{label}"] = art_s
        out[f"adapter_seconds{label}"] = ours_s
        out[f"art_over_adapter{label}"] = art_s / ours_s
    out["art_peak_increase_mb"] = peak_mb("art", memory_n, batch_size, sigma, n0)[1]
    out["adapter_peak_increase_mb"] = peak_mb("rs_plugin", memory_n, batch_size, sigma, n0)[1]
    return out


def _time_art(
    model: torch.nn.Module,
    x: torch.Tensor,
    sigma: float,
    n0: int,
    n: int,
    batch_size: int,
    repeats: int,
) -> tuple[float, np.ndarray]:
    art_model = _estimator("art", model, tuple(x.shape[1:]), sigma, n0)
    x_np = x.numpy()
    prediction, _ = art_model.certify(x_np, n=n, batch_size=batch_size)
    seconds = _best_time(partial(art_model.certify, x_np, n=n, batch_size=batch_size), repeats)
    return seconds, np.asarray(prediction)


def _format(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        f"machine: {result['machine']['cpu']} ({result['machine']['torch_threads']} threads), "
        f"torch {result['machine']['torch']}",
        f"demo CNN, {s['inputs']} inputs x (n0={s['n0']} + n={s['n']}) = {result['samples']} "
        f"samples, batch {s['batch_size']}, best of {s['repeats']}",
        f"{'engine certify':<36}{result['engine_seconds']:>9.3f} s",
        f"{'bare forward (batch ' + str(result['forward_best_batch']) + ')':<36}"
        f"{result['forward_seconds']:>9.3f} s",
        f"{'engine / forward':<36}{result['engine_over_forward']:>9.3f} x",
        "engine peak RSS after certify of one input (growth during it): "
        + ", ".join(
            f"n={m}: {peak:.0f} MB ({result['peak_memory_growth_mb'][m]:.1f})"
            for m, peak in result["peak_memory_mb"].items()
        ),
    ]
    if "compiled" in result:
        c = result["compiled"]
        lines += [
            f"{'engine certify, torch.compile':<36}{c['engine_seconds']:>9.3f} s",
            f"{'compiled forward (batch ' + str(c['forward_batch']) + ')':<36}"
            f"{c['forward_seconds']:>9.3f} s",
            f"{'compiled engine / compiled forward':<36}{c['engine_over_forward']:>9.3f} x",
        ]
        if "art_over_engine" in c:
            lines.append(f"{'ART / compiled engine':<36}{c['art_over_engine']:>9.3f} x")
    if "art_seconds" in result:
        lines += [
            f"{'ART PyTorchRandomizedSmoothing':<36}{result['art_seconds']:>9.3f} s",
            f"{'ART / engine':<36}{result['art_over_engine']:>9.3f} x",
        ]
    if "swap_in" in result:
        w = result["swap_in"]
        lines += [
            "swap-in: ART's PyTorchRandomizedSmoothing vs rs_plugin.adapters.art's, same call",
            f"{'  certify, batch ' + str(s['batch_size']):<36}{w['art_seconds']:>9.3f} s vs "
            f"{w['adapter_seconds']:.3f} s = {w['art_over_adapter']:.2f} x",
            f"{'  certify, batch 32 (ART default)':<36}{w['art_seconds_batch32']:>9.3f} s vs "
            f"{w['adapter_seconds_batch32']:.3f} s = {w['art_over_adapter_batch32']:.2f} x",
            f"{'  peak RSS growth, n=' + str(s['memory_n']):<36}"
            f"{w['art_peak_increase_mb']:>9.1f} MB vs {w['adapter_peak_increase_mb']:.1f} MB",
        ]
    if "sequential" in result:
        from rs_plugin.bench.sequential import format_sequential

        lines += format_sequential(result)
    if "radius_ratio" in result:
        from rs_plugin.bench.radii import format_radii

        lines += format_radii(result)
    return "\n".join(lines)


def bench_command(args: argparse.Namespace) -> int:
    result = run_bench(
        inputs=args.inputs,
        n0=args.n0,
        n=args.n,
        batch_size=args.batch_size,
        sigma=args.sigma,
        repeats=args.repeats,
        art=not args.no_art,
        memory_n=args.memory_n,
        compile=args.compile,
    )
    if args.sequential:
        from rs_plugin.bench.sequential import run_sequential_bench

        result.update(
            run_sequential_bench(
                inputs=args.sequential_inputs,
                fashion_inputs=args.fashion_inputs,
                n0=args.n0,
                n=args.sequential_n,
                sigma=args.sigma,
                radii=tuple(args.sequential_radii),
                tolerance_sigmas=args.tolerance_sigmas,
                batch_size=args.batch_size,
                plot=args.sequential_plot,
            )
        )
    if args.radii:
        from rs_plugin.bench.radii import run_radii_bench

        result.update(run_radii_bench())
    print(json.dumps(result, indent=2) if args.json else _format(result))
    return 0
