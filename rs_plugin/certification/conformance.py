"""Conformance checks every certifier passes, like scikit-learn's ``check_estimator``.

:func:`check_certifier` runs every check in :data:`CHECKS` on a :class:`Certifier` subclass (a
built-in or a third party's, before registering it under ``rs_plugin.certifiers``); each check
is also callable on its own. A failed check raises ``AssertionError`` naming the check and the
certifier. The checks run on tiny models whose truth is known in closed form:

* a linear classifier f(x) = [w·x + b > 0] under Gaussian noise N(0, σ²I): its smoothed
  classifier is f itself and the true ℓ2 robustness radius at x is |w·x + b| / ‖w‖₂;
* for a certifier that refuses additive noise (a grid certifier of input-domain transforms), a
  brightness threshold on constant images under input-domain rotation with border padding:
  rotating a constant image leaves it unchanged, so the true class holds at every angle.

The checks: what the class declares (:func:`check_declarations`); records of the right shapes
and fields, every input once (:func:`check_records`); the same seed giving the same records
(:func:`check_seeding`) whatever the batch size (:func:`check_batch_size_invariance`); a
subset certified with its keys, after the memory of the inputs before it is restored for a
stateful certifier, giving the records of the full run (:func:`check_resume`); and soundness,
the number of certificates larger than the truth consistent with a rate of at most α
(:func:`check_soundness`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from scipy.stats import binom
from torch import nn

from rs_plugin._validation import RSValueError
from rs_plugin.certification.base import Certifier
from rs_plugin.certification.certificates import Certificates
from rs_plugin.smoothings.base import Smoothing
from rs_plugin.smoothings.gaussian import Gaussian
from rs_plugin.smoothings.geometric import Rotation

__all__ = [
    "CHECKS",
    "check_batch_size_invariance",
    "check_certifier",
    "check_declarations",
    "check_records",
    "check_resume",
    "check_seeding",
    "check_soundness",
    "example_options",
]

# Small sample sizes: the checks compare runs, they do not need tight bounds.
_SETTINGS: dict[str, Any] = {"n0": 32, "n": 400, "alpha": 0.01, "seed": 5}
# A check of soundness fails by chance with probability below this.
_FALSE_ALARM = 1e-3
# Values tried for the options a certifier may need before check_options accepts them.
_TRIALS: tuple[Mapping[str, Any], ...] = ({}, {"tolerance": 0.1}, {"radius": 0.1})
_FIELDS = ("index", "prediction", "radius", "norm", "p_lower", "count", "n0", "n", "alpha")


class _Linear(nn.Module):
    """Logits (−z, z) of z = 4(w·x + b): the class is [w·x + b > 0]."""

    w: torch.Tensor

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.register_buffer("w", w.flatten())
        self.b = b

    def margin(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.to(x.dtype) + self.b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 4.0 * self.margin(x)
        return torch.stack([-z, z], dim=1)


class _Brightness(nn.Module):
    """Logits (−z, z) of z = 20(mean(x) − 1/2): the class is [mean brightness > 1/2]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 20.0 * (x.flatten(1).mean(dim=1) - 0.5)
        return torch.stack([-z, z], dim=1)


@dataclass(frozen=True)
class Case:
    """A model, a smoothing and inputs whose smoothed class and true radius are known."""

    model: nn.Module
    smoothing: Smoothing
    x: torch.Tensor
    label: torch.Tensor
    true_radius: torch.Tensor


def _linear_case(count: int) -> Case:
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(16, generator=generator)
    x = torch.rand(count, 1, 4, 4, generator=generator)
    model = _Linear(w, b=-0.5 * float(w.sum()))
    margin = model.margin(x)
    return Case(
        model.eval(),
        Gaussian(0.25),
        x,
        (margin > 0).long(),
        (margin.abs() / w.norm()).double(),
    )


def _rotation_case(count: int) -> Case:
    level = torch.where(torch.arange(count) % 2 == 0, 0.2, 0.8)
    x = level[:, None, None, None].expand(count, 1, 6, 6).contiguous()
    smoothing = Rotation(
        5.0,
        semantics="input",
        padding="border",
        additive_sigma=0.1,
        input_range=2.0,
        grid_step=1.0,
    )
    truth = torch.full((count,), math.inf, dtype=torch.float64)
    return Case(_Brightness().eval(), smoothing, x, (level > 0.5).long(), truth)


_CASES: tuple[Callable[[int], Case], ...] = (_linear_case, _rotation_case)


def example_options(factory: type[Certifier]) -> dict[str, Any]:
    """Options for the checks: ``clip_values`` (0, 1) where declared, plus the first of a few
    trial values (a tolerance, a radius) that :meth:`Certifier.check_options` accepts."""
    base = {"clip_values": (0.0, 1.0)} if "clip_values" in factory.options else {}
    for trial in _TRIALS:
        options = {**base, **{k: v for k, v in trial.items() if k in factory.options}}
        try:
            factory.check_options(options)
        except RSValueError:
            continue
        return options
    raise AssertionError(
        f"{factory.__name__}: check_options refuses every trial option set; pass options="
    )


def _build(
    factory: type[Certifier], options: Mapping[str, Any], count: int
) -> tuple[Certifier, Case]:
    """A fresh certifier on the first case whose smoothing it accepts."""
    refusals = []
    for make in _CASES:
        case = make(count)
        try:
            return factory.build(case.model, case.smoothing, 2, **options), case
        except RSValueError as error:
            if error.parameter != "smoothing":
                raise
            refusals.append(str(error))
    raise AssertionError(f"{factory.__name__} refuses every case's smoothing: {refusals}")


def _certify(certifier: Certifier, case: Case, rows: slice, **settings: Any) -> Certificates:
    keys = list(range(case.x.shape[0]))[rows]
    return certifier.certify(case.x[rows], keys=keys, **{**_SETTINGS, **settings})


def _assert_same(name: str, first: Certificates, second: Certificates, what: str) -> None:
    assert torch.equal(first.index, second.index), f"{name}: {what}: other inputs"
    assert torch.equal(first.prediction, second.prediction), f"{name}: {what}: predictions"
    assert torch.equal(first.count, second.count), f"{name}: {what}: counts"
    assert torch.allclose(first.radius, second.radius, rtol=1e-9, atol=1e-12), (
        f"{name}: {what}: radii {first.radius.tolist()} != {second.radius.tolist()}"
    )


def check_declarations(factory: type[Certifier], options: Mapping[str, Any]) -> None:
    """A :class:`Certifier` subclass whose declarations are what a run relies on."""
    name = getattr(factory, "__name__", repr(factory))
    assert isinstance(factory, type) and issubclass(factory, Certifier), (
        f"{name}: not a subclass of rs_plugin.Certifier"
    )
    assert isinstance(factory.stateful, bool), f"{name}: stateful is not a bool"
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in factory.options.items()), (
        f"{name}: options must map option names to their meaning (text)"
    )
    signature = inspect.signature(factory)
    try:
        signature.bind(None, None, 2, **dict.fromkeys(factory.options))
    except TypeError as error:
        raise AssertionError(
            f"{name}: the constructor refuses a declared option: {error}"
        ) from error
    assert set(options) <= set(factory.options), f"{name}: options it does not declare"


def check_records(factory: type[Certifier], options: Mapping[str, Any]) -> None:
    """Every input once, records of the right shapes, fields and ranges, in input order."""
    name = factory.__name__
    certifier, case = _build(factory, options, 6)
    keys = [40, 3, 17, 8, 25, 11]
    parts = list(certifier.iter_certify(case.x, keys=keys, batch_size=64, **_SETTINGS))
    yielded = sorted(int(k) for part in parts for k in part.index)
    assert yielded == sorted(keys), f"{name}: iter_certify yielded keys {yielded}, not {keys}"
    certifier, case = _build(factory, options, 6)
    result = certifier.certify(case.x, keys=keys, batch_size=64, **_SETTINGS)
    assert result.index.tolist() == keys, f"{name}: certify's records are not in input order"
    assert result.prediction.shape == (6,) and result.radius.shape == (6,), f"{name}: shapes"
    assert bool(((result.prediction >= -1) & (result.prediction < 2)).all()), f"{name}: classes"
    assert bool(torch.isfinite(result.radius).all() and (result.radius >= 0).all()), (
        f"{name}: radii must be finite and >= 0"
    )
    abstain = result.prediction < 0
    assert bool((result.radius[abstain] == 0).all()), f"{name}: an abstention with a radius"
    assert bool(((result.p_lower >= 0) & (result.p_lower <= 1)).all()), f"{name}: p_lower"
    assert result.norm == case.smoothing.norm, f"{name}: norm {result.norm!r}"
    assert (result.n0, result.n, result.alpha) == (32, 400, 0.01), f"{name}: settings"
    for record in result.to_records():
        missing = [field for field in _FIELDS if field not in record]
        assert not missing, f"{name}: records lack {missing}"


def check_seeding(factory: type[Certifier], options: Mapping[str, Any]) -> None:
    """The same seed gives the same records (on fresh certifiers)."""
    first = _certify(*_build(factory, options, 6), slice(None), batch_size=64)
    second = _certify(*_build(factory, options, 6), slice(None), batch_size=64)
    _assert_same(factory.__name__, first, second, "the same seed twice")


def check_batch_size_invariance(factory: type[Certifier], options: Mapping[str, Any]) -> None:
    """The batch size changes how samples are grouped, never the records; nor does ``"auto"``,
    whose probe runs batches of several sizes on the run's own samples."""
    small = _certify(*_build(factory, options, 6), slice(None), batch_size=7)
    large = _certify(*_build(factory, options, 6), slice(None), batch_size=500)
    _assert_same(factory.__name__, small, large, "batch sizes 7 and 500")
    auto = _certify(*_build(factory, options, 6), slice(None), batch_size="auto")
    _assert_same(factory.__name__, small, auto, "batch sizes 7 and auto")


def check_resume(factory: type[Certifier], options: Mapping[str, Any]) -> None:
    """Certifying the inputs after the first three, with their keys (and, for a stateful
    certifier, its memory of the first three restored on a fresh certifier), gives the records
    those inputs have inside the full run."""
    full = _certify(*_build(factory, options, 6), slice(None), batch_size=64)
    resumed, case = _build(factory, options, 6)
    if factory.stateful:
        before, _ = _build(factory, options, 6)
        head = _certify(before, case, slice(0, 3), batch_size=64)
        for record in head.to_records():
            index = record["index"]
            entry = before.memory_entry(index)
            if entry is not None:
                resumed.restore(
                    case.x[index],
                    index,
                    record["prediction"],
                    entry,
                    n=record["n"],
                    alpha=record["alpha"],
                )
    tail = _certify(resumed, case, slice(3, None), batch_size=64)
    _assert_same(factory.__name__, full.take([3, 4, 5]), tail, "a resumed subset")


def check_soundness(factory: type[Certifier], options: Mapping[str, Any]) -> None:
    """Certificates against the truth: a certified input whose class is wrong or whose radius
    exceeds the true radius is a violation; each happens with probability at most α, so the
    count must be consistent with Binomial(N, α) (a false alarm has probability < 0.001)."""
    name = factory.__name__
    certifier, case = _build(factory, options, 80)
    alpha = 0.01
    result = certifier.certify(case.x, n0=64, n=1000, alpha=alpha, batch_size=2000, seed=11)
    certified = result.prediction >= 0
    wrong = (result.prediction != case.label) | (result.radius > case.true_radius + 1e-9)
    violations = int((certified & wrong).sum())
    tail = float(binom.sf(violations - 1, case.x.shape[0], alpha))
    assert tail >= _FALSE_ALARM, (
        f"{name}: {violations} of {case.x.shape[0]} certificates exceed the truth "
        f"(P[Binomial({case.x.shape[0]}, {alpha}) >= {violations}] = {tail:.2g})"
    )
    assert int(certified.sum()) >= case.x.shape[0] // 4, (
        f"{name}: only {int(certified.sum())} of {case.x.shape[0]} inputs certified on an easy case"
    )


CHECKS: tuple[Callable[[type[Certifier], Mapping[str, Any]], None], ...] = (
    check_declarations,
    check_records,
    check_seeding,
    check_batch_size_invariance,
    check_resume,
    check_soundness,
)


def check_certifier(factory: type[Certifier], *, options: Mapping[str, Any] | None = None) -> None:
    """Run every check of :data:`CHECKS` on ``factory`` with ``options`` (default:
    :func:`example_options`); raises ``AssertionError`` at the first failure."""
    chosen = example_options(factory) if options is None else dict(options)
    for check in CHECKS:
        check(factory, chosen)
