"""ART's certified-training estimators, with the training done by the core.

``PyTorchSmoothAdv``, ``PyTorchMACER`` and ``PyTorchSmoothMix`` take ART 1.20's constructor
arguments and defaults, so ART code that built them runs unchanged; ``PyTorchConsistency`` is
consistency regularisation (Jeong & Shin 2020) and ``PyTorchCATRS`` is CAT-RS (Jeong, Kim & Shin
2023), which ART does not have, in the same form. Each is a
:class:`~rs_plugin.adapters.art_estimator.PyTorchRandomizedSmoothing` (predict, certify and
gradients by the core engine) whose ``fit`` minimises the paper's objective from
:mod:`rs_plugin.training`: the class only maps ART's arguments onto it. Like the base class, each
accepts the keyword-only ``smoothing`` (any input-space smoothing instead of Gaussian(scale)),
``num_noise_samples``, ``outputs`` and ``seed``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from rs_plugin.adapters.art_estimator import PyTorchRandomizedSmoothing
from rs_plugin.smoothings.base import Smoothing
from rs_plugin.training.catrs import CATRS
from rs_plugin.training.consistency import Consistency
from rs_plugin.training.macer import MACER
from rs_plugin.training.objective import Objective
from rs_plugin.training.smoothadv import SmoothAdv
from rs_plugin.training.smoothmix import SmoothMix

__all__ = [
    "PyTorchCATRS",
    "PyTorchConsistency",
    "PyTorchMACER",
    "PyTorchSmoothAdv",
    "PyTorchSmoothMix",
]


class PyTorchSmoothAdv(PyTorchRandomizedSmoothing):
    """SmoothAdv training (Salman et al. 2019): :class:`rs_plugin.training.SmoothAdv`.

    ART's ``PyTorchSmoothAdv`` arguments (``epsilon``, ``num_noise_vec``, ``num_steps``,
    ``warmup``) and defaults. ``fit`` attacks each chunk of a batch with ``num_steps`` steps of
    ℓ2 PGD (step 2ε/T) on the soft smoothed classifier over ``num_noise_vec`` perturbations,
    inside ``clip_values``, then trains on those perturbations of the adversarial input; ε grows
    linearly over ``warmup`` epochs. ART's own class runs ART's one-step ℓ∞ PGD on the base model
    with one noise draw instead.
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
        super().__init__(
            model, loss, input_shape, nb_classes, optimizer, channels_first, clip_values,
            preprocessing_defences, postprocessing_defences, preprocessing, device_type,
            sample_size, scale, alpha, smoothing=smoothing, num_noise_samples=num_noise_samples,
            outputs=outputs, seed=seed,
        )  # fmt: skip
        self.epsilon = epsilon
        self.num_noise_vec = num_noise_vec
        self.num_steps = num_steps
        self.warmup = warmup
        self.training_objective()  # checks the settings now, not at the first fit

    def training_objective(self) -> Objective:
        return SmoothAdv(
            self.smoothing,
            epsilon=self.epsilon,
            num_noise_vec=self.num_noise_vec,
            num_steps=self.num_steps,
            warmup=self.warmup,
            clip_values=self.smoothed.clip_values,
        )


class PyTorchMACER(PyTorchRandomizedSmoothing):
    """MACER training (Zhai et al. 2020): :class:`rs_plugin.training.MACER`.

    ART's ``PyTorchMACER`` arguments and defaults: inverse temperature ``beta`` = 16, hinge
    ``gamma`` = 8, weight ``lmbda`` = 12, ``gaussian_samples`` = 16 perturbations per input.
    ``fit`` minimises the cross-entropy of the soft smoothed classifier plus λ times the hinge on
    the radius surrogate σ/2·(Φ⁻¹(p̂_A) − Φ⁻¹(p̂_B)) of correctly classified inputs (for a
    non-Gaussian ``smoothing``, the same construction on that smoothing's radius).
    """

    estimator_params: ClassVar[list[str]] = [
        *PyTorchRandomizedSmoothing.estimator_params,
        "beta",
        "gamma",
        "lmbda",
        "gaussian_samples",
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
        beta: float = 16.0,
        gamma: float = 8.0,
        lmbda: float = 12.0,
        gaussian_samples: int = 16,
        *,
        smoothing: Smoothing | None = None,
        num_noise_samples: int | None = None,
        outputs: str = "hard",
        seed: int = 0,
    ) -> None:
        super().__init__(
            model, loss, input_shape, nb_classes, optimizer, channels_first, clip_values,
            preprocessing_defences, postprocessing_defences, preprocessing, device_type,
            sample_size, scale, alpha, smoothing=smoothing, num_noise_samples=num_noise_samples,
            outputs=outputs, seed=seed,
        )  # fmt: skip
        self.beta = beta
        self.gamma = gamma
        self.lmbda = lmbda
        self.gaussian_samples = gaussian_samples
        self.training_objective()

    def training_objective(self) -> Objective:
        return MACER(
            self.smoothing,
            beta=self.beta,
            gamma=self.gamma,
            lmbda=self.lmbda,
            num_noise_samples=self.gaussian_samples,
        )


class PyTorchSmoothMix(PyTorchRandomizedSmoothing):
    """SmoothMix training (Jeong et al. 2021): :class:`rs_plugin.training.SmoothMix`.

    ART's ``PyTorchSmoothMix`` arguments and defaults (``eta``, ``num_noise_vec``,
    ``num_steps``, ``warmup``, ``mix_step``, ``maxnorm_s``, ``maxnorm``), plus the keyword-only
    ``step_size``: the attack's step α (1.0 as in the paper's code). ART's class has no such
    argument and steps by ``alpha``, the certificate's failure probability (0.001 by default),
    so its attack barely moves; here ``alpha`` keeps only its certification meaning.
    """

    estimator_params: ClassVar[list[str]] = [
        *PyTorchRandomizedSmoothing.estimator_params,
        "eta",
        "num_noise_vec",
        "num_steps",
        "warmup",
        "mix_step",
        "maxnorm_s",
        "maxnorm",
        "step_size",
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
        eta: float = 1.0,
        num_noise_vec: int = 1,
        num_steps: int = 10,
        warmup: int = 1,
        mix_step: int = 0,
        maxnorm_s: float | None = None,
        maxnorm: float | None = None,
        *,
        step_size: float = 1.0,
        smoothing: Smoothing | None = None,
        num_noise_samples: int | None = None,
        outputs: str = "hard",
        seed: int = 0,
    ) -> None:
        super().__init__(
            model, loss, input_shape, nb_classes, optimizer, channels_first, clip_values,
            preprocessing_defences, postprocessing_defences, preprocessing, device_type,
            sample_size, scale, alpha, smoothing=smoothing, num_noise_samples=num_noise_samples,
            outputs=outputs, seed=seed,
        )  # fmt: skip
        self.eta = eta
        self.num_noise_vec = num_noise_vec
        self.num_steps = num_steps
        self.warmup = warmup
        self.mix_step = mix_step
        self.maxnorm_s = maxnorm_s
        self.maxnorm = maxnorm
        self.step_size = step_size
        self.training_objective()

    def training_objective(self) -> Objective:
        return SmoothMix(
            self.smoothing,
            eta=self.eta,
            num_noise_vec=self.num_noise_vec,
            num_steps=self.num_steps,
            warmup=self.warmup,
            mix_step=self.mix_step,
            maxnorm_s=self.maxnorm_s,
            maxnorm=self.maxnorm,
            step_size=self.step_size,
            clip_values=self.smoothed.clip_values,
        )


class PyTorchConsistency(PyTorchRandomizedSmoothing):
    """Consistency regularisation (Jeong & Shin 2020): :class:`rs_plugin.training.Consistency`.

    Not in ART; built like ART's trainers: the randomized-smoothing arguments, then
    ``num_noise_vec`` (m ≥ 2 perturbations per input), ``lmbda`` (λ, weight of the KL between
    each perturbation's prediction and their mean) and ``eta`` (η, weight of the mean
    prediction's entropy). ``fit`` minimises CE + λ·KL + η·entropy over the m perturbations.
    """

    estimator_params: ClassVar[list[str]] = [
        *PyTorchRandomizedSmoothing.estimator_params,
        "num_noise_vec",
        "lmbda",
        "eta",
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
        num_noise_vec: int = 2,
        lmbda: float = 10.0,
        eta: float = 0.5,
        *,
        smoothing: Smoothing | None = None,
        num_noise_samples: int | None = None,
        outputs: str = "hard",
        seed: int = 0,
    ) -> None:
        super().__init__(
            model, loss, input_shape, nb_classes, optimizer, channels_first, clip_values,
            preprocessing_defences, postprocessing_defences, preprocessing, device_type,
            sample_size, scale, alpha, smoothing=smoothing, num_noise_samples=num_noise_samples,
            outputs=outputs, seed=seed,
        )  # fmt: skip
        self.num_noise_vec = num_noise_vec
        self.lmbda = lmbda
        self.eta = eta
        self.training_objective()

    def training_objective(self) -> Objective:
        return Consistency(
            self.smoothing, num_noise_vec=self.num_noise_vec, lmbda=self.lmbda, eta=self.eta
        )


class PyTorchCATRS(PyTorchRandomizedSmoothing):
    """CAT-RS (Jeong, Kim & Shin 2023): :class:`rs_plugin.training.CATRS`.

    Not in ART; built like ART's trainers: the randomized-smoothing arguments, then
    ``num_noise_vec`` (m noisy copies per input), ``epsilon`` (ℓ2 radius of the attack on each
    noise vector), ``num_steps`` (its PGD steps) and ``lmbda`` (λ, weight of the worst-case
    term). ``fit`` trains each input on the K ~ Binomial(m, p̂) copies with the smallest
    cross-entropy (p̂: the fraction of its copies classified correctly, K ≥ 1), plus, where
    every copy is correct, λ times the largest KL between the smoothed prediction and the
    prediction under attacked noise. Needs an additive noise (the default Gaussian(scale)).
    """

    estimator_params: ClassVar[list[str]] = [
        *PyTorchRandomizedSmoothing.estimator_params,
        "num_noise_vec",
        "epsilon",
        "num_steps",
        "lmbda",
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
        num_noise_vec: int = 4,
        epsilon: float = 1.0,
        num_steps: int = 4,
        lmbda: float = 1.0,
        *,
        smoothing: Smoothing | None = None,
        num_noise_samples: int | None = None,
        outputs: str = "hard",
        seed: int = 0,
    ) -> None:
        super().__init__(
            model, loss, input_shape, nb_classes, optimizer, channels_first, clip_values,
            preprocessing_defences, postprocessing_defences, preprocessing, device_type,
            sample_size, scale, alpha, smoothing=smoothing, num_noise_samples=num_noise_samples,
            outputs=outputs, seed=seed,
        )  # fmt: skip
        self.num_noise_vec = num_noise_vec
        self.epsilon = epsilon
        self.num_steps = num_steps
        self.lmbda = lmbda
        self.training_objective()

    def training_objective(self) -> Objective:
        return CATRS(
            self.smoothing,
            num_noise_vec=self.num_noise_vec,
            epsilon=self.epsilon,
            num_steps=self.num_steps,
            lmbda=self.lmbda,
        )
