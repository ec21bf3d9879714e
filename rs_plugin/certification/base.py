"""The certifier contract: what every certifier of the ``rs_plugin.certifiers`` group provides.

A certifier is a :class:`Certifier` subclass. It implements one hook, :meth:`Certifier.iter_certify`
(yield :class:`~rs_plugin.Certificates` of a few inputs at a time, as they complete), and the
base class provides :meth:`Certifier.certify` over it. Everything else is declared, so that the
command line, the Ray engine and the audit treat every certifier alike and never branch on a
class or a name:

* :attr:`Certifier.options`: the keyword options its constructor accepts beyond
  ``(model, smoothing, num_classes)``, each with its meaning. A run (``rs-plugin certify``,
  :class:`rs_plugin.runs.CertifyJob`) passes a certifier exactly the options it declares, and
  refuses an option the user set that the certifier does not declare. The vocabulary a run
  knows is :data:`RUN_OPTIONS`; a certifier may declare any subset of it.
* :meth:`Certifier.check_options`: checks of the options' combination that need no model,
  run before anything loads (e.g. "exactly one of ``radius`` and ``tolerance``").
* :attr:`Certifier.stateful`: True when an answer depends on the inputs certified before (a
  memory of earlier certificates, as DDRS and ANCER keep). A stateful certifier sees every
  input, in order, in one process (no Ray shards), is never audited by PREDICT with one
  smoothing, and implements :meth:`Certifier.memory_entry` and :meth:`Certifier.restore` so
  that a resumed run certifies against the memory its stored records were certified against.
* :attr:`Certifier.samples_vary`: True when each input stops after its own number of estimation
  samples (its records' ``n``, an integer in ``extra["samples"]``); a run then stores its budget
  as ``n_max``.
* :meth:`Certifier.build`: how a run constructs it (by default the class itself; a registered
  name may pick among classes, as ``cohen`` picks the grid certifier for a transform certified
  in the input domain).

The guarantee every certifier states: with probability at least 1 − α over its sampling, each
record that does not abstain (prediction −1) is a true certificate of its smoothed classifier.
:mod:`rs_plugin.certification.conformance` checks the contract on any registered certifier.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from rs_plugin._validation import RSValueError
from rs_plugin.certification.certificates import Certificates
from rs_plugin.smoothings.base import Smoothing

__all__ = ["RUN_OPTIONS", "Certifier"]

# The options a run (command line, Ray, audit) can pass, with their meaning. A certifier
# declares the subset it accepts in `Certifier.options`.
RUN_OPTIONS: Mapping[str, str] = {
    "clip_values": "(low, high): the range every input lies in, checked before sampling",
    "radius": "decision mode: the radius to decide (> 0, in the smoothing's norm)",
    "tolerance": "radius mode: the radius gain below which sampling stops (> 0)",
    "precision": "'float32', 'bfloat16' or 'float16': autocast for the votes",
    "channels_last": "count votes with 4-D batches in the channels-last memory format",
    "compile": "count votes with torch.compile(model)",
}


class Certifier(abc.ABC):
    """Base class of every certifier (module docstring: the contract).

    Subclasses set :attr:`model`, :attr:`smoothing` and :attr:`num_classes` in ``__init__``
    (signature ``(model, smoothing, num_classes, *, <declared options>)``), declare
    :attr:`options` and :attr:`stateful`, and implement :meth:`iter_certify`.
    """

    #: Keyword options of the constructor a run may pass, name -> meaning (see RUN_OPTIONS).
    options: ClassVar[Mapping[str, str]] = {}
    #: True when answers depend on the inputs certified before (a memory).
    stateful: ClassVar[bool] = False
    #: True when each input uses its own number of estimation samples (records' ``n``; the
    #: run's budget is then stored as ``n_max``).
    samples_vary: ClassVar[bool] = False

    model: nn.Module
    smoothing: Smoothing
    num_classes: int

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Refuse a combination of declared ``options`` before anything loads (default: none).

        Raises :class:`~rs_plugin.RSValueError` naming the options.
        """
        return None

    @classmethod
    def build(
        cls, model: nn.Module, smoothing: Smoothing, num_classes: int, **options: Any
    ) -> Certifier:
        """The certifier a run uses: ``cls(model, smoothing, num_classes, **options)``, with
        ``options`` among :attr:`options` (override to choose among classes)."""
        return cls(model, smoothing, num_classes, **options)  # type: ignore[call-arg]

    @abc.abstractmethod
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
        """Certify every input of ``x`` (N, ...), yielding records as inputs complete.

        ``keys`` (default 0..N−1, distinct integers in [0, 2⁶⁴ − 1]) with ``seed`` determine each
        input's noise, so that an input's record does not depend on the batch size or on which
        other inputs are certified with it (a stateful certifier's records also depend on the
        inputs certified before). Every input is yielded exactly once, in any order.
        ``batch_size`` is samples per forward pass, or ``"auto"`` (the default): the fastest
        size, measured by the engine on the run's own first batches
        (:mod:`rs_plugin.certification.batching`); pass it on to the engine unchanged.
        """

    def certify(
        self,
        x: torch.Tensor | np.ndarray,
        *,
        n0: int = 100,
        n: int = 100_000,
        alpha: float = 0.001,
        batch_size: int | str = "auto",
        seed: int = 0,
        keys: Sequence[int] | None = None,
    ) -> Certificates:
        """Every record of :meth:`iter_certify`, in the order of ``x``."""
        parts = self.iter_certify(
            x, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed, keys=keys
        )
        return in_input_order(list(parts), keys)

    def cap_smoothing(self) -> Smoothing | None:
        """A smoothing whose sampling cap (:func:`~rs_plugin.sampling_cap`) bounds every radius
        this certifier records with n samples at level α, used to refuse impossible stored
        records on resume: its own smoothing, unless it is stateful (σ chosen per input), then
        None (no bound) unless the certifier knows one."""
        return None if self.stateful else self.smoothing

    def memory_entry(self, key: int) -> Any:
        """What a stateful certifier stored for the certified input ``key`` (JSON values), or
        None; written with the input's record. Stateless certifiers store nothing."""
        return None

    def restore(
        self,
        x: torch.Tensor,
        key: int,
        prediction: int,
        entry: Any,
        *,
        n: int | None = None,
        alpha: float | None = None,
    ) -> None:
        """Put back the :meth:`memory_entry` of input ``x`` certified as ``prediction`` (entries
        in the order they were stored). ``n`` and ``alpha`` are the record's (when known): an
        entry may be a forgery, and claims nothing those samples cannot certify. Only stateful
        certifiers have a memory to restore."""
        raise RSValueError(
            "resume",
            "memory entries only for a stateful certifier",
            f"an entry for input {key} given to {type(self).__name__}, which keeps no memory",
        )


def in_input_order(parts: list[Certificates], keys: Sequence[int] | None) -> Certificates:
    """Join the records ``iter_certify`` yielded and put them in the order of ``keys`` (the
    inputs' order; ``None`` is 0..N−1)."""
    joined = Certificates.concat(parts)
    order = list(range(len(joined))) if keys is None else [int(k) for k in keys]
    position = {int(key): row for row, key in enumerate(joined.index.tolist())}
    return joined.take([position[key] for key in order])
