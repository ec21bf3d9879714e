"""Vote counting with reduced precision, channels-last layout and torch.compile (CPU here; the
same code paths run on a GPU), from Python, the CLI and the bench."""

from __future__ import annotations

import json

import pytest
import torch

from rs_plugin import Gaussian, RSValueError, SmoothedClassifier
from rs_plugin.cli import main
from rs_plugin.data import load_demo_model, load_digits

N = 2000


def _certify(**options):
    x = load_digits("test")[0][:8]
    smoothed = SmoothedClassifier(load_demo_model(), Gaussian(0.25), 10, **options)
    return smoothed, smoothed.certify(x, n0=50, n=N, batch_size=700, seed=3)


@pytest.fixture(scope="module")
def plain():
    return _certify()[1]


@pytest.mark.parametrize(
    "options", [{"channels_last": True}, {"compile": True}], ids=["channels_last", "compile"]
)
def test_layout_and_compilation_change_kernels_not_votes(plain, options):
    smoothed, certs = _certify(**options)
    # Same noise, same function: at most a vote or two can flip on floating-point rounding.
    assert torch.equal(certs.prediction, plain.prediction)
    assert int((certs.counts_estimation - plain.counts_estimation).abs().max()) <= 2
    if options.get("compile"):
        assert smoothed.runner._compiled is not None  # the compiled module did the counting


def test_reduced_precision_certifies_the_reduced_precision_classifier(plain):
    smoothed, certs = _certify(precision="bfloat16")
    again = smoothed.certify(
        load_digits("test")[0][:8], n0=50, n=N, batch_size=300, seed=3
    )  # deterministic, whatever the batch size
    assert torch.equal(certs.counts_estimation, again.counts_estimation)
    confident = plain.p_lower > 0.9
    assert torch.equal(certs.prediction[confident], plain.prediction[confident])
    # A different classifier (bfloat16 logits), close to the float32 one on these inputs.
    assert int((certs.counts_estimation - plain.counts_estimation).abs().max()) <= N // 20


def test_forward_and_state_dict_are_unaffected():
    smoothed, _ = _certify(precision="bfloat16", channels_last=True)
    keys = set(SmoothedClassifier(load_demo_model(), Gaussian(0.25), 10).state_dict())
    assert set(smoothed.state_dict()) == keys  # the runner holds no second copy of the model
    x = load_digits("test")[0][:2]
    assert smoothed(x).dtype == torch.float32


def test_bad_precision_is_refused():
    with pytest.raises(RSValueError, match="precision: expected one of"):
        SmoothedClassifier(load_demo_model(), Gaussian(0.25), 10, precision="float8")


def test_cli_precision_is_recorded_and_refused_by_a_certifier_without_it(tmp_path, capsys):
    out = tmp_path / "bf16.jsonl"
    args = ["certify", "--limit", "3", "-n", "300", "--n0", "30", "--precision", "bfloat16"]
    assert main([*args, "--channels-last", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["precision"] for r in records] == ["bfloat16"] * 3
    bad = ["certify", "--certifier", "ddrs", "--compile", "--out", str(tmp_path / "x.jsonl")]
    assert main(bad) == 2
    assert main([*args[:-1], "float8", "--out", str(tmp_path / "y.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "--compile: expected no compile with certifier 'ddrs', whose options are none" in err
    assert "--precision: expected one of" in err


@pytest.mark.slow
def test_bench_compiled_ratios_are_quotients_of_its_timings(capsys):
    argv = ["bench", "--inputs", "2", "--n0", "10", "-n", "300", "--repeats", "1", "--no-art"]
    argv += ["--models", "digits", "--threads", "1", "--batch-sizes", "64"]
    assert main([*argv, "--memory-n", "1000", "--compile", "--json"]) == 0
    out = capsys.readouterr().out
    compiled = json.loads(out)["compiled"]
    assert compiled["engine_over_forward"] == pytest.approx(
        compiled["engine_seconds"] / compiled["forward_seconds"], rel=1e-12
    )
    first = next(iter(json.loads(out)["models"]["digits"]["conditions"].values()))
    assert compiled["forward_seconds"] == first["seconds"]["floor"]["median"]
    assert compiled["forward_batch"] == first["floor_batch"]
    assert compiled["engine_samples_per_second"] == pytest.approx(
        2 * 310 / compiled["engine_seconds"], rel=1e-12
    )


class _HalfThreshold(torch.nn.Module):
    """A float16 model: class 1 iff the first coordinate, as float16, exceeds 1000.25. Float16
    rounds [512, 1024) to multiples of 0.5, so it sees 1000.0 or 1000.5 near the threshold."""

    def __init__(self) -> None:
        super().__init__()
        self.center = torch.nn.Parameter(torch.tensor(1000.0, dtype=torch.float16))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.dtype == torch.float16  # the vote runner casts each noisy batch
        margin = (z[:, 0] - self.center) - 0.25
        return torch.stack([-margin, margin], dim=1)


def test_a_float16_model_is_certified_at_the_input_not_at_its_float16_rounding():
    """f∘cast with noise drawn in float32: at x₀ = 1000.2, P(class 0) = P(x₀ + ε < 1000.25) =
    Φ(5/6) ≈ 0.80 for σ = 0.06, and at x₁ = 1000.3 P(class 1) = Φ(5/6) too. Rounding inputs to
    float16 first (1000.0 and 1000.5) gave each 1 − 3e-5 and radii ≈ 0.2: two balls of
    different classes overlapping (1000.25 is in both), one certificate necessarily false."""
    smoothed = SmoothedClassifier(_HalfThreshold().eval(), Gaussian(0.06), 2)
    x = torch.tensor([[1000.2, 0.0], [1000.3, 0.0]])
    certs = smoothed.certify(x, n0=100, n=20_000, alpha=0.001, seed=0)
    exact = float(torch.special.ndtr(torch.tensor(5 / 6)))
    assert certs.prediction.tolist() == [0, 1]
    assert all(exact - 0.02 < float(p) <= exact for p in certs.p_lower)
    assert float(certs.radius.sum()) < float(x[1, 0] - x[0, 0])  # the two balls are disjoint


def test_a_model_without_floating_parameters_gets_its_buffers_dtype():
    # A module whose weights are float32 buffers, given float64 inputs: noise is drawn in float64
    # around the input itself and each noisy batch cast to float32 for the model.
    class Buffered(torch.nn.Module):
        w: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("w", torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            assert z.dtype == torch.float32
            return z @ self.w

    smoothed = SmoothedClassifier(Buffered().eval(), Gaussian(0.25), 2)
    x = torch.tensor([[2.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    certs = smoothed.certify(x.numpy(), n0=50, n=2000, seed=0)
    assert certs.prediction.tolist() == [0, 1] and bool((certs.radius > 0.5).all())
    assert torch.allclose(smoothed(x), smoothed(x.float()), atol=1e-6)
