"""``rs-plugin bench``: the engine's certify time against the floor, ART and the papers' loop.

For each model (:mod:`rs_plugin.bench.models`: the digits CNN, a LeNet, a CIFAR ResNet-20; a
ResNet-50 on request), at each torch thread count asked for, alone and (``--under-load``) beside
a busy-loop process of its own, two rounds of interleaved repeats in one process
(:mod:`rs_plugin.bench.timing`) certify the same inputs × (n0 + n) samples:

1. the sweep: the floor (fresh noise + forward + argmax, :mod:`rs_plugin.bench.methods`) and
   ART's certify at every batch size (the engine's candidates, 16 to 1024 on a CPU, and ART's
   default 32). *The floor* is the fastest batch size of the floor; ART's best is its fastest;
2. the comparison, side by side: the floor at its fastest size, the engine by default
   (``batch_size="auto"``, its probe settled as in every run after a process's first, and
   ``engine_cold``, a process's first run, probe included), the engine at the floor's size,
   the papers' per-input loop, ART's certify at its default 32 and at its best size, and the
   ART adapter by default.

It reports medians with min–max, each size's rate, the ratios the targets are stated in
(engine / floor, ART / engine), each method's slowdown beside the busy loop, which targets
are met, notes where figures that should agree do not, and the load each condition ran under,
measured (:class:`~rs_plugin.bench.timing.LoadMeter`): a condition is labelled ``idle`` or
``busy`` from what other processes used during it, never from what was asked for.

The JSON's top-level keys give the first model's first condition (engine, floor, ART and the
adapter's swap-in), peak memory from fresh processes, and ``models``, one object per model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from typing import Any

import torch

from rs_plugin._validation import MAX_THREADS, RSValueError, check_int, check_positive
from rs_plugin.bench.memory import memory_sizes, peak_mb
from rs_plugin.bench.model_bench import ART_BATCH, bench_model
from rs_plugin.bench.models import BENCH_MODELS
from rs_plugin.bench.report import format_result
from rs_plugin.certification.allocator import retain_freed_memory

__all__ = ["DEFAULT_MODELS", "bench_command", "run_bench"]

DEFAULT_MODELS = ("digits", "lenet", "resnet20")
MEMORY_BATCH = 1000  # the batch of the peak-memory runs (memory grows with it, never with n)


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


def _first_keys(first: dict[str, Any], art: bool) -> dict[str, Any]:
    """Headline figures from the first model's first condition."""
    condition = next(iter(first["conditions"].values()))
    seconds = {name: s["median"] for name, s in condition["seconds"].items()}
    out: dict[str, Any] = {
        "samples": first["samples"],
        "engine_seconds": seconds["engine"],
        "forward_seconds": seconds["floor"],
        "forward_best_batch": condition["floor_batch"],
        "engine_over_forward": seconds["engine"] / seconds["floor"],
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
        }
    return out


def run_bench(
    *,
    models: tuple[str, ...] | list[str] = ("digits",),
    inputs: int | None = None,
    n0: int = 100,
    n: int | None = None,
    batch_sizes: tuple[int, ...] | list[int] | None = None,
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

    ``inputs`` and ``n`` default to each model's own workload
    (:data:`~rs_plugin.bench.models.BENCH_MODELS`); ``batch_sizes`` (the sizes the floor and
    ART are swept over) to the engine's own candidates (powers of two from 16 to 1024 on a
    CPU), with ART's default 32 always among them; ``threads`` to torch's current count.
    """
    unknown = [name for name in models if name not in BENCH_MODELS]
    if not models or unknown:
        raise RSValueError("--models", f"names from {sorted(BENCH_MODELS)}", list(models))
    for flag, value in (("--inputs", inputs), ("-n", n)):
        if value is not None:
            check_int(flag, value, 1)
    if batch_sizes is not None:
        if not batch_sizes:
            raise RSValueError("--batch-sizes", "one or more integers >= 1", list(batch_sizes))
        batch_sizes = tuple(check_int("--batch-sizes", size, 1) for size in batch_sizes)
    check_int("--n0", n0, 1)
    repeats = check_int("--repeats", repeats, 1)
    memory_n = check_int("--memory-n", memory_n, 1)
    check_positive("--sigma", sigma)
    counts = list(threads) if threads is not None else [torch.get_num_threads()]
    if not counts or any(not 1 <= int(c) <= MAX_THREADS for c in counts):
        raise RSValueError("--threads", f"one or more thread counts in [1, {MAX_THREADS}]", threads)
    torch_device = torch.device(device)
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise RSValueError("--device", "cpu, or cuda on a machine with a CUDA device", device)
    runner_options = {"precision": precision, "channels_last": channels_last, "compile": compile}
    result: dict[str, Any] = {"machine": _machine(torch_device)}
    # Every method runs on the allocator setting the engine uses (the floor included).
    result["machine"]["freed_memory_retained"] = retain_freed_memory()
    per_model = {
        name: bench_model(
            BENCH_MODELS[name],
            device=torch_device,
            inputs=inputs,
            n0=n0,
            n=n,
            batch_sizes=batch_sizes,
            sigma=sigma,
            repeats=repeats,
            threads=counts,
            under_load=under_load,
            art=art,
            runner_options=runner_options,
        )
        for name in models
    }
    first = per_model[models[0]]
    result["settings"] = {
        "model": models[0],
        "inputs": first["inputs"],
        "n0": n0,
        "n": first["n"],
        "batch_sizes": first["batch_sizes"],
        "sigma": sigma,
        "repeats": repeats,
        "memory_n": memory_n,
        "models": list(models),
        "threads": counts,
        "under_load": under_load,
        **runner_options,
    }
    result.update(_first_keys(first, art))
    if compile:
        result["compiled"] = {
            "engine_seconds": result["engine_seconds"],
            "forward_seconds": result["forward_seconds"],
            "forward_batch": result["forward_best_batch"],
            "engine_over_forward": result["engine_over_forward"],
            "engine_samples_per_second": result["engine_samples_per_second"],
        }
    # Memory as n grows: the engine's certify of one digits input in a fresh process per n.
    peaks = {
        size: peak_mb("engine", size, MEMORY_BATCH, sigma, n0) for size in memory_sizes(memory_n)
    }
    result["peak_memory_mb"] = {str(size): peak for size, (peak, _) in peaks.items()}
    result["peak_memory_growth_mb"] = {str(size): grow for size, (_, grow) in peaks.items()}
    if art:
        result["swap_in"]["art_peak_increase_mb"] = peak_mb("art", memory_n, ART_BATCH, sigma, n0)[
            1
        ]
        result["swap_in"]["adapter_peak_increase_mb"] = peak_mb(
            "rs_plugin", memory_n, MEMORY_BATCH, sigma, n0
        )[1]
    result["models"] = per_model
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    return result


def _names(text: str, flag: str) -> list[str]:
    names = [item.strip() for item in text.split(",") if item.strip()]
    if not names:
        raise RSValueError(flag, "a comma-separated list", text)
    return names


def _sizes(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(size) for size in _names(text, "--batch-sizes")]
    except ValueError as error:
        raise RSValueError("--batch-sizes", "comma-separated integers >= 1", text) from error


def bench_command(args: argparse.Namespace) -> int:
    try:
        threads = [int(t) for t in _names(args.threads, "--threads")]
    except ValueError as error:
        raise RSValueError("--threads", "comma-separated integers >= 1", args.threads) from error
    # The optional parts' settings are checked before the main measurement (minutes) runs.
    sequential: dict[str, Any] = {
        "inputs": args.sequential_inputs,
        "fashion_inputs": args.fashion_inputs,
        "n": args.sequential_n,
        "sigma": args.sigma,
        "radii": tuple(args.sequential_radii),
        "tolerance_sigmas": args.tolerance_sigmas,
        "plot": args.sequential_plot,
    }
    if args.sequential:
        from rs_plugin.bench.sequential import check_sequential_settings

        check_sequential_settings(**sequential)
    if args.sound:
        from rs_plugin.bench.sound import check_sound_settings

        check_sound_settings(n=args.sound_n, inputs=args.sound_inputs, repeats=args.repeats)
    result = run_bench(
        models=_names(args.models, "--models"),
        inputs=args.inputs,
        n0=args.n0,
        n=args.n,
        batch_sizes=_sizes(args.batch_sizes),
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

        # batch size 1000: the model evaluations counted do not depend on it
        result.update(run_sequential_bench(**sequential, n0=args.n0, batch_size=1000))
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
