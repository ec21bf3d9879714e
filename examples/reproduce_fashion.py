"""Reproduce a row of the published Fashion-MNIST table: train, certify, compare.

Trains the papers' LeNet (:func:`rs_plugin.data.build_lenet`) on Fashion-MNIST with one
certified-training method at one σ under the papers' recipe (:func:`published_recipe`: SGD,
momentum 0.9, weight decay 1e-4, batch 256, lr 0.01 ÷ 10 at one third and two thirds of the
epochs; 90 epochs, the published runs' training logs), then certifies it and writes the table row
beside the published one (Jeong, Kim & Shin 2023, Fashion-MNIST, LeNet, all 10 000 test images,
CERTIFY n0 = 100, N = 100 000, α = 0.001).

Certification protocol (every phase a resumable ``rs-plugin certify`` run, one JSON Lines file):

- certified accuracy at each published radius on the first ``--test-size`` test images (default
  all 10 000) with the anytime certifier in decision mode at budget N = 100 000, one pass per
  radius (``certify/anytime_r<r>.jsonl``);
- fixed N = 100 000 CERTIFY on the first ``--acr-size`` images (default 1 000,
  ``certify/cohen.jsonl``): the ACR with a 95 % interval (normal approximation over the
  per-image radii, wrong or abstained images counted 0), and the check of the anytime decisions
  against fixed N on the first ``--check-size`` (default 500) of them;
- the CPU time of every phase and the projected cost of fixed N on all test images (CERTIFY's
  measured samples per CPU second × 10 000 × (n0 + N));
- with ``--published-log`` (the reference's per-image log of the row), the published figures on
  exactly the images certified here and the paired comparison (images only one run certifies,
  exact McNemar p).

Training and certification run the convolutions in the channels-last memory format unless
``--no-channels-last`` (faster on CPUs; the rounding differs, the model does not).

Everything is resumable: training writes ``checkpoint.pt`` after every epoch (model, optimiser,
scheduler, both generators, epoch; atomically) and resumes from it when rerun with the same
arguments (a checkpoint of other arguments is refused); certification resumes its files,
``--slice`` images per run (a kill loses at most one slice's work).
Writes ``table.md`` and ``table.json`` into ``--workdir``. ``--weights`` certifies given LeNet
weights instead of training (the shipped models, say; ``--stage certify``).

    python examples/reproduce_fashion.py --method gaussian --sigma 0.25 --workdir out/g025
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import pickle
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

try:  # locks the CPU-time file where the platform has fcntl (phases may run in parallel)
    import fcntl
except ImportError:  # pragma: no cover - not on Linux or macOS
    fcntl = None  # type: ignore[assignment]

from rs_plugin import Gaussian, RSValueError
from rs_plugin.data import FASHION_MNIST_DIR, build_lenet, load_idx
from rs_plugin.training import (
    MACER,
    Consistency,
    NoiseAugmentation,
    Objective,
    SmoothAdv,
    published_recipe,
)
from rs_plugin.training.resumable import load_checkpoint, train_resumable

METHODS = ("gaussian", "consistency", "catrs", "smoothadv", "macer")
NAMES = {
    "gaussian": "Gaussian",
    "consistency": "Consistency",
    "catrs": "CAT-RS",
    "smoothadv": "SmoothAdv",
    "macer": "MACER",
}
# Jeong, Kim & Shin 2023, Fashion-MNIST, LeNet, all 10 000 test images: ACR and certified accuracy
# at each radius, computed from the reference's per-image certification logs
# (alinlab/smoothing-catrs, data/fmnist/noise_<σ>/<method>/*.tsv; the ACR and r = 0.5 columns are
# the paper's table; Consistency at σ = 0.5 is in the logs, not in that table).
PUBLISHED: dict[tuple[str, float], dict[str, Any]] = {
    ("gaussian", 0.25): {"acr": 0.670, "certified": {"0.25": 0.820, "0.5": 0.708, "0.75": 0.577}},
    ("consistency", 0.25): {
        "acr": 0.744, "certified": {"0.25": 0.847, "0.5": 0.788, "0.75": 0.712}
    },
    ("catrs", 0.25): {"acr": 0.757, "certified": {"0.25": 0.835, "0.5": 0.796, "0.75": 0.752}},
    ("gaussian", 0.5): {"acr": 1.056, "certified": {"0.5": 0.732, "1": 0.555, "1.5": 0.350}},
    ("consistency", 0.5): {"acr": 1.212, "certified": {"0.5": 0.764, "1": 0.652, "1.5": 0.493}},
    ("macer", 0.5): {"acr": 1.183, "certified": {"0.5": 0.759, "1": 0.642, "1.5": 0.477}},
    ("smoothadv", 0.5): {"acr": 1.255, "certified": {"0.5": 0.765, "1": 0.667, "1.5": 0.545}},
    ("catrs", 0.5): {"acr": 1.274, "certified": {"0.5": 0.762, "1": 0.678, "1.5": 0.567}},
}  # fmt: skip
# The columns a published per-image log (--published-log) must have.
LOG_COLUMNS = ("idx", "label", "radius", "correct")
RADII = {0.25: (0.25, 0.5, 0.75), 0.5: (0.5, 1.0, 1.5)}
# Noise draws per input m where the method takes several (the papers' values).
NOISE_DRAWS = {"gaussian": 1, "consistency": 2, "catrs": 4, "smoothadv": 4, "macer": 16}
N0, N, ALPHA = 100, 100_000, 0.001
_CLIP = (0.0, 1.0)


def objective_for(
    method: str,
    sigma: float,
    *,
    epochs: int,
    noise_draws: int,
    teacher: nn.Module | None = None,
) -> Objective:
    """The method's objective with Gaussian(σ) noise and the papers' hyperparameters.

    Consistency: λ = 10 at σ = 0.25 and 5 above, η = 0.5 (Jeong & Shin 2020, MNIST); SmoothAdv:
    PGD ε = 1.0, T = 10 steps, ε warmed up over the first ninth of the epochs (10 of 90; Salman
    et al. 2019); MACER: β = 16, γ = 8, λ = 16 (Zhai et al. 2020, MNIST); CAT-RS: ε = 1.0,
    T = 4, λ = 0.5 at σ = 0.25 and 1.0 at σ = 0.5 (Jeong, Kim & Shin 2023), its KL target the
    smoothed prediction of ``teacher`` (the paper's code: a Gaussian-trained model's) or,
    without one, the model's own. ``noise_draws`` is m.
    """
    smoothing = Gaussian(sigma)
    if method == "gaussian":
        return NoiseAugmentation(smoothing)
    if method == "consistency":
        return Consistency(
            smoothing, num_noise_vec=noise_draws, lmbda=10.0 if sigma <= 0.25 else 5.0, eta=0.5
        )
    if method == "smoothadv":
        return SmoothAdv(
            smoothing, epsilon=1.0, num_noise_vec=noise_draws, num_steps=10,
            warmup=max(1, round(epochs / 9)), clip_values=_CLIP,
        )  # fmt: skip
    if method == "macer":
        return MACER(smoothing, beta=16.0, gamma=8.0, lmbda=16.0, num_noise_samples=noise_draws)
    if method == "catrs":
        from rs_plugin.training.catrs import CATRS

        return CATRS(
            smoothing, num_noise_vec=noise_draws, epsilon=1.0, num_steps=4,
            lmbda=0.5 if sigma <= 0.25 else 1.0, teacher=teacher,
        )  # fmt: skip
    raise ValueError(f"--method: one of {METHODS}, got {method!r}")


def load_teacher(args: argparse.Namespace) -> nn.Module | None:
    """The ``--teacher`` model (CAT-RS's KL target), frozen, or None: a TorchScript file, or a
    state dict of the papers' LeNet (a row's model.pt, e.g. the Gaussian row's in
    docs/reproduction/), loaded as tensors only."""
    if args.teacher is None:
        return None
    if args.method != "catrs":
        raise RSValueError("--teacher", "only with --method catrs", args.method)
    accepted = "an existing TorchScript file or LeNet state dict (a row's model.ts or model.pt)"
    if not args.teacher.is_file():
        raise RSValueError("--teacher", accepted, str(args.teacher))
    try:
        scripted = zipfile.is_zipfile(args.teacher)
        if scripted:
            with zipfile.ZipFile(args.teacher) as archive:
                scripted = any("/code/" in name for name in archive.namelist())
        if scripted:
            teacher = torch.jit.load(str(args.teacher), map_location="cpu")
        else:
            teacher = build_lenet(0)
            state = torch.load(args.teacher, map_location="cpu", weights_only=True)
            teacher.load_state_dict(state)
    except (
        OSError,
        RuntimeError,
        KeyError,
        TypeError,
        ValueError,
        pickle.UnpicklingError,
    ) as error:
        raise RSValueError("--teacher", accepted, f"{args.teacher}: {error}") from error
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    if args.channels_last:
        teacher.to(memory_format=torch.channels_last)
    return teacher


def build_objective(args: argparse.Namespace) -> Objective:
    """The objective the arguments name."""
    return objective_for(
        args.method, args.sigma, epochs=args.epochs, noise_draws=args.noise_draws,
        teacher=load_teacher(args),
    )  # fmt: skip


def training_config(args: argparse.Namespace) -> dict[str, Any]:
    """What defines a training run (a checkpoint of another configuration is refused)."""
    recipe = published_recipe(args.epochs)
    objective = build_objective(args)
    config = {
        "model": "LeNet",
        "method": args.method,
        "sigma": args.sigma,
        "train_size": args.train_size,
        "seed": args.seed,
        "recipe": recipe.config(),
        "objective": json.loads(json.dumps(objective.config(), default=str)),
    }
    if args.teacher is not None:
        digest = hashlib.sha256(args.teacher.read_bytes()).hexdigest()[:16]
        config["teacher"] = {"path": str(args.teacher), "sha256": digest}
    return config


def noisy_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float) -> float:
    """Accuracy of the base classifier on one seeded Gaussian draw per image."""
    generator = torch.Generator().manual_seed(12345)
    with torch.inference_mode():
        noisy = x + sigma * torch.randn(x.shape, generator=generator)
        return float((model.eval()(noisy).argmax(1) == y).double().mean())


def train_stage(args: argparse.Namespace) -> Path:
    """Train (or resume) the run in ``--workdir``; returns the TorchScript model's path."""
    config = training_config(args)
    workdir: Path = args.workdir
    checkpoint = workdir / "checkpoint.pt"
    scripted = workdir / "model.ts"
    recipe = published_recipe(args.epochs)
    state = load_checkpoint(checkpoint, config)
    if state is not None and int(state["epoch"]) >= recipe.epochs and scripted.exists():
        return scripted
    x, y = load_idx(args.data_dir, "train")
    x, y = x[: args.train_size], y[: args.train_size]
    x_test, y_test = load_idx(args.data_dir, "test")
    x_test, y_test = x_test[:1000], y_test[:1000]
    objective = build_objective(args)
    model: nn.Module = build_lenet(args.seed)
    if args.channels_last:  # an execution setting, like the thread count: not in the config
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def report(net: nn.Module, epoch: int) -> dict[str, Any]:
        accuracy = noisy_accuracy(net, x_test, y_test, args.sigma)
        print(f"epoch {epoch + 1}/{recipe.epochs}: noisy test accuracy {accuracy:.4f}", flush=True)
        return {"noisy_test_accuracy_1000": accuracy}

    model, log = train_resumable(
        model, objective, x, y, recipe=recipe, checkpoint=checkpoint, config=config,
        seed=args.seed, on_epoch=report,
    )  # fmt: skip
    # Written whole or not at all: a complete checkpoint with a model.ts means training is done.
    # In the default layout, whatever layout trained it (the certifier chooses its own).
    model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    torch.save(model.state_dict(), workdir / "model.pt.tmp")
    (workdir / "model.pt.tmp").replace(workdir / "model.pt")
    torch.jit.script(model).save(str(workdir / "model.ts.tmp"))
    (workdir / "model.ts.tmp").replace(scripted)
    _write_json(workdir / "training.json", {"config": config, "epochs": log})
    return scripted


def adopt_weights(weights: Path, workdir: Path) -> None:
    """Make ``weights`` (a LeNet state dict) the work folder's model.pt and model.ts, each
    written whole or not at all; a folder holding other weights is refused (its records are
    those of another model)."""
    accepted = "a state dict of the papers' LeNet (rs_plugin.data.build_lenet)"
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model = build_lenet(0)
        model.load_state_dict(state)
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as error:
        raise RSValueError("--weights", accepted, f"{weights}: {error}") from error
    model.eval()
    current = workdir / "model.pt"
    if current.exists():
        held = torch.load(current, map_location="cpu", weights_only=True)
        if held.keys() != state.keys() or any(not torch.equal(held[k], state[k]) for k in state):
            raise RSValueError(
                "--weights", f"the weights of the model in {workdir} (or a new --workdir)", weights
            )
    # Temporary names of this process: runs of several phases may adopt the weights at once
    # (each writes the same files, and each replacement is atomic).
    temporary = f".{os.getpid()}.tmp"
    if not current.exists():
        torch.save(model.state_dict(), workdir / f"model.pt{temporary}")
        (workdir / f"model.pt{temporary}").replace(current)
    if not (workdir / "model.ts").exists():
        torch.jit.script(model).save(str(workdir / f"model.ts{temporary}"))
        (workdir / f"model.ts{temporary}").replace(workdir / "model.ts")


def _write_json(path: Path, value: Any) -> None:
    # a temporary name of this process: runs of several phases of one row may write at once
    temporary = path.with_suffix(f"{path.suffix}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(value, indent=1, default=float) + "\n", encoding="utf-8")
    temporary.replace(path)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip().endswith("}")]


def _certify(args: argparse.Namespace, model: Path, out: Path, extra: list[str]) -> None:
    """One resumable ``rs-plugin certify`` run, in this process; its CPU time is added to
    ``cpu_seconds.json`` under the file's name."""
    from rs_plugin.cli import main

    argv = [
        "certify", "--model", str(model), "--data", str(args.data_dir), "--sigma",
        str(args.sigma), "--n0", str(N0), "-n", str(args.n), "--alpha", str(ALPHA),
        "--batch-size", str(args.batch_size), "--device", "cpu", "--threads", "1",
        "--out", str(out), "--resume", *extra,
    ]  # fmt: skip
    if args.channels_last:
        argv.append("--channels-last")
    times_path = args.workdir / "cpu_seconds.json"
    cpu = time.process_time()
    code = main(argv)
    spent = time.process_time() - cpu
    # Phases of one row may run in parallel processes (--phases): one adds its time at a time.
    with open(args.workdir / "cpu_seconds.lock", "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        times = json.loads(times_path.read_text()) if times_path.exists() else {}
        times[out.name] = times.get(out.name, 0.0) + spent
        _write_json(times_path, times)
    if code:
        raise SystemExit(code)


def _certify_in_slices(
    args: argparse.Namespace, model: Path, out: Path, extra: list[str], images: int
) -> None:
    """Certify the first ``images`` test images into ``out``, ``--slice`` images per run.

    Each run extends ``--limit`` by one slice and resumes the file, so a kill loses at most the
    work of one slice (the sequential certifiers keep their unfinished inputs in memory) and its
    CPU time is recorded slice by slice. Slices the file already holds are skipped without a
    run. The records do not depend on the slicing: every input's noise is keyed by its index.
    """
    done = {int(r["index"]) for r in _read_jsonl(out) if "index" in r}
    bounds = [*range(args.slice, images, args.slice), images]
    for start, limit in zip([0, *bounds], bounds, strict=False):
        if not all(i in done for i in range(start, limit)):
            _certify(args, model, out, [*extra, "--limit", str(limit)])


def certify_stage(args: argparse.Namespace, model: Path) -> None:
    """The certification phases ``--phases`` names (all by default), each resumed where it
    stopped; several processes may run different phases of one row at once."""
    folder = args.workdir / "certify"
    folder.mkdir(parents=True, exist_ok=True)
    for radius in RADII[args.sigma]:
        if f"{radius:g}" in args.phases:
            out = folder / f"anytime_r{radius:g}.jsonl"
            extra = ["--certifier", "anytime", "--radius", str(radius)]
            _certify_in_slices(args, model, out, extra, args.test_size)
    if "fixed" in args.phases:
        _certify_in_slices(args, model, folder / "cohen.jsonl", [], args.acr_size)


def _prefix(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of test images 0 … m − 1, the longest run of images all certified, in index
    order. A pass stopped midway holds part of its last slice, and the first to finish there
    are the images given up early: counting them would bias a partial table."""
    by_index = {int(r["index"]): r for r in records}
    m = 0
    while m in by_index:
        m += 1
    return [by_index[i] for i in range(m)]


def _mean_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and its 95 % normal-approximation interval."""
    count = len(values)
    mean = sum(values) / count
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / max(count - 1, 1))
    half = 1.96 * spread / math.sqrt(count)
    return mean, max(0.0, mean - half), mean + half


def read_published_log(path: Path, labels: torch.Tensor) -> dict[int, tuple[float, bool]]:
    """A published per-image certification log: radius and correctness by test index.

    The format of the reference's logs (alinlab/smoothing-catrs ``data/fmnist``): tab-separated,
    a header naming at least ``idx``, ``label``, ``radius`` and ``correct``, one row per test
    image. Read as data only. Every row's label must be the test set's label at its index, so a
    log of another dataset or another order of the test images is refused, as is a repeated
    index, a negative or non-finite radius or a ``correct`` other than 0 or 1.
    """

    def refuse(received: str) -> RSValueError:
        return RSValueError(
            "--published-log",
            "a per-image certification log of this test set: tab-separated, with columns "
            + ", ".join(LOG_COLUMNS),
            f"{path}: {received}",
        )

    if not path.is_file():
        raise refuse("no such file")
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        missing = [c for c in LOG_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise refuse(f"no column {', '.join(missing)} in its header")
        entries: dict[int, tuple[float, bool]] = {}
        for line, entry in enumerate(reader, start=2):
            try:
                index, label = int(entry["idx"]), int(entry["label"])
                radius, correct = float(entry["radius"]), int(entry["correct"])
            except (TypeError, ValueError) as error:
                raise refuse(f"line {line}: {error}") from error
            if not 0 <= index < len(labels) or index in entries:
                raise refuse(f"line {line}: index {index} out of range or repeated")
            if label != int(labels[index]):
                raise refuse(
                    f"line {line}: label {label} for test image {index}, whose label is "
                    f"{int(labels[index])} (a log of another dataset or order)"
                )
            if not (math.isfinite(radius) and radius >= 0.0) or correct not in (0, 1):
                raise refuse(f"line {line}: radius {radius}, correct {correct}")
            entries[index] = (radius, bool(correct))
    return entries


def published_on_our_images(
    log: dict[int, tuple[float, bool]],
    cohen: list[dict[str, Any]],
    anytime: dict[str, dict[int, bool]],
) -> dict[str, Any]:
    """The published figures on exactly the images our files hold, and the paired comparison.

    The ACR over the indices of ``cohen``; at each radius ``r`` of ``anytime`` (our
    certified-and-correct flag by index), the published certified accuracy over the same
    indices, the images only we certify and only the published run certifies, and the two-sided
    exact McNemar p-value of those discordant pairs (small: the two differ on these images by
    more than chance). Images missing from the log are left out and counted in ``missing``.
    """

    def contribution(index: int) -> float:
        radius, correct = log[index]
        return radius if correct else 0.0

    result: dict[str, Any] = {"certified": {}}
    indices = [int(r["index"]) for r in cohen]
    present = [i for i in indices if i in log]
    if present:
        acr, low, high = _mean_interval([contribution(i) for i in present])
        result["acr"] = {"value": acr, "ci95": [low, high], "images": len(present)}
        result["acr"]["missing"] = len(indices) - len(present)
    for radius, ours in anytime.items():
        present = [i for i in ours if i in log]
        if not present:
            continue
        theirs = {i: contribution(i) >= float(radius) > 0.0 for i in present}
        only_ours = sum(ours[i] and not theirs[i] for i in present)
        only_theirs = sum(theirs[i] and not ours[i] for i in present)
        result["certified"][radius] = {
            "value": sum(theirs.values()) / len(present),
            "images": len(present),
            "missing": len(ours) - len(present),
            "only_ours": only_ours,
            "only_published": only_theirs,
            "mcnemar_p": _mcnemar(only_ours, only_theirs),
        }
    return result


def _mcnemar(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value of ``b`` and ``c`` discordant pairs."""
    if b + c == 0:
        return 1.0
    tail = sum(math.comb(b + c, k) for k in range(min(b, c) + 1)) / 2 ** (b + c)
    return min(1.0, 2 * tail)


def summarise(
    args: argparse.Namespace, log: dict[int, tuple[float, bool]] | None = None
) -> dict[str, Any]:
    """The row: our figures, the published ones (on our images too, given the published
    per-image ``log``), the check and the CPU times."""
    folder = args.workdir / "certify"
    cohen = _prefix(_read_jsonl(folder / "cohen.jsonl"))
    row: dict[str, Any] = {
        "method": args.method,
        "sigma": args.sigma,
        "published": PUBLISHED.get((args.method, args.sigma)),
        "protocol": {"n0": N0, "n": args.n, "alpha": ALPHA, "test_size": args.test_size,
                     "acr_size": args.acr_size, "check_size": args.check_size},
    }  # fmt: skip
    training = args.workdir / "training.json"
    if training.exists():
        epochs = json.loads(training.read_text())["epochs"]
        row["training"] = {
            "epochs": len(epochs),
            "cpu_seconds": sum(e["cpu_seconds"] for e in epochs),
            "cpu_seconds_per_epoch": sum(e["cpu_seconds"] for e in epochs) / max(len(epochs), 1),
        }
    if cohen:
        contributions = [float(r["radius"]) if r["correct"] else 0.0 for r in cohen]
        acr, low, high = _mean_interval(contributions)
        row["acr"] = {"value": acr, "ci95": [low, high], "images": len(cohen)}
    certified: dict[str, Any] = {}
    check: dict[str, Any] = {}
    anytime_hits: dict[str, dict[int, bool]] = {}
    by_index = {r["index"]: r for r in cohen}
    for radius in RADII[args.sigma]:
        records = _prefix(_read_jsonl(folder / f"anytime_r{radius:g}.jsonl"))
        if not records:
            continue
        hits = [bool(r["correct"]) and float(r.get("decision") or 0.0) == 1.0 for r in records]
        indices = [int(r["index"]) for r in records]
        anytime_hits[f"{radius:g}"] = dict(zip(indices, hits, strict=True))
        samples = [N0 + float(r.get("samples", args.n)) for r in records]
        certified[f"{radius:g}"] = {
            "value": sum(hits) / len(hits),
            "images": len(hits),
            "average_samples": sum(samples) / len(samples),
        }
        pairs = [
            (hit, bool(by_index[r["index"]]["correct"])
             and float(by_index[r["index"]]["radius"]) >= radius)
            for r, hit in zip(records, hits, strict=True)
            if r["index"] < args.check_size and r["index"] in by_index
        ]  # fmt: skip
        if pairs:
            check[f"{radius:g}"] = {
                "images": len(pairs),
                "anytime": sum(a for a, _ in pairs) / len(pairs),
                "fixed_n": sum(b for _, b in pairs) / len(pairs),
                "disagreements": sum(a != b for a, b in pairs),
            }
    row["certified"], row["check_against_fixed_n"] = certified, check
    if log is not None:
        row["published_same_images"] = published_on_our_images(log, cohen, anytime_hits)
    times_path = args.workdir / "cpu_seconds.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    row["certify_cpu_seconds"] = times
    if cohen and times.get("cohen.jsonl"):
        rate = len(cohen) * (N0 + args.n) / times["cohen.jsonl"]
        row["fixed_n_samples_per_cpu_second"] = rate
        row["fixed_n_full_test_cpu_hours_projected"] = 10_000 * (N0 + args.n) / rate / 3600
    return row


def _acr_cell(acr: dict[str, Any] | None) -> str:
    if not acr:
        return "–"
    low, high = acr["ci95"]
    return f"{acr['value']:.3f} [{low:.3f}, {high:.3f}] ({acr['images']} img.)"


def _certified_cell(entry: dict[str, Any] | None) -> str:
    return f"{100 * entry['value']:.1f} % ({entry['images']} img.)" if entry else "–"


def _line(row: dict[str, Any], source: str, acr: str, cells: list[str]) -> str:
    """One markdown line of the row's table: σ, method, source, ACR, then one cell per radius."""
    return (
        "| " + " | ".join([f"{row['sigma']:g}", NAMES[row["method"]], source, acr, *cells]) + " |"
    )


def table(row: dict[str, Any]) -> str:
    """The markdown row beside the published one."""
    radii = [f"{r:g}" for r in RADII[row["sigma"]]]
    header = ["σ", "method", "source", "ACR", *[f"cert. acc. r={r}" for r in radii]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    published = row.get("published") or {}
    figures = published.get("certified", {})
    lines.append(
        _line(
            row,
            "published",
            f"{published['acr']:.3f}" if published else "–",
            [f"{100 * figures[r]:.1f} %" if r in figures else "–" for r in radii],
        )
    )
    same = row.get("published_same_images")
    if same:
        lines.append(
            _line(
                row,
                "published, our images",
                _acr_cell(same.get("acr")),
                [_certified_cell(same["certified"].get(r)) for r in radii],
            )
        )
        pairs = [same["certified"].get(r) for r in radii]
        lines.append(
            _line(
                row,
                "only ours / only published (p)",
                "–",
                [
                    f"{e['only_ours']} / {e['only_published']} ({e['mcnemar_p']:.2f})" if e else "–"
                    for e in pairs
                ],
            )
        )
    lines.append(
        _line(
            row,
            "ours",
            _acr_cell(row.get("acr")),
            [_certified_cell(row["certified"].get(r)) for r in radii],
        )
    )
    return "\n".join(lines)


def _phase(text: str) -> str:
    """A --phases entry as certify_stage names it: a radius as ``f"{r:g}"`` (1.0 is 1)."""
    try:
        return f"{float(text):g}"
    except ValueError:
        return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=METHODS, help="the row's method (required)")
    parser.add_argument("--sigma", type=float, choices=sorted(RADII), help="the row's σ (required)")
    parser.add_argument(
        "--collect",
        type=Path,
        nargs="+",
        default=None,
        metavar="WORKDIR",
        help="instead of running a row: print the tables of finished or partial rows (their "
        "table.json), one table per σ, and their CPU times",
    )
    parser.add_argument("--epochs", type=int, default=90, help="training epochs (paper: 90)")
    parser.add_argument("--train-size", type=int, default=60_000, help="first N training images")
    parser.add_argument("--noise-draws", type=int, default=None, help="m (default: the paper's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="CAT-RS: the KL target's model (TorchScript, or a LeNet state dict)",
    )
    parser.add_argument(
        "--stage",
        choices=("train", "certify", "all", "table"),
        default="all",
        help="train, certify, both (default), or only write the table of what --workdir holds",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="certify these trained LeNet weights (a state dict, e.g. the shipped "
        "rs_plugin/data/fashion_lenet_sigma0.25.pt) instead of training: they become the work "
        "folder's model.pt and model.ts (only --stage certify)",
    )
    parser.add_argument(
        "--phases",
        default=None,
        help="comma-separated certification phases to run: anytime radii of the row's σ "
        "(0.25,0.5,0.75 or 0.5,1,1.5) and fixed (fixed N for the ACR); default all. Runs of "
        "different phases of one row may share its --workdir at once",
    )
    parser.add_argument("--test-size", type=int, default=10_000, help="anytime: first K images")
    parser.add_argument("--acr-size", type=int, default=1_000, help="fixed N: first K images")
    parser.add_argument("--check-size", type=int, default=500, help="anytime vs fixed N check")
    parser.add_argument("-n", type=int, default=N, help="certification budget N (paper: 1e5)")
    parser.add_argument(
        "--slice",
        type=int,
        default=50,
        help="test images per certify run (a kill loses at most one slice's work; default 50)",
    )
    parser.add_argument(
        "--batch-size",
        default="auto",
        help="samples per forward pass of the certifier: an integer, or auto (default: the "
        "fastest size, measured on the first samples; the counts do not depend on it)",
    )
    parser.add_argument("--data-dir", type=Path, default=FASHION_MNIST_DIR)
    parser.add_argument(
        "--published-log",
        type=Path,
        default=None,
        help="the published row's per-image certification log (the reference's TSV: idx, "
        "label, radius, correct): the table adds the published figures on our images",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train and certify with the convolutions in the channels-last memory format "
        "(default; float rounding differs, the model and the protocol do not)",
    )
    args = parser.parse_args(argv)
    if args.collect is not None:
        return args
    if args.method is None or args.sigma is None:
        parser.error("--method and --sigma: expected both (or --collect); received "
                     f"--method {args.method}, --sigma {args.sigma}")  # fmt: skip
    if args.weights is not None and args.stage != "certify":
        parser.error(f"--weights: expected --stage certify; received --stage {args.stage}")
    phases = [f"{r:g}" for r in RADII[args.sigma]] + ["fixed"]
    if args.phases is None:
        args.phases = phases
    else:
        asked = [_phase(part.strip()) for part in args.phases.split(",") if part.strip()]
        if not asked or any(part not in phases for part in asked):
            parser.error(f"--phases: expected a comma-separated subset of {','.join(phases)}; "
                         f"received {args.phases}")  # fmt: skip
        args.phases = asked
    if args.slice < 1:
        parser.error(f"--slice: expected a positive number of images; received {args.slice}")
    if args.noise_draws is None:
        args.noise_draws = NOISE_DRAWS[args.method]
    if args.workdir is None:
        args.workdir = Path("out/reproduce") / f"{args.method}-{args.sigma:g}"
    return args


def collect(workdirs: list[Path]) -> str:
    """The tables of the rows in ``workdirs`` (each one's ``table.json``, as its run wrote it),
    one markdown table per σ in the order given, then each row's CPU time."""
    rows = []
    for workdir in workdirs:
        path = workdir / "table.json"
        if not path.is_file():
            raise RSValueError("--collect", "work folders of this script holding table.json", path)
        try:
            row = json.loads(path.read_text(encoding="utf-8"))
            key = (row["method"], float(row["sigma"]))
        except (ValueError, KeyError, TypeError) as error:
            raise RSValueError("--collect", "a table.json this script wrote", path) from error
        if key[0] not in METHODS or key[1] not in RADII:
            raise RSValueError("--collect", f"rows of {METHODS} at σ in {sorted(RADII)}", key)
        rows.append(row)
    parts = []
    for sigma in sorted({float(r["sigma"]) for r in rows}):
        lines: list[str] = []
        for row in (r for r in rows if float(r["sigma"]) == sigma):
            rendered = table(row).splitlines()
            lines += rendered if not lines else rendered[2:]
        parts.append("\n".join(lines))
    header = "| σ | method | training CPU-h | certification CPU-h | fixed N on 10 000 (projected) |"
    cost = [header, "|---|---|---|---|---|"]
    for row in rows:
        training = row.get("training", {}).get("cpu_seconds")
        certify = sum(row.get("certify_cpu_seconds", {}).values())
        projected = row.get("fixed_n_full_test_cpu_hours_projected")
        cost.append(
            f"| {row['sigma']:g} | {NAMES[row['method']]} | "
            + (f"{training / 3600:.2f}" if training else "–") + " | "
            + f"{certify / 3600:.2f} | " + (f"{projected:.1f}" if projected else "–") + " |"
        )  # fmt: skip
    return "\n\n".join([*parts, "\n".join(cost)])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    try:
        if args.collect is not None:
            print(collect(args.collect))
            return {}
        return run(args)
    except RSValueError as error:  # bad input: one line and exit status 2, as argparse's
        print(f"reproduce_fashion.py: error: {error}", file=sys.stderr)
        raise SystemExit(2) from error


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train, certify and table the row ``args`` names (each stage resumed)."""
    torch.set_num_threads(args.threads)
    log = None  # read before any work, so a bad file is refused first
    if args.published_log is not None:
        log = read_published_log(args.published_log, load_idx(args.data_dir, "test")[1])
    args.workdir.mkdir(parents=True, exist_ok=True)
    scripted = args.workdir / "model.ts"
    if args.weights is not None:
        adopt_weights(args.weights, args.workdir)
    if args.stage in ("train", "all"):
        scripted = train_stage(args)
    if args.stage in ("certify", "all"):
        if not scripted.exists():
            raise SystemExit(f"{scripted}: no trained model yet (run --stage train first)")
        certify_stage(args, scripted)
    row = summarise(args, log)
    _write_json(args.workdir / "table.json", row)
    temporary = args.workdir / f"table.md.{os.getpid()}.tmp"
    temporary.write_text(table(row) + "\n", encoding="utf-8")
    temporary.replace(args.workdir / "table.md")
    print(table(row))
    return row


if __name__ == "__main__":
    main()
