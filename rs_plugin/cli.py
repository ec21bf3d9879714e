"""The ``rs-plugin`` command: ``certify``, ``bench`` and ``plugins``."""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from rs_plugin._classifier import SmoothedClassifier
from rs_plugin._registry import format_plugins, load_smoothing
from rs_plugin._store import ResultStore
from rs_plugin._summary import format_summary, summarize
from rs_plugin._validation import RSValueError, check_int, check_open_unit, check_positive

__all__ = ["main"]

# Inputs handed to the engine at once: enough for batches to mix inputs, bounded in memory.
_CHUNK = 512


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
    p.add_argument("--smoothing", default="gaussian", help="registered smoothing name")
    p.add_argument("--sigma", type=float, default=0.25, help="noise level (default 0.25)")
    p.add_argument("--n0", type=int, default=100, help="selection samples (default 100)")
    p.add_argument("-n", "--n", type=int, default=10_000, help="estimation samples")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability")
    p.add_argument("--batch-size", type=int, default=1000, help="samples per forward pass")
    p.add_argument("--limit", type=int, default=None, help="certify only the first K inputs")
    p.add_argument("--seed", type=int, default=0, help="seed of all noise (default 0)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--out", default="results.jsonl", help="JSON Lines output file")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an existing --out file, skipping indices already in it",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rs-plugin", description="Randomized smoothing: certify, benchmark, list plugins."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_certify_parser(commands)
    from rs_plugin._bench import add_bench_parser

    add_bench_parser(commands)
    commands.add_parser("plugins", help="list installed smoothings and certifiers")
    return parser


def _resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise RSValueError("--device", "'cpu', 'cuda' or 'cuda:K'", name)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RSValueError("--device", "a device present on this machine (no CUDA here)", name)
    return torch.device(name)


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 over the model's parameters and buffers (names, shapes, values)."""
    digest = hashlib.sha256()
    for name, tensor in list(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def certify_command(args: argparse.Namespace) -> int:
    from rs_plugin.data import load_dataset, load_model

    # Every parameter is checked before anything is loaded or sampled.
    check_positive("--sigma", args.sigma)
    smoothing = load_smoothing(args.smoothing, sigma=args.sigma)
    n0 = check_int("--n0", args.n0, 1)
    n = check_int("-n", args.n, 1)
    alpha = check_open_unit("--alpha", args.alpha)
    batch_size = check_int("--batch-size", args.batch_size, 1)
    seed = check_int("--seed", args.seed, 0)
    limit = None if args.limit is None else check_int("--limit", args.limit, 1)
    device = _resolve_device(args.device)

    model = load_model(args.model).to(device)
    x, y = load_dataset(args.data, "test")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    with torch.inference_mode():
        try:
            num_classes = int(model(x[:1].to(device)).shape[1])
        except RuntimeError as error:
            raise RSValueError(
                "--data",
                f"inputs of the shape --model {args.model} accepts",
                f"{args.data} with inputs of shape {tuple(x.shape[1:])}",
            ) from error
    if int(y.max()) >= num_classes:
        raise RSValueError(
            "--data",
            f"labels below the model's {num_classes} classes",
            f"labels up to {int(y.max())}",
        )
    smoothed = SmoothedClassifier(model, smoothing, num_classes, clip_values=(0.0, 1.0))
    config = {
        "model": args.model,
        "model_sha256": model_fingerprint(model),
        "data": args.data,
        "smoothing": smoothing.config(),
        "n0": n0,
        "n": n,
        "alpha": alpha,
        "seed": seed,
    }
    with ResultStore(args.out, config, resume=args.resume) as store:
        todo = [i for i in range(len(y)) if i not in store.done()]
        started = time.perf_counter()
        _certify_into(
            store, smoothed, x, y, todo, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed
        )
        elapsed = time.perf_counter() - started
        records = [store.records[i] for i in sorted(store.records)]
    sigma = float(getattr(smoothing, "sigma", 1.0))
    summary = summarize(records, [k * sigma for k in (0, 0.5, 1, 2, 3, 4)])
    if todo:
        summary["samples_per_second"] = len(todo) * (n0 + n) / max(elapsed, 1e-9)
    print(
        f"{args.out}: {smoothing!r}, n0={n0}, n={n}, alpha={alpha}, seed={seed}, "
        f"{len(todo)} certified now, {len(records) - len(todo)} resumed"
    )
    print(format_summary(summary, smoothing.norm))
    return 0


def _certify_into(
    store: ResultStore,
    smoothed: SmoothedClassifier,
    x: torch.Tensor,
    y: torch.Tensor,
    todo: Sequence[int],
    **certify_args: Any,
) -> None:
    from tqdm import tqdm

    with tqdm(
        total=len(todo), unit="input", disable=not sys.stderr.isatty(), desc="certify"
    ) as bar:
        for start in range(0, len(todo), _CHUNK):
            chunk = list(todo[start : start + _CHUNK])
            last = time.perf_counter()
            for part in smoothed.iter_certify(x[chunk], keys=chunk, **certify_args):
                now = time.perf_counter()
                seconds = (now - last) / len(part)
                last = now
                for record in part.to_records():
                    label = int(y[record["index"]])
                    record.update(
                        label=label, correct=record["prediction"] == label, seconds=seconds
                    )
                    store.append(record)
                bar.update(len(part))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "certify":
            return certify_command(args)
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
