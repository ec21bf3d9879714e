"""``rs-plugin audit``: certify (or read certificates), attack every certificate, write the report.

A certificate file is data: it never chooses code to run. The model is the one named by
``--model`` (the file's own ``model`` field is used only when it is the embedded ``demo``), and
every record's model and data fingerprints and run configuration are checked against it before
anything is attacked.

Exit status: 0 when the certificates hold, 1 when they are significantly violated (so the
command can gate CI), 2 for bad input (nothing is attacked).
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import Any

import torch

from rs_plugin._registry import discover, is_builtin, load_plugin, scale_keyword
from rs_plugin._validation import RSValueError, import_extra
from rs_plugin.auditing.fp_probe import probe_floating_point
from rs_plugin.auditing.plausibility import (
    check_record,
    impossible_certificates,
    record_smoothing,
    record_validator,
)
from rs_plugin.auditing.progress import Progress
from rs_plugin.auditing.report import FILES
from rs_plugin.auditing.results import CertificateSet
from rs_plugin.auditing.runner import Audit
from rs_plugin.certification.threads import torch_threads
from rs_plugin.cli.arguments import AUDIT_DEFAULTS
from rs_plugin.cli.failures import RunFailed, kept_on_failure
from rs_plugin.cli.flags import parse_smoothing_params
from rs_plugin.cli.linescan import scan_json_lines
from rs_plugin.cli.models import load_denoiser_for, load_model_for
from rs_plugin.cli.outputs import check_report_folder
from rs_plugin.cli.store import ResultStore, read_json_lines
from rs_plugin.cli.threads import Threads, announce_threads, parse_threads
from rs_plugin.data import is_labeled
from rs_plugin.runs import (
    CertifyJob,
    iter_records,
    load_certifier,
    model_fingerprint,
    resolve_device,
)

__all__ = ["audit_command"]

# Smoothing config entries that are descriptions, not constructor keywords.
_DESCRIPTIVE = ("name", "sigma", "units", "sound_fp")


# The fields of a record that describe the run it belongs to: equal in every record of a file.
_RUN_FIELDS = (
    "model",
    "denoiser",
    "model_sha256",
    "data_sha256",
    "smoothing",
    "sigma",
    "certifier",
    "decision_radius",
    "tolerance",
    "precision",
    "n0",
    "n",
    "n_max",
    "alpha",
    "seed",
    "norm",
    "semantics",
)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_records(path: str) -> list[dict[str, Any]]:
    """The file's records, each checked, all of one run (a record cut short is not read)."""
    file = Path(path)
    if not file.is_file():
        raise RSValueError("--certificates", "an existing JSON Lines file", path)
    scan_json_lines(file, "--certificates")  # memory bounded by a line until the file is sane
    numbered = read_json_lines(file, "--certificates").records
    if not numbered:
        raise RSValueError(
            "--certificates", "a JSON Lines file with at least one record", f"{path}, with none"
        )
    first_number, first = numbered[0]
    for number, record in numbered:
        _check_record(record, f"{path} line {number}")
        # A run that stops early records each input's own sample size `n` (its budget: n_max).
        fields = [k for k in _RUN_FIELDS if not (k == "n" and "n_max" in first)]
        differ = {
            key: (first.get(key), record.get(key))
            for key in fields
            if first.get(key) != record.get(key)
        }
        if differ:
            shown = "; ".join(f"{k}: {a!r} then {b!r}" for k, (a, b) in differ.items())
            raise RSValueError(
                "--certificates",
                "records of one run (the same configuration on every line)",
                f"{path} lines {first_number} and {number} differ in {shown}",
            )
    return [record for _, record in numbered]


def _check_record(record: dict[str, Any], where: str) -> None:
    check_record(record, where)


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


def _named_by_user(group: str, name: str, given: str | None, flag: str, source: str) -> None:
    """A file may select a built-in plugin; a third-party one is imported only when the user
    names it on the command line (a file is data and never chooses code to run)."""
    if given != name and name in discover(group) and not is_builtin(group, name):
        raise RSValueError(
            flag,
            f"{flag} {name} to load the third-party plugin the file names (a certificate file "
            "is data and never chooses code to run)",
            f"{'no ' + flag if given is None else flag + ' ' + given}, and {source} names {name!r}",
        )


def _job(args: argparse.Namespace, records: list[dict[str, Any]] | None) -> CertifyJob:
    first = records[0] if records else {}
    certifier = first.get("certifier")
    if isinstance(certifier, str):
        _named_by_user(
            "rs_plugin.certifiers", certifier, args.certifier, "--certifier", args.certificates
        )
    elif args.certifier is not None:
        raise RSValueError(
            "--certifier",
            "--certifier only with a --certificates file that names its certifier",
            args.certifier,
        )
    if isinstance(certifier, str) and load_certifier(certifier).stateful:
        # A stateful certifier's smoothed classifier differs per input (a σ per input, a
        # memory): PREDICT with one smoothing would check another classifier than the one
        # certified.
        raise RSValueError(
            "--certificates",
            "certificates of one smoothed classifier (a stateless certifier)",
            f"certifier {first['certifier']}, which is stateful",
        )
    limit = args.limit if records is None or args.limit is not None else None
    if records is None and limit is None:
        limit = 100
    if records is not None and limit is None:
        limit = max(int(r.get("index", 0)) for r in records) + 1
    stored = record_smoothing(first, f"{args.certificates} line 1") if records else None
    if records is not None and args.model is None and first.get("model", "demo") != "demo":
        raise RSValueError(
            "--model",
            "the model named on the command line: a certificate file is data and never chooses "
            f"code to run (pass --model {first['model']} to load the model the file names)",
            f"no --model, and {args.certificates} names {first['model']!r}",
        )
    if records is not None and first.get("denoiser") != args.denoiser:
        stored_denoiser = first.get("denoiser")
        raise RSValueError(
            "--denoiser",
            f"the denoiser the certificates were computed with (--denoiser {stored_denoiser})"
            if stored_denoiser is not None
            else "no --denoiser: the certificates were computed without one",
            f"--denoiser {args.denoiser} for {args.certificates}",
        )
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
    # The hashes check a named model and data by content (the same file may be named by a
    # relative or an absolute path); names are compared only where a file has no hash.
    model = args.model if args.model is not None else str(AUDIT_DEFAULTS["model"])
    if "data_sha256" in first and args.data is not None:
        data = args.data
    else:
        data = _setting(args, "data", first.get("data"))
    smoothing = _setting(args, "smoothing", None if stored is None else stored["name"])
    if stored is not None:
        _named_by_user(
            "rs_plugin.smoothings", smoothing, args.smoothing, "--smoothing", args.certificates
        )
    sigma = _setting(args, "sigma", None if stored is None else stored.get("sigma"))
    keyword = scale_keyword(load_plugin("rs_plugin.smoothings", smoothing, "smoothing"))
    if keyword != "sigma" and stored is not None and "sigma" in stored:
        # A transform's file stores its scale as "sigma"; the smoothing takes it by its keyword
        # (an explicit --sigma is refused by the job, with the keyword to use).
        params = ((keyword, stored["sigma"]), *params)
        sigma = args.sigma
    return CertifyJob(
        model=model,
        data=data,
        smoothing=smoothing,
        sigma=sigma,
        semantics=semantics,
        smoothing_params=params,
        n0=args.n0,
        n=args.n,
        alpha=args.alpha,
        batch_size=args.batch_size,
        seed=args.seed,
        limit=limit,
        device=resolve_device(args.device),
        model_loader=partial(load_model_for, weights=args.weights),
        denoiser=args.denoiser,
        denoiser_loader=load_denoiser_for,
    )


def audit_command(args: argparse.Namespace) -> int:
    threads = parse_threads(args.threads)
    with torch_threads(threads.number):
        return _audit(args, threads)


def _audit(args: argparse.Namespace, threads: Threads) -> int:
    import_extra("matplotlib", "plots", "the audit report's plots")  # before any work starts
    check_report_folder(args.out, (*FILES, "certificates.jsonl"))
    if args.certificates is not None:
        written = [Path(args.out) / name for name in (*FILES, "certificates.jsonl")]
        given = Path(args.certificates)
        if any(path.exists() and path.samefile(given) for path in written):
            raise RSValueError(
                "--out",
                "a folder whose report files are not the --certificates file (the report "
                "would overwrite it)",
                f"{args.out}, holding {args.certificates}",
            )
    records = None if args.certificates is None else _read_records(args.certificates)
    if records is not None and args.limit is not None:
        records = [r for r in records if int(r.get("index", 0)) < args.limit]
        if not records:
            raise RSValueError(
                "--limit",
                "a limit that keeps at least one record of --certificates (records with index "
                "below it)",
                args.limit,
            )
    job = _job(args, records)
    try:
        budgets = [float(b) for b in args.budgets.split(",") if b.strip()]
    except ValueError as error:
        raise RSValueError("--budgets", "comma-separated numbers > 0", args.budgets) from error
    attacks = (
        None if args.attacks is None else [a.strip() for a in args.attacks.split(",") if a.strip()]
    )
    certifier, x, y, data_sha256, all_labels = job.load()
    if not is_labeled(y):
        raise RSValueError(
            "--data",
            "labelled inputs: the audit attacks the inputs without a certificate away from "
            "their true class and reports accuracy under attack (certify unlabelled inputs "
            "with rs-plugin certify: its records hold predictions and radii)",
            f"{job.data}, without labels",
        )
    model, smoothing = certifier.model, certifier.smoothing
    num_classes = certifier.num_classes
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
        announce_threads("audit", threads)
        records = _certify(
            job, certifier, x, y, data_sha256, all_labels, out / "certificates.jsonl"
        )
        # The folder's file may hold inputs of an earlier run with a larger --limit: kept in
        # it, not audited now.
        records = [r for r in records if int(r["index"]) < len(y)]
        source = str(out / "certificates.jsonl")
    else:
        source = args.certificates
        _check_fingerprints(records[0], model, data_sha256, job, source)
    certificates = CertificateSet.from_records(records, norm=smoothing.norm, source=source)
    if certificates.semantics != smoothing.semantics_label:
        # The semantics decides what the attacks perturb (pixels or the transformation's
        # parameters): a file claiming another one would be audited in the wrong space.
        raise RSValueError(
            "--certificates",
            f"certificates in the semantics of their smoothing ({smoothing.semantics_label!r})",
            f"semantics {certificates.semantics!r} ({source})",
        )
    stored = records[0].get("smoothing")  # a description (dict) or, in older files, a name
    claimed = isinstance(stored, dict) and stored.get("sound_fp") is True
    sound = bool(getattr(smoothing, "sound_fp", False))
    if claimed and not sound:
        # The mode is the smoothing's: a file claiming the sound mode for a float-mode
        # smoothing would be reported as what it is not.
        raise RSValueError(
            "--certificates",
            "a smoothing description whose sound_fp is that of the smoothing it names",
            f"sound_fp true for {smoothing!r}, a float-mode smoothing ({source})",
        )
    impossible = impossible_certificates(
        records, smoothing=smoothing, num_classes=num_classes, dim=int(x[0].numel())
    )
    index = certificates.index
    if int(index.max()) >= len(y) or int(index.min()) < 0:
        raise RSValueError(
            "--certificates",
            f"indices of inputs of --data {job.data} within --limit ({len(y)} inputs)",
            f"indices up to {int(index.max())}",
        )
    if args.certificates is not None:
        announce_threads("audit", threads)
    try:
        report = runner.run(x[index], y[index], certificates, impossible=impossible)
    except (RSValueError, ImportError, KeyboardInterrupt):
        raise
    except Exception as error:  # the model raised under attack: one line, nothing lost
        first = str(error).strip().splitlines()
        raise RunFailed(
            f"the model raised {type(error).__name__}: {first[0] if first else ''} during the "
            f"audit's attacks; the certificates in {source} are kept; fix the model and run the "
            "same command again"
        ) from error
    report.settings.update(model=job.model, data=job.data, certificates=source)
    if job.denoiser is not None:
        report.settings["denoiser"] = job.denoiser
    if args.probe_fp:
        probe = probe_floating_point(model, smoothing, x[index], seed=args.seed)
        report.settings["fp_probe"] = probe.to_dict()
        finding = probe.diagnostic()
        if finding is not None:
            report.diagnostics.append(finding)
    paths = report.write(out)
    print(f"{source}: certificates issued in the {'sound' if sound else 'float'} mode")
    print(report.verdict["summary"])
    print("report: " + ", ".join(str(p) for p in paths))
    return 1 if report.violated else 0


def _check_fingerprints(
    first: dict[str, Any], model: torch.nn.Module, data_sha256: str, job: CertifyJob, source: str
) -> None:
    """The named model and data against the file's (every record has the first's, see
    :func:`_read_records`)."""
    stored = first.get("model_sha256")
    if stored is not None and stored != model_fingerprint(model):
        raise RSValueError(
            "--model",
            f"the model the certificates were computed for (sha256 {stored})",
            f"--model {job.model} with sha256 {model_fingerprint(model)} ({source})",
        )
    stored = first.get("data_sha256")
    if stored is not None and stored != data_sha256:
        raise RSValueError(
            "--data",
            f"the data the certificates were computed on (sha256 {stored})",
            f"--data {job.data} with sha256 {data_sha256} ({source})",
        )


def _certify(
    job: CertifyJob,
    certifier: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    data_sha256: str,
    all_labels: list[int],
    path: Path,
) -> list[dict[str, Any]]:
    """Certify into ``path`` (resuming a file of the same configuration, never overwriting);
    its stored records are checked against ``all_labels``, the whole dataset's."""
    config = job.config(certifier, data_sha256)
    mismatch = (
        "--out",
        f"a folder whose {path.name} was certified with the same settings (it is reused), or "
        "a new --out folder",
    )
    validate = record_validator(
        smoothing=certifier.smoothing,
        num_classes=int(certifier.num_classes),
        dim=int(x[0].numel()),
        cap=True,
        path=path,
        labels=all_labels,
    )
    with ResultStore(
        path,
        config,
        resume=True,
        provenance=job.provenance(),
        mismatch=mismatch,
        validate=validate,
    ) as store:
        done = store.done()
        todo = [i for i in range(len(y)) if i not in done]
        rerun = "run the same command again (it certifies only the inputs not yet in the file)"
        with (
            kept_on_failure(str(path), lambda: len(store.records), todo, store.done, rerun=rerun),
            Progress("certify", len(todo), "input") as progress,
        ):
            for record in iter_records(job, certifier, x, y, todo):
                store.append(record)
                progress.update(1)
        return [store.records[i] for i in sorted(store.records)]
