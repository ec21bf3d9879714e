"""Checks run before an audit attacks anything, after AutoAttack's (Croce & Hein 2020) flags.

Each finding is a :class:`Diagnostic` (stored in the report) and an :class:`RSWarning` whose
message says what was seen and how to fix it. None of them stops the audit: a certificate is
checked by PREDICT whatever the attacks could do, but a weak attack makes "no violation found"
weak evidence, and the report says so.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import torch

from rs_plugin._validation import RSValueError, RSWarning
from rs_plugin.certification.classifier import SmoothedClassifier
from rs_plugin.certification.model_runner import model_dtype

__all__ = ["Diagnostic", "diagnose", "warn"]

# Inputs the checks look at (enough to see a problem, cheap next to the attacks).
_PROBE = 16


@dataclass(frozen=True)
class Diagnostic:
    """One finding: ``check`` (its name), what was seen, and how to fix it."""

    check: str
    finding: str
    fix: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _as_model_input(smoothed: SmoothedClassifier, x: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` in the model's dtype, as the vote runner feeds it (the model never holds
    the audited inputs)."""
    return x.to(model_dtype(smoothed.model), copy=True)


def _non_determinism(smoothed: SmoothedClassifier, x: torch.Tensor) -> Diagnostic | None:
    with torch.no_grad():
        first = smoothed.model(_as_model_input(smoothed, x))
        second = smoothed.model(_as_model_input(smoothed, x))
    gap = float((first - second).abs().max())
    if gap > 1e-5 * (1.0 + float(first.abs().max())):
        return Diagnostic(
            "non-determinism",
            f"the base model gave different outputs for the same inputs (max difference "
            f"{gap:.3g}): dropout or batch-norm in training mode, or a stochastic layer",
            "call model.eval() and remove randomness from the model's forward; the smoothing "
            "supplies the noise, and gradient attacks on a random function are unreliable",
        )
    return None


def _probabilities(smoothed: SmoothedClassifier, x: torch.Tensor) -> Diagnostic | None:
    with torch.no_grad():
        out = smoothed.model(_as_model_input(smoothed, x))
    sums = out.sum(dim=1)
    if bool((out >= 0).all() and (out <= 1).all() and (sums - 1).abs().max() < 1e-4):
        return Diagnostic(
            "probability outputs",
            "the base model's rows are in [0, 1] and sum to 1: it outputs probabilities",
            "drop the final softmax so the model returns logits; the soft smoothed classifier "
            "applies softmax itself, and softmax of probabilities flattens every gradient",
        )
    return None


NO_GRADIENTS = "no gradients"


def _zero_gradients(
    smoothed: SmoothedClassifier, x: torch.Tensor, y: torch.Tensor
) -> Diagnostic | None:
    probe = x.clone().requires_grad_(True)
    probs = smoothed(probe)
    loss = -torch.log(probs.gather(1, y[:, None]).clamp_min(1e-20)).sum()
    if not loss.requires_grad:  # the model detached its output (no_grad, numpy, a lookup)
        return Diagnostic(
            NO_GRADIENTS,
            "the model's output has no gradient with respect to its input at all (computed "
            "under torch.no_grad, detached, or outside torch)",
            "compute the forward pass in differentiable torch operations, or audit with "
            "attacks that need no gradients",
        )
    (grad,) = torch.autograd.grad(loss, probe, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(probe)
    zero = int((grad.flatten(1).abs().sum(dim=1) == 0).sum())
    if zero:
        return Diagnostic(
            "zero gradients",
            f"{zero} of {x.shape[0]} inputs have an all-zero gradient of the soft smoothed "
            "classifier's loss (saturated softmax or a non-differentiable model)",
            "raise num_noise_samples, return unsaturated logits, or remove non-differentiable "
            "steps (argmax, rounding, detach); gradient attacks (pgd, autoattack) find nothing "
            "on these inputs, so rely on transfer and black-box attacks for them",
        )
    return None


def _class_count(
    smoothed: SmoothedClassifier,
    x: torch.Tensor,
    labels: torch.Tensor,
    predictions: torch.Tensor,
    dlr: bool,
) -> Diagnostic | None:
    with torch.no_grad():
        width = int(smoothed.model(_as_model_input(smoothed, x)).shape[1])
    seen = max(int(labels.max()), int(predictions.max()))
    if width != smoothed.num_classes or seen >= width:
        return Diagnostic(
            "class-count mismatch",
            f"the model outputs {width} classes, the audit was told {smoothed.num_classes}, and "
            f"labels or certified classes reach {seen}",
            "pass num_classes equal to the model's output width and labels in [0, width − 1]; "
            "targeted attacks pick their targets among the model's classes",
        )
    if dlr and width <= 3:
        return Diagnostic(
            "class-count mismatch",
            f"only {width} classes: the DLR losses of AutoAttack need 3 (targeted DLR 4)",
            "the autoattack attacks fall back to APGD on the cross-entropy; add pgd",
        )
    return None


def diagnose(
    smoothed: SmoothedClassifier,
    x: torch.Tensor,
    labels: torch.Tensor,
    predictions: torch.Tensor,
    *,
    gradients: bool,
    dlr: bool,
) -> list[Diagnostic]:
    """Run the checks on the first inputs; warn (:class:`RSWarning`) for each finding.

    ``gradients``: whether any attack uses the soft smoothed classifier's gradients (the
    zero-gradient check runs only then); ``dlr``: whether an AutoAttack variant runs (it needs
    at least 3 classes).
    """
    probe = x[:_PROBE].to(smoothed.device)
    reference = torch.where(predictions >= 0, predictions, labels)[:_PROBE].to(smoothed.device)
    found = []
    if gradients and reference.max() < smoothed.num_classes:
        # First: without any gradient every gradient attack would fail inside its library.
        gradient = _zero_gradients(smoothed, probe, reference)
        if gradient is not None and gradient.check == NO_GRADIENTS:
            raise RSValueError(
                "model",
                "a model differentiable in its input (the chosen attacks follow its "
                f"gradients; fix: {gradient.fix})",
                gradient.finding,
            )
        found.append(gradient)
    found += [
        _non_determinism(smoothed, probe),
        _probabilities(smoothed, probe),
        _class_count(smoothed, probe, labels, predictions, dlr),
    ]
    diagnostics = [d for d in found if d is not None]
    for d in diagnostics:
        warn(d, stacklevel=4)
    return diagnostics


def warn(diagnostic: Diagnostic, *, stacklevel: int = 3) -> None:
    """Warn (:class:`RSWarning`) with one finding, as the audit reports it."""
    warnings.warn(
        f"audit check '{diagnostic.check}': {diagnostic.finding}. Fix: {diagnostic.fix}",
        RSWarning,
        stacklevel=stacklevel,
    )
