"""ART estimators of the smoothed classifier, computed by the core engine.

``PyTorchSmoothedClassifier`` (any core smoothing) and ``PyTorchRandomizedSmoothing`` (ART's
class of that name, Gaussian noise of σ = ``scale``); the trainers built on them are in
:mod:`rs_plugin.adapters.art_trainers`, and :mod:`rs_plugin.adapters.art` imports them all.

What the estimators are, for ART:

* They are :class:`art.estimators.classification.PyTorchClassifier` objects whose *model* is the
  soft smoothed classifier: ``estimator.model(x)`` returns log E_ε[softmax(f(x + ε))], the log of
  the Monte-Carlo mean of the base model's softmax over ``num_noise_samples`` perturbations
  (common random numbers: the same seed on every call, so attacks see a deterministic,
  differentiable function). ``loss_gradient`` and ``class_gradient`` are therefore gradients of the
  soft smoothed classifier; with ART's usual ``CrossEntropyLoss`` the loss is −log of the smoothed
  probability of the label, the SmoothAdv objective of Salman et al. 2019. ART's own attacks that
  rebuild an estimator from ``estimator.model`` (APGD, AutoAttack) attack the smoothed classifier
  too. ``loss_gradient(x, y, sampling=False)`` is ART's default instead: the base model's gradient
  at the clean input. The user's network is ``estimator.base_model``.
* ``predict`` by default is ART's: PREDICT of Cohen et al. 2019 with ``sample_size`` samples,
  one-hot rows, all-zero rows for abstentions. Attacks that read ``predict`` as scores (APGD,
  AutoAttack, Carlini–Wagner, DeepFool, Square) need ``outputs="log_probabilities"``: ``predict``
  then returns the soft smoothed log-probabilities (not probabilities, so APGD accepts them; their
  argmax is the soft smoothed prediction). Both check the inputs first (finite, inside
  ``clip_values``).
* ``certify(x, n, batch_size)`` returns ART's ``(prediction, radius)`` arrays (−1 and 0 for
  abstentions), with ``sample_size`` selection samples and ``n`` independent estimation samples.
* ``fit`` trains the base model with the core's training loop (:func:`rs_plugin.training.train`)
  on the objective :meth:`PyTorchSmoothedClassifier.training_objective` names: noise augmentation
  here, the trainers' objectives in :mod:`rs_plugin.adapters.art_trainers`.
* The constructor checks ``input_shape`` and ``nb_classes`` against the model (one forward of a
  zero input), as ART does not.
* ``denoiser=D`` (denoised smoothing, Salman et al. 2020): the base classifier is f(D(x, σ)),
  :class:`rs_plugin.denoising.DenoisedClassifier` for the estimator's smoothing, so certify,
  predict, ``model``, ``loss_gradient`` (both ways) and every attack go through the denoiser;
  a smoothing the denoiser was not trained for is refused, and ``fit`` (which would train the
  frozen classifier) is refused.
* ``preprocessing=(subtrahend, divisor)`` is applied *after* the noise, inside the base
  classifier, so radii are in the units of the inputs the user passes (as ART's ``certify``
  measures them). ``preprocessing_defences`` (those with ``apply_predict``) run on every noisy
  sample too, before the standardisation, inside the base classifier f(defences(x + ε)), as
  ART's ``certify`` and ``predict`` run them: the certificate is about the input itself. (Run
  on the clean input before the noise, a non-Lipschitz defence such as feature squeezing gives
  radii that certify points of another class.) ``fit`` applies those with ``apply_fit`` to the
  clean training inputs, as ART's ``fit`` does; gradients pass a numpy defence as the identity
  (BPDA) and a PyTorch defence through its ``estimate_forward``.
"""

from __future__ import annotations

import copy
import inspect
import os
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from rs_plugin._validation import (
    MAX_SEED,
    MissingExtraError,
    RSValueError,
    check_finite_inputs,
    check_int,
    check_open_unit,
    check_positive,
)
from rs_plugin.certification.classifier import SmoothedClassifier, SmoothedLogProbabilities
from rs_plugin.certification.grid import GridCertifier
from rs_plugin.certification.model_runner import model_dtype
from rs_plugin.certification.probe import probe_model
from rs_plugin.denoising.composition import DenoisedClassifier, denoised_for
from rs_plugin.smoothings.base import Smoothing
from rs_plugin.smoothings.gaussian import Gaussian
from rs_plugin.smoothings.sound import DEFAULT_GRID, SoundGaussian

try:
    from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
    from art.estimators.classification import PyTorchClassifier
    from art.preprocessing.standardisation_mean_std import (
        StandardisationMeanStd,
        StandardisationMeanStdPyTorch,
    )
    from art.utils import check_and_transform_label_format
except ImportError as error:
    raise MissingExtraError("rs_plugin.adapters.art", "art", error.name or "art") from error
from rs_plugin.training.augmentation import NoiseAugmentation
from rs_plugin.training.loop import TrainingGenerators, check_training_data, train
from rs_plugin.training.objective import Objective

__all__ = [
    "OUTPUTS",
    "PyTorchRandomizedSmoothing",
    "PyTorchSmoothedClassifier",
    "SmoothedLogProbabilities",
]

OUTPUTS = ("hard", "log_probabilities")


class _Standardised(nn.Module):
    """x -> model(cast((x − subtrahend) / divisor)): ART's ``preprocessing``, after the noise.

    It declares ``input_dtype`` float32 (float64 for a float64 model), so the runners hand it
    batches in that dtype; the standardised batch is cast to the model's dtype, so a float16 or
    bfloat16 model is certified as f∘cast after ART's preprocessing, as a bare one is.
    """

    subtrahend: torch.Tensor
    divisor: torch.Tensor

    def __init__(self, model: nn.Module, subtrahend: torch.Tensor, divisor: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("subtrahend", subtrahend)
        self.register_buffer("divisor", divisor)

    @property
    def input_dtype(self) -> torch.dtype:
        inner = model_dtype(self.model)
        return torch.float64 if inner == torch.float64 else torch.float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(((x - self.subtrahend) / self.divisor).to(model_dtype(self.model)))


def _defence_list(defences: Any) -> list[Any]:
    """ART's ``preprocessing_defences`` (None, one defence or a list) as a list."""
    if defences is None:
        return []
    return list(defences) if isinstance(defences, (list, tuple)) else [defences]


class _Defended(nn.Module):
    """x -> inner(defences(x)): ART's ``preprocessing_defences`` (those with ``apply_predict``)
    on each noisy sample, before the standardisation, as ART's certify and predict apply them.

    A PyTorch defence (``PreprocessorPyTorch``) runs in torch (``estimate_forward`` when a
    gradient is needed); another one on a numpy copy, its value passed on with the identity's
    gradient (BPDA), as ART estimates gradients through defences it cannot differentiate.
    """

    def __init__(self, inner: nn.Module, defences: list[Any]) -> None:
        super().__init__()
        self.inner = inner
        self.defences = defences

    @property
    def input_dtype(self) -> torch.dtype:
        return model_dtype(self.inner)  # the defences run on what the inner model is given

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for defence in self.defences:
            if not getattr(defence, "apply_predict", True):
                continue
            if isinstance(defence, PreprocessorPyTorch):
                x = defence.estimate_forward(x) if x.requires_grad else defence.forward(x)[0]
                continue
            array, _ = defence(x.detach().cpu().numpy())
            out = torch.as_tensor(np.asarray(array), dtype=x.dtype, device=x.device)
            x = x + (out - x).detach() if x.requires_grad else out
        return self.inner(x)


def _preprocessing_tensors(
    preprocessing: Any, input_shape: tuple[int, ...], channels_first: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """ART's ``preprocessing`` as (subtrahend, divisor) tensors broadcasting over a
    (B, *input_shape) batch: a pair, None (none: (0, 1)) or ART's standardisation object."""
    if preprocessing is None:
        preprocessing = (0.0, 1.0)
    elif isinstance(preprocessing, (StandardisationMeanStd, StandardisationMeanStdPyTorch)):
        preprocessing = (preprocessing.mean, preprocessing.std)
    if not (isinstance(preprocessing, (tuple, list)) and len(preprocessing) == 2):
        raise RSValueError(
            "preprocessing",
            "None, a pair (subtrahend, divisor) of floats or arrays (ART's tuple form), or "
            "ART's StandardisationMeanStd",
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
        denoiser: None, or a denoiser D called as ``D(x, sigma)`` (e.g.
            :class:`rs_plugin.denoising.ConditionalDenoiser`): the smoothed base classifier is
            then ``model(D(x + ε, σ))``, σ the smoothing's (denoised smoothing; ``preprocessing``
            applies after D).

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
        "denoiser",
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
        denoiser: nn.Module | None = None,
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
        base: nn.Module = _Standardised(model, subtrahend, divisor).eval()
        self._denoiser = denoiser
        self._denoised: DenoisedClassifier | None = None
        if denoiser is not None:
            self._denoised = denoised_for(base, denoiser, smoothing).eval()
            base = self._denoised
        self._defended: _Defended | None = None
        if _defence_list(preprocessing_defences):
            self._defended = _Defended(base, _defence_list(preprocessing_defences)).eval()
            base = self._defended
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
        self._update_preprocessing_operations()  # ART's __init__ calls its own version
        # ART names the layers of the user's network (its top-level modules), not the wrappers'
        self._layer_names = list(model._modules)
        self._check_model_shapes()
        self._generators: TrainingGenerators | None = None

    def _update_preprocessing_operations(self) -> None:
        """ART's pipeline without the defences: they run inside the base classifier, on every
        noisy sample (:class:`_Defended`), never on the clean input before the noise."""
        super()._update_preprocessing_operations()
        defences = _defence_list(self.preprocessing_defences)
        if defences and getattr(self, "_defended", None) is None:
            raise RSValueError(
                "preprocessing_defences",
                "defences given when the estimator is constructed (they become part of its "
                "base classifier)",
                defences,
            )
        if defences:
            assert self._defended is not None
            self._defended.defences = defences
        self.preprocessing_operations[:] = [
            op for op in self.preprocessing_operations if not any(op is d for d in defences)
        ]

    def _check_model_shapes(self) -> None:
        """One forward of a zero input of ``input_shape``: the model must accept it and return
        ``nb_classes`` logits (ART accepts any shape and fails later, or never)."""
        base = self._smoothed.model
        was_training = base.training
        base.eval()
        dtype = model_dtype(base)
        probe = torch.zeros((1, *self.input_shape), dtype=dtype, device=self._device)
        try:
            out = probe_model(base, probe, inputs_name="input_shape", require_finite=False)
        except RSValueError as error:
            if error.parameter != "input_shape":
                raise
            cause = str(error.__cause__ or error).splitlines()[0]
            raise RSValueError(
                "input_shape",
                "the shape of one input the model accepts",
                f"{self.input_shape} ({cause})",
            ) from error
        finally:
            base.train(was_training)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != self.nb_classes:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise RSValueError(
                "nb_classes",
                f"the width of the model's (1, nb_classes) logits, output {shape}",
                self.nb_classes,
            )

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
        if self._denoised is not None:
            # The denoiser must be told the new σ; one it was not trained for is refused.
            checked = denoised_for(self._denoised.classifier, self._denoised.denoiser, value)
            self._denoised.sigma = checked.sigma
        self._smoothed.smoothing = value

    @property
    def denoiser(self) -> nn.Module | None:
        """The denoiser in front of the base model (denoised smoothing), or None."""
        return self._denoiser

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
        self._smoothed.seed = check_int("seed", value, 0, MAX_SEED)

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
        smoothed classifier's log-probabilities, ``batch_size`` inputs per forward. One-hot rows
        are float64, as ART's; an empty batch gives an empty (0, nb_classes) array. Other
        keywords ART's attacks pass (e.g. Carlini–Wagner's ``logits=True``) are ignored, as ART's
        ``PyTorchClassifier.predict`` ignores them. Either way ``x`` is checked first: finite, and
        inside ``clip_values`` when they are set (one :class:`RSValueError` otherwise).
        """
        if len(x) == 0 and np.ndim(x) >= 2:  # ART returns an empty array; no sample to draw
            dtype = np.float32 if self.outputs == "log_probabilities" else np.float64
            return np.zeros((0, self.nb_classes), dtype=dtype)
        self._check_inputs(x)
        if self.outputs == "log_probabilities":
            return super().predict(x, batch_size=batch_size, training_mode=training_mode)
        self._model.train(mode=training_mode)
        predictions = self._smoothed.predict(
            x,
            n=self.sample_size,
            alpha=self.alpha,
            batch_size=batch_size,
            seed=self.seed,
        )
        top = predictions.counts.argmax(dim=1)
        chosen = predictions.prediction if is_abstain else top
        one_hot = np.zeros((len(x), self.nb_classes), dtype=np.float64)  # ART's dtype
        rows = np.flatnonzero(chosen.numpy() >= 0)
        one_hot[rows, chosen.numpy()[rows]] = 1.0
        return self._apply_postprocessing(preds=one_hot, fit=False)

    def _check_inputs(self, x: np.ndarray | torch.Tensor) -> None:
        """The core's input check (finite, inside clip_values), on what the caller passed."""
        values = x.detach().float() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)
        check_finite_inputs("x", torch.as_tensor(values), self._smoothed.clip_values)

    def certify(
        self, x: np.ndarray, n: int, batch_size: int | str = "auto"
    ) -> tuple[np.ndarray, np.ndarray]:
        """CERTIFY (Cohen et al. 2019): ART's ``(prediction, radius)`` arrays, shape (N,) each.

        ``sample_size`` selection samples pick the class, ``n`` independent samples bound its
        probability (one-sided Clopper–Pearson at level ``alpha``); prediction −1 and radius 0
        mean abstain. With probability at least 1 − α, each radius is a true robustness radius of
        the smoothed classifier in the smoothing's norm (``self.smoothing.norm``).
        ``batch_size`` is the number of noisy samples per forward, as in ART; by default
        ``"auto"``, the fastest size measured on the first samples, which count as votes
        (:mod:`rs_plugin.certification.batching`; ART's own default is 32). Every size gives
        the same certificates.
        """
        self._model.eval()
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
            x,
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
        sampling: bool | None = None,
    ) -> np.ndarray | torch.Tensor:
        """Gradient in ``x`` of the loss, same type and shape as ``x``; ART's signature.

        ``sampling`` chooses the classifier (ART's keyword, with ART's meaning when given):

        * ``None`` (default) or ``True``: the soft smoothed classifier. With ``CrossEntropyLoss``
          the loss is −log of its probability of ``y``, the mean of softmax(f) over
          ``num_noise_samples`` perturbations seeded by ``seed`` (ART's ``sampling=True``
          estimates the same quantity with ``sample_size`` fresh global-RNG draws). The default,
          because it is the gradient an attack on the smoothed classifier needs (Salman et al.
          2019); ART's default attacks the base model instead.
        * ``False``: ART's default, the base model's loss gradient at the clean input
          (after ``preprocessing_defences`` and ``preprocessing``), no noise.

        ``y`` is one-hot (N, nb_classes) or class indices (N,).
        """
        if y.ndim == 1:
            y = (
                torch.nn.functional.one_hot(y.long(), self.nb_classes).float()
                if isinstance(y, torch.Tensor)
                else np.eye(self.nb_classes, dtype=np.float32)[np.asarray(y, dtype=np.int64)]
            )
        if sampling is False:
            return self.base_classifier().loss_gradient(x, y, training_mode=training_mode)
        return super().loss_gradient(x, y, training_mode=training_mode)

    def base_classifier(self) -> PyTorchClassifier:
        """The base model as an ART ``PyTorchClassifier`` (same weights, same loss, defences
        and preprocessing, no noise): what ART's own estimator differentiates by default."""
        return PyTorchClassifier(
            model=self._smoothed.model,
            loss=self._loss,
            input_shape=self.input_shape,
            nb_classes=self.nb_classes,
            channels_first=self.channels_first,
            clip_values=self.clip_values,
            preprocessing_defences=None,  # inside the model (_Defended)
            preprocessing=(0.0, 1.0),
            device_type="cpu" if self._device.type == "cpu" else "gpu",
        )

    def get_activations(
        self,
        x: np.ndarray | torch.Tensor,
        layer: int | str | None = None,
        batch_size: int = 128,
        framework: bool = False,
    ) -> np.ndarray | torch.Tensor:
        """The output of one layer of the user's network, ART's signature and layer names.

        ``layer`` is a name from ``layer_names`` (the network's top-level modules, as ART lists
        them) or an index into it. The network runs on the clean inputs through the base
        classifier (``preprocessing_defences``, the denoiser if any, ``preprocessing``), as
        ART's estimator computes activations: no noise. ``framework=True`` returns the tensor
        of one forward of all of ``x``, differentiable; otherwise a numpy array, in batches of
        ``batch_size``. The hook that reads the layer is removed before returning.
        """
        names = self._layer_names
        if isinstance(layer, str) and layer in names:
            name = layer
        elif isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
            if not -len(names) <= int(layer) < len(names):
                raise RSValueError(
                    "layer", f"an index into layer_names (0 … {len(names) - 1})", layer
                )
            name = names[int(layer)]
        else:
            raise RSValueError("layer", f"one of layer_names {names} or its index", layer)
        self._check_inputs(x)
        module = dict(self._base_model.named_modules())[name]
        captured: list[torch.Tensor] = []
        handle = module.register_forward_hook(lambda _m, _i, output: captured.append(output))
        base = self._smoothed.model
        was_training = base.training
        base.eval()
        try:
            if framework:
                inputs = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
                base(inputs.to(self._device))
                return captured[-1]
            values = np.asarray(x, dtype=np.float32)
            outputs = []
            with torch.no_grad():
                for start in range(0, len(values), check_int("batch_size", batch_size, 1)):
                    base(torch.from_numpy(values[start : start + batch_size]).to(self._device))
                    outputs.append(captured[-1].detach().cpu().numpy())
            return np.concatenate(outputs)
        finally:
            handle.remove()
            base.train(was_training)

    def save(self, filename: str, path: str | None = None) -> None:
        """ART's ``save``: the user's network's ``state_dict`` to ``<path>/<filename>.model`` and
        the optimizer's to ``.optimizer`` (``path`` defaults to ART's ``ART_DATA_PATH``), so the
        file loads into the network the estimator was built on."""
        from art import config

        full_path = os.path.join(config.ART_DATA_PATH if path is None else path, filename)
        os.makedirs(os.path.dirname(full_path) or ".", exist_ok=True)
        torch.save(self._base_model.state_dict(), full_path + ".model")
        if self._optimizer is not None:
            torch.save(self._optimizer.state_dict(), full_path + ".optimizer")

    def fit_generator(
        self,
        generator: Any,
        nb_epochs: int = 20,
        verbose: bool = False,
        training_mode: bool = True,
        scheduler: Any = None,
        **kwargs: Any,
    ) -> None:
        """Train as :meth:`fit` does, on the batches of an ART ``DataGenerator``.

        Each epoch takes ``size // batch_size`` batches (at least one) from
        ``generator.get_batch()``, as ART's generic ``fit_generator`` does, one optimiser step per
        batch (per chunk, for trainers that split batches) with fresh noise from the estimator's
        generators; warm-ups count epochs across the call, and ``scheduler.step()`` runs after
        every epoch. (ART's PyTorch fast path would train through ``model``, the soft smoothed
        classifier, on the same noise at every step.)
        """
        from art.data_generators import DataGenerator
        from tqdm.auto import trange  # an ART requirement

        if not isinstance(generator, DataGenerator):
            raise RSValueError("generator", "an art.data_generators.DataGenerator", generator)
        nb_epochs = check_int("nb_epochs", nb_epochs, 1)
        objective, optimizer, generators = self._start_training()
        batches = max(1, int(generator.size) // int(generator.batch_size))
        for epoch in trange(nb_epochs, disable=not verbose, desc="Epochs"):  # ART's bar
            for _ in range(batches):
                x_t, y_t = self._training_tensors(*generator.get_batch())
                train(
                    self._smoothed.model,
                    objective,
                    x_t,
                    y_t,
                    optimizer=optimizer,
                    batch_size=len(x_t),
                    generators=generators,
                    training_mode=training_mode,
                    verbose=False,
                    first_epoch=epoch,
                )
            if scheduler is not None:
                scheduler.step()

    def training_objective(self) -> Objective:
        """What ``fit`` minimises: noise augmentation with the estimator's loss (Cohen et al.
        2019); the trainers override it."""
        return NoiseAugmentation(self.smoothing, criterion=self._loss)

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
        **kwargs: Any,
    ) -> None:
        """Train the base model on :meth:`training_objective` with the core's training loop.

        Further keywords are accepted and ignored, as ART's ``fit`` accepts them.

        Labels are one-hot (N, nb_classes) or indices (N,). Inputs are checked before the first
        step (finite values; an :class:`RSValueError` otherwise, weights untouched). The noise and
        the shuffling come from generators seeded by ``seed``; successive calls continue the
        same streams. ``scheduler.step()`` runs after every epoch.
        """
        objective, optimizer, generators = self._start_training()
        x_t, y_t = self._training_tensors(x, y)
        train(
            self._smoothed.model,
            objective,
            x_t,
            y_t,
            optimizer=optimizer,
            epochs=nb_epochs,
            batch_size=batch_size,
            generators=generators,
            scheduler=scheduler,
            drop_last=drop_last,
            training_mode=training_mode,
            verbose=verbose,
        )

    def _start_training(
        self,
    ) -> tuple[Objective, torch.optim.Optimizer, TrainingGenerators]:
        """Checks that ``fit`` may run, creates the generators on the first call (later calls
        continue them): the objective, the optimiser and the generators."""
        self._check_trainable()
        assert self._optimizer is not None
        if self._generators is None:
            self._generators = TrainingGenerators.from_seed(self.seed, self._device)
        return self.training_objective(), self._optimizer, self._generators

    def _check_trainable(self) -> None:
        if self._denoiser is not None:
            raise RSValueError(
                "denoiser",
                "None when calling fit (denoised smoothing keeps the classifier frozen; train "
                "the denoiser with rs_plugin.training.DenoiserObjective)",
                type(self._denoiser).__name__,
            )
        self._check_optimizer()

    def _check_optimizer(self) -> None:
        if self._optimizer is None:
            raise RSValueError(
                "optimizer",
                "a torch.optim.Optimizer over the model's parameters (needed by fit)",
                None,
            )

    def _training_tensors(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) as the training loop takes them, checked before any defence runs."""
        check_finite_inputs("x", torch.from_numpy(np.asarray(x, dtype=np.float32)), None)
        y = check_and_transform_label_format(y, nb_classes=self.nb_classes)
        x_defended, y_defended = np.asarray(x, dtype=np.float32), y
        for defence in _defence_list(self.preprocessing_defences):
            if getattr(defence, "apply_fit", False):  # as ART's fit: on the clean inputs
                x_defended, y_defended = defence(x_defended, y_defended)
        labels = self.reduce_labels(y_defended)
        x_t = torch.from_numpy(np.asarray(x_defended, dtype=np.float32))
        y_t = torch.as_tensor(np.asarray(labels)).long()
        check_training_data(x_t, y_t)
        return x_t, y_t


class PyTorchRandomizedSmoothing(PyTorchSmoothedClassifier):
    """Drop-in for ART's ``PyTorchRandomizedSmoothing``, computed by the core engine.

    Same positional and keyword arguments as ART 1.20's class (model, loss, input_shape,
    nb_classes, optimizer, channels_first, clip_values, preprocessing_defences,
    postprocessing_defences, preprocessing, device_type, sample_size, scale, alpha); ``scale`` is
    the σ of isotropic Gaussian noise, whose certificate is the ℓ2 radius σ·Φ⁻¹(p_lower).
    Keyword-only extras: ``smoothing`` (any core smoothing instead of Gaussian(scale)),
    ``num_noise_samples``, ``outputs``, ``seed`` and ``denoiser``, documented on
    :class:`PyTorchSmoothedClassifier`; ``sound=True`` (with ``grid``, default ``"1/255"``)
    smooths with :class:`rs_plugin.SoundGaussian` (scale, grid): inputs on the grid, exact
    integer noise and sums, certificates sound in floating point.
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
        sound: bool = False,
        grid: Any = DEFAULT_GRID,
        denoiser: nn.Module | None = None,
    ) -> None:
        if sound not in (True, False) or (sound and smoothing is not None):
            raise RSValueError(
                "sound", "True (with scale and grid, no smoothing) or False", (sound, smoothing)
            )
        if sound:
            smoothing = SoundGaussian(check_positive("scale", scale), grid=grid)
        elif smoothing is None:
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
            denoiser=denoiser,
        )

    @property
    def scale(self) -> float | None:
        """σ of the smoothing (ART's name; the largest σ when it differs per coordinate, None
        when the smoothing has none); setting it switches to Gaussian(scale) noise."""
        return self.smoothing.noise_scale

    @scale.setter
    def scale(self, value: float) -> None:
        if isinstance(self.smoothing, SoundGaussian):
            self.smoothing = SoundGaussian(value, grid=self.smoothing.grid)
        else:
            self.smoothing = Gaussian(check_positive("scale", value))
