"""Sequential certification: coverage under optional stopping, soundness on the analytic linear
model, reproducibility, and the staged engine drawing exactly fixed-n CERTIFY's samples.

Coverage tests count failures F over M simulated inputs and fail only when
P[Binomial(M, α) >= F] < 1e-4 (false-alarm rate at most 1e-4 per test).
"""

from __future__ import annotations

import functools
import itertools
import json

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.stats import norm

from rs_plugin import (
    NOISE_BLOCK,
    AnytimeBounds,
    AnytimeCertifier,
    Gaussian,
    RSValueError,
    SequentialCertifier,
    SmoothedClassifier,
    StagedBounds,
)
from rs_plugin.certification.confidence_sequence import mixture_lower, mixture_upper
from rs_plugin.certification.engine import stream_counts
from rs_plugin.certification.sequential import FUTILITY
from rs_plugin.certification.stats import clopper_pearson_lower, clopper_pearson_upper
from rs_plugin.certification.stopping import DecisionRule, anytime_sizes, run_checks
from rs_plugin.cli import main
from tests.analytic import LinearModel, binomial_upper_tail

FALSE_ALARM = 1e-4
UNIT = Gaussian(1.0)  # radius(p) = Φ⁻¹(p): radii in units of σ
CERTIFIERS = {"staged": SequentialCertifier, "anytime": AnytimeCertifier}


def _certifier(kind: str, **mode):
    """The certifier ``kind`` on one-coordinate inputs, radii in units of σ."""
    return CERTIFIERS[kind](LinearModel(torch.ones(1), 0.0), UNIT, 2, **mode)


def _simulate(p_true: float, trials: int, stops, seed: int):
    """Run a stopping procedure on Bernoulli(p_true) votes; return (lower bound at the stop,
    samples drawn, certified flag) per trial. ``stops(draw, rows)`` yields the stops."""
    rng = np.random.default_rng(seed)
    lower = np.zeros(trials)
    samples = np.zeros(trials, dtype=np.int64)
    certified = np.zeros(trials, dtype=bool)

    def draw(active: np.ndarray, done: int, size: int) -> np.ndarray:
        return rng.binomial(size, p_true, len(active))

    for stop in stops(draw, trials):
        lower[stop.rows], samples[stop.rows], certified[stop.rows] = (
            stop.lower,
            stop.samples,
            stop.certified,
        )
    return lower, samples, certified


def _used(certifier, budget: int, alpha: float):
    """The certifier's own stopping procedure (what it runs on the model's votes)."""
    return functools.partial(certifier.stops, n=budget, alpha=alpha, dim=1)


class _Peeking(AnytimeBounds):
    """Clopper–Pearson at level α at every check: what the confidence sequence replaces."""

    def bounds(self, successes, stage):
        trials = self.sizes[stage]
        return (
            clopper_pearson_lower(successes, trials, self.alpha),
            clopper_pearson_upper(successes, trials, self.alpha),
        )


def test_stages_double_and_spend_less_than_alpha():
    bounds = StagedBounds(100_000, 0.001)
    assert bounds.sizes[:3] == [256, 512, 1024] and bounds.sizes[-1] == 100_000
    assert all(b > a for a, b in itertools.pairwise(bounds.sizes))
    assert sum(bounds.alphas) < 0.001 and bounds.alphas[-1] == 0.0005
    assert StagedBounds(100, 0.01).sizes == [100]


def test_anytime_checks_come_every_batch_and_end_at_the_budget():
    sizes = anytime_sizes(100_000)
    assert sizes[:3] == [256, 512, 768] and sizes[-1] == 100_000
    assert all(s % NOISE_BLOCK == 0 for s in sizes[:-1])
    steps = np.diff(sizes)
    assert np.all(steps > 0) and np.all(steps[:-1] <= np.maximum(256, np.array(sizes[:-2]) / 16))
    assert len(sizes) < 120  # few checks: each one is a pass of the engine
    assert anytime_sizes(100) == [100]


@pytest.mark.parametrize("trials", [1, 40, 1000])
def test_confidence_sequence_covers_at_a_fixed_time_exactly(trials):
    """Exact binomial sums: P[L_t > p] and P[U_t < p] ≤ α at every p of a grid (a time-uniform
    bound is in particular valid at each fixed time), and L_t sits below the frequency."""
    alpha = 0.05
    k = np.arange(trials + 1)
    lower, upper = mixture_lower(k, trials, alpha), mixture_upper(k, trials, alpha)
    assert np.all(lower <= k / trials) and np.all(upper >= k / trials)
    assert np.all(np.diff(lower) > 0) and lower[0] == 0 and upper[-1] == 1
    for p in np.linspace(0.01, 0.99, 99):
        pmf = stats.binom.pmf(k, trials, p)
        assert pmf[lower > p].sum() <= alpha and pmf[upper < p].sum() <= alpha, p


def _crossing_probability(lower: dict[int, np.ndarray], horizon: int, p: float) -> float:
    """P[∃ t ≤ horizon: lower_t(S_t) > p] for S_t a Binomial(t, p) path, exactly: the law of
    S_t over the paths that have not crossed yet, step by step."""
    alive = np.zeros(horizon + 2)
    alive[0] = 1.0
    crossed = 0.0
    for t in range(1, horizon + 1):
        step = np.zeros(horizon + 2)
        step[1 : t + 1] += alive[:t] * p
        step[: t + 1] += alive[: t + 1] * (1 - p)
        over = np.flatnonzero(lower[t] > p)
        crossed += step[over].sum()
        step[over] = 0.0
        alive = step
    return crossed


def test_confidence_sequence_holds_at_every_time_at_once_exactly():
    """Up to t = 200 trials, summed exactly over all Bernoulli paths: the mixture bound is
    above p at some time with probability ≤ α; Clopper–Pearson re-tested at every t is not."""
    alpha, horizon = 0.05, 200
    times = np.concatenate([np.full(t + 1, t) for t in range(1, horizon + 1)])
    counts = np.concatenate([np.arange(t + 1) for t in range(1, horizon + 1)])
    ends = np.cumsum([t + 1 for t in range(1, horizon + 1)])
    mixture = np.split(mixture_lower(counts, times, alpha), ends[:-1])
    peeking = np.split(clopper_pearson_lower(counts, times, alpha), ends[:-1])
    by_time = {t: mixture[t - 1] for t in range(1, horizon + 1)}
    naive = {t: peeking[t - 1] for t in range(1, horizon + 1)}
    for p in (0.05, 0.3, 0.5, 0.8, 0.95):
        assert _crossing_probability(by_time, horizon, p) <= alpha, p
    assert _crossing_probability(naive, horizon, 0.5) > 3 * alpha


@pytest.mark.parametrize("kind", CERTIFIERS)
@pytest.mark.parametrize("p_true", [0.8, 0.95])
def test_decision_mode_false_certification_rate_under_optional_stopping(kind, p_true):
    """p_A sits just below the threshold Φ(r): certifying r is always false. Over 10 000 runs of
    the certifier's own stopping procedure, the false-certification rate stays below α."""
    alpha, trials, budget = 0.05, 10_000, 16_384
    certifier = _certifier(kind, radius=float(norm.ppf(p_true)) + 1e-9)
    _, samples, certified = _simulate(p_true, trials, _used(certifier, budget, alpha), seed=1)
    assert binomial_upper_tail(int(certified.sum()), trials, alpha) >= FALSE_ALARM
    assert samples.mean() < budget  # undecided runs are stopped early too


def test_the_rate_check_has_power_against_peeking():
    """Clopper–Pearson at level α re-tested at every check with the anytime decision rule
    certifies falsely far more often than α, and the same check catches it."""
    alpha, trials, p_true = 0.05, 10_000, 0.8
    rule = DecisionRule(UNIT, 1, float(norm.ppf(p_true)) + 1e-9, futility=FUTILITY)

    def peeking(draw, rows):
        return run_checks(_Peeking(16_384, alpha), rule, draw, rows)

    _, _, fooled = _simulate(p_true, trials, peeking, seed=2)
    assert binomial_upper_tail(int(fooled.sum()), trials, alpha) < FALSE_ALARM, fooled.sum()


@pytest.mark.parametrize("kind", CERTIFIERS)
@pytest.mark.parametrize("p_true", [0.6, 0.9, 0.999])
def test_radius_mode_lower_bound_covers_under_optional_stopping(kind, p_true):
    alpha, trials, budget = 0.05, 10_000, 16_384
    stops = _used(_certifier(kind, tolerance=0.1), budget, alpha)
    lower, samples, _ = _simulate(p_true, trials, stops, seed=3)
    failures = int((lower > p_true).sum())
    assert binomial_upper_tail(failures, trials, alpha) >= FALSE_ALARM, failures
    assert samples.mean() < budget  # it does stop early


def _linear(seed: int, inputs: int):
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(20, generator=generator)
    x = torch.randn(inputs, 20, generator=generator) * 0.15
    return LinearModel(w, float(torch.randn((), generator=generator))).eval(), x


@pytest.mark.parametrize("kind", CERTIFIERS)
@pytest.mark.parametrize("mode", [{"radius": 0.25}, {"tolerance": 0.05}])
def test_sequential_certificates_are_sound_on_the_linear_model(kind, mode):
    alpha, inputs, sigma = 0.05, 300, 0.5
    model, x = _linear(seed=10, inputs=inputs)
    certifier = CERTIFIERS[kind](model, Gaussian(sigma), 2, **mode)
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
    assert float(certs.extra["samples"].double().mean()) < 4096  # stopped early on average


@pytest.mark.parametrize("kind", CERTIFIERS)
def test_full_run_draws_fixed_n_certifys_samples_and_batch_size_does_not_matter(kind):
    model, x = _linear(seed=11, inputs=200)
    p_true = torch.special.ndtr(model.true_radius(x) / 0.5)
    x = x[(p_true > 0.7) & (p_true < 0.999)][:12]  # clear of ½ and of saturation
    fixed = SmoothedClassifier(model, Gaussian(0.5), 2).certify(x, n0=40, n=3000, seed=7)
    # A tolerance no radius gain can beat: every input runs every stage, up to n.
    runs = [
        CERTIFIERS[kind](model, Gaussian(0.5), 2, tolerance=1e-12).certify(
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


@pytest.mark.parametrize("name", ["sequential", "anytime"])
def test_sequential_certifier_from_the_command_line(name, tmp_path, capsys):
    out = tmp_path / "seq.jsonl"
    args = ["certify", "--certifier", name, "--radius", "0.25", "--limit", "6"]
    assert main([*args, "-n", "5000", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["index"] for r in records) == list(range(6))
    assert all(r["certifier"] == name and r["decision_radius"] == 0.25 for r in records)
    assert all(r["samples"] <= 5000 and r["decision"] in (0, 1) for r in records)
    assert any(r["samples"] < 5000 for r in records)
    # Counts and decisions are integers; n is the samples each input used, n_max the budget.
    for r in records:
        assert all(type(r[k]) is int for k in ("samples", "decision", "n", "count", "n0"))
        assert r["n"] == r["samples"] and r["n_max"] == 5000
    # A file written when the budget was stored as n (and counts as floats) still resumes.
    old = [{**r, "n": 5000, "samples": float(r["samples"])} for r in records[:3]]
    for r in old:
        del r["n_max"]
    legacy = tmp_path / "legacy.jsonl"
    legacy.write_text("".join(json.dumps(r) + "\n" for r in old))
    assert main([*args, "-n", "5000", "--out", str(legacy), "--resume"]) == 0
    resumed = [json.loads(line) for line in legacy.read_text().splitlines()]
    assert sorted(r["index"] for r in resumed) == list(range(6))
    assert main(["certify", "--certifier", name, "--out", str(tmp_path / "x.jsonl")]) == 2
    assert main(["certify", "--tolerance", "0.1", "--out", str(tmp_path / "y.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "--radius/--tolerance: expected exactly one: radius R (decision mode)" in err
    assert "--tolerance: expected no tolerance with certifier 'cohen', whose options are" in err


class _LayoutSpy(torch.nn.Module):
    """A 3-channel convolutional classifier that notes, at every forward, whether its input came
    in the channels-last layout and whether autocast was on."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4 * 6 * 6, 3)
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        strict = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        self.seen.append((strict, torch.is_autocast_enabled("cpu")))
        return self.head(torch.relu(self.conv(x)).flatten(1))


@pytest.mark.parametrize("name", sorted(CERTIFIERS))
def test_the_vote_options_reach_the_model_of_a_sequential_certifier(name):
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    seen = {}
    for on in (False, True):
        spy = _LayoutSpy().eval()
        precision = "bfloat16" if on else "float32"
        certifier = CERTIFIERS[name](
            spy, Gaussian(0.25), 3, radius=0.1, channels_last=on, precision=precision
        )
        certs = certifier.certify(x, n0=50, n=2000, batch_size=256, seed=0)
        assert certs.prediction.shape == (3,)
        seen[on] = set(spy.seen[1:])  # after the probe, every vote's forward
    assert seen[False] == {(False, False)}
    assert seen[True] == {(True, True)}


def test_anytime_radius_mode_records_the_votes_its_bound_is_computed_from():
    # p_lower is Clopper–Pearson on the votes after the pilot: the record says which, so that
    # anyone can compute it back (count and samples include the pilot's votes).
    model, x = _linear(seed=12, inputs=40)
    alpha = 0.01
    certs = AnytimeCertifier(model, Gaussian(0.5), 2, tolerance=0.05).certify(
        x, n0=50, n=8192, alpha=alpha, seed=5
    )
    trials, votes = certs.extra["bound_samples"], certs.extra["bound_count"]
    assert torch.all(trials + 1024 == certs.extra["samples"])  # the pilot's 1024 are not in it
    assert torch.all((votes >= 0) & (votes <= trials))
    expected = clopper_pearson_lower(votes.numpy(), trials.numpy(), alpha)
    assert np.array_equal(certs.p_lower.numpy(), expected)
    records = certs.to_records()
    assert {"bound_samples", "bound_count"} <= records[0].keys()
    decided = AnytimeCertifier(model, Gaussian(0.5), 2, radius=0.25).certify(
        x[:4], n0=50, n=8192, alpha=alpha, seed=5
    )
    assert "bound_samples" not in decided.extra  # decision mode's bound uses every vote
