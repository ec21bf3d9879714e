"""The ART adapter: ART's documented usage, side by side with ART's own class, and its gradients."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from art.estimators.certification.randomized_smoothing import (
    PyTorchRandomizedSmoothing as ArtRandomizedSmoothing,
)
from scipy.stats import beta

from rs_plugin import Gaussian, RSValueError
from rs_plugin.adapters.art import (
    PyTorchRandomizedSmoothing,
    PyTorchSmoothAdv,
    PyTorchSmoothedClassifier,
    SmoothedLogProbabilities,
)
from rs_plugin.data import load_demo_model, load_digits
from rs_plugin.training import NoiseAugmentation

SIGMA = 0.25


def _art_style(model, cls=PyTorchRandomizedSmoothing, **extra):
    """Built the way ART's randomized-smoothing notebook builds its estimator."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    arguments = {
        "model": model,
        "loss": torch.nn.CrossEntropyLoss(),
        "optimizer": optimizer,
        "input_shape": (1, 8, 8),
        "nb_classes": 10,
        "channels_first": True,
        "clip_values": (0.0, 1.0),
        "sample_size": 100,
        "scale": SIGMA,
        "alpha": 0.001,
        "device_type": "cpu",
        **extra,
    }
    return cls(**arguments)


def _count_from_radius(radius: float, n: int, alpha: float) -> int:
    """The vote count k whose one-sided Clopper–Pearson bound gives ``radius`` (inverse map)."""
    p_lower = float(torch.special.ndtr(torch.tensor(radius / SIGMA, dtype=torch.float64)))
    counts = np.arange(1, n + 1)
    bounds = beta.ppf(alpha, counts, n - counts + 1)
    return int(counts[np.argmin(np.abs(bounds - p_lower))])


@pytest.mark.slow
def test_art_documented_usage_fit_predict_certify_matches_art():
    train, test = load_digits("train"), load_digits("test")
    x_train, y_train = train[0][:300].numpy(), train[1][:300].numpy()
    x, y = test[0][:30].numpy(), test[1][:30].numpy()
    y_one_hot = np.eye(10, dtype=np.float32)[y_train]

    ours = _art_style(copy.deepcopy(load_demo_model()))
    before = [p.detach().clone() for p in ours.base_model.parameters()]
    ours.fit(x_train, y_one_hot, nb_epochs=1, batch_size=64)
    changed = [
        not torch.equal(a, b) for a, b in zip(before, ours.base_model.parameters(), strict=True)
    ]
    assert all(changed)

    # ART's own class on the very same (fitted) network.
    theirs = _art_style(ours.base_model, cls=ArtRandomizedSmoothing)
    np.random.seed(0)  # noqa: NPY002 (ART samples from the global NumPy RNG)
    art_predict = theirs.predict(x)
    our_predict = ours.predict(x)
    assert our_predict.shape == art_predict.shape == (30, 10)
    assert set(np.unique(our_predict)) <= {0.0, 1.0}
    both = (art_predict.sum(axis=1) == 1) & (our_predict.sum(axis=1) == 1)
    assert both.sum() >= 25
    np.testing.assert_array_equal(our_predict[both].argmax(1), art_predict[both].argmax(1))
    assert (our_predict.argmax(1)[both] == y[both]).mean() > 0.9

    n = 2000
    art_prediction, art_radius = theirs.certify(x, n=n, batch_size=500)
    our_prediction, our_radius = ours.certify(x, n=n, batch_size=500)
    assert our_prediction.dtype.kind == "i" and our_radius.dtype.kind == "f"
    assert our_prediction.shape == our_radius.shape == (30,)
    assert np.all((our_prediction == -1) == (our_radius == 0))
    confident = (art_radius > 0.1) & (our_radius > 0.1)
    assert confident.sum() >= 20
    np.testing.assert_array_equal(our_prediction[confident], art_prediction[confident])
    # Radii are consistent: the vote counts behind them pass a two-proportion z-test
    # (|z| < 4.5 per input; with 30 inputs a false alarm has probability < 1e-4).
    for r_art, r_ours in zip(art_radius[confident], our_radius[confident], strict=True):
        k_art, k_ours = _count_from_radius(r_art, n, 0.001), _count_from_radius(r_ours, n, 0.001)
        pooled = (k_art + k_ours) / (2 * n)
        spread = np.sqrt(max(pooled * (1 - pooled), 1 / n) * 2 / n)
        assert abs(k_art - k_ours) / n / spread < 4.5


def test_certify_is_the_core_engine_and_reproducible():
    model = load_demo_model()
    x = load_digits("test")[0][:5].numpy()
    est = _art_style(model, seed=7)
    first = est.certify(x, n=500, batch_size=128)
    second = est.certify(x, n=500, batch_size=500)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    # ART's default of 32 and ours, "auto", give the same certificates.
    for batch_size in (32, "auto"):
        again = est.certify(x, n=500, batch_size=batch_size)
        np.testing.assert_array_equal(first[1], again[1])
    default = est.certify(x, n=500)
    np.testing.assert_array_equal(first[1], default[1])
    core = est.smoothed.certify(x, n0=100, n=500, alpha=0.001, seed=7)
    np.testing.assert_array_equal(first[1], core.radius.numpy())
    assert isinstance(est.smoothing, Gaussian) and est.smoothing.sigma == SIGMA


class _Recorder(torch.nn.Module):
    """A linear model that records the (noisy) inputs it is trained on."""

    def __init__(self, seen: list[torch.Tensor]) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(64, 10)
        self.seen = seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen.append(x.detach().clone())
        return self.linear(x.flatten(1))


def test_fit_draws_fresh_noise_for_every_batch():
    seen: list[torch.Tensor] = []

    est = _art_style(_Recorder(seen))
    zeros = np.zeros((200, 1, 8, 8), dtype=np.float32)
    est.fit(zeros, np.arange(200) % 10, nb_epochs=2, batch_size=100)
    assert len(seen) == 4
    noise = torch.stack(seen)
    assert abs(float(noise.std()) - SIGMA) < 0.01
    assert abs(float(noise.mean())) < 0.01
    for i in range(4):
        for j in range(i):
            assert not torch.allclose(noise[i], noise[j])


def test_fit_without_optimizer_names_the_parameter():
    est = PyTorchRandomizedSmoothing(load_demo_model(), torch.nn.CrossEntropyLoss(), (1, 8, 8), 10)
    with pytest.raises(RSValueError, match="^optimizer: expected a torch.optim.Optimizer"):
        est.fit(np.zeros((4, 1, 8, 8), dtype=np.float32), np.zeros(4, dtype=np.int64))


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"scale": -1.0}, "scale"),
        ({"sample_size": 0}, "sample_size"),
        ({"alpha": 1.5}, "alpha"),
        ({"outputs": "probabilities"}, "outputs"),
        ({"preprocessing": "imagenet"}, "preprocessing"),
        ({"preprocessing": (0.0, 0.0)}, "preprocessing"),
        ({"smoothing": "gaussian"}, "smoothing"),
    ],
)
def test_bad_constructor_arguments_name_the_parameter(kwargs, parameter):
    with pytest.raises(RSValueError, match=f"^{parameter}: expected "):
        PyTorchRandomizedSmoothing(
            load_demo_model(), torch.nn.CrossEntropyLoss(), (1, 8, 8), 10, **kwargs
        )


@pytest.mark.slow
def test_noise_is_added_before_art_preprocessing():
    """Radii are in the user's input units: preprocessing (x − m) / s runs after the noise."""
    model = load_demo_model()
    x = load_digits("test")[0][:4].numpy()
    plain = _art_style(model)
    # The same classifier expressed with ART preprocessing on inputs scaled by 2 (x' = 2x):
    # model((x' − 0) / 2) = model(x); noise σ' = 2σ on x' certifies radius 2r in x' units.
    scaled = PyTorchRandomizedSmoothing(
        model,
        torch.nn.CrossEntropyLoss(),
        (1, 8, 8),
        10,
        preprocessing=(0.0, 2.0),
        sample_size=100,
        scale=2 * SIGMA,
        device_type="cpu",
    )
    p1, r1 = plain.certify(x, n=500)
    p2, r2 = scaled.certify(2 * x, n=500)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_allclose(r2, 2 * r1, rtol=1e-5)


def test_a_float16_model_takes_per_pixel_art_preprocessing_through_a_float32_standardisation():
    """ART's preprocessing arrays (float32) are applied before the cast to a float16 model's
    dtype: the float16 model certifies what the float32 one does (it raised on the float32
    standardised batch), and its gradients are finite."""
    model = load_demo_model()
    x, y = (t[:4].numpy() for t in load_digits("test"))
    per_pixel = {
        "preprocessing": (np.zeros((1, 8, 8)), np.full((1, 8, 8), 2.0)),
        "clip_values": (0.0, 2.0),
        "scale": 2 * SIGMA,
    }
    full = _art_style(model, **per_pixel)
    half = _art_style(copy.deepcopy(model).half(), **per_pixel)
    p32, r32 = full.certify(2 * x, n=500)
    p16, r16 = half.certify(2 * x, n=500)
    np.testing.assert_array_equal(p16, p32)
    np.testing.assert_allclose(r16, r32, atol=0.02)
    gradient = half.loss_gradient(2 * x, y)
    assert gradient.shape == x.shape and np.isfinite(gradient).all()


def test_model_is_the_soft_smoothed_classifier_and_outputs_are_log_probabilities():
    est = _art_style(load_demo_model(), outputs="log_probabilities")
    assert isinstance(est.model, SmoothedLogProbabilities)
    x = load_digits("test")[0][:6].numpy()
    scores = est.predict(x)
    assert scores.shape == (6, 10)
    np.testing.assert_allclose(np.exp(scores).sum(axis=1), 1.0, rtol=1e-5)
    assert (scores <= 0).all()
    # Deterministic (common random numbers), and it is the core's soft classifier.
    np.testing.assert_array_equal(scores, est.predict(x))
    core = est.smoothed(torch.from_numpy(x)).log().detach().numpy()
    np.testing.assert_allclose(scores, core, rtol=1e-5, atol=1e-6)


def test_any_core_smoothing_plugs_into_the_generic_estimator():
    class HalfGaussian(Gaussian):
        name = "half_gaussian"

    est = PyTorchSmoothedClassifier(
        load_demo_model(),
        torch.nn.CrossEntropyLoss(),
        (1, 8, 8),
        10,
        clip_values=(0.0, 1.0),
        sample_size=100,
        device_type="cpu",
        smoothing=HalfGaussian(0.125),
    )
    x = load_digits("test")[0][:3].numpy()
    _, radius = est.certify(x, n=300)
    assert est.smoothing.name == "half_gaussian"
    assert (radius <= 0.125 * 3.1).all()  # σ·Φ⁻¹(p_lower) with p_lower ≤ 1 − 0.001^(1/300)


def _log_smoothed(est, x: np.ndarray, label: int) -> float:
    return float(est.predict(x)[0, label])


@pytest.mark.slow
def test_gradient_matches_finite_differences_within_monte_carlo_error():
    """∇ log p̄_c from class_gradient (m samples, K seeds) vs a finite difference of the soft
    classifier with M ≫ m common-noise samples, along a random direction."""
    model = load_demo_model()
    x_all, _ = load_digits("test")
    x = x_all[11:12].numpy()
    direction = torch.randn((1, 1, 8, 8), generator=torch.Generator().manual_seed(3)).numpy()
    direction /= np.linalg.norm(direction)
    m, big_m, seeds = 2000, 40000, 10

    def estimator(seed: int, samples: int):
        # No clip range: the finite difference steps just outside [0, 1] at dark pixels.
        return _art_style(
            model,
            outputs="log_probabilities",
            num_noise_samples=samples,
            seed=seed,
            clip_values=None,
        )

    # The runner-up class: its log-probability moves fast, so the gradient is far from 0.
    label = int(np.argsort(estimator(0, m).predict(x)[0])[-2])
    estimates = []
    for seed in range(seeds):
        grad = estimator(seed, m).class_gradient(x, label=label)[0, 0]
        estimates.append(float((grad * direction[0]).sum()))
    mean, spread = float(np.mean(estimates)), float(np.std(estimates, ddof=1))
    assert abs(mean) > 5 * spread / np.sqrt(seeds), "the test needs a non-zero gradient"

    fine = estimator(1234, big_m)
    h = 1e-2
    difference = (
        _log_smoothed(fine, x + h * direction, label)
        - _log_smoothed(fine, x - h * direction, label)
    ) / (2 * h)
    tolerance = 4 * spread * np.sqrt(1 / seeds + m / big_m) + 1e-3
    assert abs(difference - mean) < tolerance, (difference, mean, tolerance)


def test_loss_gradient_accepts_index_labels_and_torch_tensors():
    est = _art_style(load_demo_model())
    x = load_digits("test")[0][:4]
    y = load_digits("test")[1][:4]
    from_index = est.loss_gradient(x.numpy(), y.numpy())
    from_one_hot = est.loss_gradient(x.numpy(), np.eye(10, dtype=np.float32)[y.numpy()])
    np.testing.assert_allclose(from_index, from_one_hot)
    as_tensor = est.loss_gradient(x, torch.nn.functional.one_hot(y, 10).float())
    assert isinstance(as_tensor, torch.Tensor)
    np.testing.assert_allclose(as_tensor.numpy(), from_index, rtol=1e-5, atol=1e-7)
    assert np.abs(from_index).sum() > 0


def test_arts_own_class_lacks_what_ours_provides():
    """The gaps the adapter closes, checked on ART itself (so the comparison stays honest)."""
    model = load_demo_model()
    x = load_digits("test")[0][:2].numpy()
    theirs = _art_style(model, cls=ArtRandomizedSmoothing)
    with pytest.raises(NotImplementedError):
        theirs.class_gradient(x, label=0)
    ours = _art_style(model)
    assert np.isfinite(ours.class_gradient(x, label=0)).all()


def test_clone_for_refitting_keeps_the_smoothing_and_resets_weights():
    est = _art_style(load_demo_model(), seed=5)
    clone = est.clone_for_refitting()
    assert type(clone) is PyTorchRandomizedSmoothing
    assert clone.scale == SIGMA and clone.seed == 5 and clone.sample_size == 100
    assert clone.base_model is not est.base_model
    assert any(
        not torch.equal(a, b)
        for a, b in zip(clone.base_model.parameters(), est.base_model.parameters(), strict=True)
    )
    est.set_params(scale=0.5)
    assert est.smoothing.sigma == 0.5


def test_a_seed_no_generator_takes_is_refused_naming_it():
    est = _art_style(load_demo_model(), seed=5)
    for seed in (-1, 2**64):
        with pytest.raises(RSValueError, match=r"^seed: expected an integer in \[0, "):
            est.seed = seed
        with pytest.raises(RSValueError, match=r"^seed: expected an integer in \[0, "):
            _art_style(load_demo_model(), seed=seed)
    assert est.seed == 5


@pytest.mark.slow
def test_smoothadv_fit_trains_the_base_model():
    x, y = load_digits("train")
    model = copy.deepcopy(load_demo_model())
    trainer = _art_style(model, cls=PyTorchSmoothAdv, epsilon=0.25, num_noise_vec=2, num_steps=2)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.fit(x[:128].numpy(), y[:128].numpy(), nb_epochs=1, batch_size=64)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert not model.training
    x_test, y_test = load_digits("test")
    accuracy = (trainer.predict(x_test[:50].numpy()).argmax(1) == y_test[:50].numpy()).mean()
    assert accuracy > 0.8


class _FirstPixelAbove(torch.nn.Module):
    """Class 1 iff the first pixel is above 0.5 (margin 100·(v − 0.5))."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        v = z.flatten(1)[:, :1] - 0.5
        return torch.cat([-v, v], dim=1) * 100


def _first_pixel_estimator(**settings):
    """Our estimator of _FirstPixelAbove on 1×8×8 inputs, σ = 0.25, with further settings."""
    return PyTorchRandomizedSmoothing(
        model=_FirstPixelAbove(),
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(1, 8, 8),
        nb_classes=2,
        device_type="cpu",
        scale=0.25,
        **settings,
    )


def test_preprocessing_defences_run_on_every_noisy_sample_as_in_art():
    """With 1-bit feature squeezing the base classifier f(squeeze(z)) is still "first pixel
    above 0.5", so the smoothed classifier's true ℓ2 radius at first pixel 0.6 is 0.1
    (σΦ⁻¹(Φ(0.1/σ))). Squeezing the clean input before the noise certified ≈ 0.47 there, and
    class 0 with as much 0.11 away; run on each noisy sample, as ART does, the radius is within
    the truth and the point 0.11 away is certified as the other class by a small radius."""
    from art.defences.preprocessor import FeatureSqueezing

    def estimator():
        return _first_pixel_estimator(
            sample_size=100,
            alpha=0.001,
            clip_values=(0.0, 1.0),
            preprocessing_defences=FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=1),
        )

    x = np.full((2, 1, 8, 8), 0.5, np.float32)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 0.6, 0.49
    prediction, radius = estimator().certify(x, n=10_000, batch_size=1000)
    assert prediction.tolist() == [1, 0]
    assert 0.05 < radius[0] <= 0.1 and radius[1] <= 0.01 + 1e-9
    assert radius[0] + radius[1] < 0.11  # the two certificates never overlap
    assert estimator().predict(x[:1], is_abstain=False).argmax(axis=1).tolist() == [1]
    smoothed = estimator()
    assert smoothed.preprocessing_defences is not None
    assert not any(  # nothing of the defences runs before the noise
        isinstance(op, FeatureSqueezing) for op in smoothed.preprocessing_operations
    )
    gradient = smoothed.loss_gradient(x[:1], np.array([1]))
    assert gradient.shape == x[:1].shape and np.isfinite(gradient).all()


def test_preprocessing_none_or_arts_standardisation_object_and_fit_keywords_are_accepted():
    """ART takes ``preprocessing=None`` and its StandardisationMeanStd objects, and extra
    keywords to ``fit``; the same certificates as the tuple form."""
    from art.preprocessing.standardisation_mean_std import StandardisationMeanStdPyTorch

    x = np.full((1, 1, 8, 8), 0.5, np.float32)
    x[0, 0, 0, 0] = 0.6
    radii = []
    for preprocessing in [(0.0, 1.0), None, StandardisationMeanStdPyTorch(mean=0.0, std=1.0)]:
        estimator = _first_pixel_estimator(preprocessing=preprocessing)
        radii.append(estimator.certify(x, n=2000, batch_size=500)[1][0])
    assert radii[0] > 0 and radii[0] == radii[1] == radii[2]
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    trained = PyTorchRandomizedSmoothing(
        model=model,
        loss=torch.nn.CrossEntropyLoss(),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        input_shape=(1, 8, 8),
        nb_classes=2,
        device_type="cpu",
        scale=0.25,
    )
    trained.fit(np.repeat(x, 8, axis=0), np.ones(8, dtype=np.int64), nb_epochs=1, foo=1)


def _art_and_ours(model, **extra):
    """ART's own estimator (on a copy of the network: it leaves hooks on the layers it reads)
    and ours, built with the same arguments."""
    arguments = {
        "loss": torch.nn.CrossEntropyLoss(),
        "input_shape": (1, 8, 8),
        "nb_classes": 10,
        "clip_values": (0.0, 1.0),
        "preprocessing": (0.25, 0.5),
        "sample_size": 50,
        "scale": SIGMA,
        "device_type": "cpu",
        **extra,
    }
    art = ArtRandomizedSmoothing(copy.deepcopy(model), **arguments)
    return art, PyTorchRandomizedSmoothing(model, **arguments)


def test_predict_returns_arts_dtype_and_an_empty_batch_gives_an_empty_array():
    art, ours = _art_and_ours(load_demo_model())
    x, _ = load_digits("test")
    assert ours.predict(x[:3].numpy()).dtype == art.predict(x[:3].numpy()).dtype == np.float64
    empty = np.zeros((0, 1, 8, 8), dtype=np.float32)
    assert ours.predict(empty).shape == (0, 10)
    ours.outputs = "log_probabilities"
    assert ours.predict(empty).shape == (0, 10)


def test_layer_names_and_activations_are_the_user_networks_as_in_art():
    model = load_demo_model()
    art, ours = _art_and_ours(model)
    assert ours.layer_names == art.layer_names == ["features", "head"]
    x = load_digits("test")[0][:5].numpy()
    for layer in ("features", 0, "head", -1):
        expected = art.get_activations(x, layer if layer != -1 else 1, batch_size=2)
        got = ours.get_activations(x, layer, batch_size=2)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    tensor = ours.get_activations(torch.from_numpy(x).requires_grad_(), "head", framework=True)
    assert isinstance(tensor, torch.Tensor) and tensor.requires_grad and tensor.shape == (5, 10)
    # the hooks are gone (ART's stay): certification forwards do not keep reading the layers
    assert not any(module._forward_hooks for module in model.modules())
    assert art.model.features._forward_hooks
    with pytest.raises(RSValueError, match="layer"):
        ours.get_activations(x, "conv9")
    with pytest.raises(RSValueError, match="layer"):
        ours.get_activations(x, 2)


def test_save_writes_the_user_networks_weights_loadable_into_it(tmp_path):
    model = load_demo_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    art, ours = _art_and_ours(model, optimizer=optimizer)
    ours.save("ours", str(tmp_path / "deep"))
    art.save("art", str(tmp_path))
    saved = torch.load(tmp_path / "deep" / "ours.model")
    assert list(saved) == list(torch.load(tmp_path / "art.model"))
    fresh = copy.deepcopy(model)
    for parameter in fresh.parameters():
        torch.nn.init.zeros_(parameter)
    fresh.load_state_dict(saved)
    x = load_digits("test")[0][:4]
    torch.testing.assert_close(fresh(x), model(x))
    assert torch.load(tmp_path / "deep" / "ours.optimizer")["param_groups"][0]["momentum"] == 0.9


def test_fit_generator_draws_fresh_noise_for_every_batch_and_counts_epochs():
    from art.data_generators import PyTorchDataGenerator

    seen: list[torch.Tensor] = []
    epochs: list[int] = []

    class Counting(NoiseAugmentation):
        def loss(self, model, x, y, *, generator, epoch):
            epochs.append(epoch)
            return super().loss(model, x, y, generator=generator, epoch=epoch)

    class Estimator(PyTorchRandomizedSmoothing):
        def training_objective(self):
            return Counting(self.smoothing, criterion=self._loss)

    model = _Recorder(seen)
    est = _art_style(model, cls=Estimator)
    zeros = torch.zeros((200, 1, 8, 8))
    labels = torch.nn.functional.one_hot(torch.arange(200) % 10, 10).float()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(zeros, labels), 100)
    before = copy.deepcopy(model.state_dict())
    est.fit_generator(PyTorchDataGenerator(loader, size=200, batch_size=100), nb_epochs=2)
    assert epochs == [0, 0, 1, 1]
    noise = torch.stack(seen)
    assert noise.shape == (4, 100, 1, 8, 8)
    assert abs(float(noise.std()) - SIGMA) < 0.01
    for i in range(4):
        for j in range(i):
            assert not torch.allclose(noise[i], noise[j])
    assert not torch.equal(before["linear.weight"], model.linear.weight)
    with pytest.raises(RSValueError, match="generator"):
        est.fit_generator((zeros, labels))
