"""Does the model read the low-order bits of its input? The floating-point counterexample's idea
(Voráček & Hein, "Sound randomized smoothing in floating-point arithmetic", ICLR 2023) run
against the user's model.

A certificate of the float mode assumes the model sees the real sum x + ε. A model whose
prediction depends on the last bits of its input can tell the rounding pattern of x + ε around
one input from that around another, and so get certificates that do not hold
(``examples/fp_counterexample.py``). This probe draws noisy samples of the audited inputs with the
float-mode noise and counts how often the model's prediction changes when every coordinate of a
sample changes in its low-order bits only:

* ``ulp_up`` / ``ulp_down``: one unit in the last place up or down (``torch.nextafter``);
* ``low_bits``: the lowest 8 of float32's 24 significand bits cleared (what an input a few
  powers of two larger leaves of a sum's low bits).

A sound model changes its prediction only at near-ties of its logits, a fraction of order 10⁻⁴
at most; a model that reads rounding residues changes it on a large fraction. A fraction above
:data:`FLAG_FRACTION` is reported as a finding. The sound mode (:mod:`rs_plugin.smoothings.sound`)
certifies such a model correctly; the float mode does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from rs_plugin.auditing.diagnostics import Diagnostic
from rs_plugin.certification.model_runner import model_dtype, sampling_dtype
from rs_plugin.smoothings.base import Smoothing

__all__ = ["FLAG_FRACTION", "FloatingPointProbe", "probe_floating_point"]

FLAG_FRACTION = 0.01
_LOW_BITS = 8


@dataclass(frozen=True)
class FloatingPointProbe:
    """The fractions of noisy samples whose prediction changed, per low-bit change."""

    samples: int
    fractions: dict[str, float] = field(default_factory=dict)

    @property
    def largest(self) -> float:
        return max(self.fractions.values(), default=0.0)

    @property
    def flagged(self) -> bool:
        return self.largest > FLAG_FRACTION

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "fractions": self.fractions,
            "flag_fraction": FLAG_FRACTION,
            "flagged": self.flagged,
        }

    def diagnostic(self) -> Diagnostic | None:
        """The finding for the report, or None when the model passed."""
        if not self.flagged:
            return None
        shown = ", ".join(f"{k} {v:.1%}" for k, v in self.fractions.items())
        return Diagnostic(
            "floating-point sensitivity",
            f"the model's prediction changed under a change of the last bits of its input on "
            f"{self.largest:.1%} of {self.samples} noisy samples ({shown}): it can read the "
            "rounding of x + noise, and float-mode certificates of it may be false",
            "certify in the sound mode (rs-plugin certify --sound --grid STEP, or "
            "rs_plugin.SoundGaussian), whose certificates hold whatever the model reads",
        )


def _clear_low_bits(z: torch.Tensor) -> torch.Tensor:
    bits = z.to(torch.float32).contiguous().view(torch.int32)
    mask = ~((1 << _LOW_BITS) - 1)
    return bits.bitwise_and(mask).view(torch.float32).to(z.dtype)


def probe_floating_point(
    model: nn.Module,
    smoothing: Smoothing,
    x: torch.Tensor,
    *,
    samples_per_input: int = 64,
    batch_size: int = 512,
    seed: int = 0,
) -> FloatingPointProbe:
    """Probe ``model`` on ``samples_per_input`` float-mode noisy samples of each input of ``x``
    (N, ...), on the model's device; the noise is ``smoothing``'s, or for a sound smoothing the
    continuous family's it rounds (``smoothing.continuous``): the float mode's."""
    noise = getattr(smoothing, "continuous", smoothing)
    device = next((p.device for p in model.parameters()), x.device)
    narrow = model_dtype(model)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    changed = {"ulp_up": 0, "ulp_down": 0, "low_bits": 0}
    total = 0

    def vote(batch: torch.Tensor) -> torch.Tensor:  # on a copy, in the model's dtype
        return model(batch.to(narrow, copy=True)).argmax(dim=1)

    # Drawn in the sampling dtype and cast for the model, as the certifiers' vote runner does.
    dtype = sampling_dtype(model, x.dtype)
    repeated = x.to(device=device, dtype=dtype).repeat_interleave(samples_per_input, dim=0)
    with torch.inference_mode():
        for start in range(0, repeated.shape[0], batch_size):
            z = noise.perturb(repeated[start : start + batch_size], generator)
            # The variants are made before any forward, and every forward gets its own copy:
            # a model that writes its input can neither spoil them nor pass itself a message.
            variants = {
                "ulp_up": torch.nextafter(z, torch.full_like(z, float("inf"))),
                "ulp_down": torch.nextafter(z, torch.full_like(z, float("-inf"))),
                "low_bits": _clear_low_bits(z),
            }
            base = vote(z)
            for name, variant in variants.items():
                changed[name] += int((vote(variant) != base).sum())
            total += z.shape[0]
    fractions = {name: count / max(total, 1) for name, count in changed.items()}
    return FloatingPointProbe(samples=total, fractions=fractions)
