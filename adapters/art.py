"""ART estimators computed by the core engine: a drop-in ``PyTorchRandomizedSmoothing`` and more.

Change one import line::

    # from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
    from rs_plugin.adapters.art import PyTorchRandomizedSmoothing

and ART code that built, trained, predicted with and certified ART's class runs unchanged, with
the work done by :class:`rs_plugin.SmoothedClassifier` (noise streamed on the model's device,
seeded, memory flat in n).

What the estimators are, for ART:

* They are :class:`art.estimators.classification.PyTorchClassifier` objects whose *model* is the
  soft smoothed classifier: ``estimator.model(x)`` returns log E_ε[softmax(f(x + ε))], the log of
  the Monte-Carlo mean of the base model's softmax over ``num_noise_samples`` perturbations
  (common random numbers: the same seed on every call, so attacks see a deterministic,
  differentiable function). ``loss_gradient`` and ``class_gradient`` are therefore gradients of the
  soft smoothed classifier; with ART's usual ``CrossEntropyLoss`` the loss is −log of the smoothed
  probability of the label, the SmoothAdv objective of Salman et al. 2019. ART's own attacks that
  rebuild an estimator from ``estimator.model`` (APGD, AutoAttack) attack the smoothed classifier
  too. The user's network is ``estimator.base_model``.
* ``predict`` by default is ART's: PREDICT of Cohen et al. 2019 with ``sample_size`` samples,
  one-hot rows, all-zero rows for abstentions. Attacks that read ``predict`` as scores (APGD,
  AutoAttack, Carlini–Wagner, DeepFool, Square) need ``outputs="log_probabilities"``: ``predict``
  then returns the soft smoothed log-probabilities (not probabilities, so APGD accepts them; their
  argmax is the soft smoothed prediction).
* ``certify(x, n, batch_size)`` returns ART's ``(prediction, radius)`` arrays (−1 and 0 for
  abstentions), with ``sample_size`` selection samples and ``n`` independent estimation samples.
* ``preprocessing=(subtrahend, divisor)`` is applied *after* the noise, inside the base
  classifier, so radii are in the units of the inputs the user passes (as ART's ``certify``
  measures them). ``preprocessing_defences`` run first, on the clean input: a certificate is
  then about the defended input, as ART's warning for this backend says.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, ClassVar

import numpy as np
import torch
from art.attacks.evasion import ProjectedGradientDescent
from art.estimators.classification import PyTorchClassifier
from art.utils import check_and_transform_label_format
from torch import nn
from tqdm.auto import trange

from rs_plugin._validation import RSValueError, check_int, check_open_unit, check_positive
from rs_plugin.certification.classifier import SmoothedClassifier
from rs_plugin.certification.grid import GridCertifier
from rs_plugin.smoothings.base import Smoothing
from rs_plugin.smoothings.gaussian import Gaussian

__all__ = [
    "OUTPUTS",
    "PyTorchRandomizedSmoothing",
    "PyTorchSmoothAdv",
    "PyTorchSmoothedClassifier",
    "SmoothedLogProbabilities",
]

OUTPUTS = ("hard", "log_probabilities")
# Smallest probability whose log the soft classifier reports (keeps losses and gradients finite).
_TINY = 1e-20


class _Standardised(nn.Module):
    """x -> model((x − subtrahend) / divisor): ART's ``preprocessing``, after the noise."""

    subtrahend: torch.Tensor
    divisor: torch.Tensor

    def __init__(self, model: nn.Module, subtrahend: torch.Tensor, divisor: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("subtrahend", subtrahend)
        self.register_buffer("divisor", divisor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.subtrahend) / self.divisor)


class SmoothedLogProbabilities(nn.Module):
    """log of the soft smoothed classifier's class probabilities, shape (B, num_classes).

    What ART sees as the model's logits. ``smoothed`` is the core classifier; its ``forward``
    averages softmax over ``smoothed.num_noise_samples`` perturbations seeded by
    ``smoothed.seed``.
    """

    def __init__(self, smoothed: SmoothedClassifier) -> None:
        super().__init__()
        self.smoothed = smoothed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.smoothed(x).clamp_min(_TINY))


def _preprocessing_tensors(
    preprocessing: Any, input_shape: tuple[int, ...], channels_first: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """ART's ``(subtrahend, divisor)`` as tensors broadcasting over a (B, *input_shape) batch."""
    if not (isinstance(preprocessing, (tuple, list)) and len(preprocessing) == 2):
        raise RSValueError(
            "preprocessing",
            "a pair (subtrahend, divisor) of floats or arrays (ART's tuple form)",
            preprocessing,
        )
    tensors = []
    for value in preprocessing:
        t = torch.as_tensor(np.asarray(value, dtype=np.float32))
        if t.ndim == 1 and len(input_shape) == 3 and t.numel() > 1:
            # One value per channel, as ART's StandardisationMeanStd accepts.
            t = t.view(-1, 1, 1) if channels_first else t.view(1, 1, -1)
        tensors.append(t)
    subtrahend, divisor = tensors
    if not bool(torch.isfinite(divisor).all() and (divisor != 0).all()):
        raise RSValueError("preprocessing", "a finite, non-zero divisor", preprocessing)
    try:
        torch.broadcast_shapes(subtrahend.shape, divisor.shape, input_shape)
    except RuntimeError as error:
        raise RSValueError(
            "preprocessing",
            f"values broadcasting to the input shape {input_shape}",
            f"shapes {tuple(subtrahend.shape)} and {tuple(divisor.shape)}",
        ) from error
    return subtrahend, divisor


class PyTorchSmoothedClassifier(PyTorchClassifier):
    """ART estimator of the classifier smoothed by any core smoothing (noise or transform).

    Same constructor as ART's ``PyTorchRandomizedSmoothing`` without ``scale``, plus:

    Args:
        smoothing: any :class:`rs_plugin.Smoothing` (e.g. ``rs_plugin.Gaussian(0.25)``); noise
            families and semantic transforms added to the core appear here with no new code.
        num_noise_samples: perturbations averaged by the soft classifier behind ``model``,
            ``loss_gradient``, ``class_gradient`` and ``predict`` with log-probability outputs
            (default: ``sample_size``).
        outputs: ``"hard"`` (ART's ``predict``: PREDICT one-hot rows, zeros on abstention) or
            ``"log_probabilities"`` (soft smoothed log-probabilities, what score-based attacks
            such as APGD, AutoAttack, Carlini–Wagner and DeepFool need).
        seed: seeds every sample this estimator draws (certify, predict, the soft classifier's
            noise and fit's noise augmentation); never the global RNG.

    ``sample_size`` is ART's: the number of PREDICT samples, and CERTIFY's selection samples n0.
    ``alpha`` is the failure probability of PREDICT and CERTIFY.
    """

    estimator_params: ClassVar[list[str]] = [
        *PyTorchClassifier.estimator_params,
        "sample_size",
        "alpha",
        "smoothing",
        "num_noise_samples",
        "outputs",
        "seed",
    ]

    def __init__(
        self,
        model: nn.Module,
        loss: nn.modules.loss._Loss,
        input_shape: tuple[int, ...],
        nb_classes: int,
        optimizer: torch.optim.Optimizer | None = None,
        channels_first: bool = True,
        clip_values: Any = None,
        preprocessing_defences: Any = None,
        postprocessing_defences: Any = None,
        preprocessing: Any = (0.0, 1.0),
        device_type: str = "gpu",
        sample_size: int = 32,
        alpha: float = 0.001,
        *,
        smoothing: Smoothing,
        num_noise_samples: int | None = None,
        outputs: str = "hard",
        seed: int = 0,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise RSValueError("model", "a torch.nn.Module returning logits", model)
        if not isinstance(smoothing, Smoothing):
            raise RSValueError("smoothing", "an rs_plugin.Smoothing instance", smoothing)
        if outputs not in OUTPUTS:
            raise RSValueError("outputs", f"one of {OUTPUTS}", outputs)
        self.sample_size = check_int("sample_size", sample_size, 1)
        self.alpha = check_open_unit("alpha", alpha)
        self.outputs = outputs
        nb_classes = check_int("nb_classes", nb_classes, 2)
        input_shape = tuple(int(d) for d in input_shape)
        self._preprocessing_pair = preprocessing
        subtrahend, divisor = _preprocessing_tensors(preprocessing, input_shape, channels_first)
        self._base_model = model
        base = _Standardised(model, subtrahend, divisor).eval()
        low_high = None
        if clip_values is not None:
            low, high = np.min(clip_values[0]), np.max(clip_values[1])
            low_high = (float(low), float(high))
        self._smoothed = SmoothedClassifier(
            base,
            smoothing,
            nb_classes,
            num_noise_samples=self.sample_size if num_noise_samples is None else num_noise_samples,
            clip_values=low_high,
            seed=seed,
        )
        super().__init__(
            model=SmoothedLogProbabilities(self._smoothed),
            loss=loss,
            input_shape=input_shape,
            nb_classes=nb_classes,
            optimizer=optimizer,
            channels_first=channels_first,
            clip_values=clip_values,
            preprocessing_defences=preprocessing_defences,
            postprocessing_defences=postprocessing_defences,
            preprocessing=(0.0, 1.0),
            device_type=device_type,
        )
        self._fit_generator: torch.Generator | None = None
        self._shuffle_gen = torch.Generator().manual_seed(self.seed + 1)

    def clone_for_refitting(self) -> PyTorchSmoothedClassifier:
        """A copy: same architecture, settings and optimizer type; weights re-initialised."""
        self._check_optimizer()
        assert self._optimizer is not None
        model = copy.deepcopy(self._base_model)
        params = self.get_params()
        params["model"] = model
        params["optimizer"] = type(self._optimizer)(model.parameters(), **self._optimizer.defaults)
        clone = type(self)(**{k: v for k, v in params.items() if k in self._constructor_names()})
        clone.reset()
        return clone

    @classmethod
    def _constructor_names(cls) -> set[str]:
        return set(inspect.signature(cls.__init__).parameters) - {"self"}

    # -- what the estimator is made of ---------------------------------------------------------

    # Settings the core classifier holds are properties, so ART's ``set_params`` (which uses a
    # property's setter when there is one) keeps estimator and core in step.

    @property
    def smoothing(self) -> Smoothing:
        """The core smoothing (noise distribution or transform) this estimator certifies."""
        return self._smoothed.smoothing

    @smoothing.setter
    def smoothing(self, value: Smoothing) -> None:
        if not isinstance(value, Smoothing):
            raise RSValueError("smoothing", "an rs_plugin.Smoothing instance", value)
        self._smoothed.smoothing = value

    @property
    def num_noise_samples(self) -> int:
        """Perturbations averaged by the soft smoothed classifier (``model``, gradients)."""
        return self._smoothed.num_noise_samples

    @num_noise_samples.setter
    def num_noise_samples(self, value: int) -> None:
        self._smoothed.num_noise_samples = check_int("num_noise_samples", value, 1)

    @property
    def seed(self) -> int:
        """Seed of every sample the estimator draws."""
        return self._smoothed.seed

    @seed.setter
    def seed(self, value: int) -> None:
        self._smoothed.seed = check_int("seed", value, 0)

    @property
    def smoothed(self) -> SmoothedClassifier:
        """The core :class:`rs_plugin.SmoothedClassifier` (full certificate records, PREDICT)."""
        return self._smoothed

    @property
    def base_model(self) -> nn.Module:
        """The user's network, as passed to the constructor."""
        return self._base_model

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (the user's model and preprocessing, not the wrappers)."""
        params = super().get_params()
        params["model"] = self._base_model
        params["preprocessing"] = self._preprocessing_pair
        return params

    # -- ART's API -----------------------------------------------------------------------------

    def predict(
        self,
        x: np.ndarray,
        batch_size: int = 128,
        verbose: bool = False,
        is_abstain: bool = True,
        training_mode: bool = False,
        **kwargs: Any,
    ) -> np.ndarray:
        """Predictions of shape (N, nb_classes), as set by ``outputs``.

        ``"hard"``: PREDICT (Cohen et al. 2019) with ``sample_size`` samples in batches of
        ``batch_size``; a one-hot row for the predicted class, all zeros where PREDICT abstains
        (unless ``is_abstain=False``, then the top vote). With probability at least 1 − α each
        non-abstaining row is the smoothed classifier's class. ``"log_probabilities"``: the soft
        smoothed classifier's log-probabilities, ``batch_size`` inputs per forward. Other
        keywords ART's attacks pass (e.g. Carlini–Wagner's ``logits=True``) are ignored, as ART's
        ``PyTorchClassifier.predict`` ignores them.
        """
        if self.outputs == "log_probabilities":
            return super().predict(x, batch_size=batch_size, training_mode=training_mode)
        self._model.train(mode=training_mode)
        x_defended, _ = self._apply_preprocessing(x, y=None, fit=False)
        predictions = self._smoothed.predict(
            x_defended,
            n=self.sample_size,
            alpha=self.alpha,
            batch_size=batch_size,
            seed=self.seed,
        )
        top = predictions.counts.argmax(dim=1)
        chosen = predictions.prediction if is_abstain else top
        one_hot = np.zeros((len(x), self.nb_classes), dtype=np.float32)
        rows = np.flatnonzero(chosen.numpy() >= 0)
        one_hot[rows, chosen.numpy()[rows]] = 1.0
        return self._apply_postprocessing(preds=one_hot, fit=False)

    def certify(self, x: np.ndarray, n: int, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """CERTIFY (Cohen et al. 2019): ART's ``(prediction, radius)`` arrays, shape (N,) each.

        ``sample_size`` selection samples pick the class, ``n`` independent samples bound its
        probability (one-sided Clopper–Pearson at level ``alpha``); prediction −1 and radius 0
        mean abstain. With probability at least 1 − α, each radius is a true robustness radius of
        the smoothed classifier in the smoothing's norm (``self.smoothing.norm``).
        ``batch_size`` is the number of noisy samples per forward.
        """
        self._model.eval()
        x_defended, _ = self._apply_preprocessing(x, y=None, fit=False)
        smoothed = self._smoothed
        certifier = (
            GridCertifier(
                smoothed.model,
                smoothed.smoothing,
                smoothed.num_classes,
                clip_values=smoothed.clip_values,
            )
            if smoothed.smoothing.on_grid
            else smoothed
        )
        certificates = certifier.certify(
            x_defended,
            n0=self.sample_size,
            n=n,
            alpha=self.alpha,
            batch_size=batch_size,
            seed=self.seed,
        )
        return certificates.prediction.numpy(), certificates.radius.numpy()

    def loss_gradient(
        self,
        x: np.ndarray | torch.Tensor,
        y: np.ndarray | torch.Tensor,
        training_mode: bool = False,
    ) -> np.ndarray | torch.Tensor:
        """Gradient in ``x`` of the loss of the soft smoothed classifier, same type as ``x``.

        With ``CrossEntropyLoss`` the loss is −log of the soft smoothed probability of ``y``
        (one-hot (N, nb_classes) or indices (N,)), averaged over ``num_noise_samples``
        perturbations seeded by ``seed``.
        """
        if y.ndim == 1:
            y = (
                torch.nn.functional.one_hot(y.long(), self.nb_classes).float()
                if isinstance(y, torch.Tensor)
                else np.eye(self.nb_classes, dtype=np.float32)[np.asarray(y, dtype=np.int64)]
            )
        return super().loss_gradient(x, y, training_mode=training_mode)

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int = 128,
        nb_epochs: int = 10,
        training_mode: bool = True,
        drop_last: bool = False,
        scheduler: Any = None,
        verbose: bool = False,
    ) -> None:
        """Train the base model on perturbed inputs, a fresh perturbation per batch (Cohen et al.).

        Labels are one-hot (N, nb_classes) or indices (N,). The noise and the shuffling come from
        generators seeded by ``seed``; successive calls continue the same streams.
        """
        self._check_optimizer()
        x_t, y_t = self._training_tensors(x, y)
        self._base_model.train(mode=training_mode)
        for _ in trange(nb_epochs, disable=not verbose, desc="fit"):
            for index in self._batches(len(x_t), batch_size, drop_last):
                inputs, labels = x_t[index].to(self._device), y_t[index].to(self._device)
                noisy = self.smoothing.perturb(inputs, self._noise_generator())
                self._step(self._smoothed.model(noisy), labels)
            if scheduler is not None:
                scheduler.step()
        self._base_model.eval()

    # -- pieces shared with the SmoothAdv trainer --------------------------------------------------

    def _check_optimizer(self) -> None:
        if self._optimizer is None:
            raise RSValueError(
                "optimizer",
                "a torch.optim.Optimizer over the model's parameters (needed by fit)",
                None,
            )

    def _training_tensors(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        y = check_and_transform_label_format(y, nb_classes=self.nb_classes)
        x_defended, y_defended = self._apply_preprocessing(x, y, fit=True)
        labels = self.reduce_labels(y_defended)
        return (
            torch.from_numpy(np.asarray(x_defended, dtype=np.float32)),
            torch.as_tensor(np.asarray(labels)),
        )

    def _noise_generator(self) -> torch.Generator:
        if self._fit_generator is None:
            self._fit_generator = torch.Generator(device=self._device)
            self._fit_generator.manual_seed(self.seed)
        return self._fit_generator

    def _batches(self, size: int, batch_size: int, drop_last: bool) -> list[torch.Tensor]:
        batch_size = check_int("batch_size", batch_size, 1)
        order = torch.randperm(size, generator=self._shuffle_gen)
        cuts = list(range(0, size, batch_size))
        batches = [order[i : i + batch_size] for i in cuts]
        if drop_last and batches and len(batches[-1]) < batch_size:
            batches.pop()
        return batches

    def _step(self, outputs: torch.Tensor, labels: torch.Tensor) -> None:
        assert self._optimizer is not None
        self._optimizer.zero_grad()
        loss = self._loss(outputs, labels)
        loss.backward()
        self._optimizer.step()


class PyTorchRandomizedSmoothing(PyTorchSmoothedClassifier):
    """Drop-in for ART's ``PyTorchRandomizedSmoothing``, computed by the core engine.

    Same positional and keyword arguments as ART 1.20's class (model, loss, input_shape,
    nb_classes, optimizer, channels_first, clip_values, preprocessing_defences,
    postprocessing_defences, preprocessing, device_type, sample_size, scale, alpha); ``scale`` is
    the σ of isotropic Gaussian noise, whose certificate is the ℓ2 radius σ·Φ⁻¹(p_lower).
    Keyword-only extras: ``smoothing`` (any core smoothing instead of Gaussian(scale)),
    ``num_noise_samples``, ``outputs`` and ``seed``, documented on
    :class:`PyTorchSmoothedClassifier`.
    """

    estimator_params: ClassVar[list[str]] = [
        *PyTorchSmoothedClassifier.estimator_params,
        "scale",
    ]

    def __init__(
        self,
        model: nn.Module,
        loss: nn.modules.loss._Loss,
        input_shape: tuple[int, ...],
        nb_classes: int,
        optimizer: torch.optim.Optimizer | None = None,
        channels_first: bool = True,
        clip_values: Any = None,
        preprocessing_defences: Any = None,
        postprocessing_defences: Any = None,
        preprocessing: Any = (0.0, 1.0),
        device_type: str = "gpu",
        sample_size: int = 32,
        scale: float | None = 0.1,
        alpha: float = 0.001,
        *,
        smoothing: Smoothing | None = None,
        num_noise_samples: int | None = None,
        outputs: str = "hard",
        seed: int = 0,
    ) -> None:
        if smoothing is None:
            smoothing = Gaussian(check_positive("scale", scale))
        super().__init__(
            model,
            loss,
            input_shape,
            nb_classes,
            optimizer=optimizer,
            channels_first=channels_first,
            clip_values=clip_values,
            preprocessing_defences=preprocessing_defences,
            postprocessing_defences=postprocessing_defences,
            preprocessing=preprocessing,
            device_type=device_type,
            sample_size=sample_size,
            alpha=alpha,
            smoothing=smoothing,
            num_noise_samples=num_noise_samples,
            outputs=outputs,
            seed=seed,
        )

    @property
    def scale(self) -> float | None:
        """σ of the smoothing (ART's name), None if it has no single σ; setting it switches to
        Gaussian(scale) noise."""
        sigma = getattr(self.smoothing, "sigma", None)
        return float(sigma) if isinstance(sigma, int | float) else None

    @scale.setter
    def scale(self, value: float) -> None:
        self.smoothing = Gaussian(check_positive("scale", value))


class PyTorchSmoothAdv(PyTorchRandomizedSmoothing):
    """SmoothAdv training (Salman et al. 2019), with the paper's attack.

    Same constructor as ART's ``PyTorchSmoothAdv`` (ART's randomized-smoothing arguments plus
    ``epsilon``, ``num_noise_vec``, ``num_steps``, ``warmup``). For every batch, ``fit`` draws
    m = ``num_noise_vec`` noise vectors per input, runs ``num_steps`` steps of ℓ2 PGD (step
    2ε/T, no random start; ART's ``ProjectedGradientDescent`` with ``norm=2``, available as
    :attr:`attack`) on the soft smoothed classifier averaged over those same m noise vectors,
    i.e. it maximises −log((1/m) Σ_i softmax(f(x' + δ_i))_y) over ‖x' − x‖₂ ≤ ε, then takes a
    training step on the cross-entropy of f at the m noisy copies x' + δ_i. ε grows linearly to
    ``epsilon`` over the first ``warmup`` epochs. ART's own class instead runs a one-step ℓ∞
    attack on the base model.
    """

    estimator_params: ClassVar[list[str]] = [
        *PyTorchRandomizedSmoothing.estimator_params,
        "epsilon",
        "num_noise_vec",
        "num_steps",
        "warmup",
    ]

    def __init__(
        self,
        model: nn.Module,
        loss: nn.modules.loss._Loss,
        input_shape: tuple[int, ...],
        nb_classes: int,
        optimizer: torch.optim.Optimizer | None = None,
        channels_first: bool = True,
        clip_values: Any = None,
        preprocessing_defences: Any = None,
        postprocessing_defences: Any = None,
        preprocessing: Any = (0.0, 1.0),
        device_type: str = "gpu",
        sample_size: int = 32,
        scale: float | None = 0.1,
        alpha: float = 0.001,
        epsilon: float = 1.0,
        num_noise_vec: int = 1,
        num_steps: int = 10,
        warmup: int = 1,
        *,
        smoothing: Smoothing | None = None,
        num_noise_samples: int | None = None,
        outputs: str = "hard",
        seed: int = 0,
    ) -> None:
        self.epsilon = check_positive("epsilon", epsilon)
        self.num_noise_vec = check_int("num_noise_vec", num_noise_vec, 1)
        self.num_steps = check_int("num_steps", num_steps, 1)
        self.warmup = check_int("warmup", warmup, 1)
        super().__init__(
            model,
            loss,
            input_shape,
            nb_classes,
            optimizer=optimizer,
            channels_first=channels_first,
            clip_values=clip_values,
            preprocessing_defences=preprocessing_defences,
            postprocessing_defences=postprocessing_defences,
            preprocessing=preprocessing,
            device_type=device_type,
            sample_size=sample_size,
            scale=scale,
            alpha=alpha,
            smoothing=smoothing,
            num_noise_samples=num_noise_samples,
            outputs=outputs,
            seed=seed,
        )
        # The attack's target: the same base model and smoothing, m noise vectors, scores out.
        self.attack_estimator = PyTorchSmoothedClassifier(
            model,
            nn.CrossEntropyLoss(),
            self.input_shape,
            self.nb_classes,
            clip_values=clip_values,
            preprocessing=preprocessing,
            device_type=device_type,
            smoothing=self.smoothing,
            num_noise_samples=self.num_noise_vec,
            outputs="log_probabilities",
            seed=self.seed,
        )
        self.attack = ProjectedGradientDescent(
            self.attack_estimator,
            norm=2,
            eps=self.epsilon,
            eps_step=self._step_size(self.epsilon),
            max_iter=self.num_steps,
            num_random_init=0,
            batch_size=max(1, 1024 // self.num_noise_vec),
            verbose=False,
        )

    def _step_size(self, eps: float) -> float:
        return min(eps, 2.0 * eps / self.num_steps)

    def adversarial_examples(
        self, x: torch.Tensor, y: torch.Tensor, *, eps: float, noise_seed: int
    ) -> torch.Tensor:
        """SmoothAdv's ℓ2 PGD on the soft smoothed classifier whose m noise vectors
        ``noise_seed`` draws (the base model in eval mode); returns x' with ‖x' − x‖₂ ≤ ``eps``.
        """
        check_positive("eps", eps)
        # One attack batch per call: the soft classifier re-seeds its noise per batch, so this
        # keeps the m noise vectors of every input those ``_noise_vectors`` draws.
        self.attack.set_params(eps=eps, eps_step=self._step_size(eps), batch_size=len(x))
        self.attack_estimator.smoothed.seed = noise_seed
        was_training = self._base_model.training
        self._base_model.eval()
        x_adv = self.attack.generate(x.cpu().numpy(), y=y.cpu().numpy())
        self._base_model.train(was_training)
        return torch.from_numpy(x_adv).to(x.device)

    def _noise_vectors(self, x: torch.Tensor, noise_seed: int) -> torch.Tensor:
        """The m perturbed copies of each input the attack with ``noise_seed`` used, (B·m, ...)."""
        generator = torch.Generator(device=x.device)
        generator.manual_seed(noise_seed)
        return self.smoothing.perturb(x.repeat_interleave(self.num_noise_vec, dim=0), generator)

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int = 128,
        nb_epochs: int = 10,
        training_mode: bool = True,
        drop_last: bool = False,
        scheduler: Any = None,
        verbose: bool = False,
    ) -> None:
        """SmoothAdv training: attack each batch on the smoothed classifier, train on it."""
        self._check_optimizer()
        x_t, y_t = self._training_tensors(x, y)
        seeds = self._noise_generator()
        for epoch in trange(nb_epochs, disable=not verbose, desc="SmoothAdv fit"):
            eps = min(self.epsilon, (epoch + 1) * self.epsilon / self.warmup)
            for index in self._batches(len(x_t), batch_size, drop_last):
                inputs, labels = x_t[index].to(self._device), y_t[index].to(self._device)
                noise_seed = int(
                    torch.randint(0, 2**62, (1,), generator=seeds, device=seeds.device).item()
                )
                x_adv = self.adversarial_examples(inputs, labels, eps=eps, noise_seed=noise_seed)
                self._base_model.train(mode=training_mode)
                noisy = self._noise_vectors(x_adv, noise_seed)
                targets = labels.repeat_interleave(self.num_noise_vec, dim=0)
                self._step(self._smoothed.model(noisy), targets)
            if scheduler is not None:
                scheduler.step()
        self._base_model.eval()
