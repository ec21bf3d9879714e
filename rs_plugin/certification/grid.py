"""Input-domain certificates for interpolating transforms (rotation, scaling), after TSS.

The statement certified: with probability at least 1 − α over the sampling, for every parameter
|φ| ≤ R, the smoothed classifier G(z) = argmax_c P[f(T(z + η, ε)) = c] (η pixel noise of
``additive_sigma``, ε the parameter noise) predicts c at z = T(x, φ), *the image the model
receives* as :meth:`apply` computes it, interpolation and padding included. Unlike the
parametric certificate, nothing assumes T(T(x, φ), ε) = T(x, φ + ε).

Why it holds (Li et al. 2021's idea of sampling the parameter range and absorbing the
interpolation error with additive noise; the bound here is our own):

1. For each fixed ε, z ↦ P_η[f(T(z + η, ε)) = c] is a Gaussian smoothing of the classifier
   f ∘ T(·, ε), so z ↦ Φ⁻¹(P[f(T(z + η, ε)) = c]) is 1/σ_a-Lipschitz (Salman et al. 2019) and,
   averaging over ε (Cohen et al.'s theorem holds for randomised base classifiers), G is
   certified around any image z_i within the ℓ2 radius r_i = σ_a Φ⁻¹(p_lower(z_i)).
2. CERTIFY runs at K grid images z_i = T(x, φ_i), φ_i spaced ``grid_step`` over
   [−input_range, input_range] (0 included), each at level α/K: all K bounds hold at once with
   probability at least 1 − α (union bound).
3. Between grid points, T(x, φ) is sampled on a fine grid of spacing δ, and
   ‖T(x, φ) − T(x, φ')‖₂ ≤ L |φ − φ'| with L from :meth:`speed_bound` (the bilinear interpolant's
   slope times how fast sampling positions move), so every φ in a fine cell [φ_j, φ_j+1] inside
   grid interval i satisfies ‖T(x, φ) − z_i‖ ≤ max(‖T(x, φ_j) − z_i‖, ‖T(x, φ_j+1) − z_i‖) + Lδ/2.
   The cell is covered when that bound is below r_i (or r_i+1 for z_i+1) and the grid point's
   class is the class c certified at φ = 0.
4. R is the largest range symmetric about 0 whose cells are all covered. Records carry the
   largest distance bound used (``interpolation_bound``), L (``lipschitz``) and K.

The cost is K CERTIFY runs per input; ``grid_step`` trades it against how far the additive
radius must reach between grid points.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from rs_plugin._validation import RSValueError
from rs_plugin.certification.base import Certifier
from rs_plugin.certification.certificates import Certificates, Predictions
from rs_plugin.certification.classifier import VOTE_OPTIONS, SmoothedClassifier
from rs_plugin.certification.engine import STREAM_ESTIMATION, STREAM_SELECTION, stream_counts
from rs_plugin.certification.stats import clopper_pearson_lower, round_down
from rs_plugin.smoothings.base import Smoothing

if TYPE_CHECKING:
    from rs_plugin.smoothings.geometric import _Interpolating

__all__ = ["Cohen", "GridCertifier", "cohen_certifier", "covered_range", "rounding_allowance"]

SLACK = 0.02  # Lipschitz slack per fine cell, as a fraction of additive_sigma
MAX_FINE = 2048  # fine points per grid interval at most (a larger slack is still sound)
ROUNDING_ULPS = 16  # rounding allowance per pixel, in eps of the sampling dtype times the scale
POSITION_PIXELS = 32  # the allowance grows by a share per this many pixels of the image's side
_INPUTS_PER_CALL = 8


def covered_range(
    smoothing: _Interpolating,
    x: torch.Tensor,
    classes: torch.Tensor,
    l2_radii: torch.Tensor,
) -> tuple[float, float, float]:
    """Step 3–4 above for one image x (C, H, W): (R, interpolation_bound, L).

    ``classes`` (K,) are the grid points' certified classes (−1: abstain) and ``l2_radii`` (K,)
    their additive ℓ2 radii (only those of the centre's class are used). R = 0 when the centre
    abstains. ``x`` is in the dtype images are transformed in (the sampling dtype; it sets the
    rounding allowance).
    """
    grid = smoothing.grid()
    k = grid.shape[0]
    centre = k // 2
    lipschitz = smoothing.speed_bound(x.double())
    target = int(classes[centre])
    if target < 0:
        return 0.0, math.nan, lipschitz
    usable = torch.where(
        classes == target, l2_radii.double(), torch.full_like(l2_radii.double(), -1.0)
    )
    rounding = rounding_allowance(x)
    step = float((grid[1:] - grid[:-1]).max())
    fine = max(
        1, min(MAX_FINE, math.ceil(lipschitz * step / (2.0 * SLACK * smoothing.additive_sigma)))
    )
    x64 = x.double()[None]
    z = smoothing.apply(x64.expand(k, *x.shape), grid[:, None])
    covered = torch.zeros(k - 1, fine, dtype=torch.bool)
    bounds = torch.full((k - 1, fine), math.inf, dtype=torch.float64)
    offsets = torch.linspace(0.0, 1.0, fine + 1, dtype=torch.float64)
    # the fine points checked, cell ends shared exactly with the next interval
    phis = grid[:-1, None] + (grid[1:] - grid[:-1])[:, None] * offsets
    phis[:, 0], phis[:, -1] = grid[:-1], grid[1:]
    with torch.no_grad():
        for i in range(k - 1):
            if usable[i] <= 0 and usable[i + 1] <= 0:
                continue
            images = smoothing.apply(x64.expand(fine + 1, *x.shape), phis[i, :, None]).flatten(1)
            # Lipschitz slack from the widest cell actually checked
            slack = lipschitz * float((phis[i, 1:] - phis[i, :-1]).max()) / 2.0 + rounding
            for end in (i, i + 1):
                if usable[end] <= 0:
                    continue
                distance = torch.linalg.vector_norm(images - z[end].flatten(), dim=1)
                cell = torch.maximum(distance[:-1], distance[1:]) + slack
                better = cell < bounds[i]
                bounds[i] = torch.where(better, cell, bounds[i])
                covered[i] |= cell < usable[end]
    flat = covered.flatten()
    half = centre * fine  # fine cells on each side of 0
    right = flat[half:]
    left = flat[:half].flip(0)
    reach = min(_run_length(right), _run_length(left))
    # R from the parameters actually checked (the grid's centre is exactly 0): the ends of the
    # covered runs, the nearer one, rounded down
    ends = phis[:, 1:].flatten()  # the right end of each fine cell, in order
    right_end = float(ends[half + reach - 1]) if reach else 0.0
    left_end = -float(phis[:, :-1].flatten()[half - reach]) if reach else 0.0
    radius = float(round_down(torch.tensor(min(right_end, left_end), dtype=torch.float64)))
    used = torch.cat(
        [bounds.flatten()[half : half + reach], bounds.flatten()[:half].flip(0)[:reach]]
    )
    bound = float(used.max()) if reach else math.nan
    return radius, bound, lipschitz


def rounding_allowance(x: torch.Tensor) -> float:
    """A bound on ‖T(x, φ) computed in x's dtype − T(x, φ) computed in float64‖₂ (one image).

    The check runs in float64; the images the model (and anyone else) computes in x's dtype
    differ from it by a few eps of the image's scale per pixel, and by the sampling positions'
    own rounding (eps times the image's side, in pixels) times the interpolant's slope: on
    random textures the latter reached 1.5 times the per-pixel term alone at 448 px, hence the
    side's share.
    """
    scale = 1.0 + float(x.abs().max())
    side = max(x.shape[-2:]) if x.ndim >= 2 else 1
    per_pixel = ROUNDING_ULPS * torch.finfo(x.dtype).eps * scale
    return per_pixel * math.sqrt(x.numel()) * (1.0 + side / POSITION_PIXELS)


def _run_length(flags: torch.Tensor) -> int:
    """Number of leading True values."""
    misses = (~flags).nonzero()
    return int(misses[0]) if misses.numel() else int(flags.numel())


class GridCertifier(Certifier):
    """Input-domain certificates of interpolating transforms (module docstring): CERTIFY of
    Cohen et al. at every grid image T(x, φ_i), then the range of φ those certificates cover.

    The smoothed classifier is the :class:`~rs_plugin.SmoothedClassifier` of ``smoothing``;
    ``predict`` and the soft ``forward`` are its own. ``certify`` returns records whose
    ``radius`` is the certified range R (in the transform's parameter units), with
    ``interpolation_bound``, ``lipschitz`` and ``grid_points`` in ``extra``.

    Args:
        model, smoothing, num_classes: as for :class:`~rs_plugin.SmoothedClassifier`;
            ``smoothing`` must certify on a grid (``smoothing.on_grid``: rotation or scaling
            with ``semantics="input"``).
        clip_values, precision, channels_last, compile: as for
            :class:`~rs_plugin.SmoothedClassifier`.

    Registered as the certifier ``grid``.
    """

    options: ClassVar[Mapping[str, str]] = VOTE_OPTIONS

    def __init__(
        self,
        model: nn.Module,
        smoothing: Smoothing,
        num_classes: int,
        *,
        clip_values: tuple[float, float] | None = None,
        precision: str = "float32",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        if not isinstance(smoothing, Smoothing) or not smoothing.on_grid:
            raise RSValueError(
                "smoothing",
                "an interpolating transform with semantics='input' (Rotation or Scaling); "
                "other smoothings certify with SmoothedClassifier",
                smoothing,
            )
        self.classifier = SmoothedClassifier(
            model,
            smoothing,
            num_classes,
            clip_values=clip_values,
            precision=precision,
            channels_last=channels_last,
            compile=compile,
        )
        self.model = model
        self.smoothing = smoothing
        self.num_classes = self.classifier.num_classes

    def iter_certify(
        self,
        x: torch.Tensor | np.ndarray,
        *,
        n0: int = 100,
        n: int = 100_000,
        alpha: float = 0.001,
        batch_size: int | str = "auto",
        seed: int = 0,
        keys: Sequence[int] | None = None,
    ) -> Iterator[Certificates]:
        """Certify every input of ``x`` (N, C, H, W), yielding the certificates of a few inputs
        at a time: with probability at least 1 − α over the sampling, the smoothed classifier
        predicts ``prediction`` at T(x, φ) for every |φ| ≤ ``radius``."""
        n0, n, alpha = self.classifier.check_sizes(n0, n, alpha)
        x_t, key_list = self.classifier.prepare(x, batch_size=batch_size, seed=seed, keys=keys)
        yield from _grid_certify(
            self.classifier,
            x_t,
            key_list,
            n0=n0,
            n=n,
            alpha=alpha,
            batch_size=batch_size,
            seed=seed,
        )

    def predict(self, x: torch.Tensor | np.ndarray, **settings: Any) -> Predictions:
        """PREDICT of the smoothed classifier at ``x`` (see :meth:`SmoothedClassifier.predict`)."""
        return self.classifier.predict(x, **settings)


def cohen_certifier(
    model: nn.Module, smoothing: Smoothing, num_classes: int, **options: Any
) -> SmoothedClassifier | GridCertifier:
    """Cohen et al.'s CERTIFY for ``smoothing``: on the input itself, or, for a transform
    certified in the input domain (``smoothing.on_grid``), on a grid of transformed inputs."""
    if isinstance(smoothing, Smoothing) and smoothing.on_grid:
        return GridCertifier(model, smoothing, num_classes, **options)
    return SmoothedClassifier(model, smoothing, num_classes, **options)


class Cohen(SmoothedClassifier):
    """The certifier registered as ``cohen``: Cohen et al.'s CERTIFY on the input itself, or,
    for a transform certified in the input domain (``smoothing.on_grid``), on a grid of
    transformed inputs (:meth:`build` returns a :class:`GridCertifier` then)."""

    @classmethod
    def build(
        cls, model: nn.Module, smoothing: Smoothing, num_classes: int, **options: Any
    ) -> Certifier:
        return cohen_certifier(model, smoothing, num_classes, **options)


def _grid_certify(
    smoothed: SmoothedClassifier,
    x: torch.Tensor,
    keys: Sequence[int],
    *,
    n0: int,
    n: int,
    alpha: float,
    batch_size: int | str,
    seed: int,
) -> Iterator[Certificates]:
    """CERTIFY on the grid of transformed images of each input, then the covered range."""
    smoothing: _Interpolating = smoothed.smoothing  # type: ignore[assignment]
    grid = smoothing.grid()
    k = grid.shape[0]
    level = alpha / k
    for start in range(0, x.shape[0], _INPUTS_PER_CALL):
        part = x[start : start + _INPUTS_PER_CALL]
        part_keys = [int(key) for key in keys[start : start + _INPUTS_PER_CALL]]
        with torch.no_grad():  # rounded once from the float64 images the coverage check uses
            images = smoothing.apply(
                part.double().repeat_interleave(k, dim=0), grid.repeat(part.shape[0])[:, None]
            ).to(part.dtype)
        counts = torch.zeros(images.shape[0], 2, smoothed.num_classes, dtype=torch.int64)
        for rows, done in stream_counts(
            smoothed.runner,
            smoothing,
            images,
            [(STREAM_SELECTION, n0), (STREAM_ESTIMATION, n)],
            num_classes=smoothed.num_classes,
            batch_size=batch_size,
            seed=seed,
            keys=[key * k + i for key in part_keys for i in range(k)],
        ):
            counts[rows] = done
        top = counts[:, 0].argmax(dim=1)
        count = counts[:, 1].gather(1, top[:, None])[:, 0]
        p_lower = torch.from_numpy(clopper_pearson_lower(count.numpy(), n, level))
        radii_l2 = round_down(
            smoothing.additive_sigma * torch.special.ndtri(p_lower.clamp(0.0, 1.0))
        )
        classes = torch.where(p_lower > 0.5, top, torch.full_like(top, -1))
        results = [
            covered_range(
                smoothing,
                part[j].cpu(),
                classes[j * k : (j + 1) * k],
                radii_l2[j * k : (j + 1) * k],
            )
            for j in range(part.shape[0])
        ]
        centres = torch.arange(part.shape[0]) * k + k // 2
        radius = torch.tensor([r for r, _, _ in results], dtype=torch.float64)
        prediction = classes[centres]
        yield Certificates(
            index=torch.tensor(part_keys, dtype=torch.int64),
            prediction=prediction,
            radius=radius,
            p_lower=p_lower[centres],
            count=count[centres],
            counts_selection=counts[centres, 0],
            counts_estimation=counts[centres, 1],
            norm=smoothing.norm,
            n0=n0,
            n=n,
            alpha=alpha,
            radii={smoothing.norm: radius},
            certified_norms=(smoothing.norm,),
            extra={
                "interpolation_bound": torch.tensor(
                    [b for _, b, _ in results], dtype=torch.float64
                ),
                "lipschitz": torch.tensor([lip for _, _, lip in results], dtype=torch.float64),
                "grid_points": torch.full((part.shape[0],), k, dtype=torch.int64),
            },
            semantics="input",
        )
