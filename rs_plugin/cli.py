"""The ``rs-plugin`` command: ``certify``, ``audit``, ``bench`` and ``plugins``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from rs_plugin._job import (
    CertifyJob,
    is_stateful,
    iter_records,
    parse_smoothing_params,
    resolve_device,
)
from rs_plugin._registry import format_plugins
from rs_plugin._store import ResultStore
from rs_plugin._summary import format_summary, summarize
from rs_plugin._validation import RSValueError, check_int

__all__ = ["build_parser", "main"]


def _add_certify_parser(commands: Any) -> None:
    p = commands.add_parser(
        "certify",
        help="certify a dataset with CERTIFY (Cohen et al. 2019); one JSON line per input",
        description="Certify inputs and write one JSON line per input as soon as it is done.",
    )
    p.add_argument(
        "--model",
        default="demo",
        help="'demo', a TorchScript file, or 'package.module:factory' (default: demo)",
    )
    p.add_argument(
        "--data",
        default="digits",
        help="'digits', 'fashion-mnist', an IDX directory or an .npz file with x, y",
    )
    p.add_argument(
        "--smoothing",
        default="gaussian",
        help="registered smoothing: gaussian, laplace, uniform, exp_inf, anisotropic_gaussian, "
        "... (see rs-plugin plugins)",
    )
    p.add_argument(
        "--certifier",
        default="cohen",
        help="registered certifier: cohen (fixed n), sequential (staged n, needs --radius or "
        "--tolerance), ddrs or ancer (sigma chosen per input, certified through a memory; inputs "
        "in index order) (default: cohen)",
    )
    p.add_argument(
        "--radius",
        type=float,
        default=None,
        help="sequential decision mode: stop as soon as 'certified at this radius?' is decided",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="sequential radius mode: stop when more samples would add at most this radius",
    )
    p.add_argument(
        "--sigma",
        type=float,
        default=0.25,
        help="noise level, in input units or, for a semantic transform, in its parameter's "
        "units: degrees, pixels, scale factor, intensity (default 0.25)",
    )
    p.add_argument(
        "--semantics",
        choices=("parametric", "input"),
        default=None,
        help="semantic transforms: certify the transform's parameters around the clean input "
        "(parametric, default) or the image the model receives (input; exact for brightness, "
        "contrast and Fourier translation, a grid certificate for rotation and scaling)",
    )
    p.add_argument(
        "--smoothing-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="further keyword of the smoothing, repeatable, e.g. additive_sigma=0.25, "
        "input_range=30, grid_step=0.5, noise=uniform, interpolation=nearest, padding=border",
    )
    p.add_argument("--n0", type=int, default=100, help="selection samples (default 100)")
    p.add_argument("-n", "--n", type=int, default=10_000, help="estimation samples")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability")
    p.add_argument("--batch-size", type=int, default=1000, help="samples per forward pass")
    p.add_argument("--limit", type=int, default=None, help="certify only the first K inputs")
    p.add_argument("--seed", type=int, default=0, help="seed of all noise (default 0)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument(
        "--precision",
        default="float32",
        help="float32, bfloat16 or float16: autocast for the votes (certifies the "
        "reduced-precision classifier; default float32)",
    )
    p.add_argument(
        "--channels-last", action="store_true", help="count votes in channels-last layout"
    )
    p.add_argument("--compile", action="store_true", help="count votes with torch.compile(model)")
    p.add_argument("--out", default="results.jsonl", help="JSON Lines output file")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an existing --out file, skipping indices already in it",
    )
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local (in-process, default) or ray (shards across Ray actors)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Ray actors, one per GPU or CPU slot (default: GPUs if any, else CPUs)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="address of an existing Ray cluster (default: start one locally)",
    )


def build_parser() -> argparse.ArgumentParser:
    from rs_plugin._audit_cli import add_audit_parser
    from rs_plugin._bench import add_bench_parser

    parser = argparse.ArgumentParser(
        prog="rs-plugin",
        description="Randomized smoothing: certify, audit, benchmark, list plugins.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_certify_parser(commands)
    add_audit_parser(commands)
    add_bench_parser(commands)
    commands.add_parser("plugins", help="list installed smoothings, attacks and certifiers")
    return parser


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
    if is_stateful(job.certifier) and (args.engine == "ray" or args.resume):
        raise RSValueError(
            "--certifier",
            "cohen with --engine ray or --resume (a memory certifier must see every input, in "
            "order, in one process)",
            f"{args.certifier} with {'--engine ray' if args.engine == 'ray' else '--resume'}",
        )
    smoothed, x, y = job.load()
    smoothing = smoothed.smoothing
    with ResultStore(args.out, job.config(smoothed), resume=args.resume) as store:
        todo = [i for i in range(len(y)) if i not in store.done()]
        started = time.perf_counter()
        if args.engine == "ray":
            from rs_plugin.adapters.ray import certify_on_ray

            certify_on_ray(
                job,
                todo,
                store.append,
                workers=workers,
                address=args.ray_address,
                progress=sys.stderr.isatty(),
            )
        else:
            _certify_here(job, smoothed, x, y, todo, store)
        elapsed = time.perf_counter() - started
        records = [store.records[i] for i in sorted(store.records)]
    sigma = float(getattr(smoothing, "sigma", 1.0))
    summary = summarize(records, [k * sigma for k in (0, 0.5, 1, 2, 3, 4)])
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
    print(format_summary(summary, smoothing.norm))
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "certify":
            return certify_command(args)
        if args.command == "audit":
            from rs_plugin._audit_cli import audit_command

            return audit_command(args)
        if args.command == "bench":
            from rs_plugin._bench import bench_command

            return bench_command(args)
        print(format_plugins())
        return 0
    except RSValueError as error:
        print(f"rs-plugin {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"rs-plugin {args.command}: interrupted; every finished record is saved",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
