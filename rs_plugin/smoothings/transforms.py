"""Image transformations with per-sample parameters, on the tensors' device (no torchvision).

Every function maps a batch ``x`` of shape (B, C, H, W) and parameters of shape (B, k) to a
batch of the same shape, differentiably in ``x`` and in the parameters. Geometry is in pixels
about the image centre c = ((W − 1)/2, (H − 1)/2), with u to the right and v downwards; an output
pixel p takes the value of the input at a *sampling position* s(p), interpolated by
``torch.nn.functional.grid_sample`` (``interpolation``: bilinear, nearest or bicubic) with the
explicit ``padding`` outside the image (zeros, border, reflection or circular).

Conventions (content motion, as displayed):

* rotation by θ degrees turns the content counter-clockwise: s(p) = R(θ)ᵀ-style inverse map;
* scaling by factor 1 + φ magnifies the content about the centre: s(p) = p / (1 + φ);
* translation by (t_u, t_v) pixels moves the content right and down: s(p) = p − t;
* affine parameters (a, b, c, d, e, f) perturb the sampling map itself (as DeformRS does):
  s(p) = (I + [[a, b], [c, d]]) p + (e, f), with e, f in pixels;
* a deformation displaces the sampling grid by a flow field on a low-frequency DCT basis.

Only photometric transforms, Fourier translation and the parameter → sampling-map laws compose
exactly; interpolating transforms do not (T(T(x, a), b) ≠ T(x, a + b) pixel for pixel), which is
why the input-domain certificates of :mod:`rs_plugin.certification.grid` exist.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rs_plugin._validation import RSValueError

__all__ = [
    "INTERPOLATIONS",
    "PADDINGS",
    "affine_matrices",
    "blur",
    "brightness",
    "check_image_batch",
    "contrast",
    "dct_basis",
    "fourier_translate",
    "interpolant_slope",
    "radial_extent",
    "sample_affine",
    "sample_flow",
]

INTERPOLATIONS = ("bilinear", "nearest", "bicubic")
PADDINGS = ("zeros", "border", "reflection", "circular")
MIN_SCALE = 0.01  # scaling factors below this are clamped (the map 1/s would blow up)


def check_image_batch(x: torch.Tensor) -> None:
    """Transforms act on (B, C, H, W) floating-point batches."""
    if x.ndim != 4 or not torch.is_floating_point(x):
        raise RSValueError(
            "x", "a floating-point image batch of shape (B, C, H, W) for a semantic transform", x
        )


def _centre_scale(x: torch.Tensor) -> tuple[float, float]:
    # grid_sample's normalised coordinates (align_corners=False): n = 2u / W for a pixel at
    # centred position u, so the map from centred pixels to normalised is diag(2/W, 2/H).
    return 2.0 / x.shape[-1], 2.0 / x.shape[-2]


def _grid_sample(
    x: torch.Tensor, grid: torch.Tensor, interpolation: str, padding: str
) -> torch.Tensor:
    """grid_sample with normalised grid, adding circular padding (which it lacks)."""
    if padding != "circular":
        return F.grid_sample(x, grid, mode=interpolation, padding_mode=padding, align_corners=False)
    # Wrap positions into one period [-1, 1), then sample an image padded by two pixels of its
    # own opposite edges, so interpolation across the seam reads the wrapped neighbours.
    pad = 2
    wrapped = torch.remainder(grid + 1.0, 2.0) - 1.0
    padded = F.pad(x, (pad, pad, pad, pad), mode="circular")
    shrink = grid.new_tensor(
        [x.shape[-1] / (x.shape[-1] + 2 * pad), x.shape[-2] / (x.shape[-2] + 2 * pad)]
    )
    return F.grid_sample(
        padded, wrapped * shrink, mode=interpolation, padding_mode="zeros", align_corners=False
    )


def affine_matrices(matrix: torch.Tensor, offset: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``affine_grid`` thetas (B, 2, 3) for sampling maps s(p) = matrix·p + offset in centred
    pixel coordinates (matrix (B, 2, 2), offset (B, 2) in pixels)."""
    su, sv = _centre_scale(x)
    scale = matrix.new_tensor([su, sv])
    # theta = S · M · S⁻¹ with S = diag(2/W, 2/H): normalised in, normalised out.
    theta_m = matrix * scale[None, :, None] / scale[None, None, :]
    theta_t = offset * scale[None, :]
    return torch.cat([theta_m, theta_t[:, :, None]], dim=2)


def sample_affine(
    x: torch.Tensor,
    matrix: torch.Tensor,
    offset: torch.Tensor,
    *,
    interpolation: str,
    padding: str,
) -> torch.Tensor:
    """Resample ``x`` at s(p) = matrix·p + offset (centred pixel coordinates) per sample."""
    theta = affine_matrices(matrix.to(x.dtype), offset.to(x.dtype), x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return _grid_sample(x, grid, interpolation, padding)


def dct_basis(
    height: int, width: int, frequencies: int, *, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The (K², H, W) low-frequency DCT-II basis cos(π k (i + ½)/H) · cos(π l (j + ½)/W),
    0 ≤ k, l < K, each with peak value 1 (so a coefficient is a displacement in pixels)."""
    rows = torch.arange(height, dtype=dtype, device=device) + 0.5
    cols = torch.arange(width, dtype=dtype, device=device) + 0.5
    k = torch.arange(frequencies, dtype=dtype, device=device)
    cos_rows = torch.cos(math.pi * k[:, None] * rows[None, :] / height)  # (K, H)
    cos_cols = torch.cos(math.pi * k[:, None] * cols[None, :] / width)  # (K, W)
    return (cos_rows[:, None, :, None] * cos_cols[None, :, None, :]).reshape(
        frequencies * frequencies, height, width
    )


def sample_flow(
    x: torch.Tensor, flow: torch.Tensor, *, interpolation: str, padding: str
) -> torch.Tensor:
    """Resample ``x`` at s(p) = p + flow(p); ``flow`` is (B, 2, H, W) in pixels (u, v)."""
    b, _, h, w = x.shape
    identity = torch.eye(2, 3, dtype=x.dtype, device=x.device).expand(b, 2, 3)
    grid = F.affine_grid(identity, [b, 1, h, w], align_corners=False)
    su, sv = _centre_scale(x)
    shift = torch.stack([flow[:, 0] * su, flow[:, 1] * sv], dim=-1)
    return _grid_sample(x, grid + shift, interpolation, padding)


def fourier_translate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Circular translation by real (t_u, t_v) pixels per sample, through the Fourier domain.

    Each frequency pair is multiplied by the phase e^{−2πi(k t_u / W + l t_v / H)}; the Nyquist
    rows/columns of even sizes are left unchanged (their phase would make the image complex).
    This is an exact action of the translation group: T(T(x, a), b) = T(x, a + b) and
    T(x, 0) = x, up to floating-point rounding; integer shifts equal ``torch.roll`` except on
    the (usually negligible) Nyquist components of even sizes.
    """
    h, w = x.shape[-2:]
    spectrum = torch.fft.fft2(x if x.dtype == torch.float64 else x.float())
    real = spectrum.real.dtype
    fu = torch.fft.fftfreq(w, device=x.device, dtype=real)
    fv = torch.fft.fftfreq(h, device=x.device, dtype=real)
    if w % 2 == 0:
        fu[w // 2] = 0.0
    if h % 2 == 0:
        fv[h // 2] = 0.0
    t = shift.to(real)
    angle = (
        -2.0
        * math.pi
        * (t[:, 0, None, None] * fu[None, None, :] + t[:, 1, None, None] * fv[None, :, None])
    )
    phase = torch.polar(torch.ones_like(angle), angle)[:, None]
    return torch.fft.ifft2(spectrum * phase).real.to(x.dtype)


def brightness(
    x: torch.Tensor, shift: torch.Tensor, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """x + b per sample (no clipping, so shifts compose exactly: b₁ then b₂ is b₁ + b₂);
    written into ``out`` when given (x may then be one image broadcast over the batch)."""
    return torch.add(x, shift.to(x.dtype).view(-1, *([1] * (x.ndim - 1))), out=out)


def contrast(
    x: torch.Tensor, log_factor: torch.Tensor, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """x · e^c per sample: c is the natural log of the contrast factor (composes as c₁ + c₂);
    written into ``out`` when given (x may then be one image broadcast over the batch)."""
    return torch.mul(x, torch.exp(log_factor.to(x.dtype)).view(-1, *([1] * (x.ndim - 1))), out=out)


_TORCH_PAD = {
    "zeros": "constant",
    "border": "replicate",
    "reflection": "reflect",
    "circular": "circular",
}


def blur(x: torch.Tensor, std: torch.Tensor, *, padding: str) -> torch.Tensor:
    """Separable Gaussian blur with standard deviation |s| pixels per sample (s = 0: identity).

    Each kernel has half-width ⌈3|s|⌉ and is renormalised to sum 1.
    """
    b, c, h, w = x.shape
    s = std.to(x.dtype).abs()
    half = math.ceil(3.0 * float(s.detach().max())) if b else 0
    if half == 0:
        return x.clone()
    taps = torch.arange(-half, half + 1, dtype=x.dtype, device=x.device)
    safe = s.clamp_min(1e-6)[:, None]
    # Each sample's kernel stops at its own ⌈3|s|⌉, so it does not depend on the batch.
    reach = torch.ceil(3.0 * s.detach())[:, None]
    kernel = torch.exp(-0.5 * (taps[None, :] / safe) ** 2) * (taps[None, :].abs() <= reach)
    kernel = torch.where(s[:, None] > 0, kernel, (taps[None, :] == 0).to(x.dtype))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    kernel = kernel.repeat_interleave(c, dim=0)  # (B·C, taps)
    if padding not in _TORCH_PAD:
        raise RSValueError("padding", f"one of {PADDINGS}", padding)
    mode = _TORCH_PAD[padding]
    if mode == "reflect" and half >= min(h, w):
        mode = "replicate"  # reflection needs the kernel narrower than the image
    flat = x.reshape(1, b * c, h, w)
    flat = F.pad(flat, (half, half, 0, 0), mode=mode)
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=b * c)
    flat = F.pad(flat, (0, 0, half, half), mode=mode)
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=b * c)
    return flat.reshape(b, c, h, w)


def interpolant_slope(x: torch.Tensor, padding: str) -> float:
    """A bound on the gradient norm of the bilinear interpolant of one image (C, H, W), summed
    over channels in quadrature: sqrt(Σ_c (D_u,c² + D_v,c²)), where D is the largest difference
    of neighbouring pixels, the padding included (inside a bilinear cell each partial
    derivative is a convex combination of two such differences)."""
    mode = _TORCH_PAD[padding]
    padded = F.pad(x[None], (1, 1, 1, 1), mode=mode)[0]
    du = (padded[..., :, 1:] - padded[..., :, :-1]).abs().flatten(1).amax(dim=1)
    dv = (padded[..., 1:, :] - padded[..., :-1, :]).abs().flatten(1).amax(dim=1)
    return float(torch.sqrt((du.double() ** 2 + dv.double() ** 2).sum()))


def radial_extent(height: int, width: int) -> float:
    """sqrt(Σ_p |p − c|²) over the pixels of an H × W image (centred pixel coordinates)."""
    u = torch.arange(width, dtype=torch.float64) - (width - 1) / 2
    v = torch.arange(height, dtype=torch.float64) - (height - 1) / 2
    return float(torch.sqrt(height * (u**2).sum() + width * (v**2).sum()))
