"""``rs-plugin bench``: the engine's certify time against the floor, ART and the papers' loop.

For each model (:mod:`rs_plugin.bench.models`: the digits CNN, a LeNet, a CIFAR ResNet-20; a
ResNet-50 on request) it certifies the same inputs with every method of
:mod:`rs_plugin.bench.methods` (floor with fresh noise, floor with a reused batch, the engine,
the papers' per-input loop, ART's certify; the engine and ART again at ART's default batch size
32), in interleaved repeats in one process (:mod:`rs_plugin.bench.timing`), at each torch thread
count asked for, idle and, with ``--under-load``, beside a busy-loop process of its own. It
reports medians with min–max, the ratios the project's targets are stated in, each method's
slowdown under load, which targets are met, and notes where figures that should agree do not.

The JSON keeps the keys of the first bench (figures of the first model's first condition,
``swap_in`` with the adapter timed in the same interleaved rounds, peak memory from fresh
processes) and adds ``models``, one object per model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from typing import Any

import torch

from rs_plugin._validation import RSValueError, check_int, check_positive
from rs_plugin.bench import methods as m
from rs_plugin.bench.memory import memory_sizes, peak_mb
from rs_plugin.bench.models import BENCH_MODELS, BenchModel, bench_inputs
from rs_plugin.bench.report import format_result, notes_and_targets
from rs_plugin.bench.timing import busy_loop, interleaved, summary, torch_threads
from rs_plugin.certification.classifier import SmoothedClassifier
from rs_plugin.smoothings.gaussian import Gaussian

__all__ = ["DEFAULT_MODELS", "bench_command", "run_bench"]

DEFAULT_MODELS = ("digits", "lenet", "resnet20")
ART_BATCH = 32  # ART's default batch size for certify
_FLOOR_BATCHES = (256, 1000, 4000, 10000)


def _machine(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "load_average_at_start": list(os.getloadavg()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _methods(
    spec: BenchModel,
    smoothed: SmoothedClassifier,
    x: torch.Tensor,
    *,
    sigma: float,
    n0: int,
    n: int,
    batch_size: int,
    art: bool,
    legacy: bool,
) -> dict[str, Any]:
    """Every timed method of one model (the legacy extras for the first model only)."""
    runner, total = smoothed.runner, x.shape[0] * (n0 + n)
    out: dict[str, Any] = {
        "floor_fresh": m.floor_fresh(runner, x, sigma, total, batch_size),
        "floor_reused": m.floor_reused(runner, x, sigma, total, batch_size),
        "engine": m.engine_certify(smoothed, x, n0, n, batch_size),
        "reference": m.reference_certify(runner, x, sigma, n0, n, batch_size, spec.num_classes),
        "engine_batch32": m.engine_certify(smoothed, x, n0, n, ART_BATCH),
    }
    x_np = x.cpu().numpy()
    shape = tuple(x.shape[1:])
    if art:
        theirs = m.estimator("art", smoothed.model, shape, spec.num_classes, sigma, n0, x.device)
        out["art"] = m.art_certify(theirs, x_np, n, batch_size)
        out["art_batch32"] = m.art_certify(theirs, x_np, n, ART_BATCH)
        if legacy:
            ours = m.estimator("ours", smoothed.model, shape, spec.num_classes, sigma, n0, x.device)
            out["adapter"] = m.art_certify(ours, x_np, n, batch_size)
            out["adapter_batch32"] = m.art_certify(ours, x_np, n, ART_BATCH)
    if legacy:
        for size in sorted({*_FLOOR_BATCHES, batch_size} - {batch_size}):
            out[f"floor_reused_batch{size}"] = m.floor_reused(runner, x, sigma, total, size)
    return out


def _ratios(seconds: dict[str, dict[str, Any]]) -> dict[str, float]:
    med = {name: s["median"] for name, s in seconds.items()}
    pairs = {
        "engine_over_floor": ("engine", "floor_fresh"),
        "engine_over_floor_reused": ("engine", "floor_reused"),
        "reference_over_engine": ("reference", "engine"),
        "art_over_engine": ("art", "engine"),
        "art_over_engine_batch32": ("art_batch32", "engine_batch32"),
        "adapter_over_engine": ("adapter", "engine"),
        "art_over_adapter": ("art", "adapter"),
    }
    return {key: med[a] / med[b] for key, (a, b) in pairs.items() if a in med and b in med}


def _bench_model(
    spec: BenchModel,
    *,
    device: torch.device,
    inputs: int | None,
    n0: int,
    n: int | None,
    batch_size: int | None,
    sigma: float,
    repeats: int,
    threads: list[int],
    under_load: bool,
    art: bool,
    legacy: bool,
    runner_options: dict[str, Any],
) -> dict[str, Any]:
    k = inputs if inputs is not None else spec.inputs
    size = n if n is not None else spec.n
    batch = batch_size if batch_size is not None else spec.batch_size
    model = spec.build(device, 0)
    x = bench_inputs(spec, k, device)
    smoothed = SmoothedClassifier(
        model, Gaussian(sigma), spec.num_classes, clip_values=(0.0, 1.0), **runner_options
    )
    methods = _methods(
        spec, smoothed, x, sigma=sigma, n0=n0, n=size, batch_size=batch, art=art, legacy=legacy
    )
    conditions: dict[str, dict[str, Any]] = {}
    for loaded in (False, True) if under_load else (False,):
        for count in threads:
            first = not conditions
            chosen = {k_: f for k_, f in methods.items() if first or not _legacy_only(k_)}
            with busy_loop(loaded), torch_threads(count):
                times = interleaved(chosen, repeats, device=device, warm_up=first)
            seconds = {name: summary(runs) for name, runs in times.items()}
            conditions[f"{'loaded' if loaded else 'idle'}_{count}_thread{'s' * (count > 1)}"] = {
                "threads": count,
                "under_load": loaded,
                "seconds": seconds,
                "ratios": _ratios(seconds),
                "engine_samples_per_second": k * (n0 + size) / seconds["engine"]["median"],
                "engine_seconds_per_input": seconds["engine"]["median"] / k,
            }
    result: dict[str, Any] = {
        "model": spec.description,
        "input_shape": list(spec.input_shape),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights": spec.weights,
        "inputs": k,
        "n0": n0,
        "n": size,
        "batch_size": batch,
        "samples": k * (n0 + size),
        "conditions": conditions,
        "slowdown_under_load": _slowdowns(conditions),
    }
    if art and legacy:
        certified = smoothed.certify(x, n0=n0, n=size, batch_size=batch)
        prediction, _ = methods["art"]()
        confident = certified.prediction >= 0
        agree = torch.from_numpy(prediction)[confident] == certified.prediction[confident]
        result["agreement_with_art_on_certified"] = (
            float(agree.double().mean()) if bool(confident.any()) else None
        )
    result["targets"], result["notes"] = notes_and_targets(spec.name, result)
    return result


def _legacy_only(name: str) -> bool:
    return name.startswith(("adapter", "floor_reused_batch"))


def _slowdowns(conditions: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Loaded median / idle median of every method, per thread count."""
    out: dict[str, dict[str, float]] = {}
    for key, loaded in conditions.items():
        if not loaded["under_load"]:
            continue
        idle = conditions[key.replace("loaded", "idle", 1)]["seconds"]
        out[key.replace("loaded_", "", 1)] = {
            name: s["median"] / idle[name]["median"]
            for name, s in loaded["seconds"].items()
            if name in idle
        }
    return out


def _legacy_keys(first: dict[str, Any], art: bool) -> dict[str, Any]:
    """The first bench's keys, from the first model's first condition."""
    condition = next(iter(first["conditions"].values()))
    seconds = {name: s["median"] for name, s in condition["seconds"].items()}
    by_batch = {str(first["batch_size"]): seconds["floor_reused"]}
    by_batch.update(
        {
            name.removeprefix("floor_reused_batch"): value
            for name, value in seconds.items()
            if name.startswith("floor_reused_batch")
        }
    )
    best = min(by_batch, key=lambda key: by_batch[key])
    out: dict[str, Any] = {
        "samples": first["samples"],
        "engine_seconds": seconds["engine"],
        "forward_seconds": by_batch[best],
        "forward_seconds_by_batch": by_batch,
        "forward_best_batch": int(best),
        "engine_over_forward": seconds["engine"] / by_batch[best],
        "engine_samples_per_second": first["samples"] / seconds["engine"],
    }
    if art:
        out["art_seconds"] = seconds["art"]
        out["art_over_engine"] = seconds["art"] / seconds["engine"]
        out["agreement_with_art_on_certified"] = first.get("agreement_with_art_on_certified")
        out["swap_in"] = {
            "art_seconds": seconds["art"],
            "adapter_seconds": seconds["adapter"],
            "art_over_adapter": seconds["art"] / seconds["adapter"],
            "art_seconds_batch32": seconds["art_batch32"],
            "adapter_seconds_batch32": seconds["adapter_batch32"],
            "art_over_adapter_batch32": seconds["art_batch32"] / seconds["adapter_batch32"],
        }
    return out


def run_bench(
    *,
    models: tuple[str, ...] | list[str] = ("digits",),
    inputs: int | None = None,
    n0: int = 100,
    n: int | None = None,
    batch_size: int | None = None,
    sigma: float = 0.25,
    repeats: int = 3,
    threads: tuple[int, ...] | list[int] | None = None,
    under_load: bool = False,
    art: bool = True,
    memory_n: int = 200_000,
    device: str = "cpu",
    precision: str = "float32",
    channels_last: bool = False,
    compile: bool = False,
) -> dict[str, Any]:
    """Time every method on every model in every condition; return figures, ratios, targets.

    ``inputs``, ``n`` and ``batch_size`` default to each model's own workload
    (:data:`~rs_plugin.bench.models.BENCH_MODELS`); ``threads`` to torch's current count.
    """
    unknown = [name for name in models if name not in BENCH_MODELS]
    if not models or unknown:
        raise RSValueError("--models", f"names from {sorted(BENCH_MODELS)}", list(models))
    for flag, value in (("--inputs", inputs), ("-n", n), ("--batch-size", batch_size)):
        if value is not None:
            check_int(flag, value, 1)
    check_int("--n0", n0, 1)
    repeats = check_int("--repeats", repeats, 1)
    memory_n = check_int("--memory-n", memory_n, 1)
    check_positive("--sigma", sigma)
    counts = list(threads) if threads is not None else [torch.get_num_threads()]
    if not counts or any(int(c) < 1 for c in counts):
        raise RSValueError("--threads", "one or more thread counts >= 1", threads)
    torch_device = torch.device(device)
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise RSValueError("--device", "cpu, or cuda on a machine with a CUDA device", device)
    runner_options = {"precision": precision, "channels_last": channels_last, "compile": compile}
    result: dict[str, Any] = {"machine": _machine(torch_device)}
    per_model = {
        name: _bench_model(
            BENCH_MODELS[name],
            device=torch_device,
            inputs=inputs,
            n0=n0,
            n=n,
            batch_size=batch_size,
            sigma=sigma,
            repeats=repeats,
            threads=counts,
            under_load=under_load,
            art=art,
            legacy=index == 0,
            runner_options=runner_options,
        )
        for index, name in enumerate(models)
    }
    first = per_model[models[0]]
    result["settings"] = {
        "model": models[0],
        "inputs": first["inputs"],
        "n0": n0,
        "n": first["n"],
        "batch_size": first["batch_size"],
        "sigma": sigma,
        "repeats": repeats,
        "memory_n": memory_n,
        "models": list(models),
        "threads": counts,
        "under_load": under_load,
        **runner_options,
    }
    result.update(_legacy_keys(first, art))
    if compile:
        result["compiled"] = {
            "engine_seconds": result["engine_seconds"],
            # The same forward the ratio divides by: the fastest reused-batch size timed.
            "forward_seconds": result["forward_seconds"],
            "forward_batch": result["forward_best_batch"],
            "engine_over_forward": result["engine_over_forward"],
            "engine_samples_per_second": result["engine_samples_per_second"],
        }
    # Memory as n grows: the engine's certify of one digits input in a fresh process per n.
    batch = first["batch_size"]
    peaks = {size: peak_mb("engine", size, batch, sigma, n0) for size in memory_sizes(memory_n)}
    result["peak_memory_mb"] = {str(size): peak for size, (peak, _) in peaks.items()}
    result["peak_memory_growth_mb"] = {str(size): grow for size, (_, grow) in peaks.items()}
    if art:
        result["swap_in"]["art_peak_increase_mb"] = peak_mb("art", memory_n, batch, sigma, n0)[1]
        result["swap_in"]["adapter_peak_increase_mb"] = peak_mb(
            "rs_plugin", memory_n, batch, sigma, n0
        )[1]
    result["models"] = per_model
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    return result


def _names(text: str, flag: str) -> list[str]:
    names = [item.strip() for item in text.split(",") if item.strip()]
    if not names:
        raise RSValueError(flag, "a comma-separated list", text)
    return names


def bench_command(args: argparse.Namespace) -> int:
    try:
        threads = [int(t) for t in _names(args.threads, "--threads")]
    except ValueError as error:
        raise RSValueError("--threads", "comma-separated integers >= 1", args.threads) from error
    result = run_bench(
        models=_names(args.models, "--models"),
        inputs=args.inputs,
        n0=args.n0,
        n=args.n,
        batch_size=args.batch_size,
        sigma=args.sigma,
        repeats=args.repeats,
        threads=threads,
        under_load=args.under_load,
        art=not args.no_art,
        memory_n=args.memory_n,
        device=args.device,
        precision=args.precision,
        channels_last=args.channels_last,
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
                batch_size=args.batch_size if args.batch_size is not None else 1000,
                plot=args.sequential_plot,
            )
        )
    if args.radii:
        from rs_plugin.bench.radii import run_radii_bench

        result.update(run_radii_bench())
    if args.sound:
        from rs_plugin.bench.sound import run_sound_bench

        result.update(
            run_sound_bench(
                models=_names(args.models, "--models"),
                sigma=args.sigma,
                n=args.sound_n,
                repeats=args.repeats,
                inputs=args.sound_inputs,
                device=args.device,
            )
        )
    print(json.dumps(result, indent=2) if args.json else format_result(result))
    return 0
