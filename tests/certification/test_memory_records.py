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
from rs_plugin.certification.sigma_search import ADAM_BETAS, adam_reach
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
                x[record["index"]],
                record["index"],
                record["prediction"],
                record["memory"],
                n=record["n"],
                alpha=record["alpha"],
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


@pytest.mark.parametrize(
    ("certifier_class", "entry", "claim"),
    [
        (DDRS, {"whitened_radius": 3.2, "sigma": 0.25}, "radius"),  # Φ⁻¹(0.001^(1/400)) ≈ 3.05
        (DDRS, {"whitened_radius": 1e6, "sigma": 0.25}, "radius"),
        (DDRS, {"whitened_radius": 1.0, "sigma": 0.51}, "sigma"),  # sigma_range (0.5, 2): ≤ 0.5
        (DDRS, {"whitened_radius": 1.0, "sigma": 0.12}, "sigma"),
        (ANCER, {"whitened_radius": 1.0, "sigma": [0.25] * 63 + [100.0]}, "sigma"),
        (ANCER, {"whitened_radius": 1.0, "sigma": [0.25] * 63 + [0.1]}, "sigma"),
    ],
)
def test_a_memory_entry_no_certification_could_store_is_refused(certifier_class, entry, claim):
    """A forged file's memory would certify later inputs inside its regions: on resume an
    entry's whitened radius is at most what the record's n samples certify at level α, and its
    σ within what the certifier's σ search reaches (DDRS: its clamp; ANCER: the most its Adam
    steps can move log σ). An honest entry at those limits is kept."""
    certifier = certifier_class(load_demo_model().eval(), Gaussian(0.25), 10, steps=3)
    x = torch.zeros(1, 8, 8)
    with pytest.raises(RSValueError, match="^resume: expected a memory entry a certification"):
        certifier.restore(x, 0, 1, entry, n=400, alpha=0.001)
    assert len(certifier) == 0
    largest = float(torch.special.ndtri(torch.tensor(0.001 ** (1 / 400), dtype=torch.float64)))
    low, high = certifier.sigma_limits()
    honest = {"whitened_radius": largest, "sigma": low if claim == "radius" else high}
    certifier.restore(x, 0, 1, honest, n=400, alpha=0.001)
    assert len(certifier) == 1


def test_every_sigma_the_search_chose_is_within_its_limits():
    """The limits hold the σ the searches actually return (including a long, fast ANCER search
    on inputs that push σ up), so no honest entry is refused."""
    model = load_demo_model().eval()
    x, _ = load_digits("test")
    for certifier in (
        DDRS(model, Gaussian(0.25), 10, steps=12, lr=0.3, num_noise_samples=4),
        ANCER(model, Gaussian(0.25), 10, steps=12, lr=0.3, num_noise_samples=4),
    ):
        sigma = certifier.choose_sigma(x[:16], seed=0, keys=list(range(16)))
        low, high = certifier.sigma_limits()
        assert float(sigma.min()) >= low * (1 - 1e-6) and float(sigma.max()) <= high * (1 + 1e-6)
        assert float(sigma.max()) > 0.25  # the search moved σ: the test checks a real search


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


@pytest.mark.parametrize("steps", [1, 5, 30])
def test_adam_never_moves_a_coordinate_farther_than_its_reach(steps):
    """adam_reach bounds torch's Adam on any gradients: constant ones (each step moves lr),
    growing ones (the bound's worst case), random signs and scales."""
    lr = 0.05
    reach = adam_reach(steps, lr)
    rng = torch.Generator().manual_seed(steps)
    sequences = [
        torch.ones(steps),
        torch.tensor([1.05**t for t in range(steps)]),
        torch.tensor([(0.9**2 / 0.999) ** (-t / 2) for t in range(steps)]),
        *(
            torch.randn(steps, generator=rng) * torch.rand(steps, generator=rng) ** 8
            for _ in range(50)
        ),
    ]
    farthest = 0.0
    for gradients in sequences:
        param = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        optimiser = torch.optim.Adam([param], lr=lr, betas=ADAM_BETAS)
        for g in gradients:
            param.grad = -g.reshape(1).to(torch.float64)
            optimiser.step()
            farthest = max(farthest, abs(float(param.detach()[0])))
    assert farthest <= reach * (1 + 1e-9)
    assert farthest >= steps * lr * (1 - 1e-6)  # constant gradients: lr per step
