"""Geometric semantic smoothings: rotation, scaling, translation, affine maps and DCT flow fields.

They resample the image with ``grid_sample`` (explicit interpolation and padding). Rotation and
scaling interpolate, so their input-domain certificate is the grid certificate of
:mod:`rs_plugin.certification.grid`; Fourier translation composes exactly; affine maps and flow
fields have parametric certificates only. The base class and the photometric transforms are in
:mod:`rs_plugin.smoothings.semantic`.
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar

import torch

from rs_plugin._validation import RSValueError, check_int, check_positive
from rs_plugin.smoothings.semantic import SemanticSmoothing, check_choice
from rs_plugin.smoothings.transforms import (
    INTERPOLATIONS,
    MIN_SCALE,
    PADDINGS,
    check_image_batch,
    dct_basis,
    fourier_translate,
    interpolant_slope,
    radial_extent,
    sample_affine,
    sample_flow,
)

__all__ = ["Affine", "Deformation", "Rotation", "Scaling", "Translation"]


class _Resampled(SemanticSmoothing):
    """Transforms that resample the image, with explicit interpolation and padding."""

    def __init__(
        self,
        scale: float | None,
        *,
        noise: str = "gaussian",
        semantics: str = "parametric",
        interpolation: str = "bilinear",
        padding: str = "zeros",
    ) -> None:
        super().__init__(scale, noise=noise, semantics=semantics)
        self.interpolation = check_choice("interpolation", interpolation, INTERPOLATIONS)
        self.padding = check_choice("padding", padding, PADDINGS)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "interpolation": self.interpolation, "padding": self.padding}


class _Interpolating(_Resampled):
    """One-parameter resampling transforms with an input-domain certificate on a grid.

    With ``semantics="input"`` the smoothing is G(z) = argmax P[f(T(z + η, ε)) = c] with pixel
    noise η ~ N(0, additive_sigma² I) *before* the transform, so that for every ε the map
    z ↦ P_η[f(T(z + η, ε)) = c] is a Gaussian smoothing and G is ℓ2-certified around any image
    with radius additive_sigma · Φ⁻¹(p_lower) (Cohen et al. 2019 applied to the randomised base
    classifier f ∘ T(·, ε)). Certification covers [−input_range, input_range] with transformed
    images every ``grid_step`` units (see :mod:`rs_plugin.certification.grid`).
    """

    composition: ClassVar[str] = "interpolating"
    default_range: ClassVar[float]
    default_step: ClassVar[float]
    max_range: ClassVar[float] = math.inf  # input_range must stay below it

    def __init__(
        self,
        scale: float | None,
        *,
        noise: str = "gaussian",
        semantics: str = "parametric",
        interpolation: str = "bilinear",
        padding: str = "zeros",
        additive_sigma: float = 0.25,
        input_range: float | None = None,
        grid_step: float | None = None,
    ) -> None:
        super().__init__(
            scale, noise=noise, semantics=semantics, interpolation=interpolation, padding=padding
        )
        self.additive_sigma = check_positive("additive_sigma", additive_sigma)
        self.input_range = check_positive(
            "input_range", self.default_range if input_range is None else input_range
        )
        self.grid_step = check_positive(
            "grid_step", self.default_step if grid_step is None else grid_step
        )
        if self.on_grid and self.input_range >= self.max_range:
            raise RSValueError(
                "input_range", f"a {self.name} range < {self.max_range:g}", input_range
            )
        if self.on_grid and self.interpolation != "bilinear":
            raise RSValueError(
                "interpolation",
                "'bilinear' with semantics='input' (the grid certificate bounds the bilinear "
                "interpolant's slope)",
                interpolation,
            )

    @property
    def num_parameters(self) -> int:
        return 1

    def perturb(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not self.on_grid:
            return super().perturb(x, generator)
        check_image_batch(x)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        params = self.sample_parameters(x.shape[0], generator, x.device, x.dtype)
        return self.apply(x + self.additive_sigma * noise, params)

    def perturb_(self, out: torch.Tensor, x: torch.Tensor, generator: torch.Generator) -> None:
        if not self.on_grid:
            super().perturb_(out, x, generator)
            return
        check_image_batch(out)
        # The same draws as perturb: pixel noise, then the parameters.
        out.normal_(generator=generator).mul_(self.additive_sigma).add_(x)
        params = self.sample_parameters(out.shape[0], generator, out.device, out.dtype)
        out.copy_(self.apply(out, params))

    def grid(self) -> torch.Tensor:
        """The K parameter values certified (odd K, symmetric, 0 included), float64."""
        half = math.ceil(self.input_range / self.grid_step - 1e-9)
        # i · (range/half): exactly 0 in the middle and exactly symmetric (linspace is neither:
        # its middle point can be −5.6e-16); the ends kept inside the range
        points = torch.arange(-half, half + 1, dtype=torch.float64) * (self.input_range / half)
        return points.clamp(-self.input_range, self.input_range)

    def largest_radius(self, p_lower: float, dim: int) -> float:
        if self.on_grid:  # a grid certificate covers at most the grid's range
            return self.input_range
        return super().largest_radius(p_lower, dim)

    @abc.abstractmethod
    def speed_bound(self, x: torch.Tensor) -> float:
        """L with ‖T(x, a) − T(x, b)‖₂ ≤ L |a − b| for a, b in [−input_range, input_range]
        (one image (C, H, W))."""

    def config(self) -> dict[str, Any]:
        config = super().config()
        if self.on_grid:
            config.update(
                additive_sigma=self.additive_sigma,
                input_range=self.input_range,
                grid_step=self.grid_step,
            )
        return config


class Rotation(_Interpolating):
    """Rotation by ε degrees about the image centre (content counter-clockwise as displayed).

    Args:
        degrees: standard deviation of the angle noise, in degrees (default 10).
        noise: ``"gaussian"`` or ``"uniform"`` (half-width σ√3).
        semantics: ``"parametric"`` (DeformRS) or ``"input"`` (grid certificate, bilinear only).
        interpolation, padding: how :func:`torch.nn.functional.grid_sample` resamples.
        additive_sigma, input_range, grid_step: the input-domain certificate's pixel noise, the
            angle range it covers (default ±30°) and its grid spacing (default 0.5°).
    """

    name: ClassVar[str] = "rotation"
    norm: ClassVar[str] = "rotation"
    units: ClassVar[str] = "degrees"
    default_range: ClassVar[float] = 30.0
    default_step: ClassVar[float] = 0.5

    scale_keyword: ClassVar[str] = "degrees"
    default_scale: ClassVar[float | None] = 10.0

    def __init__(
        self,
        degrees: float = 10.0,
        *,
        noise: str = "gaussian",
        semantics: str = "parametric",
        interpolation: str = "bilinear",
        padding: str = "zeros",
        additive_sigma: float = 0.25,
        input_range: float | None = None,
        grid_step: float | None = None,
    ) -> None:
        super().__init__(
            degrees,
            noise=noise,
            semantics=semantics,
            interpolation=interpolation,
            padding=padding,
            additive_sigma=additive_sigma,
            input_range=input_range,
            grid_step=grid_step,
        )

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        check_image_batch(x)
        theta = torch.deg2rad(params[:, 0].to(x.dtype))
        cos, sin = torch.cos(theta), torch.sin(theta)
        # Turning content by +θ on screen (v downwards) maps p to [[c, s], [−s, c]]·p, so an
        # output pixel samples the inverse (transposed) map.
        matrix = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        offset = torch.zeros(x.shape[0], 2, dtype=x.dtype, device=x.device)
        return sample_affine(
            x, matrix, offset, interpolation=self.interpolation, padding=self.padding
        )

    def speed_bound(self, x: torch.Tensor) -> float:
        # A pixel at distance r from the centre samples a point moving at r·π/180 px/degree.
        h, w = x.shape[-2:]
        return math.radians(1.0) * radial_extent(h, w) * interpolant_slope(x, self.padding)


class Scaling(_Interpolating):
    """Scaling by the factor 1 + ε about the image centre (ε > 0 magnifies).

    ``fraction`` is the standard deviation of ε (0.1 = 10 %, the default); factors below 0.01 are
    clamped. The input-domain certificate covers factors 1 ± input_range (default ±20 %,
    grid step 0.005) and needs input_range < 1.
    """

    name: ClassVar[str] = "scaling"
    norm: ClassVar[str] = "scaling"
    units: ClassVar[str] = "scale factor"
    default_range: ClassVar[float] = 0.2
    default_step: ClassVar[float] = 0.005
    max_range: ClassVar[float] = 1.0  # factor 1 − range must stay positive

    scale_keyword: ClassVar[str] = "fraction"
    default_scale: ClassVar[float | None] = 0.1

    def __init__(
        self,
        fraction: float = 0.1,
        *,
        noise: str = "gaussian",
        semantics: str = "parametric",
        interpolation: str = "bilinear",
        padding: str = "zeros",
        additive_sigma: float = 0.25,
        input_range: float | None = None,
        grid_step: float | None = None,
    ) -> None:
        super().__init__(
            fraction,
            noise=noise,
            semantics=semantics,
            interpolation=interpolation,
            padding=padding,
            additive_sigma=additive_sigma,
            input_range=input_range,
            grid_step=grid_step,
        )

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        check_image_batch(x)
        factor = (1.0 + params[:, 0].to(x.dtype)).clamp_min(MIN_SCALE)
        eye = torch.eye(2, dtype=x.dtype, device=x.device)
        matrix = eye[None] / factor[:, None, None]
        offset = torch.zeros(x.shape[0], 2, dtype=x.dtype, device=x.device)
        return sample_affine(
            x, matrix, offset, interpolation=self.interpolation, padding=self.padding
        )

    def speed_bound(self, x: torch.Tensor) -> float:
        # s(p) = p / (1 + φ) moves at |p| / (1 + φ)² ≤ |p| / (1 − range)² per unit of φ.
        h, w = x.shape[-2:]
        slowest = (1.0 - self.input_range) ** 2
        return radial_extent(h, w) * interpolant_slope(x, self.padding) / slowest


class Translation(_Resampled):
    """Translation by (t_u, t_v) pixels (content right and down).

    ``interpolation="fourier"`` (default) translates through the Fourier domain with circular
    padding, an exact group action (:func:`~rs_plugin.smoothings.transforms.fourier_translate`), so
    parametric and input-domain certificates coincide. Other interpolations resample with
    ``grid_sample`` and give parametric certificates only.
    """

    name: ClassVar[str] = "translation"
    norm: ClassVar[str] = "translation:l2"
    units: ClassVar[str] = "pixels"
    scale_keyword: ClassVar[str] = "pixels"
    default_scale: ClassVar[float | None] = 2.0

    def __init__(
        self,
        pixels: float = 2.0,
        *,
        noise: str = "gaussian",
        semantics: str = "parametric",
        interpolation: str = "fourier",
        padding: str = "circular",
    ) -> None:
        self.interpolation = check_choice(
            "interpolation", interpolation, ("fourier", *INTERPOLATIONS)
        )
        if self.interpolation == "fourier" and padding != "circular":
            raise RSValueError("padding", "'circular' with interpolation='fourier'", padding)
        SemanticSmoothing.__init__(self, pixels, noise=noise, semantics=semantics)
        self.padding = check_choice("padding", padding, PADDINGS)

    @property
    def composition(self) -> str:  # type: ignore[override]
        return "exact" if self.interpolation == "fourier" else "none"

    @property
    def num_parameters(self) -> int:
        return 2

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        check_image_batch(x)
        if self.interpolation == "fourier":
            return fourier_translate(x, params)
        eye = torch.eye(2, dtype=x.dtype, device=x.device).expand(x.shape[0], 2, 2)
        return sample_affine(
            x, eye, -params.to(x.dtype), interpolation=self.interpolation, padding=self.padding
        )


class Affine(_Resampled):
    """General affine perturbation of the sampling map (DeformRS):
    s(p) = (I + [[a, b], [c, d]]) p + (e, f), six parameters with one ``scale`` (the matrix
    entries are unitless, e and f are pixels). Parametric certificates only."""

    name: ClassVar[str] = "affine"
    norm: ClassVar[str] = "affine:l2"
    units: ClassVar[str] = "matrix entries and pixels"
    scale_keyword: ClassVar[str] = "scale"  # mixed units: no default

    def __init__(
        self,
        scale: float | None = None,
        *,
        noise: str = "gaussian",
        semantics: str = "parametric",
        interpolation: str = "bilinear",
        padding: str = "zeros",
    ) -> None:
        super().__init__(
            scale, noise=noise, semantics=semantics, interpolation=interpolation, padding=padding
        )

    @property
    def num_parameters(self) -> int:
        return 6

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        check_image_batch(x)
        p = params.to(x.dtype)
        eye = torch.eye(2, dtype=x.dtype, device=x.device)
        matrix = eye[None] + p[:, :4].reshape(-1, 2, 2)
        return sample_affine(
            x, matrix, p[:, 4:], interpolation=self.interpolation, padding=self.padding
        )


class Deformation(_Resampled):
    """Flow-field deformation on the low-frequency DCT basis (DeformRS): the sampling grid is
    displaced by Σ_{k,l<K} c_kl cos(πk(i+½)/H) cos(πl(j+½)/W) per axis, 2K² coefficients in
    pixels (``frequencies`` = K; ``pixels`` is their standard deviation). Parametric
    certificates only."""

    name: ClassVar[str] = "deformation"
    norm: ClassVar[str] = "deformation:l2"
    units: ClassVar[str] = "pixels (DCT coefficients)"
    scale_keyword: ClassVar[str] = "pixels"  # no default: it depends on K and the image size

    def __init__(
        self,
        pixels: float | None = None,
        *,
        frequencies: int = 3,
        noise: str = "gaussian",
        semantics: str = "parametric",
        interpolation: str = "bilinear",
        padding: str = "zeros",
    ) -> None:
        super().__init__(
            pixels, noise=noise, semantics=semantics, interpolation=interpolation, padding=padding
        )
        self.frequencies = check_int("frequencies", frequencies, 1)

    @property
    def num_parameters(self) -> int:
        return 2 * self.frequencies**2

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        check_image_batch(x)
        h, w = x.shape[-2:]
        basis = dct_basis(h, w, self.frequencies, dtype=x.dtype, device=x.device)
        coefficients = params.to(x.dtype).view(-1, 2, self.frequencies**2)
        flow = torch.einsum("bak,khw->bahw", coefficients, basis)
        return sample_flow(x, flow, interpolation=self.interpolation, padding=self.padding)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "frequencies": self.frequencies}
