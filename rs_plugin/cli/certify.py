"""``rs-plugin certify``: certify a dataset, one JSON line per input as soon as it is done."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from rs_plugin._registry import discover
from rs_plugin._validation import (
    MAX_WORKERS,
    RSValueError,
    check_int,
    check_positive,
    import_extra,
)
from rs_plugin.auditing.plausibility import (
    check_record,
    impossibility,
    inconsistency,
    record_validator,
)
from rs_plugin.certification.radii import sampling_cap
from rs_plugin.certification.threads import torch_threads
from rs_plugin.cli.failures import kept_on_failure
from rs_plugin.cli.flags import parse_smoothing_params
from rs_plugin.cli.models import load_denoiser_for, load_model_for
from rs_plugin.cli.outputs import check_out_file
from rs_plugin.cli.store import ResultStore
from rs_plugin.cli.summary import format_summary, summarize
from rs_plugin.cli.threads import Threads, announce_threads, parse_threads
from rs_plugin.runs import CertifyJob, iter_records, resolve_device, restore_memory

__all__ = ["certify_command"]


def sound_mode(
    smoothing: str, params: tuple[tuple[str, Any], ...], sound: bool, grid: str | None
) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """``--smoothing NAME --sound [--grid STEP]`` as the registered ``NAME_sound`` smoothing
    and its ``grid`` parameter (unchanged without ``--sound``)."""
    if not sound:
        if grid is not None:
            raise RSValueError("--grid", "only with --sound", grid)
        return smoothing, params
    registered = discover("rs_plugin.smoothings")
    if f"{smoothing}_sound" not in registered:
        sound_names = sorted(n.removesuffix("_sound") for n in registered if n.endswith("_sound"))
        raise RSValueError("--sound", f"a --smoothing with a sound mode: {sound_names}", smoothing)
    return f"{smoothing}_sound", params + ((("grid", grid),) if grid is not None else ())


def certify_command(args: argparse.Namespace) -> int:
    # Every parameter is checked before anything is loaded or sampled.
    smoothing, params = sound_mode(
        args.smoothing, parse_smoothing_params(args.smoothing_param), args.sound, args.grid
    )
    job = CertifyJob(
        model=args.model,
        data=args.data,
        smoothing=smoothing,
        sigma=args.sigma,
        semantics=args.semantics,
        smoothing_params=params,
        n0=args.n0,
        n=args.n,
        alpha=args.alpha,
        batch_size=args.batch_size,
        seed=args.seed,
        limit=args.limit,
        device=resolve_device(args.device),
        model_loader=partial(load_model_for, weights=args.weights),
        denoiser=args.denoiser,
        denoiser_loader=load_denoiser_for,
        certifier=args.certifier,
        radius=args.radius,
        tolerance=args.tolerance,
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
    )
    ray_only = (args.workers, args.ray_address, args.stall_timeout)
    if args.engine == "local" and any(value is not None for value in ray_only):
        raise RSValueError(
            "--engine", "ray when --workers, --ray-address or --stall-timeout is given", "local"
        )
    workers = None if args.workers is None else check_int("--workers", args.workers, 1, MAX_WORKERS)
    if args.stall_timeout is not None:
        check_positive("--stall-timeout", args.stall_timeout)
    if job.stateful and args.engine == "ray":
        raise RSValueError(
            "--certifier",
            "a stateless certifier with --engine ray (a stateful certifier, one with a memory, "
            "sees every input, in order, in one process)",
            f"{args.certifier} with --engine ray",
        )
    if args.engine == "ray":  # before the output file is created
        import_extra("ray", "ray", "--engine ray")
    check_out_file(args.out)
    threads = parse_threads(args.threads)
    with torch_threads(threads.number):
        return _certify(args, job, workers, threads)


def _checked(
    append: Callable[[dict[str, Any]], None],
    possible: dict[str, Any],
    labels: list[int],
    *,
    parameter: str,
    source: str,
) -> Callable[[dict[str, Any]], None]:
    """``append`` that first checks each record as a stored one is on resume: a Ray worker may
    run other code, a third-party certifier is code the run did not write; no record that
    cannot hold is written. ``source`` says where records come from, ``parameter`` is the
    option an error names."""

    def append_checked(record: dict[str, Any]) -> None:
        where = f"the record of input {record.get('index')!r} from {source}"
        check_record(record, where, parameter)
        reason = impossibility(record, **possible) or inconsistency(record, labels)
        if reason is not None:
            raise RSValueError(
                parameter,
                f"records from {source} that this configuration could have issued",
                f"{where}: {reason}",
            )
        append(record)

    return append_checked


def _certify(
    args: argparse.Namespace, job: CertifyJob, workers: int | None, threads: Threads
) -> int:
    smoothed, x, y, data_sha256, all_labels = job.load()
    smoothing = smoothed.smoothing
    # The sampling cap bounding every radius this certifier records (None: no bound).
    capping = smoothed.cap_smoothing()
    config = job.config(smoothed, data_sha256)
    possible: dict[str, Any] = {
        "smoothing": capping or smoothing,
        "num_classes": int(getattr(smoothed, "num_classes", sys.maxsize)),
        "dim": int(x[0].numel()),
        "cap": capping is not None,
    }
    with ResultStore(
        args.out,
        config,
        resume=args.resume,
        provenance=job.provenance(),
        validate=record_validator(**possible, path=args.out, labels=all_labels),
    ) as store:
        done = store.done()
        restore_memory(smoothed, x, store.records.values())
        todo = [i for i in range(len(y)) if i not in done]
        started = time.perf_counter()
        with kept_on_failure(args.out, lambda: len(store.records), todo, store.done):
            if args.engine == "ray":
                from rs_plugin.adapters.ray import InputsFailed, certify_on_ray
                from rs_plugin.adapters.ray_health import STALL_TIMEOUT

                try:
                    certify_on_ray(
                        job,
                        todo,
                        _checked(
                            store.append,
                            possible,
                            all_labels,
                            parameter="--engine",
                            source="a Ray worker",
                        ),
                        workers=workers,
                        expected_config=config,
                        address=args.ray_address,
                        stall_timeout=(
                            STALL_TIMEOUT if args.stall_timeout is None else args.stall_timeout
                        ),
                        progress=True,
                        hint=f"The records so far are in {args.out}; run the same command with "
                        "--resume to certify the rest.",
                    )
                except InputsFailed as error:
                    print(f"rs-plugin certify: {error}", file=sys.stderr)
                    return 1
            else:
                announce_threads("certify", threads)
                append = _checked(
                    store.append,
                    possible,
                    all_labels,
                    parameter="--certifier",
                    source=f"certifier {job.certifier}",
                )
                _certify_here(job, smoothed, x, y, todo, append)
        elapsed = time.perf_counter() - started
        records = [store.records[i] for i in sorted(store.records)]
    # The radius unit of the table: σ, or a smoothing's own scale where σ is not it.
    sigma = getattr(smoothing, "radius_scale", None) or smoothing.noise_scale or 1.0
    largest = None if capping is None else sampling_cap(capping, job.alpha, job.n, x[0].numel())
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
        f"alpha={job.alpha}, seed={job.seed}, {_batch_text(job, store.records, todo)}, "
        f"{len(todo)} certified now, {len(records) - len(todo)} resumed"
    )
    print(format_summary(summary, smoothing.norm, getattr(smoothing, "units", None)))
    sys.stdout.flush()  # now, so that a reader that has gone away is reported (cli.main)
    return 0


def _batch_text(job: CertifyJob, records: dict[int, Any], todo: list[int]) -> str:
    """``batch_size=256``, or ``batch_size=auto (256)`` with the sizes ``auto`` settled on in
    the records certified now (each Ray worker measures its own)."""
    if job.batch_size != "auto":
        return f"batch_size={job.batch_size}"
    used = {records[i].get("batch_size") for i in todo if i in records}
    sizes = sorted(size for size in used if isinstance(size, int))
    return f"batch_size=auto ({', '.join(map(str, sizes))})" if sizes else "batch_size=auto"


def _certify_here(
    job: CertifyJob,
    smoothed: Any,
    x: Any,
    y: Any,
    todo: list[int],
    append: Callable[[dict[str, Any]], None],
) -> None:
    from rs_plugin.auditing.progress import Progress

    # A bar on a terminal, periodic lines in a log (done/total, elapsed, time left).
    with Progress("certify", len(todo), "input") as bar:
        for record in iter_records(job, smoothed, x, y, todo):
            append(record)
            bar.update(1)
