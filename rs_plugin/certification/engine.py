"""The Monte-Carlo engine: stream perturbed batches through the model and count votes per class.

Noise is defined per *block* of ``NOISE_BLOCK`` consecutive samples of one input: block ``b`` of
sample stream ``s`` of the input with key ``k`` is ``smoothing.perturb`` of that many copies of
the input, drawn from a generator on the model's device seeded with
:func:`block_seed(seed, s, k, b) <block_seed>` (the last block of a stream may be shorter). The
engine packs blocks (and pieces of blocks) into batches of ``batch_size`` samples that mix
several inputs when each needs few samples. Because the noise of a sample depends only on
(seed, stream, key, position) and never on how samples are batched, the same seed gives the same
counts whatever the batch size, and an input certified alone gets the same counts as inside a
larger run (up to floating-point ties in the model's logits, which batch-size-dependent kernels
could in principle break differently).

Shape of the work, chosen so that a batch costs a handful of large operations (each small
multi-threaded operation is a synchronisation point that a busy machine makes slow):

* every block is written in place into the one batch buffer the model is given
  (:meth:`~rs_plugin.Smoothing.perturb_`); a block that straddles two batches is drawn into a
  spill buffer of its own and copied in between forward passes, so every sample the model reads
  was written after its previous forward pass and nothing it writes to its input (in-place
  normalisation, or writes through the input's storage) reaches another sample or the inputs;
  nothing is allocated or concatenated per block;
* for additive noise (:class:`~rs_plugin.AdditiveNoise`) a block is one in-place draw and the
  input is added once per run of one input's samples in the batch, not once per block;
* votes are counted on the device with one ``index_add_`` per batch. A sample whose logits are
  not all finite votes for an extra "non-finite" column; when an input completes, its counts are
  copied to the host (the only synchronisation) and a non-finite vote stops the run with an
  :class:`~rs_plugin.RSValueError` naming the input: NaN logits must never become votes.

The batch size is an integer or ``"auto"``: the run's first batches then take candidate sizes
in turn and the run continues at the fastest (:mod:`rs_plugin.certification.batching`); since
batch boundaries never change the noise, the counts are those of any fixed size. On a CPU the
engine first makes the C library keep freed activations in the process
(:mod:`rs_plugin.certification.allocator`), so a large batch does not pay a page fault per
4 KiB of activations on every forward pass.

Memory is O(batch_size + NOISE_BLOCK) samples: nothing of size n is ever materialised.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence

import torch

from rs_plugin._validation import MAX_SAMPLES, RSValueError
from rs_plugin.certification.allocator import retain_freed_memory
from rs_plugin.certification.batching import AUTO, AutoBatch, Clock, auto_batch, check_batch_size
from rs_plugin.smoothings.base import AdditiveNoise, Smoothing

__all__ = [
    "NOISE_BLOCK",
    "NOISE_VERSION",
    "STREAM_ANISOTROPIC",
    "STREAM_ESTIMATION",
    "STREAM_PREDICT",
    "STREAM_SELECTION",
    "STREAM_SIGMA",
    "block_seed",
    "stream_counts",
]

# The noise streams, all in one place: samples of different streams are independent (a
# certifier that needs a new independent stream adds it here).
STREAM_SELECTION = 0  # CERTIFY's selection samples (n0)
STREAM_ESTIMATION = 1  # CERTIFY's estimation samples (n)
STREAM_PREDICT = 2  # PREDICT's samples
STREAM_SIGMA = 3  # DDRS's σ search (rs_plugin.certification.sigma_search)
STREAM_ANISOTROPIC = 4  # ANCER's per-coordinate σ search

NOISE_BLOCK = 256
# Version of the noise definition (block_seed): stored with every record of a run, so that a
# file's records all come from one definition and a run from scratch gives them back.
# 2: an input's blocks are distinct in the 32 bits a CPU generator is seeded with.
NOISE_VERSION = 2
_MASK64 = (1 << 64) - 1
_MASK32 = (1 << 32) - 1
# An input's (stream, block) pairs map one to one onto the 32 bits a CPU generator is seeded
# with: stream·2**27 + block, for streams below 32 and blocks below 2**27 (MAX_SAMPLES allows
# 2**23 blocks of NOISE_BLOCK).
_STREAM_STRIDE = 1 << 27
_MAX_STREAMS = 32
_MAX_BLOCKS = MAX_SAMPLES // NOISE_BLOCK


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _mix32(z: int) -> int:
    """A bijection of the 32-bit words (xor-shifts and odd multipliers)."""
    z ^= z >> 16
    z = (z * 0x85EBCA6B) & _MASK32
    z ^= z >> 13
    z = (z * 0xC2B2AE35) & _MASK32
    return z ^ (z >> 16)


def block_seed(seed: int, stream: int, key: int, block: int) -> int:
    """Seed (63 bits) of noise block ``block`` of sample stream ``stream`` of the input keyed
    ``key``.

    A per-input hash h of (seed, key) (SplitMix64), then:

    * the low 32 bits are ``mix32((h + stream·2²⁷ + block) mod 2³²)``, a bijection of
      (stream, block) for a given input (streams below 32, blocks below 2²³ =
      MAX_SAMPLES / NOISE_BLOCK). Torch's CPU generator (MT19937) is seeded with the low
      32 bits of its seed only, so two blocks of one input whose seeds agreed there would get
      identical noise: with independently hashed 32-bit words that happens to some input with
      probability ≈ B²/2³³ for B blocks (≈ 2·10⁻³ at n = 10⁶, more than a usual α), and the
      certificate's independent samples would not be independent. Here it cannot happen;
      inputs differ by h (noise shared across inputs is harmless: every certificate is a claim
      about one input);
    * the high 31 bits hash (h, stream, block) further, for generators that use all 64 bits
      (CUDA's Philox).
    """
    if not 0 <= stream < _MAX_STREAMS:
        raise ValueError(f"noise stream {stream} outside [0, {_MAX_STREAMS})")
    if not 0 <= block < _MAX_BLOCKS:
        raise ValueError(
            f"noise block {block} outside [0, {_MAX_BLOCKS}): at most {MAX_SAMPLES} samples "
            "per stream"
        )
    h = _splitmix64(_splitmix64(seed & _MASK64) ^ (key & _MASK64))
    low = _mix32((h + stream * _STREAM_STRIDE + block) & _MASK32)
    high = _splitmix64(_splitmix64(h ^ stream) ^ block) >> 33
    return (high << 32) | low


class _Batches:
    """The model's batch buffer, the block spill buffer and the device-side vote counts of one
    :func:`stream_counts` call.

    ``feed`` is the only tensor the model is given: ``fill`` samples are waiting in it, and
    every one of them is rewritten before it is read again, so nothing the model writes to
    its input (in-place normalisation, or a hostile model's writes through the input's
    storage) reaches a later sample or the inputs being certified. A block that does not fit
    in what is left of the feed is drawn whole into ``spill`` (its own storage, never given
    to the model) and copied into the feed piece by piece between forward passes. ``runs``
    lists, in feed order, the pieces ``[row, owner, length]`` (owner = the row's stream slot
    whose counts the votes go to).
    """

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        *,
        owners: int,
        num_classes: int,
        batch_size: int,
        additive: bool,
        plan: AutoBatch | None = None,
        total: int = 0,
    ) -> None:
        self.model = model
        self.x = x
        self.num_classes = num_classes
        self.additive = additive
        # "auto": the probe sets the size of every batch until it settles (batching.py).
        self.plan = plan
        self.total = total
        self.clock = Clock(x.device)
        device = x.device
        # One column more than classes: samples whose logits were not all finite.
        self.width = num_classes + 1
        self.counts = torch.zeros(owners * self.width, dtype=torch.int64, device=device)
        self.spill = torch.empty((0, *x.shape[1:]), dtype=x.dtype, device=device)
        self._resize(batch_size if plan is None else min(plan.next_size(), total))
        if plan is not None and not plan.settled:
            self.clock.lap()  # the first batch is timed from here
        self.runs: deque[list[int]] = deque()
        self.fill = 0
        self.spilled = 0  # length of the block waiting in ``spill`` (0: it went to the feed)

    def _resize(self, batch_size: int) -> None:
        """Batch buffers for ``batch_size`` samples (only between batches: nothing is waiting)."""
        self.batch_size = batch_size
        if self.plan is not None:
            self.plan.last = batch_size
        device, shape = self.x.device, self.x.shape[1:]
        self.feed = torch.empty((batch_size, *shape), dtype=self.x.dtype, device=device)
        self.slot_base = torch.empty(batch_size, dtype=torch.int64, device=device)
        self.ones = torch.ones(batch_size, dtype=torch.int64, device=device)

    def _probe_step(self, size: int) -> None:
        """Score the batch of ``size`` that just ran and take the probe's next size."""
        assert self.plan is not None
        seconds = self.clock.lap()
        if seconds is not None and seconds > 0:
            self.plan.record(size, seconds)
        following = min(self.plan.next_size(), self.total)
        if following != self.batch_size:
            self._resize(following)

    @property
    def pending(self) -> int:
        return self.fill

    def block(self, length: int, row: int, owner: int) -> torch.Tensor:
        """Room for the next ``length`` samples of ``owner``; the caller fills it, then calls
        :meth:`commit`."""
        if self.runs and self.runs[-1][1] == owner:
            self.runs[-1][2] += length
        else:
            self.runs.append([row, owner, length])
        if self.fill + length <= self.batch_size:
            self.spilled = 0
            return self.feed[self.fill : self.fill + length]
        if self.spill.shape[0] < length:
            self.spill = torch.empty(
                (NOISE_BLOCK, *self.feed.shape[1:]), dtype=self.feed.dtype, device=self.feed.device
            )
        self.spilled = length
        return self.spill[:length]

    def commit(self, length: int) -> int:
        """Place the ``length`` samples just written into :meth:`block`'s room in the feed,
        running every batch they fill; returns the number of samples run."""
        ran = 0
        if not self.spilled:
            self.fill += length
        else:
            position = 0
            while position < length:
                take = min(self.batch_size - self.fill, length - position)
                self.feed[self.fill : self.fill + take].copy_(
                    self.spill[position : position + take]
                )
                self.fill += take
                position += take
                if self.fill == self.batch_size and position < length:
                    ran += self._run_full()
        if self.fill == self.batch_size:
            ran += self._run_full()
        return ran

    def _run_full(self) -> int:
        """Run the full feed; its size (the next batch's may differ while ``"auto"`` probes)."""
        size = self.batch_size
        self.run(size)
        return size

    def run(self, size: int) -> None:
        """Run the ``size`` samples waiting in the feed through the model and count their votes."""
        batch = self.feed[:size]
        position = 0
        added_row, added_from = -1, 0
        while position < size:
            piece = self.runs[0]
            row, owner, length = piece
            take = min(length, size - position)
            if take == length:
                self.runs.popleft()
            else:
                piece[2] -= take
            self.slot_base[position : position + take].fill_(owner * self.width)
            if self.additive and row != added_row:
                self._add_input(batch, added_row, added_from, position)
                added_row, added_from = row, position
            position += take
        if self.additive:
            self._add_input(batch, added_row, added_from, size)
        logits = self.model(batch)
        _check_batch_output(logits, size, self.num_classes)
        finite = torch.isfinite(logits).all(dim=1)
        votes = torch.where(finite, logits.argmax(dim=1), self.num_classes)
        self.counts.index_add_(0, votes.add_(self.slot_base[:size]), self.ones[:size])
        self.fill = 0
        if self.plan is not None and not self.plan.settled and size == self.batch_size:
            self._probe_step(size)

    def _add_input(self, batch: torch.Tensor, row: int, begin: int, stop: int) -> None:
        if row >= 0 and stop > begin:
            batch[begin:stop].add_(self.x[row])

    def finished(self, rows: list[int], num_streams: int) -> torch.Tensor:
        """Host copy of the counts of ``rows``, (len(rows), num_streams, num_classes + 1)."""
        index = torch.tensor(rows, device=self.counts.device)
        return self.counts.view(-1, num_streams, self.width)[index].cpu()


def stream_counts(
    model: Callable[[torch.Tensor], torch.Tensor],
    smoothing: Smoothing,
    x: torch.Tensor,
    streams: Sequence[tuple[int, int]],
    *,
    num_classes: int,
    batch_size: int | str,
    seed: int,
    keys: Sequence[int],
    offset: int = 0,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Count the base model's votes under noise, yielding inputs as soon as they complete.

    Args:
        model: base classifier returning logits of shape (B, num_classes), already in eval mode.
        smoothing: the perturbation.
        x: inputs (N, ...) on the model's device and dtype.
        streams: (stream id, number of samples) per independent sample stream, e.g.
            ``[(0, n0), (1, n)]`` for CERTIFY's selection and estimation samples.
        num_classes: width of the model's output.
        batch_size: samples per forward pass, or ``"auto"``: the fastest size, found by a probe
            whose batches are part of this run's samples
            (:mod:`rs_plugin.certification.batching`); the counts are the same either way.
        seed: the run's seed.
        keys: one integer per input that, with the seed, determines its noise (e.g. the
            input's index in its dataset).
        offset: position of the first sample in every stream, a multiple of ``NOISE_BLOCK``:
            samples ``offset .. offset + size − 1`` of each stream, the same noise a run from 0
            draws at those positions (how sequential certification adds samples in stages).

    Yields:
        ``(rows, counts)``: row positions in ``x`` that just completed, and their vote counts,
        an int64 CPU tensor of shape (len(rows), len(streams), num_classes).

    Raises:
        RSValueError: when the model returned a non-finite logit (NaN or ±inf) on a noisy sample
            of an input; raised when that input completes, after the inputs completed before it
            were yielded; or when a batch's output is not a (batch, num_classes) tensor,
            at that batch, before its votes are counted.
    """
    if offset % NOISE_BLOCK or offset < 0:
        raise RSValueError("offset", f"a non-negative multiple of {NOISE_BLOCK}", offset)
    batch_size = check_batch_size(batch_size)
    smoothing.check_inputs(x)
    num_streams = len(streams)
    total = max(1, x.shape[0] * sum(size for _, size in streams))
    if x.device.type == "cpu":
        retain_freed_memory()
    plan = auto_batch(model, x) if batch_size == AUTO else None
    batches = _Batches(
        model,
        x,
        owners=x.shape[0] * num_streams,
        num_classes=num_classes,
        batch_size=min(int(batch_size), total) if plan is None else 0,
        additive=isinstance(smoothing, AdditiveNoise),
        plan=plan,
        total=total,
    )
    additive = smoothing if isinstance(smoothing, AdditiveNoise) else None
    generator = torch.Generator(device=x.device)
    open_rows: deque[tuple[int, int]] = deque()  # (row, samples enqueued when it was complete)
    enqueued = 0
    processed = 0

    def completed() -> Iterator[tuple[list[int], torch.Tensor]]:
        rows: list[int] = []
        while open_rows and open_rows[0][1] <= processed:
            rows.append(open_rows.popleft()[0])
        if rows:
            done = batches.finished(rows, num_streams)
            _check_finite(done[:, :, num_classes], rows, keys, streams)
            yield rows, done[:, :, :num_classes].contiguous()

    with torch.inference_mode():
        for row in range(x.shape[0]):
            single = x[row : row + 1]
            for slot, (stream, size) in enumerate(streams):
                owner = row * num_streams + slot
                for block, start in enumerate(range(0, size, NOISE_BLOCK), offset // NOISE_BLOCK):
                    length = min(NOISE_BLOCK, size - start)
                    out = batches.block(length, row, owner)
                    generator.manual_seed(block_seed(seed, stream, int(keys[row]), block))
                    if additive is not None:
                        additive.noise_(out, generator)
                    else:
                        smoothing.perturb_(out, single, generator)
                    enqueued += length
                    ran = batches.commit(length)
                    if ran:
                        processed += ran
                        yield from completed()
            open_rows.append((row, enqueued))
        if batches.pending:
            processed += batches.pending
            batches.run(batches.pending)
        yield from completed()


def _check_batch_output(logits: object, size: int, num_classes: int) -> None:
    """Refuse a batch's output of any other shape than (size, num_classes), before its votes
    are counted: a vote index outside the classes would be added to another input's counts.
    (A host-side check of the shape: no device synchronisation.) Only a plain tensor: a
    subclass's ``__torch_function__`` would answer the shape, finiteness and argmax the votes
    are counted from."""
    if type(logits) is not torch.Tensor or tuple(logits.shape) != (size, num_classes):
        shown = tuple(logits.shape) if type(logits) is torch.Tensor else type(logits).__name__
        raise RSValueError(
            "model",
            f"a model returning logits of shape (B, {num_classes}) on every batch",
            f"{shown} on a batch of {size} noisy samples",
        )


def _check_finite(
    non_finite: torch.Tensor,
    rows: list[int],
    keys: Sequence[int],
    streams: Sequence[tuple[int, int]],
) -> None:
    """Stop at the first completed input with a sample whose logits were not all finite."""
    bad = non_finite.sum(dim=1)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0, 0])
        samples = sum(size for _, size in streams)
        raise RSValueError(
            "model",
            "a model returning finite logits on every noisy sample (no NaN or infinity)",
            f"non-finite logits on {int(bad[i])} of {samples} samples of key {int(keys[rows[i]])} "
            f"(row {rows[i]})",
        )
