"""``rs-plugin bench``: the reported ratios are the quotients of the reported timings."""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
import sys
import time
from typing import Any

import pytest
import torch

from rs_plugin import RSValueError
from rs_plugin.bench import speed
from rs_plugin.bench.model_bench import bench_model
from rs_plugin.bench.models import BENCH_MODELS, bench_inputs
from rs_plugin.bench.speed import run_bench
from rs_plugin.bench.timing import IDLE_BELOW, LoadMeter, busy_loop
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
    "batch_sizes": [16, 64],
    "repeats": 2,
    "threads": [1],
    "memory_n": 2000,
}
METHODS = {"floor", "engine", "engine_cold", "engine_at_floor_batch", "reference"}
ART_METHODS = {"art", "art_best", "adapter"}


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def _check_summary(s: dict, repeats: int) -> None:
    assert len(s["runs"]) == repeats and all(map(_positive, s["runs"]))
    assert s["median"] == statistics.median(s["runs"])
    assert (s["min"], s["max"]) == (min(s["runs"]), max(s["runs"]))


def _check_model(model: dict, *, art: bool, repeats: int) -> None:
    """Every reported figure is computed from the runs reported beside it."""
    assert model["samples"] == model["inputs"] * (model["n0"] + model["n"])
    assert 32 in model["batch_sizes"]  # ART's default is always swept
    for key, condition in model["conditions"].items():
        # The label is what the measured load says, never what was asked for.
        busy = condition["own_busy_loop"] or condition["other_cores"] >= IDLE_BELOW
        assert condition["label"] == ("busy" if busy else "idle"), key
        assert condition["own_busy_loop"] == condition["under_load"]
        assert condition["other_cores"] >= 0
        sweep = condition["sweep"]
        assert set(sweep) == ({"floor", "art"} if art else {"floor"})
        for kind, rows in sweep.items():
            assert list(rows["by_batch"]) == [str(size) for size in model["batch_sizes"]]
            for row in rows["by_batch"].values():
                _check_summary(row, repeats)
                assert row["samples_per_second"] == pytest.approx(model["samples"] / row["median"])
            fastest = min(rows["by_batch"], key=lambda size: rows["by_batch"][size]["median"])
            assert rows["best_batch"] == int(fastest), kind
        assert condition["floor_batch"] == sweep["floor"]["best_batch"]
        assert condition["art_best_batch"] == (sweep["art"]["best_batch"] if art else None)
        assert isinstance(condition["engine_batch"], int) and condition["engine_batch"] >= 16
        seconds = condition["seconds"]
        assert set(seconds) == METHODS | (ART_METHODS if art else set()), key
        for s in seconds.values():
            _check_summary(s, repeats)
        ratios = condition["ratios"]
        med = {name: s["median"] for name, s in seconds.items()}
        assert ratios["engine_over_floor"] == pytest.approx(med["engine"] / med["floor"])
        assert ratios["engine_cold_over_floor"] == pytest.approx(med["engine_cold"] / med["floor"])
        assert ratios["reference_over_engine"] == pytest.approx(med["reference"] / med["engine"])
        assert condition["engine_samples_per_second"] == pytest.approx(
            model["samples"] / med["engine"]
        )
        if art:
            assert ratios["art_over_engine"] == pytest.approx(med["art"] / med["engine"])
            assert ratios["art_best_over_engine"] == pytest.approx(med["art_best"] / med["engine"])
        else:
            assert "art_over_engine" not in ratios
    for target in model["targets"]:
        condition = model["conditions"][target["condition"]]
        value = condition["ratios"][target["ratio"]]
        assert target["value"] == value and target["label"] == condition["label"]
        assert target["met"] == (
            value <= target["max"] if "max" in target else value >= target["min"]
        )
    assert model["weights"]


def _check_first(result: dict, *, art: bool) -> None:
    """The top-level figures come from the first model's first condition."""
    first = result["models"][result["settings"]["model"]]
    condition = next(iter(first["conditions"].values()))
    seconds = condition["seconds"]
    assert result["engine_seconds"] == seconds["engine"]["median"]
    assert result["forward_seconds"] == seconds["floor"]["median"]
    assert result["forward_best_batch"] == condition["floor_batch"]
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
        assert swap["art_seconds"] == result["art_seconds"]
        assert swap["art_over_adapter"] == pytest.approx(
            swap["art_seconds"] / swap["adapter_seconds"], rel=1e-12
        )
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
    _check_first(result, art=True)


def test_bench_report_of_one_model_on_a_tiny_run():
    model = bench_model(
        BENCH_MODELS["digits"],
        device=torch.device("cpu"),
        inputs=1,
        n0=10,
        n=100,
        batch_sizes=(16, 48),
        sigma=0.25,
        repeats=1,
        threads=[1],
        under_load=True,
        art=False,
        runner_options={},
    )
    assert model["batch_sizes"] == [16, 32, 48]
    assert set(model["conditions"]) == {"1_thread", "1_thread_beside_busy_loop"}
    assert model["conditions"]["1_thread_beside_busy_loop"]["label"] == "busy"
    _check_model(model, art=False, repeats=1)


@pytest.mark.slow
def test_bench_command_json_under_load(capsys):
    argv = ["bench", "--models", "digits", "--inputs", "1", "--n0", "10", "-n", "100"]
    argv += ["--repeats", "1", "--threads", "1", "--memory-n", "100", "--no-art"]
    assert main([*argv, "--batch-sizes", "16,48", "--under-load", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    model = result["models"]["digits"]
    assert model["batch_sizes"] == [16, 32, 48]
    assert set(model["conditions"]) == {"1_thread", "1_thread_beside_busy_loop"}
    assert model["conditions"]["1_thread_beside_busy_loop"]["label"] == "busy"
    _check_model(model, art=False, repeats=1)
    _check_first(result, art=False)
    slow = model["slowdown_under_load"]["1_thread"]
    alone, beside = (
        model["conditions"][k]["seconds"] for k in ("1_thread", "1_thread_beside_busy_loop")
    )
    for name, value in slow.items():
        assert value == pytest.approx(beside[name]["median"] / alone[name]["median"])


@pytest.mark.slow
def test_bench_command_text_reports_the_sweep_and_the_labels(capsys):
    argv = ["bench", "--models", "digits", "--inputs", "1", "--n0", "10", "-n", "100"]
    argv += ["--repeats", "1", "--threads", "1", "--memory-n", "100", "--no-art"]
    assert main([*argv, "--batch-sizes", "16"]) == 0
    text = capsys.readouterr().out
    assert "engine/floor" in text and "floor samples/s by batch: 16:" in text
    assert re.search(r"1_thread: (idle|busy) \(other processes [0-9.]+ cores busy", text)
    assert "ART" not in text.split("digits:")[1].split("ratios")[0]


def test_a_condition_is_labelled_by_the_load_measured_during_it():
    # Another process spinning during the block (not the bench's own busy loop) makes it busy.
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        with LoadMeter(False, 1) as meter:
            time.sleep(1.0)
    finally:
        spinner.kill()
        spinner.wait()
    report = meter.report()
    assert report["other_cores"] >= IDLE_BELOW and report["label"] == "busy"
    assert not report["own_busy_loop"]
    # The bench's own busy loop is its own CPU time, and labels the block busy by itself.
    with LoadMeter(True, 1) as own, busy_loop(True):
        time.sleep(0.5)
    assert own.report()["label"] == "busy" and own.report()["own_busy_loop"]


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
        ({"batch_sizes": [0]}, "--batch-sizes"),
        ({"batch_sizes": []}, "--batch-sizes"),
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
    assert main(["bench", "--batch-sizes", "16,big"]) == 2
    assert "error: --batch-sizes:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "parameter"),
    [
        (["--sequential", "--sequential-radii", "0.5", "-1"], "--sequential-radii"),
        (["--sequential", "--sequential-n", "0"], "--sequential-n"),
        (["--sequential", "--sequential-inputs", "0"], "--sequential-inputs"),
        (["--sequential", "--tolerance-sigmas", "0"], "--tolerance-sigmas"),
        (["--sequential", "--sequential-plot", "{missing}/frontier.png"], "--sequential-plot"),
        (["--sequential", "--sequential-plot", "{folder}"], "--sequential-plot"),
        (["--sound", "--sound-n", "0"], "--sound-n"),
        (["--sound", "--sound-inputs", "-3"], "--sound-inputs"),
    ],
)
def test_bench_refuses_the_optional_parts_settings_before_measuring(
    capsys, tmp_path, monkeypatch, argv, parameter
):
    # The main measurement takes minutes: a bad setting of a later part is refused before it.
    measured = []
    monkeypatch.setattr(speed, "run_bench", lambda **kwargs: measured.append(kwargs))
    argv = [a.format(missing=tmp_path / "absent", folder=tmp_path) for a in argv]
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert f"error: {parameter}: expected" in err and "Traceback" not in err, err
    assert measured == []


def test_bench_sequential_without_fashion_mnist_is_refused_before_measuring(
    capsys, tmp_path, monkeypatch
):
    import rs_plugin.data

    measured = []
    monkeypatch.setattr(speed, "run_bench", lambda **kwargs: measured.append(kwargs))
    monkeypatch.setattr(rs_plugin.data, "FASHION_MNIST_DIR", tmp_path / "absent")
    assert main(["bench", "--sequential"]) == 2
    err = capsys.readouterr().err
    assert "error: --fashion-inputs: expected 0, or Debian's dataset-fashion-mnist" in err, err
    assert measured == []


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
