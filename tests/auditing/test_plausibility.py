"""Plausibility checks of certificate records: any record is accepted or refused with one error,
an honest certificate is never called impossible, and one beyond its sampling cap always is."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rs_plugin import Gaussian, Laplace, RSValueError
from rs_plugin.auditing.plausibility import check_record, impossibility, inconsistency
from rs_plugin.certification.radii import sampling_cap
from rs_plugin.certification.stats import clopper_pearson_lower

FUZZ = settings(max_examples=200, deadline=None, derandomize=True)

_ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.floats(), max_size=2),
)


@FUZZ
@given(
    record=st.fixed_dictionaries(
        {"index": st.integers(0, 9)},
        optional={
            k: _ANY
            for k in ("prediction", "radius", "alpha", "n", "n0", "count", "p_lower", "radii")
        },
    )
)
def test_any_record_is_accepted_or_refused_with_one_error(record):
    try:
        check_record(record, "f line 1")
    except RSValueError as error:
        assert str(error).startswith("certificates: expected ")
        return
    # Accepted: the fields are what the audit and the cap computation rely on.
    prediction, radius = record["prediction"], record["radius"]
    assert isinstance(prediction, int) and not isinstance(prediction, bool) and prediction >= -1
    assert (radius is None and prediction == -1) or 0 <= radius <= 1e30
    assert 0 < record["alpha"] < 1
    found = impossibility(record, smoothing=Gaussian(0.25), num_classes=10, dim=64)
    assert found is None or (prediction >= 10) == ("not a class" in found)


@FUZZ
@given(
    n=st.integers(1, 10**6),
    count_fraction=st.floats(0.0, 1.0),
    alpha=st.floats(1e-8, 0.5),
    sigma=st.floats(0.01, 4.0),
    laplace=st.booleans(),
)
def test_honest_radii_are_possible_and_radii_beyond_the_cap_are_not(
    n, count_fraction, alpha, sigma, laplace
):
    smoothing = Laplace(sigma) if laplace else Gaussian(sigma)
    count = round(count_fraction * n)
    p_lower = float(clopper_pearson_lower(np.array([count]), n, alpha)[0])
    honest = float(smoothing.radius(torch.tensor([p_lower], dtype=torch.float64), 64)[0])
    record = {"index": 0, "prediction": 3, "radius": honest, "alpha": alpha, "n": n}
    check_record(record, "f line 1")
    assert impossibility(record, smoothing=smoothing, num_classes=10, dim=64) is None
    cap = sampling_cap(smoothing, alpha, n, 64)
    assert cap is not None
    forged = {**record, "radius": cap * 1.001 + 1e-12}
    assert "exceeds" in str(impossibility(forged, smoothing=smoothing, num_classes=10, dim=64))


@pytest.mark.parametrize("prediction", [10, 42, 2**40])
def test_a_prediction_outside_the_classes_is_impossible(prediction):
    record = {"index": 0, "prediction": prediction, "radius": 0.1, "alpha": 0.001}
    assert "not a class" in str(
        impossibility(record, smoothing=Gaussian(0.25), num_classes=10, dim=64)
    )


def test_a_sequential_record_that_drew_no_estimation_samples_is_possible():
    """The anytime certifier can stop after its selection samples: samples = 0 is a record."""
    record = {
        "prediction": -1, "radius": 0.0, "alpha": 0.001, "n": 100_000, "n0": 100, "samples": 0.0,
    }  # fmt: skip
    check_record(record, "f line 1")
    with pytest.raises(RSValueError, match=r"samples: an integer in \[0, 2147483648\]"):
        check_record({**record, "samples": -1}, "f line 1")


def test_a_record_of_no_estimation_samples_can_certify_no_radius():
    """Records name the samples each input used (n = samples = 0 when the anytime certifier
    stopped after selection): such a record is well formed, the cap of 0 samples is radius 0,
    and any positive radius claimed with them is impossible."""
    record = {"prediction": 3, "radius": 0.0, "alpha": 0.001, "n": 0, "n0": 100, "samples": 0}
    check_record(record, "f line 1")
    smoothing = Gaussian(0.25)
    assert sampling_cap(smoothing, 0.001, 0, 64) == 0.0
    assert impossibility(record, smoothing=smoothing, num_classes=10, dim=64) is None
    claimed = {**record, "radius": 0.01}
    assert "exceeds" in str(impossibility(claimed, smoothing=smoothing, num_classes=10, dim=64))
    with pytest.raises(RSValueError, match=r"n: an integer in \[0, 2147483648\]"):
        check_record({**record, "n": -1}, "f line 1")


@pytest.mark.parametrize(
    ("record", "says"),
    [
        # Without n the cap is the budget's, or that of the most samples any certifier draws.
        ({"prediction": 3, "radius": 1e29, "alpha": 0.001}, "exceeds"),
        ({"prediction": 3, "radius": 1e29, "alpha": 0.001, "n": None}, "exceeds"),
        ({"prediction": 3, "radius": 3.0, "alpha": 0.001, "n_max": 1000}, "exceeds"),
        ({"prediction": -1, "radius": 1e29, "alpha": 0.001, "n": 1000}, "an abstention"),
        ({"prediction": 3, "radius": 0.1, "alpha": 0.001, "n": 5000, "n_max": 1000}, "budget"),
        (
            {"prediction": 3, "radius": 0.1, "alpha": 0.001, "samples": 5000, "n_max": 1000},
            "budget",
        ),
        ({"prediction": 3, "radius": 0.1, "alpha": 0.001, "n": 1000, "count": 5000}, "count 5000"),
    ],
)
def test_a_record_cannot_turn_the_cap_off_by_what_it_leaves_out(record, says):
    check_record({"index": 0, **record}, "f line 1")
    assert says in str(impossibility(record, smoothing=Gaussian(0.25), num_classes=10, dim=64))
    honest = {**record, "radius": 0.0 if record["prediction"] < 0 else 0.1}
    honest.update({k: 1000 for k in ("n", "samples", "count") if honest.get(k) == 5000})
    assert impossibility(honest, smoothing=Gaussian(0.25), num_classes=10, dim=64) is None


def test_the_largest_sample_size_has_a_finite_cap():
    cap = sampling_cap(Gaussian(0.25), 1e-10, 2**31, 64)
    assert cap is not None and 0 < cap < 0.25 * 7


@pytest.mark.parametrize(
    ("key", "value"),
    [("samples", 10**20), ("samples", 5e20), ("n", 1e300), ("n", 2**40), ("count", 2**40),
     ("n_max", 0), ("n0", 2**31 + 1)],
)  # fmt: skip
def test_sample_sizes_beyond_what_any_certifier_draws_are_refused(key, value):
    record = {"index": 0, "prediction": 3, "radius": 0.1, "alpha": 0.001, key: value}
    with pytest.raises(RSValueError, match=rf"^certificates: expected {key}: an integer in \["):
        check_record(record, "f line 1")


HONEST = {
    "index": 1, "prediction": 3, "radius": 0.5, "alpha": 0.001, "abstain": False, "label": 3,
    "correct": True, "decision": 1, "decision_radius": 0.25,
}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"abstain": True}, "abstain True with prediction 3"),
        ({"abstain": 0}, "abstain 0"),
        ({"correct": False}, "correct False for prediction 3 of an input labelled 3"),
        ({"correct": "yes"}, "correct 'yes'"),
        ({"correct": None}, "correct None"),
        ({"label": 4, "correct": False}, "label 4, where the data's label is 3"),
        ({"prediction": -1, "radius": 0.0, "abstain": True, "correct": False}, "decision 1"),
        ({"radius": 0.2}, "decision 1 (certified at 0.25)"),
        ({"decision": 2}, "decision 2"),
        ({"decision": True}, "decision True"),
    ],
)
def test_derived_fields_must_be_what_the_run_would_have_written(change, says):
    labels = [0, 3, 5]
    assert inconsistency(HONEST, labels) is None
    assert says in str(inconsistency({**HONEST, **change}, labels))


def test_an_unlabelled_input_has_no_label_or_correctness_and_a_labelled_one_both():
    bare = {k: v for k, v in HONEST.items() if k not in ("label", "correct")}
    assert inconsistency(bare, [0, -1]) is None
    assert "correct False for an input the data leaves unlabeled" in str(
        inconsistency({**bare, "correct": False}, [0, -1])
    )
    assert "label 3 for an input the data leaves unlabeled" in str(inconsistency(HONEST, [0, -1]))
    assert "no label and correctness for an input labelled 3" in str(inconsistency(bare, [0, 3]))
    assert inconsistency(bare, None) is None  # without the data's labels nothing to compare


def test_a_record_of_an_input_the_data_does_not_have_is_refused():
    assert HONEST["index"] == 1
    assert inconsistency(HONEST, [0, 3]) is None
    assert "index 1, beyond the data's 1 inputs" in str(inconsistency(HONEST, [0]))
    assert "beyond the data's 0 inputs" in str(inconsistency(HONEST, []))
