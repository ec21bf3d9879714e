"""Conformance with ART 1.20's randomized-smoothing classes: what ART's own tests exercise
(tests/estimators/certification/test_randomized_smoothing.py, test_smooth_adv.py, test_macer.py,
test_smooth_mix.py), run on every class of ours, plus the checks ART lacks.

ART's tests build each class the same way (SGD, ``sample_size=100``, ``scale=0.01``,
``alpha=0.001``), call ``predict``, ``fit(x, y, batch_size=128, nb_epochs=1, scheduler=...)``,
``certify(x, n=250)`` and ``loss_gradient(x, y, sampling=True)`` on ten inputs, and check formats:
one-hot rows equal to the base model's argmax at that tiny σ, radii below 1, classes in range,
gradients of the input's shape. These tests do the same on the digits CNN (1×8×8), and compare
against ART itself where ART computes the same thing.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import numpy as np
import pytest
import torch
from art.attacks.evasion import FastGradientMethod
from art.estimators.certification import randomized_smoothing as art_rs
from art.estimators.classification import PyTorchClassifier
from art.utils import random_targets
from torch import nn

from rs_plugin import Laplace, RSValueError
from rs_plugin.adapters.art import (
    PyTorchCATRS,
    PyTorchConsistency,
    PyTorchMACER,
    PyTorchRandomizedSmoothing,
    PyTorchSmoothAdv,
    PyTorchSmoothMix,
)
from rs_plugin.data import load_demo_model, load_digits
from rs_plugin.training import (
    CATRS,
    MACER,
    Consistency,
    NoiseAugmentation,
    SmoothAdv,
    SmoothMix,
)

# Each class with the extra arguments ART's test file passes to it (ours: built like ART's).
CLASSES: dict[str, tuple[type[PyTorchRandomizedSmoothing], dict[str, Any]]] = {
    "randomized_smoothing": (PyTorchRandomizedSmoothing, {}),
    "smoothadv": (
        PyTorchSmoothAdv,
        {"epsilon": 1.0, "num_noise_vec": 1, "num_steps": 10, "warmup": 1},
    ),
    "macer": (PyTorchMACER, {"beta": 16.0, "gamma": 8.0, "lmbda": 12.0, "gaussian_samples": 16}),
    "smoothmix": (
        PyTorchSmoothMix,
        {
            "eta": 5.0,
            "num_noise_vec": 2,
            "num_steps": 8,
            "warmup": 10,
            "mix_step": 0,
            "maxnorm_s": None,
            "maxnorm": None,
        },
    ),
    "consistency": (PyTorchConsistency, {"num_noise_vec": 2, "lmbda": 10.0, "eta": 0.5}),
    "catrs": (PyTorchCATRS, {"num_noise_vec": 2, "epsilon": 1.0, "num_steps": 2, "lmbda": 0.5}),
}
ART_CLASSES: dict[str, type] = {
    "randomized_smoothing": art_rs.PyTorchRandomizedSmoothing,
    "smoothadv": art_rs.PyTorchSmoothAdv,
    "macer": art_rs.PyTorchMACER,
    "smoothmix": art_rs.PyTorchSmoothMix,
}


def _test_data(count: int = 10) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits("test")
    return x[:count].numpy(), np.eye(10, dtype=np.float32)[y[:count].numpy()]


def _build(name: str, model: nn.Module | None = None, **overrides):
    """The estimator as ART's test fixture builds it, with 8 noise draws behind the soft
    classifier (our keyword-only extra; formats do not depend on it) to keep the tests fast;
    returns it with its scheduler."""
    cls, extra = CLASSES[name]
    model = copy.deepcopy(load_demo_model()) if model is None else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=50, gamma=0.1)
    arguments = {
        "model": model,
        "loss": nn.CrossEntropyLoss(),
        "input_shape": (1, 8, 8),
        "nb_classes": 10,
        "optimizer": optimizer,
        "clip_values": (0.0, 1.0),
        "channels_first": True,
        "sample_size": 100,
        "scale": 0.01,
        "alpha": 0.001,
        "device_type": "cpu",
        "num_noise_samples": 8,
        **extra,
        **overrides,
    }
    return cls(**arguments), scheduler


def _base(model: nn.Module) -> PyTorchClassifier:
    return PyTorchClassifier(
        model, nn.CrossEntropyLoss(), (1, 8, 8), 10, clip_values=(0.0, 1.0), device_type="cpu"
    )


@pytest.mark.parametrize("name", sorted(ART_CLASSES))
def test_constructor_is_arts_argument_for_argument(name):
    """Same names, order and defaults as ART 1.20's constructor; ours only adds keyword-only
    arguments after them."""
    theirs = inspect.signature(ART_CLASSES[name]).parameters
    ours = inspect.signature(CLASSES[name][0]).parameters
    shared = list(ours)[: len(theirs)]
    assert shared == list(theirs)
    for parameter in theirs:
        assert ours[parameter].default == theirs[parameter].default, parameter
        assert ours[parameter].kind == theirs[parameter].kind, parameter
    extras = list(ours.values())[len(theirs) :]
    assert all(p.kind == inspect.Parameter.KEYWORD_ONLY for p in extras)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_arts_fixture_builds_it_and_get_params_returns_the_arguments(name):
    estimator, _ = _build(name)
    params = estimator.get_params()
    for key, value in CLASSES[name][1].items():
        assert params[key] == value
    assert params["scale"] == 0.01 and params["sample_size"] == 100 and params["alpha"] == 0.001
    clone = estimator.clone_for_refitting()
    assert type(clone) is type(estimator)
    assert all(clone.get_params()[key] == value for key, value in CLASSES[name][1].items())


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_predict_certify_and_gradients_have_arts_formats(name):
    """ART's predict, certification and loss-gradient tests, on each class."""
    estimator, _ = _build(name)
    x, y = _test_data()
    base_predictions = _base(estimator.base_model).predict(x)
    smooth = estimator.predict(x)
    assert smooth.shape == base_predictions.shape == (10, 10)
    np.testing.assert_array_almost_equal(smooth.sum(axis=1), np.ones(10))
    np.testing.assert_array_equal(smooth.argmax(axis=1), base_predictions.argmax(axis=1))

    prediction, radius = estimator.certify(x, n=250)
    assert prediction.shape == radius.shape == (10,)
    assert (radius < 1).all() and (prediction < y.shape[1]).all()
    assert prediction.dtype.kind == "i" and radius.dtype.kind == "f"

    assert estimator.loss_gradient(x, y, sampling=True).shape == x.shape
    everything = estimator.class_gradient(x)
    assert everything.shape == (10, 10, 1, 8, 8)
    one = estimator.class_gradient(x, label=3)
    assert one.shape == (10, 1, 1, 8, 8)
    np.testing.assert_allclose(one[:, 0], everything[:, 3], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_fit_as_arts_tests_call_it_trains_the_base_model(name):
    estimator, scheduler = _build(name)
    x, y = _test_data()
    before = [p.detach().clone() for p in estimator.base_model.parameters()]
    estimator.fit(x=x, y=y, batch_size=128, nb_epochs=1, scheduler=scheduler)
    after = list(estimator.base_model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert not estimator.base_model.training
    assert scheduler.last_epoch == 1


def test_seeded_runs_repeat_and_other_seeds_differ():
    """SmoothMix draws the most (shuffling, noise, attack noise, mixing weights); every draw
    comes from the seed. (The core's tests check the loop's seeding for every objective.)"""
    x, y = _test_data(8)

    def run(seed: int):
        estimator, _ = _build("smoothmix", scale=0.25, seed=seed, num_steps=2)
        estimator.fit(x, y, batch_size=4, nb_epochs=1)
        weights = [p.detach().clone() for p in estimator.base_model.parameters()]
        return weights, estimator.certify(x, n=100)[1], estimator.loss_gradient(x, y)

    first, again, other = run(0), run(0), run(1)
    assert all(torch.equal(a, b) for a, b in zip(first[0], again[0], strict=True))
    np.testing.assert_array_equal(first[1], again[1])
    np.testing.assert_array_equal(first[2], again[2])
    assert any(not torch.equal(a, b) for a, b in zip(first[0], other[0], strict=True))


def test_fgsm_with_the_estimator_as_in_arts_test():
    estimator, _ = _build("randomized_smoothing")
    x, y = _test_data()
    targets = random_targets(y, 10)
    plain = FastGradientMethod(estimator=_base(estimator.base_model), targeted=True)
    smoothed = FastGradientMethod(estimator=estimator, targeted=True)
    x_plain, x_smoothed = plain.generate(x, y=targets), smoothed.generate(x, y=targets)
    assert x_plain.shape == x_smoothed.shape
    assert (np.abs(x_plain - x_smoothed) < 0.75).all()
    assert not np.array_equal(x_smoothed, x)


def test_tabular_model_as_in_arts_iris_tests():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 3))
    estimator = PyTorchRandomizedSmoothing(
        model, nn.CrossEntropyLoss(), (4,), 3, clip_values=(0.0, 1.0), sample_size=100,
        scale=0.01, device_type="cpu",
    )  # fmt: skip
    x = np.random.default_rng(0).random((30, 4), dtype=np.float32)
    predictions = estimator.predict(x)
    assert predictions.shape == (30, 3) and (predictions.sum(axis=1) <= 1).all()
    prediction, radius = estimator.certify(x, n=250)
    assert prediction.shape == radius.shape == (30,) and (radius < 1).all()


# -- loss_gradient(sampling=...) -------------------------------------------------------------------


def test_sampling_false_is_arts_default_the_base_models_gradient():
    """ART's own estimator returns PyTorchClassifier's gradient unless sampling=True: ours
    returns exactly that when asked ART's way."""
    model = load_demo_model()
    x, y = _test_data(6)
    ours, _ = _build("randomized_smoothing", model=model, scale=0.25)
    theirs = art_rs.PyTorchRandomizedSmoothing(
        model, nn.CrossEntropyLoss(), (1, 8, 8), 10, clip_values=(0.0, 1.0), scale=0.25,
        device_type="cpu",
    )  # fmt: skip
    np.testing.assert_allclose(
        ours.loss_gradient(x, y, sampling=False), theirs.loss_gradient(x, y), rtol=1e-5, atol=1e-8
    )
    np.testing.assert_allclose(
        ours.loss_gradient(x, y, sampling=False), _base(model).loss_gradient(x, y), rtol=1e-5
    )


def test_default_and_sampling_true_are_the_smoothed_classifiers_gradient():
    model = load_demo_model()
    x, y = _test_data(6)
    estimator, _ = _build("randomized_smoothing", model=model, scale=0.25)
    default = estimator.loss_gradient(x, y)
    np.testing.assert_array_equal(estimator.loss_gradient(x, y, sampling=True), default)
    # The gradient of −log of the soft smoothed probability, computed here by hand.
    x_t = torch.from_numpy(x).requires_grad_(True)
    probabilities = estimator.smoothed(x_t)
    # ART's CrossEntropyLoss averages over the batch.
    loss = -torch.log(probabilities.gather(1, torch.from_numpy(y.argmax(1))[:, None])).mean()
    (expected,) = torch.autograd.grad(loss, x_t)
    np.testing.assert_allclose(default, expected.numpy(), rtol=1e-4, atol=1e-7)
    base = estimator.loss_gradient(x, y, sampling=False)
    cosine = (default * base).sum() / np.linalg.norm(default) / np.linalg.norm(base)
    assert cosine < 0.99  # two different functions' gradients


def test_sampling_true_matches_arts_sampled_gradient_within_monte_carlo_error():
    """ART's sampling=True draws sample_size fresh noises per call; averaged over many calls it
    estimates the same gradient ours computes with many draws."""
    model = load_demo_model()
    x, y = _test_data(2)
    ours, _ = _build("randomized_smoothing", model=model, scale=0.25, num_noise_samples=4000)
    theirs = art_rs.PyTorchRandomizedSmoothing(
        model, nn.CrossEntropyLoss(), (1, 8, 8), 10, clip_values=(0.0, 1.0), sample_size=400,
        scale=0.25, device_type="cpu",
    )  # fmt: skip
    np.random.seed(0)  # noqa: NPY002 (ART's sampling uses torch's global RNG)
    torch.manual_seed(0)
    art_mean = np.mean([theirs.loss_gradient(x, y, sampling=True) for _ in range(10)], axis=0)
    mine = ours.loss_gradient(x, y)
    cosine = (art_mean * mine).sum() / np.linalg.norm(art_mean) / np.linalg.norm(mine)
    assert cosine > 0.98


# -- what ART does not check -----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 8, 1), (3, 32, 32), (64,)])
def test_an_input_shape_the_model_refuses_is_an_error(shape):
    with pytest.raises(RSValueError, match=r"^input_shape: expected the shape of one input"):
        PyTorchRandomizedSmoothing(
            load_demo_model(), nn.CrossEntropyLoss(), shape, 10, device_type="cpu"
        )


def test_nb_classes_must_match_the_models_output():
    with pytest.raises(RSValueError, match=r"^nb_classes: expected the width"):
        PyTorchRandomizedSmoothing(
            load_demo_model(), nn.CrossEntropyLoss(), (1, 8, 8), 7, device_type="cpu"
        )


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_fit_refuses_nan_and_leaves_the_weights_untouched(name):
    estimator, _ = _build(name)
    x, y = _test_data()
    x[3, 0, 2, 2] = np.nan
    before = [p.detach().clone() for p in estimator.base_model.parameters()]
    with pytest.raises(RSValueError, match=r"^x: expected finite values"):
        estimator.fit(x, y, nb_epochs=1)
    after = list(estimator.base_model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.parametrize("outputs", ["hard", "log_probabilities"])
@pytest.mark.parametrize(
    ("value", "message"), [(np.nan, "finite values"), (1.5, r"values inside clip_values")]
)
def test_predict_checks_inputs_whatever_the_outputs(outputs, value, message):
    estimator, _ = _build("randomized_smoothing", outputs=outputs)
    x, _ = _test_data(4)
    x[1, 0, 0, 0] = value
    with pytest.raises(RSValueError, match=f"^x: expected {message}"):
        estimator.predict(x)


@pytest.mark.parametrize("name", ["smoothadv", "macer", "smoothmix", "consistency", "catrs"])
def test_trainers_take_any_input_space_smoothing(name):
    fewer_steps: dict[str, Any] = {"num_steps": 2} if name in ("smoothadv", "smoothmix") else {}
    estimator, _ = _build(name, smoothing=Laplace(0.25), **fewer_steps)
    assert estimator.training_objective().smoothing is estimator.smoothing
    x, y = _test_data(8)
    estimator.fit(x, y, batch_size=8, nb_epochs=1)
    prediction, radius = estimator.certify(x, n=200)
    assert prediction.shape == (8,) and np.isfinite(radius).all()


def test_trainer_settings_are_checked_at_construction():
    with pytest.raises(RSValueError, match="^epsilon: expected"):
        _build("smoothadv", epsilon=-1.0)
    with pytest.raises(RSValueError, match="^num_noise_samples: expected"):
        _build("macer", gaussian_samples=0)
    with pytest.raises(RSValueError, match="^mix_step: expected"):
        _build("smoothmix", mix_step=-1)
    with pytest.raises(RSValueError, match="^num_noise_vec: expected"):
        _build("consistency", num_noise_vec=1)
    with pytest.raises(RSValueError, match="^epsilon: expected"):
        _build("catrs", epsilon=0.0)


def test_catrs_fit_is_reproducible_from_the_seed():
    """PyTorchCATRS draws its noise, its K ~ Binomial and its shuffling from the seed."""
    x, y = _test_data(8)

    def run(seed: int) -> list[torch.Tensor]:
        estimator, _ = _build("catrs", scale=0.25, seed=seed)
        estimator.fit(x, y, batch_size=4, nb_epochs=1)
        return [p.detach().clone() for p in estimator.base_model.parameters()]

    first, again, other = run(0), run(0), run(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_smoothmix_steps_by_its_own_step_size_not_the_failure_probability():
    """ART's SmoothMix steps its attack by ``alpha`` (the certificate's failure probability);
    ours by ``step_size``, and ``alpha`` only sets the certificate's level."""
    estimator, _ = _build("smoothmix", scale=0.25, step_size=0.5, num_steps=2)
    objective = estimator.training_objective()
    assert objective.step_size == 0.5 and estimator.alpha == 0.001
    x, y = _test_data(4)
    _, adversarial = objective.attack(
        estimator.base_model, torch.from_numpy(x), torch.from_numpy(y.argmax(1)), seed=0, epoch=0
    )
    moved = np.linalg.norm((adversarial.numpy() - x).reshape(4, -1), axis=1)
    assert (moved > 0.3).all() and (moved <= 1.0 + 1e-5).all()


@pytest.mark.parametrize(
    ("name", "objective", "settings"),
    [
        ("randomized_smoothing", NoiseAugmentation, {}),
        ("smoothadv", SmoothAdv, {"epsilon": 1.0, "num_noise_vec": 1, "num_steps": 10}),
        ("macer", MACER, {"beta": 16.0, "gamma": 8.0, "lmbda": 12.0, "num_noise_samples": 16}),
        ("smoothmix", SmoothMix, {"eta": 5.0, "num_noise_vec": 2, "num_steps": 8, "warmup": 10}),
        ("consistency", Consistency, {"num_noise_vec": 2, "lmbda": 10.0, "eta": 0.5}),
        ("catrs", CATRS, {"num_noise_vec": 2, "epsilon": 1.0, "num_steps": 2, "lmbda": 0.5}),
    ],
)
def test_fit_minimises_the_core_objective_with_the_estimators_settings(name, objective, settings):
    estimator, _ = _build(name, scale=0.25)
    built = estimator.training_objective()
    assert type(built) is objective and built.smoothing is estimator.smoothing
    assert {key: getattr(built, key) for key in settings} == settings
    if hasattr(built, "clip_values"):
        assert built.clip_values == (0.0, 1.0)
    estimator.set_params(scale=0.5)
    assert estimator.training_objective().smoothing.sigma == 0.5
