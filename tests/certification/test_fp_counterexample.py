"""The floating-point hole in the float mode, and the sound mode closing it.

A base classifier that reads the rounding residue of its input (:mod:`tests.fp_models`) gets a
Gaussian certificate at x0 = 0 whose radius exceeds the distance to x1 = c·1, where PREDICT
returns the other class: a false certificate, as Voráček & Hein (ICLR 2023) show. The test
fails if the hole is not there. The sound mode (grid inputs, exact integer noise) issues no
certificate that x1 contradicts.
"""

from __future__ import annotations

import math

import torch

from rs_plugin import Gaussian, SmoothedClassifier, SoundGaussian
from tests.fp_models import RoundingResidue

SIGMA = 0.25
SHAPE = (1, 1, 28, 28)
C = 0.016  # in [2^-6, 2^-5): the counterexample's offset per coordinate
DISTANCE = C * math.sqrt(784)


def _certify_and_predict(smoothing):
    smoothed = SmoothedClassifier(RoundingResidue().eval(), smoothing, num_classes=2)
    x0 = torch.zeros(SHAPE)
    x1 = torch.full(SHAPE, C)
    certificate = smoothed.certify(x0, n0=100, n=10_000, alpha=0.001, batch_size=2000, seed=0)
    at_x1 = smoothed.predict(x1, n=1000, alpha=0.001, batch_size=1000, seed=1)
    return certificate, at_x1


def test_float_mode_certifies_past_an_adversarial_example():
    certificate, at_x1 = _certify_and_predict(Gaussian(SIGMA))
    assert int(certificate.prediction[0]) == 0
    assert float(certificate.radius[0]) > DISTANCE  # x1 lies inside the certified ball ...
    assert int(at_x1.prediction[0]) == 1  # ... and the smoothed classifier says 1 there


def test_sound_mode_issues_no_certificate_that_x1_contradicts():
    certificate, at_x1 = _certify_and_predict(SoundGaussian(SIGMA, round_inputs=True))
    predicted = int(certificate.prediction[0])
    radius = float(certificate.radius[0])
    # The residue is gone: every noisy coordinate is fl(j/255), never a tiny non-grid value.
    assert predicted == 1
    assert not (radius > DISTANCE and int(at_x1.prediction[0]) != predicted)
    assert int(at_x1.prediction[0]) == 1
