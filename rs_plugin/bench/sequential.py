"""``rs-plugin bench --sequential``: model evaluations of fixed-n CERTIFY vs sequential.

On the demo digits CNN and on Fashion-MNIST (a LeNet-size CNN trained here, seeded, with the
noise it is certified with), the same inputs are certified three ways with the same seed:

* fixed n (Cohen et al.'s CERTIFY, n0 + n evaluations per input);
* sequential decision mode at radius r ("certified at r?"), compared at equal certified
  accuracy at r;
* sequential radius mode with a tolerance, compared by the average radius lost (in units of σ).

``sample_reduction_*`` is the mean number of evaluations per input of fixed n divided by that
of the sequential certifier (selection samples n0 counted in both).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import torch
from torch import nn

from rs_plugin._validation import check_int, check_positive
from rs_plugin.certification.certificates import Certificates
from rs_plugin.certification.classifier import SmoothedClassifier
from rs_plugin.certification.sequential import SequentialCertifier
from rs_plugin.smoothings.gaussian import Gaussian

__all__ = ["run_sequential_bench"]


def _fashion_model(sigma: float, epochs: int, seed: int = 0) -> nn.Module:
    from rs_plugin.data import FashionCNN, load_dataset
    from rs_plugin.data.train_demo import train_with_noise

    x, y = load_dataset("fashion-mnist", "train")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FashionCNN()
    return train_with_noise(
        model, x, y, Gaussian(sigma), seed=seed, epochs=epochs, batch_size=128, lr=2e-3
    )


def _accuracy_at(certs: Certificates, y: torch.Tensor, r: float) -> float:
    return float(((certs.prediction == y) & (certs.radius >= r)).double().mean())


def _mean_radius(certs: Certificates, y: torch.Tensor) -> float:
    return float(torch.where(certs.prediction == y, certs.radius, 0.0).mean())


def _compare(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    sigma: float,
    n0: int,
    n: int,
    radius: float,
    tolerance: float,
    batch_size: int,
) -> dict[str, Any]:
    settings = {"n0": n0, "n": n, "alpha": 0.001, "batch_size": batch_size, "seed": 0}
    smoothing = Gaussian(sigma)
    runs: dict[str, tuple[Certificates, float]] = {}
    certifiers: tuple[tuple[str, Any], ...] = (
        ("fixed", SmoothedClassifier(model, smoothing, 10)),
        ("decision", SequentialCertifier(model, smoothing, 10, radius=radius)),
        ("radius", SequentialCertifier(model, smoothing, 10, tolerance=tolerance)),
    )
    for label, certifier in certifiers:
        started = time.perf_counter()
        certs = certifier.certify(x, **settings)
        runs[label] = (certs, time.perf_counter() - started)

    def evaluations(label: str) -> float:
        certs = runs[label][0]
        samples = certs.extra.get("samples", torch.full((len(certs),), float(n)))
        return n0 + float(samples.double().mean())

    fixed, decision, by_radius = (runs[k][0] for k in ("fixed", "decision", "radius"))
    return {
        "inputs": int(x.shape[0]),
        "sigma": sigma,
        "n0": n0,
        "n": n,
        "radius": radius,
        "tolerance": tolerance,
        "evaluations_per_input": {k: evaluations(k) for k in runs},
        "seconds": {k: runs[k][1] for k in runs},
        "sample_reduction_decision": evaluations("fixed") / evaluations("decision"),
        "sample_reduction_radius": evaluations("fixed") / evaluations("radius"),
        "certified_accuracy_at_radius": {
            "fixed": _accuracy_at(fixed, y, radius),
            "decision": float(
                ((decision.prediction == y) & (decision.extra["decision"] == 1)).double().mean()
            ),
            "radius_mode": _accuracy_at(by_radius, y, radius),
        },
        "mean_certified_radius": {
            "fixed": _mean_radius(fixed, y),
            "radius_mode": _mean_radius(by_radius, y),
        },
        "radius_loss_over_sigma": (_mean_radius(fixed, y) - _mean_radius(by_radius, y)) / sigma,
    }


def run_sequential_bench(
    *,
    inputs: int = 20,
    fashion_inputs: int = 10,
    n0: int = 100,
    n: int = 100_000,
    sigma: float = 0.25,
    radius_sigmas: float = 2.0,
    tolerance_sigmas: float = 0.05,
    batch_size: int = 1000,
    fashion_epochs: int = 2,
) -> dict[str, Any]:
    """Fixed-n vs sequential on digits (and Fashion-MNIST when ``fashion_inputs`` > 0).

    The decision radius is ``radius_sigmas`` · σ, the radius-mode tolerance
    ``tolerance_sigmas`` · σ. Top-level ``sample_reduction_*`` keys are the digits figures.
    """
    from rs_plugin.data import load_dataset, load_demo_model

    check_int("--inputs", inputs, 1)
    check_int("--fashion-inputs", fashion_inputs, 0)
    check_positive("--sigma", sigma)
    compare = partial(
        _compare,
        sigma=sigma,
        n0=n0,
        n=n,
        radius=radius_sigmas * sigma,
        tolerance=tolerance_sigmas * sigma,
        batch_size=batch_size,
    )
    x, y = load_dataset("digits", "test")
    by_data = {"digits": compare(load_demo_model(), x[:inputs], y[:inputs])}
    if fashion_inputs:
        model = _fashion_model(sigma, fashion_epochs)
        fx, fy = load_dataset("fashion-mnist", "test")
        fashion = compare(model, fx[:fashion_inputs], fy[:fashion_inputs])
        fashion["model"] = f"FashionCNN trained {fashion_epochs} epochs at σ = {sigma}, seed 0"
        by_data["fashion-mnist"] = fashion
    digits = by_data["digits"]
    return {
        "sequential": by_data,
        "sample_reduction_decision": digits["sample_reduction_decision"],
        "sample_reduction_radius": digits["sample_reduction_radius"],
        "certified_accuracy_at_radius": digits["certified_accuracy_at_radius"],
        "radius_loss_over_sigma": digits["radius_loss_over_sigma"],
    }
