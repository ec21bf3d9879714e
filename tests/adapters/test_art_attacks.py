"""ART's attacks run on the adapter, stay in budget, and never break a certificate.

Every attack runs on the soft smoothed classifier (``outputs="log_probabilities"``, the documented
setting for attacks) on a handful of digits. For each adversarial example x' at ℓ2 distance d from
x, a fresh PREDICT (its own seed) at x' must return the certified class or abstain whenever x was
certified at radius > d. A violation has probability at most about 2α per input (CERTIFY or
PREDICT failing), α = 0.001, so over 6 inputs and 9 attacks a false alarm has probability < 0.11
in the worst case; in practice far smaller since few x' get near the boundary.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from art.attacks.evasion import (
    AutoAttack,
    AutoProjectedGradientDescent,
    CarliniL2Method,
    DeepFool,
    FastGradientMethod,
    HopSkipJump,
    ProjectedGradientDescent,
    SquareAttack,
)
from art.attacks.evasion.projected_gradient_descent.projected_gradient_descent_pytorch import (
    ProjectedGradientDescentPyTorch,
)

from rs_plugin import RSValueError
from rs_plugin.adapters.art import PyTorchRandomizedSmoothing
from rs_plugin.data import load_demo_model, load_digits

EPS2, EPSINF = 0.5, 0.1
N_INPUTS = 6


@pytest.fixture(scope="module")
def setting():
    images, labels = load_digits("test")
    x, y = images[20 : 20 + N_INPUTS].numpy(), labels[20 : 20 + N_INPUTS].numpy()
    estimator = PyTorchRandomizedSmoothing(
        load_demo_model(),
        torch.nn.CrossEntropyLoss(),
        (1, 8, 8),
        10,
        clip_values=(0.0, 1.0),
        sample_size=100,
        scale=0.25,
        device_type="cpu",
        outputs="log_probabilities",
    )
    certificates = estimator.smoothed.certify(x, n0=100, n=10_000, alpha=0.001, seed=0)
    return estimator, x, y, certificates


def _apgd(est, norm, eps):
    return AutoProjectedGradientDescent(
        est, norm=norm, eps=eps, eps_step=eps / 5, max_iter=20, nb_random_init=1, verbose=False
    )


ATTACKS = {
    # name: (factory(estimator), norm of the budget or None for minimal-norm attacks, budget)
    "fgm": (lambda e: FastGradientMethod(e, norm=2, eps=EPS2), 2, EPS2),
    "pgd_l2": (
        lambda e: ProjectedGradientDescent(
            e, norm=2, eps=EPS2, eps_step=0.1, max_iter=20, verbose=False
        ),
        2,
        EPS2,
    ),
    "pgd_linf": (
        lambda e: ProjectedGradientDescent(
            e, norm=np.inf, eps=EPSINF, eps_step=0.02, max_iter=20, verbose=False
        ),
        np.inf,
        EPSINF,
    ),
    "apgd": (lambda e: _apgd(e, 2, EPS2), 2, EPS2),
    "autoattack": (
        lambda e: AutoAttack(
            e, norm=2, eps=EPS2, eps_step=0.1, attacks=[_apgd(e, 2, EPS2)], batch_size=8
        ),
        2,
        EPS2,
    ),
    "cw_l2": (
        lambda e: CarliniL2Method(
            e,
            initial_const=1.0,
            learning_rate=0.1,
            binary_search_steps=2,
            max_iter=15,
            verbose=False,
        ),
        None,
        None,
    ),
    "deepfool": (lambda e: DeepFool(e, max_iter=20, verbose=False), None, None),
    "square_linf": (
        lambda e: SquareAttack(
            e, norm=np.inf, eps=EPSINF, max_iter=100, nb_restarts=1, verbose=False
        ),
        np.inf,
        EPSINF,
    ),
    "hopskipjump": (
        lambda e: HopSkipJump(e, max_iter=5, max_eval=200, init_eval=20, verbose=False),
        None,
        None,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_runs_in_budget_and_never_breaks_a_certificate(setting, name):
    estimator, x, y, certificates = setting
    factory, norm, budget = ATTACKS[name]
    attack = factory(estimator)
    x_adv = attack.generate(x, y=np.eye(10, dtype=np.float32)[y])

    assert x_adv.shape == x.shape
    assert np.isfinite(x_adv).all()
    assert (x_adv >= -1e-6).all() and (x_adv <= 1 + 1e-6).all()
    delta = (x_adv - x).reshape(len(x), -1)
    if norm is not None and budget is not None:
        assert (np.linalg.norm(delta, ord=norm, axis=1) <= budget * (1 + 1e-4) + 1e-6).all()
    # A silent no-op would pass everything below: the attack must have moved something.
    assert np.abs(delta).max() > 1e-3

    distance = torch.from_numpy(np.linalg.norm(delta, axis=1)).double()
    fresh = estimator.smoothed.predict(x_adv, n=5000, alpha=0.001, seed=987_654)
    covered = (certificates.prediction >= 0) & (certificates.radius > distance)
    kept = (fresh.prediction == certificates.prediction) | (fresh.prediction == -1)
    assert bool(kept[covered].all()), (name, distance, certificates.radius, fresh.prediction)


def test_square_l2_on_images_under_ten_pixels_queries_nan_and_is_refused(setting):
    """ART's ℓ2 SquareAttack cuts the image into 5×5 tiles; on 8×8 inputs a tile is 1 pixel,
    its initial perturbation is 0/0 = NaN, and it queries predict with NaN inputs. predict
    refuses non-finite inputs on every path (ART's plain classifier would return NaN scores)."""
    estimator, x, y, _ = setting
    attack = SquareAttack(estimator, norm=2, eps=EPS2, max_iter=2, nb_restarts=1, verbose=False)
    with pytest.raises(RSValueError, match=r"^x: expected finite values"):
        attack.generate(x, y=np.eye(10, dtype=np.float32)[y])


def test_art_picks_the_pytorch_pgd_on_the_adapter(setting):
    estimator = setting[0]
    attack = ProjectedGradientDescent(estimator, norm=2, eps=EPS2, eps_step=0.1, max_iter=2)
    assert isinstance(attack._attack, ProjectedGradientDescentPyTorch)


@pytest.mark.slow
def test_strong_pgd_beyond_the_certified_radii_changes_the_smoothed_prediction(setting):
    """The soft gradients are useful: at ε = 2 (≫ the radii) PGD flips most inputs."""
    estimator, x, y, certificates = setting
    assert float(certificates.radius.max()) < 2.0
    attack = ProjectedGradientDescent(
        estimator, norm=2, eps=2.0, eps_step=0.25, max_iter=30, verbose=False
    )
    x_adv = attack.generate(x, y=np.eye(10, dtype=np.float32)[y])
    fresh = estimator.smoothed.predict(x_adv, n=2000, alpha=0.001, seed=1)
    flipped = (fresh.prediction >= 0) & (fresh.prediction != torch.from_numpy(y))
    assert int(flipped.sum()) >= N_INPUTS // 2


@pytest.mark.slow
def test_default_hard_outputs_run_arts_decision_based_and_gradient_attacks(setting):
    """ART code that never heard of ``outputs`` keeps working with the default hard predict."""
    x = setting[1]
    hard = PyTorchRandomizedSmoothing(
        load_demo_model(),
        torch.nn.CrossEntropyLoss(),
        (1, 8, 8),
        10,
        clip_values=(0.0, 1.0),
        sample_size=32,
        scale=0.25,
        device_type="cpu",
    )
    x3 = x[:3]
    pgd = ProjectedGradientDescent(hard, norm=2, eps=EPS2, eps_step=0.1, max_iter=5, verbose=False)
    x_pgd = pgd.generate(x3)
    assert np.isfinite(x_pgd).all()
    assert (np.linalg.norm((x_pgd - x3).reshape(3, -1), axis=1) <= EPS2 * (1 + 1e-4)).all()
    hsj = HopSkipJump(hard, max_iter=2, max_eval=50, init_eval=10, verbose=False)
    assert np.isfinite(hsj.generate(x3)).all()
