"""batch_size="auto": the probe's batches are votes of the run, the counts are those of a fixed
size, the choice is cached, bad values are refused; the allocator setting keeps freed memory."""

from __future__ import annotations

import os
import resource

import pytest
import torch

from rs_plugin import Gaussian, RSValueError, SmoothedClassifier
from rs_plugin.certification import batching
from rs_plugin.certification.allocator import retain_freed_memory
from rs_plugin.certification.batching import (
    AutoBatch,
    auto_batch,
    batches_per_size,
    check_batch_size,
)
from rs_plugin.certification.engine import stream_counts
from rs_plugin.certification.threads import torch_threads
from rs_plugin.runs.records import batch_size_used
from tests.certification.test_engine import BatchRecorder
from tests.smoothings.test_inplace import INSTANCES

CANDIDATES = (16, 32, 64, 128, 256, 512, 1024)


def _probe_bound(candidates):
    """Samples the whole probe takes at most without its time window: the sweep, then the
    confirmation (every finalist, every round)."""
    sweep = sum(size * batches_per_size(size) for size in candidates)
    return sweep * (1 + batching.ROUNDS)


PROBE = _probe_bound(CANDIDATES)


@pytest.fixture
def counted_visits(monkeypatch):
    """Visits of exactly batches_per_size batches, whatever the clock says (the time window
    is tested on its own below)."""
    monkeypatch.setattr(batching, "MIN_SECONDS", 0.0)


def _run_visits(state, seconds_of):
    """Drive ``state`` with batches of ``seconds_of(size, visit)`` until it settles."""
    while not state.settled:
        size = state.next_size()
        state.record(size, seconds_of(size, len(state.visits)))


def _expected_sizes(state):
    return [size for size, batches in state.visits for _ in range(batches)]


def _model() -> BatchRecorder:
    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(64, 4)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(4, 64, generator=generator))
        linear.bias.zero_()
    return BatchRecorder(torch.nn.Sequential(torch.nn.Flatten(), linear)).eval()


def _inputs(count: int = 3) -> torch.Tensor:
    return torch.rand((count, 1, 8, 8), generator=torch.Generator().manual_seed(1))


def _counts(model, smoothing, x, streams, batch_size):
    out: dict[int, torch.Tensor] = {}
    for rows, counts in stream_counts(
        model,
        smoothing,
        x,
        streams,
        num_classes=4,
        batch_size=batch_size,
        seed=5,
        keys=list(range(x.shape[0])),
    ):
        # An input is yielded only once every one of its samples has voted.
        sizes = torch.tensor([size for _, size in streams])
        assert torch.equal(counts.sum(dim=2), sizes.expand(len(rows), -1))
        out.update(zip(rows, counts, strict=True))
    return torch.stack([out[row] for row in range(x.shape[0])])


@pytest.mark.parametrize(
    "smoothing", [Gaussian(0.5), dict(INSTANCES)["rotation"]], ids=["gaussian", "rotation"]
)
def test_auto_gives_the_counts_of_a_fixed_batch_size_and_counts_every_probe_sample(
    smoothing, monkeypatch, counted_visits
):
    # Three candidates keep the run short; the whole list is swept in the cache test below.
    candidates = (16, 64, 256)
    monkeypatch.setattr(batching, "candidates_for", lambda sample_bytes, device: candidates)
    x = _inputs()
    streams = [(0, 100), (1, _probe_bound(candidates) // 3 + 500)]
    total = x.shape[0] * sum(size for _, size in streams)
    auto_model = _model()
    auto = _counts(auto_model, smoothing, x, streams, "auto")
    fixed = _counts(_model(), smoothing, x, streams, 100)
    assert torch.equal(auto, fixed)
    assert int(auto.sum()) == total
    # The model saw every sample exactly once: the probe's batches are the run's votes.
    assert sum(auto_model.sizes) == total
    # The probe swept the candidates in increasing order, batches_per_size each, confirmed its
    # finalists, then settled.
    state = auto_batch(auto_model, x)
    assert state.settled and state.chosen in candidates
    sweep = [(s, batches_per_size(s)) for s in candidates[: len(state.times)]]
    assert state.visits[: len(sweep)] == sweep
    probe = _expected_sizes(state)
    assert auto_model.sizes[: len(probe)] == probe
    assert set(auto_model.sizes[len(probe) : -1]) == {state.chosen}


def test_inputs_complete_exactly_when_the_probe_grows_and_then_shrinks_the_batch(monkeypatch):
    # Rates as a model would show them (fastest at 64), whatever the machine's clock says: the
    # probe grows the batch to 256, then settles back on 64.
    rates = {16: 1.0, 32: 2.0, 64: 3.0, 128: 1.0, 256: 1.0, 512: 1.0, 1024: 1.0}
    record = AutoBatch.record
    monkeypatch.setattr(
        AutoBatch, "record", lambda self, size, _: record(self, size, size / rates[size])
    )
    x = _inputs(3)
    streams = [(0, 50), (1, 1100)]
    model = _model()
    auto = _counts(model, Gaussian(0.5), x, streams, "auto")
    assert torch.equal(auto, _counts(_model(), Gaussian(0.5), x, streams, 100))
    # 128 and 256 run at a third of 64's rate: two declines end the sweep; no other size comes
    # within FINALIST_FRACTION of 64, so nothing needs confirming.
    probe = [s for s in (16, 32, 64, 128, 256) for _ in range(batches_per_size(s))]
    assert _expected_sizes(auto_batch(model, x)) == probe
    assert model.sizes[: len(probe)] == probe
    assert set(model.sizes[len(probe) : -1]) == {64}
    # Runs smaller than the probe, one after another, continue it and settle alike.
    model = _model()
    streams = [(0, 10), (1, 300)]
    fixed = _counts(_model(), Gaussian(0.5), x[:1], streams, 7)
    for _ in range(14):
        assert torch.equal(_counts(model, Gaussian(0.5), x[:1], streams, "auto"), fixed)
    assert auto_batch(model, x[:1]).chosen == 64


def test_the_choice_is_cached_per_model_and_key_and_a_small_run_continues_the_probe(
    counted_visits,
):
    model, x = _model(), _inputs(1)
    smoothing = Gaussian(0.25)
    # A run too small for the sweep leaves the probe on; the next call continues it.
    _counts(model, smoothing, x, [(0, 40)], "auto")
    state = auto_batch(model, x)
    assert not state.settled and model.sizes[0] == 16
    _counts(model, smoothing, x, [(0, PROBE)], "auto")
    assert state.settled and auto_batch(model, x) is state
    model.sizes.clear()
    _counts(model, smoothing, x, [(0, 5000)], "auto")
    chosen = state.chosen
    assert chosen is not None and model.sizes[:-1] == [chosen] * (len(model.sizes) - 1)
    assert batch_size_used("auto", model) == chosen and batch_size_used(64, model) == 64
    # Another thread count, shape or model is another key: a fresh probe.
    with torch_threads(torch.get_num_threads() + 1):
        assert auto_batch(model, x) is not state
    assert auto_batch(model, _inputs(1)[:, :, :4]) is not state
    assert auto_batch(_model(), x) is not state


def test_a_vote_runner_and_its_classifier_share_the_cache_by_the_model(counted_visits):
    model, x = _model(), _inputs(2)
    first = SmoothedClassifier(model, Gaussian(0.5), 4)
    first.certify(x, n0=50, n=PROBE, seed=0)
    second = SmoothedClassifier(model, Gaussian(0.5), 4)
    assert auto_batch(second.runner, x) is auto_batch(first.runner, x)
    assert auto_batch(second.runner, x).settled


def test_a_fresh_probe_for_one_run_leaves_the_settled_one_in_place(counted_visits):
    """What the bench's cold run does between settled runs: a half-done probe of its own must
    not be left for the settled runs to finish."""
    model, x = _model(), _inputs(2)
    smoothed = SmoothedClassifier(model, Gaussian(0.5), 4)
    smoothed.certify(x, n0=50, n=PROBE, seed=0)
    settled = auto_batch(smoothed.runner, x)
    assert settled.settled
    with batching.probing_afresh(smoothed.model):
        smoothed.certify(x, n0=10, n=40, seed=0)
        fresh = auto_batch(smoothed.runner, x)
        assert fresh is not settled and not fresh.settled
    assert auto_batch(smoothed.runner, x) is settled
    assert batch_size_used("auto", model) == settled.chosen


def test_the_probe_settles_on_the_best_rate_and_stops_after_two_declines():
    state = AutoBatch((16, 32, 64, 128, 256))
    # Samples per second each size shows; the first batch of a size (allocating) is slow.
    for size, rate in ((16, 10.0), (32, 20.0), (64, 8.0), (128, 6.0)):
        for batch in range(batches_per_size(size)):
            assert not state.settled and state.next_size() == size
            state.record(size, 100.0 if batch == 0 else size / rate)
        assert state.rate(size) == pytest.approx(rate)
    # 8 < 0.5 × 20 and 6 < 0.5 × 20: two declines in a row; no size within 0.7 of 20 to confirm.
    assert state.chosen == 32 and not state.confirmed
    state.record(256, 1e-6)  # settled: no longer measured
    assert state.chosen == 32 and state.current() == 32 and 256 not in state.times


def test_finalists_are_confirmed_in_interleaved_rounds_and_outvote_a_slow_moment():
    # True rates grow with the size; while the sweep measures 128 the machine runs at 80 %
    # (another process's burst), so the sweep alone would settle on 64.
    rates = {16: 10.0, 32: 12.0, 64: 14.0, 128: 16.0}
    sweep_visit_of_128 = 3

    def seconds(size, visit):
        slow = 0.8 if visit == sweep_visit_of_128 else 1.0
        return size / (rates[size] * slow)

    state = AutoBatch(tuple(rates))
    _run_visits(state, seconds)
    assert max(state.times, key=state.rate) == 64  # what the sweep saw
    assert state.chosen == 128  # what the interleaved rounds saw
    finalists = [64, 128, 32]  # the sweep's best three, all within 0.7 of its best
    confirm = [size for size, _ in state.visits[len(rates) :]]
    rounds = [confirm[i : i + 3] for i in range(0, len(confirm), 3)]
    assert len(rounds) == batching.ROUNDS
    assert all(sorted(r) == sorted(finalists) for r in rounds)
    assert len({r[0] for r in rounds}) == batching.ROUNDS  # each round starts elsewhere
    assert state.confirmed_rate(128) == pytest.approx(16.0)


def test_a_visit_lasts_until_its_scored_time_reaches_the_window():
    # Batches of 1024 taking 10 ms: 2 scored batches cover the samples, not the 0.3 s window.
    state = AutoBatch((1024,))
    _run_visits(state, lambda size, visit: 0.01)
    window = int(batching.MIN_SECONDS / 0.01)
    assert state.visits == [(1024, 1 + window)] or state.visits == [(1024, 2 + window)]
    assert sum(state.times[1024][1:]) >= batching.MIN_SECONDS


def test_a_size_is_charged_for_the_noise_blocks_its_batches_draw():
    # Batches of 16 samples draw a 256-sample noise block once in 16 batches: one slow batch,
    # fifteen fast ones. The rate is samples over summed time, not the fastest batch.
    state = AutoBatch((16, 32))
    for batch in range(batches_per_size(16)):
        state.record(16, 1.0 if batch % 16 == 1 else 0.01)
    scored = state.times[16][1:]
    assert batches_per_size(16) * 16 >= 16 + 512
    assert state.rate(16) == pytest.approx(16 * len(scored) / sum(scored))
    assert state.rate(16) < 16 / 0.01 / 5


@pytest.mark.parametrize("value", [0, -3, "fast", "AUTO", 2.5, True, None])
def test_bad_batch_sizes_are_refused_before_any_forward(value):
    with pytest.raises(RSValueError) as info:
        check_batch_size(value)
    assert info.value.parameter == "batch_size"
    assert "'auto' or an integer >= 1" in str(info.value)
    assert repr(value) in str(info.value)
    model = _model()
    with pytest.raises(RSValueError, match="batch_size"):
        SmoothedClassifier(model, Gaussian(0.5), 4).certify(_inputs(), n=100, batch_size=value)
    assert model.sizes == []


def test_candidates_respect_the_free_memory(monkeypatch):
    monkeypatch.setattr(batching, "_free_bytes", lambda device: 2 * 64 * 1000 * 100)
    # Half the free memory at 64× the input's bytes per sample holds 100 samples of 1000 bytes.
    assert batching.candidates_for(1000, torch.device("cpu")) == (16, 32, 64)
    monkeypatch.setattr(batching, "_free_bytes", lambda device: 0)
    assert batching.candidates_for(1000, torch.device("cpu")) == (16,)


def test_freed_activations_stay_in_the_process():
    applied = retain_freed_memory()
    if not applied:  # only where glibc is absent or the user configured malloc
        user = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_")
        assert any(name in os.environ for name in (*user, "GLIBC_TUNABLES"))
        return
    assert retain_freed_memory() is True  # once per process, then the same answer
    # A convolution's 46 MiB of activations, allocated and freed by every forward pass: glibc's
    # defaults map and unmap them each time (~30 000 faults per forward).
    conv, x = torch.nn.Conv2d(1, 20, 5), torch.rand(1024, 1, 28, 28)
    pages = 1024 * 20 * 24 * 24 * 4 // resource.getpagesize()
    with torch.inference_mode(), torch_threads(1):
        for _ in range(2):  # the first forwards fault the pages in once
            conv(x).relu_()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(4):
            conv(x).relu_()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < pages // 4
