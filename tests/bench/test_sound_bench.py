"""bench --sound on a tiny setting: both modes timed on the same inputs, accuracy of both."""

from __future__ import annotations

import pytest

from rs_plugin.bench.sound import format_sound, run_sound_bench

pytestmark = [pytest.mark.slow, pytest.mark.fashion_mnist]


def test_sound_bench_compares_both_modes_on_a_tiny_setting():
    result = run_sound_bench(models=["digits"], sigma=0.25, n=100, repeats=1, inputs=2)
    speed = result["sound"]["speed"]["digits"]
    assert set(speed["samples_per_second"]) == {"float", "sound"}
    assert speed["ratio_sound_over_float"] > 0
    for data in ("digits", "fashion-mnist"):
        row = result["sound"]["accuracy"][data]
        for mode in ("float", "sound"):
            accuracy = row[mode]["certified_accuracy"]
            assert 0 <= accuracy["0.5"] <= accuracy["0.25"] <= 1
            assert row[mode]["acr"] >= 0
    text = "\n".join(format_sound(result))
    assert "sound/float" in text and "fashion-mnist  sound  1/255" in text
