"""``rs-plugin bench``: the reported ratios are the quotients of the reported timings."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from rs_plugin import RSValueError
from rs_plugin.bench.speed import run_bench
from rs_plugin.cli import main

KEYS = {
    "engine_seconds",
    "forward_seconds",
    "art_seconds",
    "engine_over_forward",
    "art_over_engine",
}
SMALL: dict[str, Any] = {
    "inputs": 2,
    "n0": 10,
    "n": 200,
    "batch_size": 100,
    "repeats": 1,
    "memory_n": 2000,
}


def _check_consistent(result: dict, *, art: bool) -> None:
    for key in ("engine_seconds", "forward_seconds", "engine_over_forward"):
        assert math.isfinite(result[key]) and result[key] > 0, key
    by_batch = result["forward_seconds_by_batch"]
    assert set(by_batch) >= {"256", "1000", "4000", "10000", str(result["settings"]["batch_size"])}
    assert all(math.isfinite(v) and v > 0 for v in by_batch.values())
    assert result["forward_seconds"] == min(by_batch.values())
    assert by_batch[str(result["forward_best_batch"])] == result["forward_seconds"]
    assert result["engine_over_forward"] == pytest.approx(
        result["engine_seconds"] / result["forward_seconds"], rel=1e-12
    )
    settings = result["settings"]
    memory_n = settings["memory_n"]
    sizes = sorted({max(1, memory_n // 100), max(1, memory_n // 10), memory_n})
    assert list(result["peak_memory_mb"]) == [str(m) for m in sizes]
    assert list(result["peak_memory_growth_mb"]) == [str(m) for m in sizes]
    for m in map(str, sizes):
        assert result["peak_memory_mb"][m] > 50  # a process holding torch: tens of MB at least
        assert 0 <= result["peak_memory_growth_mb"][m] <= result["peak_memory_mb"][m]
    samples = settings["inputs"] * (settings["n0"] + settings["n"])
    assert result["samples"] == samples
    assert result["engine_samples_per_second"] == pytest.approx(
        samples / result["engine_seconds"], rel=1e-12
    )
    if art:
        for key in ("art_seconds", "art_over_engine"):
            assert math.isfinite(result[key]) and result[key] > 0, key
        assert result["art_over_engine"] == pytest.approx(
            result["art_seconds"] / result["engine_seconds"], rel=1e-12
        )
        agreement = result["agreement_with_art_on_certified"]
        assert agreement is None or 0.0 <= agreement <= 1.0
        swap = result["swap_in"]
        for suffix in ("", "_batch32"):
            art_s, ours_s = swap[f"art_seconds{suffix}"], swap[f"adapter_seconds{suffix}"]
            assert math.isfinite(art_s) and art_s > 0 and math.isfinite(ours_s) and ours_s > 0
            assert swap[f"art_over_adapter{suffix}"] == pytest.approx(art_s / ours_s, rel=1e-12)
        assert swap["art_seconds"] == result["art_seconds"]  # one ART timing, reported twice
        for key in ("art_peak_increase_mb", "adapter_peak_increase_mb"):
            assert math.isfinite(swap[key]) and swap[key] >= 0, key
    else:
        assert "art_seconds" not in result
        assert "art_over_engine" not in result
        assert "swap_in" not in result


def test_run_bench_ratios_are_quotients_of_the_timings():
    result = run_bench(**SMALL, art=True)
    assert KEYS <= result.keys()
    assert result["settings"] == {"model": "demo", "sigma": 0.25, **SMALL}
    _check_consistent(result, art=True)


def test_bench_command_prints_json(capsys):
    argv = ["bench", "--inputs", "2", "--n0", "10", "-n", "200", "--repeats", "1", "--json"]
    argv += ["--memory-n", "1000"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert KEYS <= result.keys()
    assert result["settings"]["inputs"] == 2
    assert result["settings"]["n"] == 200
    assert result["settings"]["repeats"] == 1
    _check_consistent(result, art=True)


def test_bench_command_without_art(capsys):
    argv = ["bench", "--inputs", "1", "--n0", "10", "-n", "100", "--repeats", "1"]
    argv += ["--memory-n", "3000"]
    assert main([*argv, "--no-art", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    _check_consistent(result, art=False)
    # The human-readable form reports the same figures.
    assert main([*argv, "--no-art"]) == 0
    text = capsys.readouterr().out
    assert "engine / forward" in text
    assert "ART" not in text


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"inputs": 0}, "--inputs"),
        ({"repeats": 0}, "--repeats"),
        ({"sigma": 0.0}, "--sigma"),
        ({"memory_n": 0}, "--memory-n"),
    ],
)
def test_run_bench_rejects_bad_settings(kwargs, parameter):
    with pytest.raises(RSValueError, match=parameter):
        run_bench(**{**SMALL, **kwargs})


def test_bench_command_reports_bad_settings(capsys):
    assert main(["bench", "--inputs", "0"]) == 2
    assert "error: --inputs:" in capsys.readouterr().err


def test_bench_sequential_reports_both_certifiers_against_fixed_n(capsys, tmp_path):
    """Reductions are quotients of the reported evaluations, replays of the certifiers' rules
    on the kept votes give the real runs' answers, and the frontier plot is written."""
    plot = tmp_path / "frontier.png"
    argv = ["bench", "--inputs", "3", "--n0", "20", "-n", "100", "--repeats", "1", "--no-art"]
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
