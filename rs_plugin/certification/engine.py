"""The Monte-Carlo engine: stream perturbed batches through the model and count votes per class.

Noise is defined per *block* of ``NOISE_BLOCK`` consecutive samples of one input: block ``b`` of
sample stream ``s`` of the input with key ``k`` is drawn from a generator on the model's device
seeded with :func:`block_seed(seed, s, k, b) <block_seed>`. The engine packs blocks (and pieces
of blocks) into batches of ``batch_size`` samples that mix several inputs when each needs few
samples. Because the noise of a sample depends only on (seed, stream, key, position) and never
on how samples are batched, the same seed gives the same counts whatever the batch size, and an
input certified alone gets the same counts as inside a larger run (up to floating-point ties in
the model's logits, which batch-size-dependent kernels could in principle break differently).

Memory is O(batch_size + NOISE_BLOCK) samples: nothing of size n is ever materialised. Inside the
loop there is no host synchronisation except when inputs complete, whose counts are copied to the
host once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence

import torch

from rs_plugin._validation import RSValueError
from rs_plugin.smoothings.base import Smoothing

__all__ = ["NOISE_BLOCK", "block_seed", "stream_counts"]

NOISE_BLOCK = 256
_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def block_seed(seed: int, stream: int, key: int, block: int) -> int:
    """Seed of noise block ``block`` of sample stream ``stream`` of the input keyed ``key``.

    A SplitMix64 hash chain over the four integers; distinct tuples give (with overwhelming
    probability) unrelated seeds, so streams and inputs get independent noise.
    """
    h = _splitmix64(seed & _MASK64)
    for value in (stream, key, block):
        h = _splitmix64(h ^ (value & _MASK64))
    return h >> 1


def stream_counts(
    model: Callable[[torch.Tensor], torch.Tensor],
    smoothing: Smoothing,
    x: torch.Tensor,
    streams: Sequence[tuple[int, int]],
    *,
    num_classes: int,
    batch_size: int,
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
        batch_size: samples per forward pass.
        seed: the run's seed.
        keys: one integer per input that, with the seed, determines its noise (e.g. the
            input's index in its dataset).
        offset: position of the first sample in every stream, a multiple of ``NOISE_BLOCK``:
            samples ``offset .. offset + size − 1`` of each stream, the same noise a run from 0
            draws at those positions (how sequential certification adds samples in stages).

    Yields:
        ``(rows, counts)``: row positions in ``x`` that just completed, and their vote counts,
        an int64 CPU tensor of shape (len(rows), len(streams), num_classes).
    """
    if offset % NOISE_BLOCK or offset < 0:
        raise RSValueError("offset", f"a non-negative multiple of {NOISE_BLOCK}", offset)
    device = x.device
    num_streams = len(streams)
    counts = torch.zeros(x.shape[0] * num_streams, num_classes, dtype=torch.int64, device=device)
    flat_counts = counts.view(-1)
    ones = torch.ones(batch_size, dtype=torch.int64, device=device)
    generator = torch.Generator(device=device)
    pending: deque[tuple[torch.Tensor, int]] = deque()  # (perturbed samples, owner slot)
    pending_len = 0
    open_rows: deque[tuple[int, int]] = deque()  # (row, samples enqueued when it was complete)
    enqueued = 0
    processed = 0

    def run_batch(size: int) -> None:
        nonlocal pending_len, processed
        pieces: list[torch.Tensor] = []
        owners: list[int] = []
        lengths: list[int] = []
        need = size
        while need > 0:
            samples, owner = pending.popleft()
            take = min(need, samples.shape[0])
            if take < samples.shape[0]:
                pending.appendleft((samples[take:], owner))
                samples = samples[:take]
            pieces.append(samples)
            owners.append(owner)
            lengths.append(take)
            need -= take
        batch = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        owner_index = torch.repeat_interleave(torch.tensor(owners), torch.tensor(lengths))
        votes = model(batch).argmax(dim=1)
        slots = owner_index.to(device, non_blocking=True) * num_classes + votes
        flat_counts.index_add_(0, slots, ones[:size])
        pending_len -= size
        processed += size

    def completed() -> Iterator[tuple[list[int], torch.Tensor]]:
        rows: list[int] = []
        while open_rows and open_rows[0][1] <= processed:
            rows.append(open_rows.popleft()[0])
        if rows:
            index = torch.tensor(rows, device=device)
            yield rows, counts.view(-1, num_streams, num_classes)[index].cpu()

    with torch.inference_mode():
        for row in range(x.shape[0]):
            single = x[row : row + 1]
            for slot, (stream, size) in enumerate(streams):
                for block, start in enumerate(range(0, size, NOISE_BLOCK), offset // NOISE_BLOCK):
                    length = min(NOISE_BLOCK, size - start)
                    generator.manual_seed(block_seed(seed, stream, int(keys[row]), block))
                    samples = smoothing.perturb(single.expand(length, *x.shape[1:]), generator)
                    pending.append((samples, row * num_streams + slot))
                    pending_len += length
                    enqueued += length
                    while pending_len >= batch_size:
                        run_batch(batch_size)
                        yield from completed()
            open_rows.append((row, enqueued))
        if pending_len:
            run_batch(pending_len)
        yield from completed()
