"""From a lower bound on the top-class probability to a certificate's record and its radii.

:func:`pack_certificates` is the record every p_lower-based certifier issues (CERTIFY's
abstention rule and the smoothing's radii, completed to every ℓp norm); :func:`sampling_cap` is
the largest radius n samples can certify at level α, the bound the command line's summaries and
the audit's checks of a certificate file use.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rs_plugin.certification.certificates import Certificates
from rs_plugin.certification.stats import round_down, round_lower
from rs_plugin.smoothings.base import Smoothing
from rs_plugin.smoothings.norms import complete_radii

__all__ = ["pack_certificates", "sampling_cap"]


def pack_certificates(
    smoothing: Smoothing,
    keys: Sequence[int],
    top: torch.Tensor,
    p_lower: torch.Tensor,
    selection: torch.Tensor,
    estimation: torch.Tensor,
    n0: int,
    n: int,
    alpha: float,
    *,
    dim: int,
    extra: dict[str, torch.Tensor] | None = None,
) -> Certificates:
    """The record of CERTIFY (Cohen et al. 2019) for N inputs of ``dim`` coordinates.

    ``top`` (N,) is each input's class selected on the ``selection`` counts (N, C), ``p_lower``
    (N,) a lower confidence bound on its probability holding with probability at least 1 − α,
    from the ``estimation`` counts (N, C). The record abstains (prediction −1, radius 0) when
    that bound, under the law the certificate is about
    (:meth:`~rs_plugin.Smoothing.target_lower_bound`), is at most 1/2 (at exactly 1/2 another
    class may tie with the selected one, so g(x) is not determined); otherwise its radii are
    the smoothing's (:meth:`~rs_plugin.Smoothing.certified_radii`, completed to every ℓp
    norm) rounded down by :data:`~rs_plugin.certification.stats.ROUNDING_MARGIN` (they are
    computed in float64 with errors of a few ulps either way), and ``extra``
    adds per-input values (shape (N,)) to the smoothing's own extras (whose floating values are
    lowered by the same margin of their size).
    """
    abstain = smoothing.target_lower_bound(p_lower, dim) <= 0.5
    direct = smoothing.certified_radii(p_lower, dim)
    radii = {
        norm: torch.where(abstain, torch.zeros_like(r), round_down(r.to(torch.float64)))
        for norm, r in complete_radii(direct, dim).items()
    }
    return Certificates(
        index=torch.tensor(list(keys), dtype=torch.int64),
        prediction=torch.where(abstain, torch.full_like(top, -1), top),
        radius=radii[smoothing.norm],
        p_lower=p_lower,
        count=estimation.gather(1, top[:, None])[:, 0],
        counts_selection=selection,
        counts_estimation=estimation,
        norm=smoothing.norm,
        n0=n0,
        n=n,
        alpha=alpha,
        radii=radii,
        certified_norms=tuple(direct),
        extra={**_lowered(smoothing.certificate_extras(p_lower, dim)), **(extra or {})},
        semantics=smoothing.semantics_label,
    )


def _lowered(extras: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A smoothing's extras (radii of parts of a certificate, a proxy radius, a log-volume)
    computed in float64, each moved down by ROUNDING_MARGIN of its size, as the radii are."""
    return {
        key: round_lower(value) if value.is_floating_point() else value
        for key, value in extras.items()
    }


def sampling_cap(smoothing: Smoothing, alpha: float, n: int, dim: int) -> float:
    """The largest radius (in the smoothing's norm) n samples can certify at level α.

    All n votes for one class give the one-sided Clopper–Pearson bound p_lower = α^{1/n}, the
    largest possible; the cap is the smoothing's radius there (σΦ⁻¹(α^{1/n}) for Gaussian noise;
    a grid certificate covers at most its grid's range, see
    :meth:`~rs_plugin.Smoothing.largest_radius`). A record with a larger radius was not issued
    by a sound CERTIFY with these settings. With no samples (n = 0, a sequential record that
    stopped before estimating) nothing can be certified: the cap is 0.
    """
    if n <= 0:
        return 0.0
    return smoothing.largest_radius(alpha ** (1.0 / n), dim)
