"""Sequential certification: coverage under optional stopping, soundness on the analytic linear
model, reproducibility, and the staged engine drawing exactly fixed-n CERTIFY's samples.

Coverage tests count failures F over M simulated inputs and fail only when
P[Binomial(M, α) >= F] < 1e-4 (false-alarm rate at most 1e-4 per test).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import norm

from rs_plugin import (
    NOISE_BLOCK,
    Gaussian,
    RSValueError,
    SequentialCertifier,
    SmoothedClassifier,
    StagedBounds,
)
from rs_plugin.certification.engine import stream_counts
from rs_plugin.certification.sequential import stop_decision, stop_radius
from rs_plugin.cli import main
from tests.analytic import LinearModel, binomial_upper_tail

FALSE_ALARM = 1e-4
UNIT = Gaussian(1.0)  # radius(p) = Φ⁻¹(p): radii in units of σ


def _simulate(p_true: float, trials: int, bounds: StagedBounds, rule, seed: int):
    """Run the staged procedure on Bernoulli(p_true) streams; return (lower at stop, stop stage,
    certified flag) per trial. ``rule(lower, upper, successes, stage)`` gives (stop, certified)."""
    rng = np.random.default_rng(seed)
    successes = np.zeros(trials, dtype=np.int64)
    active = np.arange(trials)
    lower_at_stop = np.zeros(trials)
    stage_at_stop = np.zeros(trials, dtype=np.int64)
    certified = np.zeros(trials, dtype=bool)
    done = 0
    for stage, size in enumerate(bounds.sizes):
        successes[active] += rng.binomial(size - done, p_true, len(active))
        done = size
        lower, upper = bounds.bounds(successes[active], stage)
        stop, cert = rule(lower, upper, successes[active], stage)
        if stage == len(bounds) - 1:
            stop = np.ones(len(active), dtype=bool)
        lower_at_stop[active[stop]] = lower[stop]
        stage_at_stop[active[stop]] = stage
        certified[active[stop]] = cert[stop]
        active = active[~stop]
        if not len(active):
            break
    return lower_at_stop, stage_at_stop, certified


def test_stages_double_and_spend_less_than_alpha():
    bounds = StagedBounds(100_000, 0.001)
    assert bounds.sizes[:3] == [256, 512, 1024] and bounds.sizes[-1] == 100_000
    assert all(b > a for a, b in zip(bounds.sizes, bounds.sizes[1:], strict=False))
    assert sum(bounds.alphas) < 0.001 and bounds.alphas[-1] == 0.0005
    assert StagedBounds(100, 0.01).sizes == [100]


@pytest.mark.parametrize("p_true", [0.8, 0.95])
def test_decision_mode_false_certification_rate_under_optional_stopping(p_true):
    """p_A sits just below the threshold Φ(r): certifying r is always false. The staged test's
    false-certification rate stays below α; naive repeated testing at level α at every stage,
    with the same stopping, exceeds it (the check has power)."""
    alpha, trials = 0.05, 20_000
    r = float(norm.ppf(p_true)) + 1e-9
    bounds = StagedBounds(16_384, alpha)

    def staged(lower, upper, successes, stage):
        return stop_decision(UNIT, lower, upper, r, dim=1)

    _, _, certified = _simulate(p_true, trials, bounds, staged, seed=1)
    assert binomial_upper_tail(int(certified.sum()), trials, alpha) >= FALSE_ALARM

    naive = StagedBounds(16_384, alpha)
    naive.alphas = [alpha] * len(naive)  # no spending: every look at level α
    _, _, fooled = _simulate(p_true, trials, naive, staged, seed=2)
    assert binomial_upper_tail(int(fooled.sum()), trials, alpha) < FALSE_ALARM, fooled.sum()


@pytest.mark.parametrize("p_true", [0.6, 0.9, 0.999])
def test_radius_mode_lower_bound_covers_under_optional_stopping(p_true):
    alpha, trials = 0.05, 20_000
    bounds = StagedBounds(16_384, alpha)

    def rule(lower, upper, successes, stage):
        estimate = successes / bounds.sizes[stage]
        stop = stop_radius(UNIT, bounds, lower, upper, estimate, 0.1, dim=1)
        return stop, np.zeros_like(stop)

    lower, stage, _ = _simulate(p_true, trials, bounds, rule, seed=3)
    failures = int((lower > p_true).sum())
    assert binomial_upper_tail(failures, trials, alpha) >= FALSE_ALARM, failures
    assert stage.mean() < len(bounds) - 1  # it does stop early


def _linear(seed: int, inputs: int):
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(20, generator=generator)
    x = torch.randn(inputs, 20, generator=generator) * 0.15
    return LinearModel(w, float(torch.randn((), generator=generator))).eval(), x


@pytest.mark.parametrize("mode", [{"radius": 0.25}, {"tolerance": 0.05}])
def test_sequential_certificates_are_sound_on_the_linear_model(mode):
    alpha, inputs, sigma = 0.05, 300, 0.5
    model, x = _linear(seed=10, inputs=inputs)
    certifier = SequentialCertifier(model, Gaussian(sigma), 2, **mode)
    certs = certifier.certify(x, n0=50, n=4096, alpha=alpha, batch_size=20_000, seed=4)
    assert torch.equal(certs.index, torch.arange(inputs))  # the order of x
    certified = certs.prediction >= 0
    assert int(certified.sum()) > inputs // 3
    true = model.true_radius(x)
    wrong = (certs.prediction != model.label(x)) | (certs.radius > true)
    if "radius" in mode:
        wrong = wrong | ((certs.extra["decision"] == 1) & (true < mode["radius"]))
    violations = int((certified & wrong).sum())
    assert binomial_upper_tail(violations, inputs, alpha) >= FALSE_ALARM, violations
    assert float(certs.extra["samples"].mean()) < 4096  # stopped early on average


def test_full_run_draws_fixed_n_certifys_samples_and_batch_size_does_not_matter():
    model, x = _linear(seed=11, inputs=200)
    p_true = torch.special.ndtr(model.true_radius(x) / 0.5)
    x = x[(p_true > 0.7) & (p_true < 0.999)][:12]  # clear of ½ and of saturation
    fixed = SmoothedClassifier(model, Gaussian(0.5), 2).certify(x, n0=40, n=3000, seed=7)
    # A tolerance no radius gain can beat: every input runs every stage, up to n.
    runs = [
        SequentialCertifier(model, Gaussian(0.5), 2, tolerance=1e-12).certify(
            x, n0=40, n=3000, seed=7, batch_size=size
        )
        for size in (1000, 333)
    ]
    for certs in runs:
        assert torch.all(certs.extra["samples"] == 3000)
        assert torch.equal(certs.counts_estimation, fixed.counts_estimation)
        assert torch.equal(certs.counts_selection, fixed.counts_selection)
    assert torch.equal(runs[0].radius, runs[1].radius)
    assert torch.equal(runs[0].p_lower, runs[1].p_lower)


def _stream(model, x, size: int, offset: int = 0) -> torch.Tensor:
    counts = torch.zeros(x.shape[0], 2, dtype=torch.int64)
    for rows, part in stream_counts(
        model,
        Gaussian(0.5),
        x,
        [(1, size)],
        num_classes=2,
        batch_size=500,
        seed=5,
        keys=list(range(x.shape[0])),
        offset=offset,
    ):
        counts[rows] = part[:, 0]
    return counts


def test_engine_offset_continues_the_same_noise():
    model, x = _linear(seed=12, inputs=3)
    model.b = 0.0
    x = x * 0.1  # near the boundary: votes split, so equal counts mean equal noise
    whole = _stream(model, x, 3 * NOISE_BLOCK)
    head = _stream(model, x, NOISE_BLOCK)
    tail = _stream(model, x, 2 * NOISE_BLOCK, offset=NOISE_BLOCK)
    assert torch.all(head.min(dim=1).values > 0)
    assert torch.equal(head + tail, whole)
    assert not torch.equal(tail, _stream(model, x, 2 * NOISE_BLOCK))
    with pytest.raises(RSValueError, match="offset: expected a non-negative multiple of 256"):
        _stream(model, x, 10, offset=100)


def test_bad_modes_are_refused():
    model, _ = _linear(seed=13, inputs=1)
    with pytest.raises(RSValueError, match="radius/tolerance: expected exactly one"):
        SequentialCertifier(model, Gaussian(0.5), 2)
    with pytest.raises(RSValueError, match="radius/tolerance"):
        SequentialCertifier(model, Gaussian(0.5), 2, radius=0.5, tolerance=0.1)
    with pytest.raises(RSValueError, match="tolerance: expected a finite number > 0"):
        SequentialCertifier(model, Gaussian(0.5), 2, tolerance=-1.0)


def test_sequential_certifier_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "seq.jsonl"
    args = ["certify", "--certifier", "sequential", "--radius", "0.25", "--limit", "6"]
    assert main([*args, "-n", "5000", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["index"] for r in records) == list(range(6))
    assert all(r["certifier"] == "sequential" and r["decision_radius"] == 0.25 for r in records)
    assert all(r["samples"] <= 5000 and r["decision"] in (0.0, 1.0) for r in records)
    assert any(r["samples"] < 5000 for r in records)
    assert main(["certify", "--certifier", "sequential", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert main(["certify", "--tolerance", "0.1", "--out", str(tmp_path / "y.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "--certifier sequential: expected exactly one of --radius" in err
    assert "--tolerance: expected only with --certifier sequential" in err
