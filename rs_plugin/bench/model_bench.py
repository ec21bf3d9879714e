"""One model's timings in every condition of ``rs-plugin bench`` (:mod:`rs_plugin.bench.speed`).

Per condition (a torch thread count, alone or beside the bench's own busy loop, under a
:class:`~rs_plugin.bench.timing.LoadMeter`), two rounds of interleaved repeats: the sweep (the
floor and ART's certify at every batch size; the fastest of each), then every method side by
side (the floor at its fastest size, the engine by default, settled and cold, the engine at the
floor's size, the papers' loop, ART at 32 and at its fastest size, the adapter), and the ratios
the targets are stated in.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from rs_plugin.bench import methods as m
from rs_plugin.bench.models import BenchModel, bench_inputs
from rs_plugin.bench.report import notes_and_targets
from rs_plugin.bench.timing import LoadMeter, busy_loop, interleaved, summary, torch_threads
from rs_plugin.certification.batching import (
    auto_batch,
    batch_size_in_use,
    candidates_for,
    forget,
)
from rs_plugin.certification.classifier import SmoothedClassifier
from rs_plugin.smoothings.gaussian import Gaussian

__all__ = ["ART_BATCH", "bench_model", "condition_key"]

ART_BATCH = 32  # ART's default batch size for certify
_SETTLE_SECONDS = 120.0  # certify runs until a fresh "auto" probe settles, for at most this long


def _settle(smoothed: SmoothedClassifier, x: torch.Tensor, n0: int, n: int) -> int | None:
    """Drop the cached ``"auto"`` choice and certify until a fresh probe settles (what every
    run after a process's first uses); the size it settled on."""
    forget(smoothed.model)
    total = x.shape[0] * (n0 + n)
    deadline = time.perf_counter() + _SETTLE_SECONDS
    while time.perf_counter() < deadline:
        smoothed.certify(x, n0=n0, n=n, batch_size="auto")
        state = auto_batch(smoothed.runner, x)
        if state.settled or state.next_size() >= total:  # done, or a size these runs cannot fill
            break
    return batch_size_in_use(smoothed.runner)


def _sweep(
    smoothed: SmoothedClassifier,
    x: torch.Tensor,
    *,
    sigma: float,
    n0: int,
    n: int,
    sizes: list[int],
    repeats: int,
    art: Any,
    first: bool,
) -> dict[str, Any]:
    """The floor, and ART's certify, at every batch size: rates and the fastest size."""
    runner, total = smoothed.runner, x.shape[0] * (n0 + n)
    methods: dict[str, Any] = {
        f"floor_b{size}": m.floor_fresh(runner, x, sigma, total, size) for size in sizes
    }
    if art is not None:
        x_np = x.cpu().numpy()
        methods.update({f"art_b{size}": m.art_certify(art, x_np, n, size) for size in sizes})
    times = interleaved(methods, repeats, device=x.device, warm_up=first)
    out: dict[str, Any] = {}
    for kind in ("floor", "art") if art is not None else ("floor",):
        rows = {str(size): {**summary(times[f"{kind}_b{size}"])} for size in sizes}
        for row in rows.values():
            row["samples_per_second"] = total / row["median"]
        best = min(sizes, key=lambda size: rows[str(size)]["median"])
        out[kind] = {"by_batch": rows, "best_batch": best}
    return out


def _compare(
    spec: BenchModel,
    smoothed: SmoothedClassifier,
    x: torch.Tensor,
    *,
    sigma: float,
    n0: int,
    n: int,
    floor_batch: int,
    art_batch: int | None,
    art: Any,
    adapter: Any,
) -> dict[str, Any]:
    """Every method timed side by side: the floor at its fastest size, the engine by default
    (settled and cold), the engine at the floor's size, the papers' loop, ART and the adapter."""
    runner, total = smoothed.runner, x.shape[0] * (n0 + n)
    out: dict[str, Any] = {
        "floor": m.floor_fresh(runner, x, sigma, total, floor_batch),
        "engine": m.engine_certify(smoothed, x, n0, n, "auto"),
        "engine_cold": m.engine_cold(smoothed, x, n0, n),
        "engine_at_floor_batch": m.engine_certify(smoothed, x, n0, n, floor_batch),
        "reference": m.reference_certify(runner, x, sigma, n0, n, floor_batch, spec.num_classes),
    }
    x_np = x.cpu().numpy()
    if art is not None:
        out["art"] = m.art_certify(art, x_np, n, ART_BATCH)
        out["art_best"] = m.art_certify(art, x_np, n, art_batch or ART_BATCH)
    if adapter is not None:
        out["adapter"] = m.art_certify(adapter, x_np, n, "auto")
    return out


def _ratios(seconds: dict[str, dict[str, Any]]) -> dict[str, float]:
    med = {name: s["median"] for name, s in seconds.items()}
    pairs = {
        "engine_over_floor": ("engine", "floor"),
        "engine_cold_over_floor": ("engine_cold", "floor"),
        "engine_at_floor_batch_over_floor": ("engine_at_floor_batch", "floor"),
        "reference_over_engine": ("reference", "engine"),
        "art_over_engine": ("art", "engine"),
        "art_best_over_engine": ("art_best", "engine"),
        "adapter_over_engine": ("adapter", "engine"),
        "art_over_adapter": ("art", "adapter"),
    }
    return {key: med[a] / med[b] for key, (a, b) in pairs.items() if a in med and b in med}


def condition_key(threads: int, loaded: bool) -> str:
    return f"{threads}_thread{'s' * (threads > 1)}" + ("_beside_busy_loop" if loaded else "")


def bench_model(
    spec: BenchModel,
    *,
    device: torch.device,
    inputs: int | None,
    n0: int,
    n: int | None,
    batch_sizes: tuple[int, ...] | None,
    sigma: float,
    repeats: int,
    threads: list[int],
    under_load: bool,
    art: bool,
    runner_options: dict[str, Any],
) -> dict[str, Any]:
    k = inputs if inputs is not None else spec.inputs
    size = n if n is not None else spec.n
    total = k * (n0 + size)
    model = spec.build(device, 0)
    x = bench_inputs(spec, k, device)
    smoothed = SmoothedClassifier(
        model, Gaussian(sigma), spec.num_classes, clip_values=(0.0, 1.0), **runner_options
    )
    sample_bytes = x[0].numel() * x.element_size()
    candidates = batch_sizes or candidates_for(sample_bytes, device)
    sizes = sorted({min(s, total) for s in (*candidates, ART_BATCH)})
    shape = tuple(x.shape[1:])
    theirs = ours = None
    if art:
        theirs = m.estimator("art", model, shape, spec.num_classes, sigma, n0, device)
        ours = m.estimator("ours", model, shape, spec.num_classes, sigma, n0, device)
    conditions: dict[str, dict[str, Any]] = {}
    for loaded in (False, True) if under_load else (False,):
        for count in threads:
            first = not conditions
            with LoadMeter(loaded, count) as meter:
                with busy_loop(loaded), torch_threads(count):
                    sweep = _sweep(
                        smoothed,
                        x,
                        sigma=sigma,
                        n0=n0,
                        n=size,
                        sizes=sizes,
                        repeats=repeats,
                        art=theirs,
                        first=first,
                    )
                    chosen = _settle(smoothed, x, n0, size)
                    methods = _compare(
                        spec,
                        smoothed,
                        x,
                        sigma=sigma,
                        n0=n0,
                        n=size,
                        floor_batch=sweep["floor"]["best_batch"],
                        art_batch=sweep["art"]["best_batch"] if art else None,
                        art=theirs,
                        adapter=ours,
                    )
                    times = interleaved(methods, repeats, device=device, warm_up=first)
            seconds = {name: summary(runs) for name, runs in times.items()}
            conditions[condition_key(count, loaded)] = {
                "threads": count,
                "under_load": loaded,
                **meter.report(),
                "sweep": sweep,
                "floor_batch": sweep["floor"]["best_batch"],
                "art_best_batch": sweep["art"]["best_batch"] if art else None,
                "engine_batch": chosen,
                "seconds": seconds,
                "ratios": _ratios(seconds),
                "engine_samples_per_second": total / seconds["engine"]["median"],
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
        "batch_sizes": sizes,
        "samples": total,
        "conditions": conditions,
        "slowdown_under_load": _slowdowns(conditions),
    }
    if art:
        certified = smoothed.certify(x, n0=n0, n=size)
        prediction, _ = m.art_certify(theirs, x.cpu().numpy(), size, ART_BATCH)()
        confident = certified.prediction >= 0
        agree = torch.from_numpy(prediction)[confident] == certified.prediction[confident]
        result["agreement_with_art_on_certified"] = (
            float(agree.double().mean()) if bool(confident.any()) else None
        )
    result["targets"], result["notes"] = notes_and_targets(spec.name, result)
    return result


def _slowdowns(conditions: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median beside the busy loop / median without it, of every method, per thread count."""
    out: dict[str, dict[str, float]] = {}
    for loaded in conditions.values():
        if not loaded["under_load"]:
            continue
        alone = conditions[condition_key(loaded["threads"], False)]["seconds"]
        out[condition_key(loaded["threads"], False)] = {
            name: s["median"] / alone[name]["median"]
            for name, s in loaded["seconds"].items()
            if name in alone
        }
    return out
