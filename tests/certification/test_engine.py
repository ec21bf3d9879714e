"""The Monte-Carlo engine: seeding, batch-size invariance, streaming, memory, naive oracle."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from statistics import NormalDist

import pytest
import torch

from rs_plugin import NOISE_BLOCK, Gaussian, RSValueError, SmoothedClassifier, block_seed
from rs_plugin.certification.engine import NOISE_VERSION, stream_counts
from rs_plugin.data import load_demo_model, load_digits
from tests.analytic import LinearModel, binomial_upper_tail
from tests.smoothings.test_inplace import IDS as INPLACE_IDS
from tests.smoothings.test_inplace import INSTANCES as INPLACE_INSTANCES


class BatchRecorder(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        return self.model(x)


def test_same_seed_same_counts_across_batch_sizes():
    x, _ = load_digits("test")
    smoothed = SmoothedClassifier(load_demo_model(), Gaussian(0.5), 10)
    runs = [
        smoothed.certify(x[:4], n0=37, n=700, batch_size=size, seed=11)
        for size in (1, 9, NOISE_BLOCK, 1000, 5000)
    ]
    for other in runs[1:]:
        assert torch.equal(other.counts_selection, runs[0].counts_selection)
        assert torch.equal(other.counts_estimation, runs[0].counts_estimation)
        assert torch.equal(other.radius, runs[0].radius)
    # The counts really depend on the noise: another seed gives other counts.
    other_seed = smoothed.certify(x[:4], n0=37, n=700, seed=12)
    assert not torch.equal(other_seed.counts_estimation, runs[0].counts_estimation)


def test_an_input_gets_the_same_certificate_alone_or_in_a_run():
    x, _ = load_digits("test")
    smoothed = SmoothedClassifier(load_demo_model(), Gaussian(0.5), 10)
    full = smoothed.certify(x[:6], n0=50, n=500, batch_size=300, seed=3)
    alone = smoothed.certify(x[4:5], n0=50, n=500, batch_size=77, seed=3, keys=[4])
    assert torch.equal(alone.counts_estimation[0], full.counts_estimation[4])
    assert torch.equal(alone.index, torch.tensor([4]))


def test_batches_mix_inputs_and_never_exceed_batch_size():
    torch.manual_seed(0)
    model = BatchRecorder(LinearModel(torch.randn(16), 0.1)).eval()
    smoothed = SmoothedClassifier(model, Gaussian(0.3), 2)
    smoothed.certify(torch.rand(10, 16), n0=10, n=40, batch_size=128)
    sampling_batches = model.sizes[1:]  # the first call is the 4-input probe
    assert max(sampling_batches) <= 128
    # 10 inputs x 50 samples = 500 samples: 3 full batches of 128 and one of 116.
    assert sampling_batches == [128, 128, 128, 116]


def test_streams_are_independent_and_counts_sum_to_n():
    torch.manual_seed(1)
    model = LinearModel(torch.randn(8), 0.0).eval()
    smoothed = SmoothedClassifier(model, Gaussian(1.0), 2)
    certs = smoothed.certify(torch.zeros(3, 8), n0=300, n=300, seed=5)
    assert torch.all(certs.counts_selection.sum(dim=1) == 300)
    assert torch.all(certs.counts_estimation.sum(dim=1) == 300)
    # On the decision boundary both classes are equally likely; equal count vectors for the two
    # streams of all three inputs would mean the streams share their noise.
    assert not torch.equal(certs.counts_selection, certs.counts_estimation)


def test_block_seed_separates_its_arguments():
    seeds = {
        block_seed(s, t, k, b)
        for s in range(3)
        for t in range(3)
        for k in range(5)
        for b in range(5)
    }
    assert len(seeds) == 3 * 3 * 5 * 5
    assert all(0 <= s < 2**63 for s in seeds)


def test_the_blocks_of_one_input_differ_in_the_bits_a_cpu_generator_uses():
    """Torch's CPU generator is seeded with the low 32 bits of its seed only: two blocks of one
    input agreeing there would get identical noise (not independent samples)."""
    generator = torch.Generator()
    generator.manual_seed(7 | (1 << 40))
    high_bits_ignored = torch.randn(4, generator=generator)
    assert torch.equal(high_bits_ignored, torch.randn(4, generator=generator.manual_seed(7)))
    for seed, key in ((0, 0), (0, 28219), (3, 2**64 - 1), (2**64 - 1, 5)):
        low = [block_seed(seed, s, key, b) & 0xFFFFFFFF for s in range(6) for b in range(4096)]
        assert len(set(low)) == len(low)
    # Blocks 165 and 367 of input 28219, seed 0: identical noise under a hash of all four
    # integers truncated to 32 bits by the generator (n = 100 000 has 391 blocks).
    first, second = (
        torch.randn(256, generator=torch.Generator().manual_seed(block_seed(0, 1, 28219, b)))
        for b in (165, 367)
    )
    assert not torch.equal(first, second)


def test_the_noise_definition_changes_only_with_its_version():
    """Known answers (integer arithmetic, the same on every machine): records store
    NOISE_VERSION, so a change of block_seed that keeps the version would resume old files
    under another noise."""
    assert NOISE_VERSION == 2
    assert [
        block_seed(s, t, k, b) for s, t, k, b in ((0, 1, 28219, 165), (3, 0, 2**64 - 1, 7))
    ] == [2152913907509458672, 645169824932470719]
    assert block_seed(2**64 - 1, 4, 0, 2**23 - 1) == 7847151226195127537


def test_block_seed_refuses_what_it_cannot_keep_apart():
    block_seed(0, 31, 0, 2**23 - 1)
    for stream, block in ((32, 0), (-1, 0), (0, 2**23), (0, -1)):
        with pytest.raises(ValueError, match="outside"):
            block_seed(0, stream, 0, block)


def test_more_samples_than_the_noise_can_keep_apart_are_refused_before_work():
    smoothed = SmoothedClassifier(torch.nn.Linear(8, 2), Gaussian(0.5), 2)
    for n0, n in ((100, 2**31 + 1), (2**31 + 1, 100)):
        with pytest.raises(RSValueError, match=r"^n0?: expected an integer in \[1, 2147483648\]"):
            smoothed.certify(torch.zeros(1, 8), n0=n0, n=n)
    with pytest.raises(RSValueError, match=r"^n: expected an integer in \[1, 2147483648\]"):
        smoothed.predict(torch.zeros(1, 8), n=2**31 + 1)


def _naive_lower_bound(k: int, n: int, alpha: float) -> float:
    """Solve P[Bin(n, p) >= k] = alpha for p by bisection (the Clopper–Pearson lower bound)."""
    if k == 0:
        return 0.0
    low, high = 0.0, 1.0
    for _ in range(200):
        mid = (low + high) / 2
        if binomial_upper_tail(k, n, mid) < alpha:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _naive_certify(model, sigma, x, n0, n, alpha, seed):
    """CERTIFY one sample at a time, from the engine's documented noise definition."""
    results = []
    smoothing = Gaussian(sigma)
    for key, row in enumerate(x):
        counts = []
        for stream, size in ((0, n0), (1, n)):
            votes = [0, 0]
            for block, start in enumerate(range(0, size, NOISE_BLOCK)):
                generator = torch.Generator().manual_seed(block_seed(seed, stream, key, block))
                length = min(NOISE_BLOCK, size - start)
                noisy = smoothing.perturb(row[None].expand(length, -1), generator)
                for sample in noisy:
                    votes[int(model(sample[None]).argmax())] += 1
            counts.append(votes)
        top = 0 if counts[0][0] >= counts[0][1] else 1
        p_lower = _naive_lower_bound(counts[1][top], n, alpha)
        if p_lower < 0.5:
            results.append((-1, 0.0, p_lower, counts))
        else:
            results.append((top, sigma * NormalDist().inv_cdf(p_lower), p_lower, counts))
    return results


def test_engine_agrees_with_a_naive_reimplementation():
    torch.manual_seed(2)
    model = LinearModel(torch.randn(5), 0.2).eval()
    x = torch.randn(4, 5) * 0.6
    certs = SmoothedClassifier(model, Gaussian(0.4), 2).certify(
        x, n0=40, n=600, alpha=0.01, batch_size=333, seed=9
    )
    naive = _naive_certify(model, 0.4, x, 40, 600, 0.01, 9)
    for i, (prediction, radius, p_lower, counts) in enumerate(naive):
        assert certs.counts_selection[i].tolist() == counts[0]
        assert certs.counts_estimation[i].tolist() == counts[1]
        assert int(certs.prediction[i]) == prediction
        assert math.isclose(float(certs.p_lower[i]), p_lower, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(float(certs.radius[i]), radius, rel_tol=1e-8, abs_tol=1e-12)
    assert {int(p) for p in certs.prediction} >= {0, 1}  # the case exercises both classes


# VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's peak (it survives fork and
# exec), so inside a large pytest process both runs would report the parent's figure.
_MEMORY_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {tests!r})
    from tests.analytic import LinearModel
    from rs_plugin import Gaussian, SmoothedClassifier
    torch.set_num_threads(1)
    model = LinearModel(torch.ones(784), 0.0).eval()
    x = torch.full((1, 1, 28, 28), 0.5)
    n = int(sys.argv[1])
    if sys.argv[2] == "materialise":  # what the check must be able to see
        noisy = x + 0.25 * torch.randn(n, 1, 28, 28)
        print(float(noisy.mean()) > -1)
    else:
        SmoothedClassifier(model, Gaussian(0.25), 2).certify(x, n0=100, n=n, batch_size=1000)
    with open("/proc/self/status") as status:
        print(next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmHWM:")))
    """
)


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_n(tmp_path):
    """Materialising n = 200 000 samples of 784 floats would take 627 MB more than n = 10 000;
    the engine's peak stays within 64 MB, and the same measurement does see materialisation."""
    script = tmp_path / "memory.py"
    script.write_text(_MEMORY_SCRIPT.format(tests=str(Path(__file__).resolve().parents[2])))
    peaks = {}
    for mode in ("engine", "materialise"):
        for n in (10_000, 200_000):
            out = subprocess.run(
                [sys.executable, str(script), str(n), mode],
                capture_output=True,
                text=True,
                check=True,
            )
            peaks[mode, n] = int(out.stdout.strip().splitlines()[-1])
    report = json.dumps({f"{m} {n}": v for (m, n), v in peaks.items()})
    assert peaks["materialise", 200_000] - peaks["materialise", 10_000] > 500, report
    assert peaks["engine", 200_000] - peaks["engine", 10_000] < 64, report


# -- the engine's noise against references computed without it -----------------------------------


class _Linear3(torch.nn.Module):
    """A fixed three-class linear classifier of 3×6×5 images (votes change with the noise)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(
            torch.randn(3 * 6 * 5, 3, generator=torch.Generator().manual_seed(0)),
            requires_grad=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight


STREAMS = [(0, 37), (1, 600)]


def _reference_counts(model, perturb, x, keys, seed):
    """Counts from the documented definition, one block and one sample at a time."""
    counts = torch.zeros(x.shape[0], len(STREAMS), 3, dtype=torch.int64)
    with torch.no_grad():
        for row, key in enumerate(keys):
            for slot, (stream, size) in enumerate(STREAMS):
                for block, start in enumerate(range(0, size, NOISE_BLOCK)):
                    length = min(NOISE_BLOCK, size - start)
                    generator = torch.Generator().manual_seed(block_seed(seed, stream, key, block))
                    noisy = perturb(x[row : row + 1].expand(length, *x.shape[1:]), generator)
                    for sample in noisy:
                        counts[row, slot, int(model(sample[None]).argmax())] += 1
    return counts


def _engine_counts(model, smoothing, x, keys, seed, batch_size):
    counts = torch.zeros(x.shape[0], len(STREAMS), 3, dtype=torch.int64)
    for rows, done in stream_counts(
        model, smoothing, x, STREAMS, num_classes=3, batch_size=batch_size, seed=seed, keys=keys
    ):
        counts[rows] = done
    return counts


def test_gaussian_noise_is_the_documented_draw():
    """The reference draws x + σ·z with torch.randn, without the smoothing's code."""
    model = _Linear3().eval()
    x = torch.rand(3, 3, 6, 5)
    keys = [4, 0, 9]

    def gaussian(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return batch + 0.5 * torch.randn(batch.shape, generator=generator)

    expected = _reference_counts(model, gaussian, x, keys, seed=3)
    for batch_size in (1, 300, 5000):
        got = _engine_counts(model, Gaussian(0.5), x, keys, 3, batch_size)
        assert torch.equal(got, expected), batch_size
    assert int(expected[..., 1:].sum()) > 0 and int(expected[..., 0].sum()) > 0


@pytest.mark.parametrize(("name", "smoothing"), INPLACE_INSTANCES, ids=INPLACE_IDS)
def test_every_smoothing_takes_the_engine_path_to_the_documented_noise(name, smoothing):
    """In-place blocks in a reused buffer, input added per run of samples, blocks straddling
    batches: the counts equal the per-block ``perturb`` reference at every batch size."""
    model = _Linear3().eval()
    x = torch.rand(2, 3, 6, 5)
    keys = [7, 2]
    expected = _reference_counts(model, smoothing.perturb, x, keys, seed=1)
    for batch_size in (7, 256, 1000):
        assert torch.equal(_engine_counts(model, smoothing, x, keys, 1, batch_size), expected)


# -- non-finite logits are an error, never a vote -------------------------------------------------


class _NaNWhereBright(torch.nn.Module):
    """Logits of a linear model, NaN (or +inf) for samples whose mean exceeds ``threshold``."""

    def __init__(
        self, threshold: float, value: float = float("nan"), noisy_only: bool = False
    ) -> None:
        super().__init__()
        self.inner = _Linear3()
        self.threshold = threshold
        self.value = value
        self.noisy_only = noisy_only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        bright = x.flatten(1).mean(dim=1) > self.threshold
        if self.noisy_only:  # constant clean inputs pass the classifier's clean probe
            bright &= x.flatten(1).std(dim=1) > 0.01
        return torch.where(bright[:, None], torch.full_like(logits, self.value), logits)


def test_an_all_nan_model_gets_no_certificate_and_no_prediction():
    smoothed = SmoothedClassifier(_NaNWhereBright(-1.0).eval(), Gaussian(0.25), 3)
    x = torch.rand(2, 3, 6, 5)
    # The clean probe before any sampling already sees it.
    with pytest.raises(RSValueError, match=r"model: .*finite logits.*clean inputs \(0, 1\)"):
        smoothed.certify(x, n0=10, n=100, keys=[5, 6])
    with pytest.raises(RSValueError, match=r"model: .*finite logits.*clean inputs \(0, 1\)"):
        smoothed.predict(x, n=100, keys=[5, 6])


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_logits_on_some_inputs_name_the_first_such_input(value):
    """Dark inputs get finite logits, the bright one (key 12) NaN or inf: the inputs before it
    are certified and yielded, then the run stops naming it."""
    model = _NaNWhereBright(0.5, value, noisy_only=True).eval()
    x = torch.cat([torch.full((2, 3, 6, 5), 0.2), torch.full((1, 3, 6, 5), 0.8)])
    smoothed = SmoothedClassifier(model, Gaussian(0.1), 3)
    done = []
    with pytest.raises(RSValueError, match=r"on 110 of 110 samples of key 12 \(row 2\)"):
        for certificates in smoothed.iter_certify(
            x, n0=10, n=100, batch_size=64, keys=[10, 11, 12]
        ):
            done += certificates.index.tolist()
    assert done == [10, 11]
    with pytest.raises(RSValueError, match=r"on 100 of 100 samples of key 12 \(row 2\)"):
        smoothed.predict(x, n=100, keys=[10, 11, 12])
    # Without the bright input nothing is wrong.
    assert smoothed.predict(x[:2], n=100).counts.sum() == 200


def test_a_few_non_finite_samples_are_enough_to_stop():
    """Only noisy samples that land above the threshold get NaN (about 3 % of them)."""
    model = _NaNWhereBright(0.5).eval()
    x = torch.full((1, 3, 6, 5), 0.48)
    smoothed = SmoothedClassifier(model, Gaussian(0.1), 3)
    with pytest.raises(RSValueError, match=r"non-finite logits on \d+ of 1100 samples of key 0"):
        smoothed.certify(x, n0=100, n=1000)
