"""``rs-plugin bench --sequential``: model evaluations of fixed-n CERTIFY vs both sequential
certifiers, on the digits demo model and on Fashion-MNIST.

Per dataset, with the same seed everywhere (so every certifier sees a prefix of the same
samples):

* **fixed n** (Cohen et al.'s CERTIFY): n0 + n evaluations per input. Its votes are drawn block
  by block (256 samples, the engine's noise blocks) and kept, which is the same samples and the
  same number of model evaluations as :class:`~rs_plugin.SmoothedClassifier`'s certify, timed.
* **decision mode** at each radius r, both :class:`~rs_plugin.SequentialCertifier` (staged,
  Clopper–Pearson, α spent over stages) and :class:`~rs_plugin.AnytimeCertifier` (confidence
  sequence checked every batch), run for real and timed: evaluations per input, certified
  accuracy at r (correct and decided "certified"), against fixed n's with its 95% interval.
* **radius mode**: both certifiers *replayed* on the kept votes (:mod:`rs_plugin.bench.votes`;
  the decision runs check that a replay gives exactly the real run's samples and answers):
  evaluations per input and mean radius lost (a wrong or abstaining answer counts as radius
  0), in units of σ; and the frontier over tolerances, beside the hindsight frontier: each
  input's sample count chosen knowing its votes, with Clopper–Pearson at that count. No sound
  rule can beat that frontier on inputs whose votes all go to one class (any valid bound
  after t such votes is at most α^{1/t}).

``reduction`` is fixed n's evaluations per input (n0 + n) over the certifier's (n0 + samples).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from rs_plugin._validation import (
    MAX_SAMPLES,
    RSValueError,
    check_int,
    check_positive,
    import_extra,
)
from rs_plugin.bench.votes import SEED, Votes, record_votes, replay
from rs_plugin.certification.engine import NOISE_BLOCK
from rs_plugin.certification.sequential import AnytimeCertifier, SequentialCertifier
from rs_plugin.certification.stats import clopper_pearson_lower
from rs_plugin.certification.stopping import anytime_sizes
from rs_plugin.smoothings.gaussian import Gaussian

__all__ = ["fashion_model", "format_sequential", "run_sequential_bench"]

ALPHA = 0.001
CERTIFIERS = {"staged": SequentialCertifier, "anytime": AnytimeCertifier}
TOLERANCE_GRID = (0.003, 0.01, 0.02, 0.03, 0.04, 0.05, 0.1, 0.2, 0.4)  # in σ, for the frontier


def fashion_model() -> tuple[nn.Module, str]:
    """The Fashion-MNIST model the bench certifies, and what it is (the one place to change the
    choice): the Fashion-MNIST CNN of docs/art.md's trainer table, kept so that the bench's
    figures stay comparable (``--model demo --data fashion-mnist`` now loads a LeNet)."""
    from rs_plugin.data import load_fashion_model

    return load_fashion_model().eval(), "the Fashion-MNIST CNN (SmoothMix, σ = 0.25)"


def _interval(hits: int, total: int) -> list[float]:
    """Two-sided 95% Clopper–Pearson interval of a proportion."""
    low = stats.beta.ppf(0.025, hits, total - hits + 1) if hits > 0 else 0.0
    high = stats.beta.ppf(0.975, hits + 1, total - hits) if hits < total else 1.0
    return [float(low), float(high)]


def _certified_radius(
    votes: Votes, y: np.ndarray, lower: np.ndarray, sigma: float, dim: int
) -> np.ndarray:
    """Radius per input where the selected class is the label and p_lower ≥ 1/2, else 0."""
    radius = Gaussian(sigma).radius(torch.from_numpy(lower), dim).numpy()
    return np.where((votes.top == y) & (lower >= 0.5), radius, 0.0)


def _radius_mode(
    model: nn.Module,
    votes: Votes,
    y: np.ndarray,
    fixed_radius: np.ndarray,
    tolerance: float,
    *,
    sigma: float,
    n0: int,
    dim: int,
) -> dict[str, dict[str, float]]:
    """Both certifiers in radius mode at ``tolerance`` (in σ), replayed on the kept votes."""
    figures = {}
    for name, certifier_class in CERTIFIERS.items():
        certifier = certifier_class(model, Gaussian(sigma), 10, tolerance=tolerance * sigma)
        lower, samples, _ = replay(votes, certifier, alpha=ALPHA, dim=dim)
        kept = _certified_radius(votes, y, lower, sigma, dim)
        evaluations = n0 + float(samples.mean())
        figures[name] = {
            "evaluations_per_input": evaluations,
            "reduction": (n0 + votes.n) / evaluations,
            "radius_loss_over_sigma": float((fixed_radius - kept).mean() / sigma),
        }
    return figures


def _frontiers(
    model: nn.Module,
    votes: Votes,
    y: np.ndarray,
    fixed_radius: np.ndarray,
    *,
    sigma: float,
    n0: int,
    dim: int,
) -> dict[str, list[list[float]]]:
    """(evaluations per input, mean radius lost / σ) points: both certifiers over the tolerance
    grid, and the hindsight frontier (per-input sample counts on the anytime checks, chosen
    knowing the votes, Clopper–Pearson there; a Lagrangian sweep)."""
    points: dict[str, list[list[float]]] = {name: [] for name in CERTIFIERS}
    for tolerance in TOLERANCE_GRID:
        figures = _radius_mode(
            model, votes, y, fixed_radius, tolerance, sigma=sigma, n0=n0, dim=dim
        )
        for name, entry in figures.items():
            points[name].append([entry["evaluations_per_input"], entry["radius_loss_over_sigma"]])
    sizes = np.array(anytime_sizes(votes.n))
    prefix = votes.top_prefix()[:, -(-sizes // NOISE_BLOCK)]
    lost = np.stack(
        [
            fixed_radius
            - _certified_radius(votes, y, clopper_pearson_lower(prefix[:, j], t, ALPHA), sigma, dim)
            for j, t in enumerate(sizes)
        ],
        axis=1,
    )
    points["hindsight"] = []
    for weight in np.logspace(2, 8, 40):  # samples per σ of radius lost
        choice = np.argmin(sizes[None, :] + weight * lost / sigma, axis=1)
        rows = np.arange(len(choice))
        points["hindsight"].append(
            [n0 + float(sizes[choice].mean()), float(lost[rows, choice].mean() / sigma)]
        )
    return points


def _compare(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    sigma: float,
    n0: int,
    n: int,
    radii: tuple[float, ...],
    tolerance: float,
    batch_size: int,
) -> dict[str, Any]:
    dim = x[0].numel()
    labels = y.numpy()
    votes = record_votes(model, x, sigma=sigma, n0=n0, n=n, batch_size=batch_size)
    rows = np.arange(len(labels))
    fixed_lower = clopper_pearson_lower(votes.blocks.sum(axis=1)[rows, votes.top], n, ALPHA)
    fixed_radius = _certified_radius(votes, labels, fixed_lower, sigma, dim)
    fixed_evaluations = float(n0 + n)
    decision: dict[str, Any] = {}
    for r in radii:
        hits = int((fixed_radius >= r).sum())
        decision[str(r)] = {
            "fixed": {"certified_accuracy": hits / len(labels)},
            "fixed_interval_95": _interval(hits, len(labels)),
        }
        for name, certifier_class in CERTIFIERS.items():
            certifier = certifier_class(model, Gaussian(sigma), 10, radius=r)
            started = time.perf_counter()
            certs = certifier.certify(x, n0=n0, n=n, alpha=ALPHA, batch_size=batch_size, seed=SEED)
            seconds = time.perf_counter() - started
            samples = certs.extra["samples"].numpy()
            answer = certs.extra["decision"].numpy() == 1
            replayed = replay(votes, certifier, alpha=ALPHA, dim=dim)
            accuracy = float(((certs.prediction.numpy() == labels) & answer).mean())
            low, high = decision[str(r)]["fixed_interval_95"]
            decision[str(r)][name] = {
                "evaluations_per_input": n0 + float(samples.mean()),
                "reduction": fixed_evaluations / (n0 + float(samples.mean())),
                "certified_accuracy": accuracy,
                "within_fixed_interval": low <= accuracy <= high,
                "seconds": seconds,
                "replay_matches": bool(
                    np.array_equal(replayed[1], samples) and np.array_equal(replayed[2], answer)
                ),
            }
    by_radius: dict[str, Any] = {"tolerance_sigmas": tolerance}
    by_radius.update(
        _radius_mode(model, votes, labels, fixed_radius, tolerance, sigma=sigma, n0=n0, dim=dim)
    )
    every_vote = votes.blocks.sum(axis=1)[rows, votes.top] == n
    return {
        "inputs": len(labels),
        "sigma": sigma,
        "n0": n0,
        "n": n,
        "alpha": ALPHA,
        "fixed": {
            "evaluations_per_input": fixed_evaluations,
            "seconds": votes.seconds,
            "mean_certified_radius": float(fixed_radius.mean()),
        },
        "decision": decision,
        "radius_mode": by_radius,
        "all_votes_to_the_label": float((every_vote & (votes.top == labels)).mean()),
        "frontier": _frontiers(model, votes, labels, fixed_radius, sigma=sigma, n0=n0, dim=dim),
    }


def plot_frontier(result: dict[str, Any], path: str | Path) -> None:
    """Mean radius lost against the reduction in evaluations, per dataset (PNG)."""
    matplotlib = import_extra("matplotlib", "plots", "the bench's frontier plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = result["sequential"]
    figure, axes = plt.subplots(1, len(data), figsize=(4.2 * len(data), 3.4), squeeze=False)
    for axis, (name, entry) in zip(axes[0], data.items(), strict=True):
        fixed = entry["fixed"]["evaluations_per_input"]
        for label, style in (("hindsight", "k--"), ("staged", "o-"), ("anytime", "s-")):
            points = np.array(entry["frontier"][label])
            axis.plot(fixed / points[:, 0], points[:, 1], style, label=label, markersize=3)
        axis.plot([3], [0.05], "r*", markersize=10, label="target")
        axis.set(xscale="log", xlabel="fewer evaluations than fixed n (×)", title=name)
        axis.set(ylabel="mean radius lost (σ)", ylim=(0, 0.5))
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


_FASHION_TEST_IMAGES = ("t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz")


def check_sequential_settings(
    *,
    inputs: int,
    fashion_inputs: int,
    n: int,
    sigma: float,
    radii: tuple[float, ...],
    tolerance_sigmas: float,
    plot: str | Path | None,
) -> None:
    """Refuse settings :func:`run_sequential_bench` cannot run, before any benchmark does: the
    bench command checks them before its main measurement, which takes minutes."""
    check_int("--sequential-inputs", inputs, 1)
    check_int("--fashion-inputs", fashion_inputs, 0)
    check_int("--sequential-n", n, 1, MAX_SAMPLES)
    check_positive("--sigma", sigma)
    check_positive("--tolerance-sigmas", tolerance_sigmas)
    if not radii:
        raise RSValueError("--sequential-radii", "one or more radii > 0", list(radii))
    for r in radii:
        check_positive("--sequential-radii", r)
    if fashion_inputs:
        from rs_plugin.data import FASHION_MNIST_DIR

        if not any((FASHION_MNIST_DIR / n).is_file() for n in _FASHION_TEST_IMAGES):
            raise RSValueError(
                "--fashion-inputs",
                "0, or Debian's dataset-fashion-mnist installed (apt-get install "
                f"dataset-fashion-mnist: {FASHION_MNIST_DIR})",
                f"{fashion_inputs}, without the dataset",
            )
    if plot is None:
        return
    target = Path(plot)
    parent = target.absolute().parent
    if target.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise RSValueError(
            "--sequential-plot",
            "a PNG file path in an existing folder this process may write",
            f"{plot}" + (", a folder" if target.is_dir() else ""),
        )
    import_extra("matplotlib", "plots", "the bench's frontier plot")


def run_sequential_bench(
    *,
    inputs: int = 100,
    fashion_inputs: int = 60,
    n0: int = 100,
    n: int = 100_000,
    sigma: float = 0.25,
    radii: tuple[float, ...] = (0.25, 0.5, 1.0),
    tolerance_sigmas: float = 0.04,
    batch_size: int = 1000,
    plot: str | Path | None = None,
) -> dict[str, Any]:
    """Fixed n vs both sequential certifiers on digits (and Fashion-MNIST when
    ``fashion_inputs`` > 0). Top-level keys summarise the anytime certifier's figures against
    the targets (decision mode at r = 0.5 and radius mode, on each dataset)."""
    from rs_plugin.data import load_dataset, load_demo_model

    check_sequential_settings(
        inputs=inputs,
        fashion_inputs=fashion_inputs,
        n=n,
        sigma=sigma,
        radii=radii,
        tolerance_sigmas=tolerance_sigmas,
        plot=plot,
    )
    settings: dict[str, Any] = {
        "sigma": sigma,
        "n0": n0,
        "n": n,
        "radii": tuple(radii),
        "tolerance": tolerance_sigmas,
        "batch_size": batch_size,
    }
    x, y = load_dataset("digits", "test")
    by_data = {"digits": _compare(load_demo_model(), x[:inputs], y[:inputs], **settings)}
    by_data["digits"]["model"] = "the shipped demo CNN (σ = 0.25)"
    if fashion_inputs:
        model, description = fashion_model()
        fx, fy = load_dataset("fashion-mnist", "test")
        fashion = _compare(model, fx[:fashion_inputs], fy[:fashion_inputs], **settings)
        fashion["model"] = description
        by_data["fashion-mnist"] = fashion
    result: dict[str, Any] = {"sequential": by_data}
    middle = str(0.5) if 0.5 in radii else str(radii[0])
    for name, entry in by_data.items():
        decided = entry["decision"][middle]["anytime"]
        by_radius = entry["radius_mode"]["anytime"]
        result[f"anytime_decision_reduction_{name}"] = decided["reduction"]
        result[f"anytime_radius_reduction_{name}"] = by_radius["reduction"]
        # The project's targets: ≥ 20× in decision mode at r = 0.5 with fixed n's certified
        # accuracy (within its 95% interval); ≥ 3× in radius mode at ≤ 0.05σ mean radius lost.
        entry["targets_met"] = {
            "decision": decided["reduction"] >= 20 and decided["within_fixed_interval"],
            "radius_mode": by_radius["reduction"] >= 3
            and by_radius["radius_loss_over_sigma"] <= 0.05,
        }
    if plot is not None:
        plot_frontier(result, plot)
        result["frontier_plot"] = str(plot)
    return result


def format_sequential(result: dict[str, Any]) -> list[str]:
    """Lines for the human-readable bench output."""
    lines: list[str] = []
    for name, entry in result.get("sequential", {}).items():
        fixed = entry["fixed"]
        lines.append(
            f"sequential vs fixed n={entry['n']} on {name} ({entry['inputs']} inputs, "
            f"σ = {entry['sigma']}, α = {entry['alpha']}): fixed n "
            f"{fixed['evaluations_per_input']:.0f} evaluations per input, {fixed['seconds']:.1f} s"
        )
        for r, row in entry["decision"].items():
            low, high = row["fixed_interval_95"]
            lines.append(
                f"  decision r={r}: fixed n certified {row['fixed']['certified_accuracy']:.1%} "
                f"[{low:.1%}, {high:.1%}]"
            )
            for certifier in CERTIFIERS:
                c = row[certifier]
                lines.append(
                    f"    {certifier:<8}{c['evaluations_per_input']:>9.0f} evaluations = "
                    f"{c['reduction']:6.1f} x fewer, certified {c['certified_accuracy']:.1%}"
                    f"{'' if c['within_fixed_interval'] else ' (outside)'}, {c['seconds']:.1f} s"
                    f"{'' if c['replay_matches'] else ' (replay differs)'}"
                )
        modes = entry["radius_mode"]
        lines.append(f"  radius mode, tolerance {modes['tolerance_sigmas']:g} σ:")
        for certifier in CERTIFIERS:
            c = modes[certifier]
            lines.append(
                f"    {certifier:<8}{c['evaluations_per_input']:>9.0f} evaluations = "
                f"{c['reduction']:6.1f} x fewer, mean radius lost "
                f"{c['radius_loss_over_sigma']:.3f} σ"
            )
        lines.append(
            f"  inputs with every vote for the label: {entry['all_votes_to_the_label']:.0%}; "
            f"targets met (anytime): {entry.get('targets_met')}"
        )
    return lines
