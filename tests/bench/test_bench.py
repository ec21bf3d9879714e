"""``rs-plugin bench``: the reported ratios are the quotients of the reported timings."""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

import pytest
import torch

from rs_plugin import RSValueError
from rs_plugin.bench.models import BENCH_MODELS, bench_inputs
from rs_plugin.bench.speed import run_bench
from rs_plugin.bench.timing import busy_loop
from rs_plugin.cli import main

KEYS = {
    "engine_seconds",
    "forward_seconds",
    "art_seconds",
    "engine_over_forward",
    "art_over_engine",
    "models",
}
SMALL: dict[str, Any] = {
    "inputs": 2,
    "n0": 10,
    "n": 200,
    "batch_size": 100,
    "repeats": 2,
    "threads": [1],
    "memory_n": 2000,
}
METHODS = {"floor_fresh", "floor_reused", "engine", "reference", "engine_batch32"}


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def _check_model(model: dict, *, art: bool, repeats: int) -> None:
    """Every reported figure is computed from the runs reported beside it."""
    assert model["samples"] == model["inputs"] * (model["n0"] + model["n"])
    for key, condition in model["conditions"].items():
        seconds = condition["seconds"]
        expected = METHODS | ({"art", "art_batch32"} if art else set())
        assert expected <= set(seconds), key
        for name, s in seconds.items():
            assert len(s["runs"]) == repeats and all(map(_positive, s["runs"])), name
            assert s["median"] == statistics.median(s["runs"])
            assert (s["min"], s["max"]) == (min(s["runs"]), max(s["runs"]))
        ratios = condition["ratios"]
        med = {name: s["median"] for name, s in seconds.items()}
        assert ratios["engine_over_floor"] == pytest.approx(med["engine"] / med["floor_fresh"])
        assert ratios["reference_over_engine"] == pytest.approx(med["reference"] / med["engine"])
        assert condition["engine_samples_per_second"] == pytest.approx(
            model["samples"] / med["engine"]
        )
        if art:
            assert ratios["art_over_engine"] == pytest.approx(med["art"] / med["engine"])
            assert ratios["art_over_engine_batch32"] == pytest.approx(
                med["art_batch32"] / med["engine_batch32"]
            )
        else:
            assert "art_over_engine" not in ratios
    for target in model["targets"]:
        value = model["conditions"][target["condition"]]["ratios"][target["ratio"]]
        assert target["value"] == value
        assert target["met"] == (
            value <= target["max"] if "max" in target else value >= target["min"]
        )
    assert model["weights"]


def _check_legacy(result: dict, *, art: bool) -> None:
    """The first bench's keys come from the first model's first condition."""
    first = result["models"][result["settings"]["model"]]
    seconds = next(iter(first["conditions"].values()))["seconds"]
    assert result["engine_seconds"] == seconds["engine"]["median"]
    by_batch = result["forward_seconds_by_batch"]
    assert set(by_batch) >= {"256", "1000", "4000", "10000", str(first["batch_size"])}
    assert by_batch[str(first["batch_size"])] == seconds["floor_reused"]["median"]
    assert result["forward_seconds"] == min(by_batch.values())
    assert by_batch[str(result["forward_best_batch"])] == result["forward_seconds"]
    assert result["engine_over_forward"] == pytest.approx(
        result["engine_seconds"] / result["forward_seconds"], rel=1e-12
    )
    memory_n = result["settings"]["memory_n"]
    sizes = sorted({max(1, memory_n // 100), max(1, memory_n // 10), memory_n})
    assert list(result["peak_memory_mb"]) == [str(m) for m in sizes]
    for m in map(str, sizes):
        assert result["peak_memory_mb"][m] > 50  # a process holding torch: tens of MB at least
        assert 0 <= result["peak_memory_growth_mb"][m] <= result["peak_memory_mb"][m]
    if art:
        assert result["art_seconds"] == seconds["art"]["median"]
        assert result["art_over_engine"] == pytest.approx(
            result["art_seconds"] / result["engine_seconds"], rel=1e-12
        )
        agreement = result["agreement_with_art_on_certified"]
        assert agreement is None or 0.0 <= agreement <= 1.0
        swap = result["swap_in"]
        # The adapter is timed in the same interleaved rounds as the engine and ART.
        assert swap["adapter_seconds"] == seconds["adapter"]["median"]
        assert swap["adapter_seconds_batch32"] == seconds["adapter_batch32"]["median"]
        assert swap["art_seconds"] == result["art_seconds"]
        for suffix in ("", "_batch32"):
            art_s, ours_s = swap[f"art_seconds{suffix}"], swap[f"adapter_seconds{suffix}"]
            assert swap[f"art_over_adapter{suffix}"] == pytest.approx(art_s / ours_s, rel=1e-12)
        for key in ("art_peak_increase_mb", "adapter_peak_increase_mb"):
            assert math.isfinite(swap[key]) and swap[key] >= 0, key
    else:
        assert "art_seconds" not in result and "swap_in" not in result


@pytest.mark.slow
def test_run_bench_ratios_are_quotients_of_the_timings():
    result = run_bench(**SMALL, art=True)
    assert KEYS <= result.keys()
    assert result["settings"]["model"] == "digits"
    assert result["settings"]["inputs"] == 2 and result["settings"]["n"] == 200
    assert set(result["models"]) == {"digits"}
    _check_model(result["models"]["digits"], art=True, repeats=2)
    _check_legacy(result, art=True)


@pytest.mark.slow
def test_bench_command_under_load_reports_slowdowns(capsys):
    argv = ["bench", "--models", "digits", "--inputs", "1", "--n0", "10", "-n", "100"]
    argv += ["--repeats", "1", "--threads", "1", "--memory-n", "1000", "--no-art"]
    assert main([*argv, "--under-load", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    model = result["models"]["digits"]
    assert set(model["conditions"]) == {"idle_1_thread", "loaded_1_thread"}
    assert model["conditions"]["loaded_1_thread"]["under_load"]
    _check_model(model, art=False, repeats=1)
    _check_legacy(result, art=False)
    slow = model["slowdown_under_load"]["1_thread"]
    idle, loaded = (model["conditions"][k]["seconds"] for k in ("idle_1_thread", "loaded_1_thread"))
    for name, value in slow.items():
        assert value == pytest.approx(loaded[name]["median"] / idle[name]["median"])
    # The human-readable form reports the same run's kind of figures.
    assert main([*argv]) == 0
    text = capsys.readouterr().out
    assert "engine/floor" in text and "ART" not in text.split("digits:")[1].split("ratios")[0]


def test_busy_loop_runs_only_inside_its_block():
    with busy_loop(True) as process:
        assert process is not None and process.poll() is None
    assert process.poll() is not None
    with busy_loop(False) as nothing:
        assert nothing is None


@pytest.mark.slow
def test_bench_models_have_the_stated_sizes_and_seeded_random_weights():
    cpu = torch.device("cpu")
    state = torch.random.get_rng_state()
    sizes = {"lenet": 431_080, "resnet20": 272_474}
    for name, parameters in sizes.items():
        spec = BENCH_MODELS[name]
        model = spec.build(cpu, 0)
        assert sum(p.numel() for p in model.parameters()) == parameters
        x = bench_inputs(spec, 2, cpu)
        with torch.no_grad():
            logits = model(x)
            again = spec.build(cpu, 0)(x)
            other = spec.build(cpu, 1)(x)
        assert logits.shape == (2, spec.num_classes) and bool(torch.isfinite(logits).all())
        assert torch.equal(logits, again) and not torch.equal(logits, other)
        assert not torch.equal(logits[0], logits[1])  # the output depends on the input
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG was not used


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"inputs": 0}, "--inputs"),
        ({"repeats": 0}, "--repeats"),
        ({"sigma": 0.0}, "--sigma"),
        ({"memory_n": 0}, "--memory-n"),
        ({"models": ["vgg"]}, "--models"),
        ({"threads": [0]}, "--threads"),
    ],
)
def test_run_bench_rejects_bad_settings(kwargs, parameter):
    with pytest.raises(RSValueError, match=parameter):
        run_bench(**{**SMALL, **kwargs})


def test_bench_command_reports_bad_settings(capsys):
    assert main(["bench", "--inputs", "0"]) == 2
    assert "error: --inputs:" in capsys.readouterr().err
    assert main(["bench", "--threads", "two"]) == 2
    assert "error: --threads:" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_sequential_reports_both_certifiers_against_fixed_n(capsys, tmp_path):
    """Reductions are quotients of the reported evaluations, replays of the certifiers' rules
    on the kept votes give the real runs' answers, and the frontier plot is written."""
    plot = tmp_path / "frontier.png"
    argv = ["bench", "--inputs", "3", "--n0", "20", "-n", "100", "--repeats", "1", "--no-art"]
    argv += ["--models", "digits", "--threads", "1"]
    argv += ["--memory-n", "1000", "--sequential", "--sequential-n", "1024"]
    argv += ["--sequential-inputs", "4", "--fashion-inputs", "0", "--sequential-plot", str(plot)]
    assert main([*argv, "--radii", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["sequential"]) == {"digits"}
    seq = result["sequential"]["digits"]
    fixed = seq["fixed"]["evaluations_per_input"]
    assert fixed == 20 + 1024 and seq["inputs"] == 4
    assert set(seq["decision"]) == {"0.25", "0.5", "1.0"}
    for row in seq["decision"].values():
        assert 0.0 <= row["fixed"]["certified_accuracy"] <= 1.0
        low, high = row["fixed_interval_95"]
        assert low <= row["fixed"]["certified_accuracy"] <= high
        for certifier in ("staged", "anytime"):
            entry = row[certifier]
            assert 20 <= entry["evaluations_per_input"] <= fixed
            assert entry["reduction"] == pytest.approx(fixed / entry["evaluations_per_input"])
            assert entry["replay_matches"] and 0.0 <= entry["certified_accuracy"] <= 1.0
    # At r = 1.0 = 4σ not even 1024 votes out of 1024 certify: anytime stops before sampling.
    assert seq["decision"]["1.0"]["anytime"]["evaluations_per_input"] == 20
    for certifier in ("staged", "anytime"):
        entry = seq["radius_mode"][certifier]
        assert entry["reduction"] == pytest.approx(fixed / entry["evaluations_per_input"])
        assert entry["radius_loss_over_sigma"] >= 0.0
        points = seq["frontier"][certifier]
        assert len(points) == 9 and all(20 <= e <= fixed for e, _ in points)
    assert (
        result["anytime_decision_reduction_digits"]
        == seq["decision"]["0.5"]["anytime"]["reduction"]
    )
    assert plot.stat().st_size > 1000
    # Every family's radius in every norm reaches 0.99 of the best sound one in the literature.
    assert result["radius_ratio_min"] >= 0.99
    assert set(result["radius_ratio"]) == {"gaussian", "laplace", "uniform", "exp_inf"}
