"""``rs-plugin certify``: certify a dataset, one JSON line per input as soon as it is done."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

from rs_plugin._validation import RSValueError, check_int
from rs_plugin.certification.model_runner import torch_threads
from rs_plugin.certification.stats import clopper_pearson_lower
from rs_plugin.cli.job import (
    CertifyJob,
    Threads,
    announce_threads,
    is_stateful,
    iter_records,
    parse_smoothing_params,
    parse_threads,
    resolve_device,
    restore_memory,
)
from rs_plugin.cli.store import ResultStore
from rs_plugin.cli.summary import format_summary, summarize

__all__ = ["certify_command"]


def certify_command(args: argparse.Namespace) -> int:
    # Every parameter is checked before anything is loaded or sampled.
    job = CertifyJob(
        model=args.model,
        data=args.data,
        smoothing=args.smoothing,
        sigma=args.sigma,
        semantics=args.semantics,
        smoothing_params=parse_smoothing_params(args.smoothing_param),
        n0=args.n0,
        n=args.n,
        alpha=args.alpha,
        batch_size=args.batch_size,
        seed=args.seed,
        limit=args.limit,
        device=resolve_device(args.device),
        certifier=args.certifier,
        radius=args.radius,
        tolerance=args.tolerance,
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
    )
    if args.engine == "local" and (args.workers is not None or args.ray_address is not None):
        raise RSValueError("--engine", "ray when --workers or --ray-address is given", "local")
    workers = None if args.workers is None else check_int("--workers", args.workers, 1)
    if is_stateful(job.certifier) and args.engine == "ray":
        raise RSValueError(
            "--certifier",
            "a certifier without memory (cohen, grid, sequential) with --engine ray (a memory "
            "certifier sees every input, in order, in one process)",
            f"{args.certifier} with --engine ray",
        )
    threads = parse_threads(args.threads)
    with torch_threads(threads.number):
        return _certify(args, job, workers, threads)


def _certify(
    args: argparse.Namespace, job: CertifyJob, workers: int | None, threads: Threads
) -> int:
    smoothed, x, y, data_sha256 = job.load()
    smoothing = smoothed.smoothing
    with ResultStore(
        args.out,
        job.config(smoothed, data_sha256),
        resume=args.resume,
        provenance=job.provenance(),
    ) as store:
        done = store.done()
        restore_memory(smoothed, x, store.records.values())
        todo = [i for i in range(len(y)) if i not in done]
        started = time.perf_counter()
        if args.engine == "ray":
            from rs_plugin.adapters.ray import InputsFailed, certify_on_ray

            try:
                certify_on_ray(
                    job,
                    todo,
                    store.append,
                    workers=workers,
                    address=args.ray_address,
                    progress=sys.stderr.isatty(),
                )
            except InputsFailed as error:
                print(f"rs-plugin certify: {error}", file=sys.stderr)
                return 1
        else:
            announce_threads("certify", threads)
            _certify_here(job, smoothed, x, y, todo, store)
        elapsed = time.perf_counter() - started
        records = [store.records[i] for i in sorted(store.records)]
    # The radius unit of the table: σ, or a smoothing's own scale where σ is not it.
    sigma = float(getattr(smoothing, "radius_scale", getattr(smoothing, "sigma", 1.0)))
    # A memory certifier's σ varies per input, so it has no single sampling cap.
    largest = None
    if not is_stateful(job.certifier):
        p_max = float(clopper_pearson_lower(np.array([job.n]), job.n, job.alpha)[0])
        largest = smoothing.largest_radius(p_max, int(x[0].numel()))
    summary = summarize(
        records,
        [k * sigma for k in (0, 0.5, 1, 2, 3, 4)],
        largest=largest,
        decision_radius=job.radius,
    )
    if todo:
        # Sequential certification records how many estimation samples each input used.
        # An input-domain grid certificate runs CERTIFY at every grid point.
        drawn = sum(
            (job.n0 + store.records[i].get("samples", job.n))
            * int(store.records[i].get("grid_points") or 1)
            for i in todo
        )
        summary["samples_per_second"] = drawn / max(elapsed, 1e-9)
    print(
        f"{args.out}: {smoothing!r}, certifier={job.certifier}, n0={job.n0}, n={job.n}, "
        f"alpha={job.alpha}, seed={job.seed}, {len(todo)} certified now, "
        f"{len(records) - len(todo)} resumed"
    )
    print(format_summary(summary, smoothing.norm, getattr(smoothing, "units", None)))
    sys.stdout.flush()  # now, so that a reader that has gone away is reported (cli.main)
    return 0


def _certify_here(
    job: CertifyJob, smoothed: Any, x: Any, y: Any, todo: list[int], store: ResultStore
) -> None:
    from tqdm import tqdm

    with tqdm(
        total=len(todo), unit="input", disable=not sys.stderr.isatty(), desc="certify"
    ) as bar:
        for record in iter_records(job, smoothed, x, y, todo):
            store.append(record)
            bar.update(1)
