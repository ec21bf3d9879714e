"""``rs-plugin audit``: certify (or read certificates), attack every certificate, write the report.

Exit status: 0 when the certificates hold, 1 when they are significantly violated (so the
command can gate CI), 2 for bad input (nothing is attacked).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from rs_plugin._validation import RSValueError
from rs_plugin.auditing.progress import Progress
from rs_plugin.auditing.results import CertificateSet
from rs_plugin.auditing.runner import Audit
from rs_plugin.certification.model_runner import threads_for_load, torch_threads
from rs_plugin.cli.arguments import AUDIT_DEFAULTS
from rs_plugin.cli.job import (
    CertifyJob,
    iter_records,
    model_fingerprint,
    parse_smoothing_params,
    resolve_device,
)
from rs_plugin.cli.store import ResultStore

__all__ = ["audit_command"]

# Smoothing config entries that are descriptions, not constructor keywords.
_DESCRIPTIVE = ("name", "sigma", "units")


def _read_records(path: str) -> list[dict[str, Any]]:
    file = Path(path)
    if not file.is_file():
        raise RSValueError("--certificates", "an existing JSON Lines file", path)
    records = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise RSValueError(
                "--certificates", "JSON Lines", f"{path} line {number}: {error}"
            ) from error
    return records


def _setting(args: argparse.Namespace, key: str, stored: Any) -> Any:
    """The option's value: the file's when it has one (a different explicit flag is an error)."""
    given = getattr(args, key)
    if stored is None:
        return AUDIT_DEFAULTS.get(key) if given is None else given
    if given is not None and given != stored:
        raise RSValueError(
            f"--{key}",
            f"the certificate file's {key} ({stored!r}) or no --{key}",
            given,
        )
    return stored


def _job(args: argparse.Namespace, records: list[dict[str, Any]] | None) -> CertifyJob:
    first = records[0] if records else {}
    if first.get("certifier") in ("ddrs", "ancer"):
        # Their smoothed classifier has a different sigma per input: PREDICT with one smoothing
        # would check another classifier than the one certified.
        raise RSValueError(
            "--certificates",
            "certificates of one smoothed classifier (certifier cohen or sequential)",
            f"certifier {first['certifier']}",
        )
    limit = args.limit if records is None or args.limit is not None else None
    if records is None and limit is None:
        limit = 100
    if records is not None and limit is None:
        limit = max(int(r.get("index", 0)) for r in records) + 1
    stored = first.get("smoothing") if isinstance(first.get("smoothing"), dict) else None
    params = parse_smoothing_params(args.smoothing_param)
    semantics = args.semantics
    if stored is not None:
        if params or semantics is not None:
            raise RSValueError(
                "--smoothing-param/--semantics",
                "none with a certificate file that records its smoothing",
                [*args.smoothing_param, semantics],
            )
        params = tuple((k, v) for k, v in stored.items() if k not in (*_DESCRIPTIVE, "semantics"))
        if stored.get("semantics") in ("parametric", "input"):
            semantics = stored["semantics"]
    return CertifyJob(
        model=_setting(args, "model", first.get("model")),
        data=_setting(args, "data", first.get("data")),
        smoothing=_setting(args, "smoothing", None if stored is None else stored["name"]),
        sigma=_setting(args, "sigma", None if stored is None else stored.get("sigma")),
        semantics=semantics,
        smoothing_params=params,
        n0=args.n0,
        n=args.n,
        alpha=args.alpha,
        batch_size=args.batch_size,
        seed=args.seed,
        limit=limit,
        device=resolve_device(args.device),
    )


def audit_command(args: argparse.Namespace) -> int:
    threads = _threads(args.threads)
    print(
        f"audit: {threads} torch thread(s) on {os.cpu_count()} cores "
        f"(load average {os.getloadavg()[0]:.2f})",
        file=sys.stderr,
        flush=True,
    )
    with torch_threads(threads):
        return _audit(args)


def _threads(value: str) -> int:
    if value == "auto":
        return threads_for_load()
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise RSValueError("--threads", "auto or an integer >= 1", value)
    return count


def _audit(args: argparse.Namespace) -> int:
    records = None if args.certificates is None else _read_records(args.certificates)
    if records is not None and args.limit is not None:
        records = [r for r in records if int(r.get("index", 0)) < args.limit]
    job = _job(args, records)
    try:
        budgets = [float(b) for b in args.budgets.split(",") if b.strip()]
    except ValueError as error:
        raise RSValueError("--budgets", "comma-separated numbers > 0", args.budgets) from error
    attacks = (
        None if args.attacks is None else [a.strip() for a in args.attacks.split(",") if a.strip()]
    )
    certifier, x, y = job.load()
    model, smoothing = certifier.model, certifier.smoothing
    num_classes = int(getattr(certifier, "num_classes", 0)) or int(y.max()) + 1
    runner = Audit(
        model,
        smoothing,
        num_classes,
        attacks=attacks,
        budgets=budgets,
        predict_n=args.predict_n,
        predict_alpha=args.predict_alpha,
        significance=args.significance,
        num_noise_samples=args.noise_samples,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=True,
    )
    out = Path(args.out)
    if records is None:
        records = _certify(job, certifier, x, y, out / "certificates.jsonl")
        source = str(out / "certificates.jsonl")
    else:
        source = args.certificates
        _check_model(records, model, source)
    certificates = CertificateSet.from_records(records, norm=smoothing.norm, source=source)
    index = certificates.index
    if int(index.max()) >= len(y) or int(index.min()) < 0:
        raise RSValueError(
            "--certificates",
            f"indices of inputs of --data {job.data} within --limit ({len(y)} inputs)",
            f"indices up to {int(index.max())}",
        )
    report = runner.run(x[index], y[index], certificates)
    report.settings.update(model=job.model, data=job.data, certificates=source)
    paths = report.write(out)
    print(report.verdict["summary"])
    print("report: " + ", ".join(str(p) for p in paths))
    return 1 if report.violated else 0


def _check_model(records: list[dict[str, Any]], model: torch.nn.Module, source: str) -> None:
    stored = records[0].get("model_sha256")
    if stored is not None and stored != model_fingerprint(model):
        raise RSValueError(
            "--model",
            f"the model the certificates were computed for (sha256 {stored})",
            f"a model with sha256 {model_fingerprint(model)} ({source})",
        )


def _certify(
    job: CertifyJob, certifier: Any, x: torch.Tensor, y: torch.Tensor, path: Path
) -> list[dict[str, Any]]:
    """Certify into ``path`` (resuming a file of the same configuration, never overwriting)."""
    with ResultStore(path, job.config(certifier), resume=True) as store:
        todo = [i for i in range(len(y)) if i not in store.done()]
        with Progress("certify", len(todo), "input") as progress:
            for record in iter_records(job, certifier, x, y, todo):
                store.append(record)
                progress.update(1)
        return [store.records[i] for i in sorted(store.records)]
