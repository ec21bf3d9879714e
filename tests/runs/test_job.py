"""The certify job: a certifier receives exactly the options it declares, whatever its name."""

from __future__ import annotations

from typing import Any

import pytest

from rs_plugin import RSValueError
from rs_plugin.certification.base import Certifier
from rs_plugin.cli.flags import FLAGS, as_flags
from rs_plugin.runs import CertifyJob, load_certifier

SETTINGS: dict[str, Any] = {
    "model": "demo",
    "data": "digits",
    "smoothing": "gaussian",
    "sigma": 0.25,
    "n0": 10,
    "n": 50,
    "alpha": 0.01,
    "batch_size": 100,
    "seed": 0,
    "limit": 2,
    "device": "cpu",
}


@pytest.mark.parametrize(
    ("certifier", "options", "passed"),
    [
        (
            "cohen",
            {"precision": "bfloat16"},
            {"clip_values", "precision", "channels_last", "compile"},
        ),
        (
            "sequential",
            {"radius": 0.25},
            {"clip_values", "radius", "tolerance", "precision", "channels_last", "compile"},
        ),
        ("ddrs", {}, set()),
    ],
)
def test_a_certifier_gets_exactly_the_options_it_declares(certifier, options, passed):
    job = CertifyJob(**SETTINGS, certifier=certifier, **options)
    given = job.certifier_options()
    assert set(given) == set(load_certifier(certifier).options) == passed
    for name, value in options.items():
        assert given[name] == value
    if "clip_values" in given:
        assert given["clip_values"] == (0.0, 1.0)


@pytest.mark.parametrize(
    ("certifier", "option", "value"),
    [("cohen", "radius", 0.5), ("ddrs", "precision", "float16"), ("ancer", "compile", True)],
)
def test_an_option_the_certifier_does_not_declare_is_refused_naming_both(certifier, option, value):
    with pytest.raises(RSValueError) as info:
        CertifyJob(**SETTINGS, certifier=certifier, **{option: value})
    assert info.value.parameter == option
    assert f"certifier {certifier!r}" in str(info.value)
    assert as_flags(info.value).startswith(FLAGS[option] + ": ")


def test_the_certifier_checks_its_options_before_anything_loads():
    with pytest.raises(RSValueError, match="^radius/tolerance: expected exactly one"):
        CertifyJob(**SETTINGS, certifier="anytime")


def test_statefulness_is_declared_not_named():
    assert CertifyJob(**SETTINGS, certifier="ddrs").stateful
    assert not CertifyJob(**SETTINGS, certifier="cohen").stateful
    for name in ("cohen", "grid", "sequential", "anytime", "ddrs", "ancer"):
        assert issubclass(load_certifier(name), Certifier)


def test_the_default_model_loader_knows_only_the_shipped_models():
    loaded = CertifyJob(**SETTINGS).load()
    assert loaded.certifier.num_classes == 10 and len(loaded.x) == 2
    with pytest.raises(RSValueError, match="^model: expected 'demo', or a model_loader"):
        CertifyJob(**{**SETTINGS, "model": "pkg.module:factory"}).load()


def test_errors_show_flags_through_one_table():
    error = RSValueError("batch_size", "an integer >= 1", 0)
    assert as_flags(error) == "--batch-size: expected an integer >= 1; received 0"
    both = RSValueError("radius/tolerance", "one", None)
    assert as_flags(both).startswith("--radius/--tolerance:")
    assert as_flags(RSValueError("x", "a tensor", 1)) == str(RSValueError("x", "a tensor", 1))


def _half_demo(spec: str, data: str, sigma: float | None) -> Any:
    from rs_plugin.data import load_demo_model

    return load_demo_model().half()


def test_a_narrow_models_config_says_so_and_float32_ones_are_unchanged():
    # Files written when a float16 model's noise was drawn in float16 lack the field, so they
    # are not resumed under the float32 noise; float32 models' configs (and files) are as before.
    plain = CertifyJob(**SETTINGS, certifier="cohen")
    loaded = plain.load()
    assert "model_dtype" not in plain.config(loaded.certifier, loaded.data_sha256)
    half = CertifyJob(**SETTINGS, certifier="cohen", model_loader=_half_demo)
    loaded = half.load()
    assert half.config(loaded.certifier, loaded.data_sha256)["model_dtype"] == "float16"
