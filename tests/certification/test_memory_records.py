"""The memory certifiers' records: each appended as it is certified, the memory persisted with
them so that a resumed run certifies exactly as an uninterrupted one, and PREDICT's record honest
about which answers drew samples. Also the checks before sampling that keep noise independent and
finite: seeds and keys within 64 bits, distinct keys, σ the dtype can hold."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from rs_plugin import ANCER, DDRS, Gaussian, RSValueError, SmoothedClassifier
from rs_plugin.data import load_demo_model, load_digits
from tests.analytic import LinearModel

SETTINGS: dict[str, Any] = {"n0": 50, "n": 400, "alpha": 0.001, "batch_size": 2000, "seed": 5}


def _records(certs):
    return [{k: v for k, v in r.items()} for r in certs.to_records()]


@pytest.mark.parametrize("certifier_class", [DDRS, ANCER])
def test_a_memory_restored_from_records_certifies_as_if_never_interrupted(certifier_class):
    """Certify 5 digits in one go; then certify the first 3, keep only their records and memory
    entries, rebuild a fresh certifier from them and certify the last 2: identical records."""
    model = load_demo_model().eval()
    x, _ = load_digits("test")
    x, keys = x[:5], list(range(5))

    whole = certifier_class(model, Gaussian(0.25), 10, steps=3, num_noise_samples=8)
    expected = _records(whole.certify(x, keys=keys, **SETTINGS))

    first = certifier_class(model, Gaussian(0.25), 10, steps=3, num_noise_samples=8)
    written = []
    for part in first.iter_certify(x[:3], keys=keys[:3], **SETTINGS):
        (record,) = part.to_records()
        record["memory"] = first.memory_entry(record["index"])
        written.append(record)  # what the store appends, one input at a time
    assert [r["index"] for r in written] == keys[:3]

    resumed = certifier_class(model, Gaussian(0.25), 10, steps=3, num_noise_samples=8)
    for record in written:
        if record["memory"] is not None:
            resumed.restore(
                x[record["index"]], record["index"], record["prediction"], record["memory"]
            )
    assert len(resumed) == len(first)
    rest = _records(resumed.certify(x[3:], keys=keys[3:], **SETTINGS))
    strip = [{k: v for k, v in r.items() if k != "memory"} for r in written]
    assert strip + rest == expected


def test_records_are_yielded_one_input_at_a_time():
    model = load_demo_model().eval()
    x, _ = load_digits("test")
    certifier = DDRS(model, Gaussian(0.25), 10, steps=2, num_noise_samples=4)
    stream = certifier.iter_certify(x[:3], **SETTINGS)
    first = next(stream)
    assert len(first) == 1 and len(certifier) <= 1  # the others are not certified yet
    assert len(list(stream)) == 2


@pytest.mark.parametrize(
    "entry",
    [
        None,
        {"sigma": 0.3},
        {"whitened_radius": -1, "sigma": 0.3},
        {"whitened_radius": 1, "sigma": [0.3, 0.3]},
        {"whitened_radius": 1, "sigma": 0.0},
        {"whitened_radius": "x", "sigma": 0.3},
    ],
)
def test_a_malformed_memory_entry_is_refused(entry):
    certifier = DDRS(load_demo_model().eval(), Gaussian(0.25), 10)
    with pytest.raises(RSValueError, match="^resume: "):
        certifier.restore(torch.zeros(1, 8, 8), 0, 1, entry)
    assert len(certifier) == 0


def test_predict_reports_the_samples_each_answer_drew():
    """Inputs inside a stored region are answered by the memory without sampling: their record
    says 0 samples, zero counts and no test (NaN); the others drew n."""
    w = torch.tensor([1.0, 0.0])
    model = LinearModel(w, 0.0, scale=4.0).eval()
    certifier = DDRS(model, Gaussian(0.3), 2, steps=0)
    certs = certifier.certify(torch.tensor([[2.0, 0.0]]), n0=100, n=2000, alpha=0.001)
    assert int(certs.prediction[0]) == model.label(torch.tensor([[2.0, 0.0]]))[0]
    inside = torch.tensor([[2.0, 0.05]])  # well within the region certified around (2, 0)
    outside = torch.tensor([[-3.0, 0.0]])
    answer = certifier.predict(torch.cat([inside, outside]), n=500, alpha=0.001)
    assert answer.samples is not None
    assert answer.samples.tolist() == [0, 500]
    assert answer.counts.sum(dim=1).tolist() == [0, 500]
    assert math.isnan(float(answer.p_value[0])) and float(answer.p_value[1]) < 0.001
    assert answer.prediction.tolist() == [int(certs.prediction[0]), 0]


def _smoothed(sigma: float = 0.25) -> SmoothedClassifier:
    return SmoothedClassifier(load_demo_model().eval(), Gaussian(sigma), 10)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"seed": 2**64}, r"^seed: expected an integer in \[0, 18446744073709551615\]"),
        ({"keys": [0, 1, 2**64]}, r"^keys: .*keys out of range: \[18446744073709551616\]"),
        ({"keys": [4, 7, 4]}, r"^keys: expected 3 distinct integers .*repeated keys: \[4\]"),
        ({"keys": [1, -1, 2]}, r"^keys: .*out of range: \[-1\]"),
        ({"keys": [1, 2]}, r"^keys: .*2 keys for 3 inputs"),
    ],
)
def test_seeds_and_keys_that_would_share_noise_are_refused(kwargs, says):
    x, _ = load_digits("test")
    for method in ("certify", "predict"):
        with pytest.raises(RSValueError, match=says):
            getattr(_smoothed(), method)(x[:3], n=100, **kwargs)


def test_a_sigma_the_dtype_cannot_hold_is_refused_before_sampling():
    x, _ = load_digits("test")
    with pytest.raises(RSValueError, match="^sigma: .*finite in torch.float32; received 1e\\+300"):
        _smoothed(1e300).certify(x[:2], n=100)
    # In float64 the same model may use a σ float32 could not hold.
    model = load_demo_model().double().eval()
    certs = SmoothedClassifier(model, Gaussian(1e33), 10).certify(x[:1].double(), n0=10, n=20)
    assert int(certs.prediction[0]) >= -1 and math.isfinite(float(certs.radius[0]))
