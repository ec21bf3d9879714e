"""Every certifier registered under ``rs_plugin.certifiers`` passes the conformance checks, and
the checks catch the faults they are about."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import ClassVar

import numpy as np
import pytest
import torch

from rs_plugin import Certificates, Certifier, SmoothedClassifier, check_certifier
from rs_plugin._registry import discover
from rs_plugin.certification.conformance import (
    CHECKS,
    check_batch_size_invariance,
    check_declarations,
    check_resume,
    check_seeding,
    check_soundness,
    example_options,
)
from rs_plugin.runs import load_certifier

NAMES = sorted(discover("rs_plugin.certifiers"))


def test_the_built_in_certifiers_are_registered():
    assert {"cohen", "grid", "sequential", "anytime", "ddrs", "ancer"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_every_registered_certifier_passes_every_check(name, check):
    torch.set_num_threads(1)
    factory = load_certifier(name)
    check(factory, example_options(factory))


class _Broken(SmoothedClassifier):
    """A SmoothedClassifier with one fault, chosen by the subclass."""

    def _fault(self, part: Certificates, batch_size: int | str, seed: int) -> Certificates:
        return part

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
        for part in super().iter_certify(
            x, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed, keys=keys
        ):
            yield self._fault(part, batch_size, seed)


class _Inflated(_Broken):
    def _fault(self, part: Certificates, batch_size: int | str, seed: int) -> Certificates:
        return replace(part, radius=part.radius * 3)


class _BatchDependent(_Broken):
    def _fault(self, part: Certificates, batch_size: int | str, seed: int) -> Certificates:
        size = batch_size if isinstance(batch_size, int) else 0
        return replace(part, radius=part.radius + size * 1e-3)


class _Unseeded(_Broken):
    calls = 0

    def _fault(self, part: Certificates, batch_size: int | str, seed: int) -> Certificates:
        type(self).calls += 1
        return replace(part, radius=part.radius + type(self).calls * 1e-3)


class _KeysIgnored(SmoothedClassifier):
    """Certifies as if the inputs were numbered from 0: an input's noise depends on its place in
    the call, so a resumed subset gets other samples."""

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
        named = list(range(len(x))) if keys is None else [int(k) for k in keys]
        for part in super().iter_certify(
            x, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed, keys=None
        ):
            yield replace(part, index=torch.tensor([named[int(i)] for i in part.index]))


@pytest.mark.parametrize(
    ("factory", "check"),
    [
        (_Inflated, check_soundness),
        (_BatchDependent, check_batch_size_invariance),
        (_Unseeded, check_seeding),
        (_KeysIgnored, check_resume),
    ],
    ids=["unsound", "batch-dependent", "unseeded", "keys-ignored"],
)
def test_each_check_fails_a_certifier_with_its_fault(factory, check):
    with pytest.raises(AssertionError, match=factory.__name__):
        check(factory, example_options(factory))


def test_undeclared_constructor_options_are_caught():
    class Mislabelled(SmoothedClassifier):
        options: ClassVar[Mapping[str, str]] = {
            **SmoothedClassifier.options,
            "radius": "a radius it has no keyword for",
        }

    with pytest.raises(AssertionError, match="refuses a declared option"):
        check_declarations(Mislabelled, {})


def test_check_certifier_runs_every_check_on_a_built_in():
    check_certifier(load_certifier("cohen"))
    assert issubclass(load_certifier("ddrs"), Certifier)
