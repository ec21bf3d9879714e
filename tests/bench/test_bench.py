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


def test_bench_sequential_reports_reductions_computed_from_its_own_counts(capsys):
    argv = ["bench", "--inputs", "3", "--n0", "20", "-n", "100", "--repeats", "1", "--no-art"]
    argv += ["--memory-n", "1000", "--sequential", "--sequential-n", "3000"]
    assert main([*argv, "--fashion-inputs", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["sequential"]) == {"digits", "fashion-mnist"}
    for name, seq in result["sequential"].items():
        evaluations = seq["evaluations_per_input"]
        assert evaluations["fixed"] == 20 + 3000
        assert 20 < evaluations["decision"] <= 3020 and 20 < evaluations["radius"] <= 3020
        assert seq["sample_reduction_decision"] == pytest.approx(
            evaluations["fixed"] / evaluations["decision"], rel=1e-12
        )
        assert seq["sample_reduction_radius"] == pytest.approx(
            evaluations["fixed"] / evaluations["radius"], rel=1e-12
        )
        accuracy = seq["certified_accuracy_at_radius"]
        assert set(accuracy) == {"fixed", "decision", "radius_mode"}
        assert all(0.0 <= v <= 1.0 for v in accuracy.values())
        assert seq["radius"] == pytest.approx(0.5) and seq["tolerance"] == pytest.approx(0.0125)
        loss = seq["mean_certified_radius"]["fixed"] - seq["mean_certified_radius"]["radius_mode"]
        assert seq["radius_loss_over_sigma"] == pytest.approx(loss / 0.25, rel=1e-9, abs=1e-12), (
            name
        )
    digits = result["sequential"]["digits"]
    for key in ("sample_reduction_decision", "sample_reduction_radius", "radius_loss_over_sigma"):
        assert result[key] == digits[key]
    assert result["certified_accuracy_at_radius"] == digits["certified_accuracy_at_radius"]
