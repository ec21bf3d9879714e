"""Certificate and prediction records: what a user does with them works as for a tensor."""

from __future__ import annotations

import numpy as np
import torch

from rs_plugin import Gaussian, SmoothedClassifier
from rs_plugin.certification.radii import pack_certificates
from rs_plugin.certification.stats import clopper_pearson_lower
from tests.analytic import LinearModel


def _smoothed() -> SmoothedClassifier:
    w = torch.zeros(16)
    w[0] = 1.0
    return SmoothedClassifier(LinearModel(w, 0.0, scale=10.0).eval(), Gaussian(0.25), 2)


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    # Far from the boundary (class 1, class 0) and on it (PREDICT and CERTIFY abstain).
    x = torch.zeros(3, 16)
    x[0, 0], x[1, 0] = 3.0, -3.0
    return x, torch.tensor([1, 0, 1])


def test_predictions_compare_index_and_convert_like_their_prediction_tensor():
    x, y = _inputs()
    predictions = _smoothed().predict(x, n=400, alpha=0.001)
    assert predictions.prediction.tolist() == [1, 0, -1]
    agreement = predictions == y
    assert isinstance(agreement, torch.Tensor) and agreement.tolist() == [True, True, False]
    assert (predictions != y).tolist() == [False, False, True]
    assert int(predictions[0]) == 1 and int(predictions[2]) == -1
    assert predictions[1:].tolist() == [0, -1]
    assert [int(p) for p in predictions] == [1, 0, -1]
    assert np.asarray(predictions).tolist() == [1, 0, -1]
    assert float((predictions == y).double().mean()) == 2 / 3
    assert (predictions == np.array([1, 1, 1])).tolist() == [True, False, False]


def test_certificates_compare_and_index_like_their_prediction_and_take_selects_records():
    x, y = _inputs()
    certificates = _smoothed().certify(x, n0=50, n=400, alpha=0.001)
    assert (certificates == y).tolist() == [True, True, False]
    assert int(certificates[1]) == 0
    picked = certificates.take([2, 0])
    assert picked.index.tolist() == [2, 0] and picked.prediction.tolist() == [-1, 1]
    assert (picked == certificates.take([2, 0])).all()


def test_a_lower_bound_of_exactly_one_half_abstains():
    """p_A >= 1/2 leaves a tie possible (g(x) undetermined): CERTIFY needs p_lower > 1/2. All
    10 of 10 votes at alpha = 2**-10 give the Clopper-Pearson bound alpha**(1/10) = 1/2 exactly
    (computed at most 1/2: rounded down); the rule is checked at 1/2 itself."""
    p_lower = torch.from_numpy(clopper_pearson_lower(np.array([10, 10]), 10, 2.0**-10))
    assert 0.5 * (1 - 1e-11) < float(p_lower[0]) <= 0.5
    p_lower[0] = 0.5
    p_lower[1] = float(np.nextafter(0.5, 1.0))
    votes = torch.tensor([[10, 0], [10, 0]])
    certs = pack_certificates(
        Gaussian(0.25), [0, 1], torch.tensor([0, 0]), p_lower, votes, votes, 10, 10, 2.0**-10,
        dim=4,
    )  # fmt: skip
    assert certs.prediction.tolist() == [-1, 0]
    assert float(certs.radius[0]) == 0.0 and float(certs.radius[1]) > 0.0
