"""Semantic smoothings: randomized smoothing in the parameter space of an image transformation.

A transform smoothing draws parameters ε from Gaussian or uniform noise of standard deviation
``sigma`` (in the parameter's own units) and gives the model T(x, ε). Two certificates exist:

* **parametric** (DeformRS, Alfarra et al. 2022): g(x, φ) = argmax_c P[f(T(x, φ + ε)) = c], the
  smoothed classifier of the clean image x as a function of the parameters. Because φ ↦ f(T(x, φ))
  is just some classifier of φ, the additive-noise radius of the parameter noise applies in
  parameter space (Gaussian: ‖φ‖₂ < σ Φ⁻¹(p_lower); uniform: Yang et al.'s ℓ1/ℓ∞ radii), sound
  for the family {T(x, φ)} by construction. It says nothing about an image someone else
  transformed and handed to the model.
* **input-domain**: G(z) = argmax_c P[f(perturb(z)) = c] applied to the image the model actually
  receives, z = T(x, φ). When T composes exactly (T(T(x, φ), ε) = T(x, φ + ε): brightness,
  contrast, Fourier translation) G(T(x, φ)) = g(x, φ), so both statements coincide and records
  say ``"parametric=input"``. Interpolating transforms (rotation, scaling) do not compose; their
  input-domain certificate adds Gaussian pixel noise before the transform and is computed on a
  grid of transformed images (:mod:`rs_plugin.certification.grid`, after TSS, Li et al. 2021).

Each transform takes its noise scale by the name of its unit (``Rotation(degrees=15)``,
``Translation(pixels=2)``, ``Scaling(fraction=0.1)``, ``Brightness(step=0.1)``, ...; positionally
too), with a default where one scale suits images in [0, 1] and none where it does not (then
building it without one is refused): :attr:`SemanticSmoothing.scale_keyword` and
:attr:`SemanticSmoothing.default_scale` say which. ``sigma`` is additive noise's standard
deviation; :func:`rs_plugin._registry.load_smoothing` still maps ``sigma=`` onto a transform's
scale for code written before the names existed, and a run (:class:`rs_plugin.runs.CertifyJob`)
refuses it.

Geometric transforms live in :mod:`rs_plugin.smoothings.geometric`. Radii are in parameter units: a
one-parameter transform reports its radius under its own name
(``"rotation"``, degrees); a k-parameter one reports ``"<name>:l2"`` (primary), ``":l1"`` and
``":linf"`` (per-parameter intervals) over the parameter vector.
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar

import torch

from rs_plugin._validation import RSValueError, check_positive
from rs_plugin.smoothings.base import Smoothing
from rs_plugin.smoothings.gaussian import Gaussian
from rs_plugin.smoothings.noises import Uniform
from rs_plugin.smoothings.norms import complete_radii
from rs_plugin.smoothings.transforms import PADDINGS, blur, brightness, check_image_batch, contrast

__all__ = [
    "NOISES",
    "SEMANTICS",
    "Blur",
    "Brightness",
    "Compose",
    "Contrast",
    "SemanticSmoothing",
    "check_choice",
    "check_scale",
]

NOISES = ("gaussian", "uniform")
SEMANTICS = ("parametric", "input")
# Radii in σ units (a composition, a shadow with several parameters) assume each parameter is
# drawn with its nominal scale; it is drawn in float32 (σ_j, and √3 for uniform noise, rounded
# to float32 and multiplied there: two roundings of at most 2^-24 each), so the scale sampled
# may be up to ≈ 2^-23 of itself smaller, and a radius in σ units that much too large. They are
# shrunk by this factor, which covers both roundings (σ = 0.12 samples with 0.11999999731779).
FLOAT32_SCALE_SHRINK = 1.0 - 2.0**-22


def check_choice(name: str, value: Any, accepted: tuple[str, ...]) -> str:
    if value not in accepted:
        raise RSValueError(name, f"one of {accepted}", value)
    return str(value)


def check_scale(cls: type[Smoothing], scale: float | None) -> float:
    """A transform's noise scale, named by its keyword; None is refused when it has no default."""
    keyword = str(getattr(cls, "scale_keyword", "sigma"))
    if scale is None:
        raise RSValueError(
            keyword,
            f"the standard deviation of {cls.name}'s parameter noise, in "
            f"{getattr(cls, 'units', 'its units')} ({cls.name} has no default scale: "
            f"{cls.__name__}({keyword}=...))",
            None,
        )
    return check_positive(keyword, scale)


def _parameter_noise(noise: str, sigma: float) -> Smoothing:
    """The additive smoothing whose radii the parameter noise certifies in parameter space."""
    return Gaussian(sigma) if noise == "gaussian" else Uniform(sigma)


class SemanticSmoothing(Smoothing):
    """Base class of transform smoothings: subclasses implement :meth:`apply` (and set
    :attr:`name`, :attr:`norm`, :attr:`units`, :attr:`composition`); sampling parameters,
    perturbing and turning p_lower into parameter-space radii live here.

    ``composition`` is ``"exact"`` (T(T(x, a), b) = T(x, a + b): parametric and input-domain
    certificates coincide), ``"interpolating"`` (input-domain certificates through a grid) or
    ``"none"`` (parametric certificates only).
    """

    units: ClassVar[str]
    composition: ClassVar[str] = "none"
    # The keyword a subclass takes its noise scale by (named after its unit), and its default
    # (None: a scale must be given).
    scale_keyword: ClassVar[str] = "scale"
    default_scale: ClassVar[float | None] = None

    def __init__(
        self, sigma: float | None, *, noise: str = "gaussian", semantics: str = "parametric"
    ) -> None:
        self.sigma = check_scale(type(self), sigma)
        self.noise = check_choice("noise", noise, NOISES)
        self.semantics = check_choice("semantics", semantics, SEMANTICS)
        if self.semantics == "input" and self.composition == "none":
            raise RSValueError(
                "semantics",
                f"'parametric' for {self.name} (input-domain certificates exist for exactly "
                "composable transforms and for rotation and scaling with bilinear interpolation)",
                semantics,
            )

    @property
    @abc.abstractmethod
    def num_parameters(self) -> int:
        """k, the dimension of the parameter space."""

    @abc.abstractmethod
    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """T(x, params) for a batch x (B, C, H, W) and params (B, k); params = 0 is identity."""

    def apply_(self, out: torch.Tensor, x: torch.Tensor, params: torch.Tensor) -> None:
        """Write T(x, params) into ``out`` (B, C, H, W) for one image ``x`` (1, C, H, W).

        Transforms that can compute into ``out`` override this; resampling transforms compute
        a fresh batch and copy it.
        """
        out.copy_(self.apply(x.expand(out.shape), params))

    @property
    def semantics_label(self) -> str:
        """What records say: ``parametric``, ``input`` or ``parametric=input`` (exact)."""
        return "parametric=input" if self.composition == "exact" else self.semantics

    @property
    def on_grid(self) -> bool:
        """True when certificates come from the input-domain grid (interpolating transforms)."""
        return self.semantics == "input" and self.composition == "interpolating"

    def sample_parameters(
        self, batch: int, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """(batch, k) parameters with per-coordinate standard deviation ``sigma``."""
        shape = (batch, self.num_parameters)
        if self.noise == "gaussian":
            return self.sigma * torch.randn(shape, generator=generator, device=device, dtype=dtype)
        half = self.sigma * math.sqrt(3.0)
        u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
        return half * (2.0 * u - 1.0)

    def perturb(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        check_image_batch(x)
        params = self.sample_parameters(x.shape[0], generator, x.device, x.dtype)
        return self.apply(x, params)

    def perturb_(self, out: torch.Tensor, x: torch.Tensor, generator: torch.Generator) -> None:
        check_image_batch(out)
        params = self.sample_parameters(out.shape[0], generator, out.device, out.dtype)
        self.apply_(out, x, params)

    def _parameter_radii(self, p_lower: torch.Tensor) -> dict[str, torch.Tensor]:
        k = self.num_parameters
        radii = complete_radii(
            _parameter_noise(self.noise, self.sigma).certified_radii(p_lower, k), k
        )
        if k == 1:
            return {self.name: radii["l2"]}
        return {f"{self.name}:{norm}": r for norm, r in radii.items()}

    def radius(self, p_lower: torch.Tensor, dim: int) -> torch.Tensor:
        return self.certified_radii(p_lower, dim)[self.norm]

    def certified_radii(self, p_lower: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
        if self.on_grid:
            raise RSValueError(
                "smoothing",
                "a parametric or exactly composable smoothing for a radius from p_lower alone "
                f"({self.name} with semantics='input' certifies through GridCertifier, on a "
                "grid of transformed images)",
                self,
            )
        return self._parameter_radii(p_lower)

    @property
    def noise_scale(self) -> float:
        return self.sigma

    @property
    def parameter_sigmas(self) -> tuple[float, ...]:
        """(σ_1, ..., σ_k): each parameter's noise standard deviation in its own unit."""
        return (self.sigma,) * self.num_parameters

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """The key under which records give each parameter's own radius: the radius's own key
        (:attr:`norm`) for a one-parameter transform, ``"<name>.<j>"`` (j from 0) otherwise."""
        if self.num_parameters == 1:
            return (self.norm,)
        return tuple(f"{self.name}.{j}" for j in range(self.num_parameters))

    @property
    def sigma_units(self) -> bool:
        """True when radii are in σ units: the certified ℓ2 set is Σ_j δ_j²/σ_j² < ρ² (ℓ∞:
        max_j |δ_j|/σ_j < ρ), so a change δ in the parameters' own units lies at distance
        ‖δ/σ‖ (σ = :attr:`parameter_sigmas`); False when radii are in the parameters' own
        units."""
        return False

    def __repr__(self) -> str:
        # The scale under its own keyword (the config keeps "sigma", which stored runs compare).
        config = {k: v for k, v in self.config().items() if k not in ("name", "sigma", "units")}
        params = ", ".join(f"{k}={v!r}" for k, v in config.items())
        return f"{type(self).__name__}({self.scale_keyword}={self.sigma!r}, {params})"

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sigma": self.sigma,
            "noise": self.noise,
            "semantics": self.semantics_label,
            "units": self.units,
        }


class Brightness(SemanticSmoothing):
    """Brightness shift x + ε (intensity units; no clipping, so shifts compose exactly and the
    parametric and input-domain certificates coincide)."""

    name: ClassVar[str] = "brightness"
    norm: ClassVar[str] = "brightness"
    units: ClassVar[str] = "intensity"
    composition: ClassVar[str] = "exact"
    scale_keyword: ClassVar[str] = "step"
    default_scale: ClassVar[float | None] = 0.1

    def __init__(
        self, step: float = 0.1, *, noise: str = "gaussian", semantics: str = "parametric"
    ) -> None:
        """``step``: standard deviation of the shift, in intensity units (images in [0, 1])."""
        super().__init__(step, noise=noise, semantics=semantics)

    @property
    def num_parameters(self) -> int:
        return 1

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return brightness(x, params[:, 0])

    def apply_(self, out: torch.Tensor, x: torch.Tensor, params: torch.Tensor) -> None:
        brightness(x, params[:, 0], out=out)


class Contrast(SemanticSmoothing):
    """Contrast x · e^ε, ε the natural log of the factor (so factors compose exactly: the
    parametric and input-domain certificates coincide). A radius r certifies factors in
    [e^−r, e^r]."""

    name: ClassVar[str] = "contrast"
    norm: ClassVar[str] = "contrast"
    units: ClassVar[str] = "log contrast factor"
    composition: ClassVar[str] = "exact"
    scale_keyword: ClassVar[str] = "log_factor"
    default_scale: ClassVar[float | None] = 0.1

    def __init__(
        self, log_factor: float = 0.1, *, noise: str = "gaussian", semantics: str = "parametric"
    ) -> None:
        """``log_factor``: standard deviation of ε, the natural log of the contrast factor."""
        super().__init__(log_factor, noise=noise, semantics=semantics)

    @property
    def num_parameters(self) -> int:
        return 1

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return contrast(x, params[:, 0])

    def apply_(self, out: torch.Tensor, x: torch.Tensor, params: torch.Tensor) -> None:
        contrast(x, params[:, 0], out=out)


class Blur(SemanticSmoothing):
    """Gaussian blur with standard deviation |ε| pixels (TSS's blur, Gaussian kernel);
    parametric certificates only (discrete kernels do not compose exactly)."""

    name: ClassVar[str] = "blur"
    norm: ClassVar[str] = "blur"
    units: ClassVar[str] = "pixels (kernel standard deviation)"
    scale_keyword: ClassVar[str] = "pixels"
    default_scale: ClassVar[float | None] = 1.0

    def __init__(
        self,
        pixels: float = 1.0,
        *,
        noise: str = "gaussian",
        semantics: str = "parametric",
        padding: str = "reflection",
    ) -> None:
        """``pixels``: standard deviation of ε, the kernel's standard deviation in pixels."""
        super().__init__(pixels, noise=noise, semantics=semantics)
        self.padding = check_choice("padding", padding, PADDINGS)

    @property
    def num_parameters(self) -> int:
        return 1

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        check_image_batch(x)
        return blur(x, params[:, 0], padding=self.padding)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "padding": self.padding}


class Compose(SemanticSmoothing):
    """Several transforms as one smoothing over the product parameter space (applied in order).

    Each component keeps its own σ; the noise is independent per coordinate, so in coordinates
    scaled by 1/σ it is isotropic and the certificate is a ball in *σ units*: with Gaussian noise
    every joint change δ with Σ_j ‖δ_j‖²/σ_j² < ρ², ρ = Φ⁻¹(p_lower), keeps the prediction
    (norm ``"composed:l2"``). Records add, per component, the radius when it alone changes
    (σ_j ρ, key = its name) and the box every parameter may fill at once (key ``name:box``);
    per parameter for a component whose parameters have different scales
    (:meth:`certificate_extras`).
    Parametric certificates only. All components use the same noise family.
    """

    name: ClassVar[str] = "compose"
    norm: ClassVar[str] = "composed:l2"
    units: ClassVar[str] = "σ units (each component's change divided by its sigma)"

    def __init__(self, *components: SemanticSmoothing) -> None:
        if len(components) < 2 or not all(isinstance(c, SemanticSmoothing) for c in components):
            raise RSValueError(
                "components",
                "two or more semantic smoothings (Rotation, Brightness, ...)",
                components,
            )
        noises = {c.noise for c in components}
        if len(noises) != 1:
            raise RSValueError(
                "components", "components with the same noise family", sorted(noises)
            )
        self.components = tuple(components)
        super().__init__(1.0, noise=noises.pop(), semantics="parametric")

    @property
    def num_parameters(self) -> int:
        return sum(c.num_parameters for c in self.components)

    def sample_parameters(
        self, batch: int, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        return torch.cat(
            [c.sample_parameters(batch, generator, device, dtype) for c in self.components], dim=1
        )

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        start = 0
        for component in self.components:
            k = component.num_parameters
            x = component.apply(x, params[:, start : start + k])
            start += k
        return x

    @property
    def parameter_sigmas(self) -> tuple[float, ...]:
        """Each parameter's σ in component order."""
        return tuple(s for c in self.components for s in c.parameter_sigmas)

    @property
    def sigma_units(self) -> bool:
        return True

    def _parameter_radii(self, p_lower: torch.Tensor) -> dict[str, torch.Tensor]:
        k = self.num_parameters
        unit = complete_radii(_parameter_noise(self.noise, 1.0).certified_radii(p_lower, k), k)
        return {f"composed:{norm}": r * FLOAT32_SCALE_SHRINK for norm, r in unit.items()}

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(name for c in self.components for name in c.parameter_names)

    def certificate_extras(self, p_lower: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
        """Each component's change alone and the box all parameters may fill at once.

        The certified set is Σ_j δ_j²/σ_j² < ρ² (ℓ∞: max_j |δ_j|/σ_j < ρ∞). A component whose
        parameters share one scale σ_c (in its own units) may move by σ_c ρ alone (ℓ2 over its
        parameters, under its name) and by σ_c ρ∞ in every parameter at once (``":box"``). A
        component whose parameters have different scales or units (a shadow with its geometry)
        gets that pair per parameter, σ_j ρ and σ_j ρ∞, under its :attr:`parameter_names`.
        """
        unit = self._parameter_radii(p_lower)
        extras: dict[str, torch.Tensor] = {}
        for c in self.components:
            sigmas = c.parameter_sigmas
            if c.sigma_units or len(set(sigmas)) > 1:
                groups = list(zip(c.parameter_names, sigmas, strict=True))
            else:
                groups = [(c.name if c.num_parameters > 1 else c.norm, sigmas[0])]
            for name, s in groups:
                extras[name] = s * unit["composed:l2"]
                extras[f"{name}:box"] = s * unit["composed:linf"]
        return extras

    def config(self) -> dict[str, Any]:
        return {
            "name": "+".join(c.name for c in self.components),
            "components": [c.config() for c in self.components],
            "semantics": "parametric",
            "units": self.units,
        }

    def __repr__(self) -> str:
        return f"Compose({', '.join(repr(c) for c in self.components)})"
