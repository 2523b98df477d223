"""fairseq's token-budget batches and epoch iterator, held as two arrays instead of one numpy array per batch.

Every rank of a fairseq-train run builds *all* of an epoch's batches (it then takes every N-th): fairseq's
``batch_by_size`` returns a list with one array object per batch (``np.split``), ``EpochBatchIterator`` keeps it
as a tuple and copies it into lists every epoch (shuffle, then shard). At UniRef scale that is millions of
objects per rank and seconds of Python per epoch. Here an epoch's batches are the length-sorted indices plus
the batch boundaries (:class:`Batches`), formed by :func:`batch_bounds` in vectorised O(N), and the epoch's
shuffled, sharded list is a view over them (:class:`BatchSelection`).

The batches are *exactly* fairseq's: :func:`batch_bounds` is fairseq's ``batch_by_size_vec`` (cython) for
length-sorted sizes, keeping the last partial batch (``sized.EveryRecordBatched``); the epoch order is
``numpy_seed(seed + epoch)`` + ``np.random.shuffle`` of the batch list, drawn from a private ``RandomState``
with the same seed (shuffling the batch numbers moves the same positions), then ``ShardedIterator``'s every
N-th batch, padded with empty batches. ``tests/test_epoch_batches.py`` checks both against fairseq's own code.
"""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import Callable, Iterator, Union

import numpy as np
from fairseq.data import iterators

logger = logging.getLogger(__name__)

def batch_bounds(sizes: np.ndarray, max_tokens: int | None, max_sentences: int | None,
                 required_batch_size_multiple: int = 1) -> np.ndarray:
    """Boundaries ``b`` of fairseq's batches of samples whose sizes, in batch order, are ``sizes`` (non-decreasing,
    at least 1): batch ``i`` is positions ``b[i]:b[i+1]``. See :func:`run_batch_bounds`."""
    sizes = np.asarray(sizes)
    if len(sizes) == 0:
        return np.zeros(1, np.int64)
    starts = np.flatnonzero(np.concatenate(([True], sizes[1:] != sizes[:-1])))
    return run_batch_bounds(sizes[starts], np.diff(np.append(starts, len(sizes))), max_tokens, max_sentences,
                            required_batch_size_multiple)


def run_batch_bounds(values: np.ndarray, counts: np.ndarray, max_tokens: int | None, max_sentences: int | None,
                     required_batch_size_multiple: int = 1) -> np.ndarray:
    """fairseq's batch boundaries for length-sorted samples given as runs: ``counts[r]`` samples of size
    ``values[r]`` (increasing sizes, at least 1), the last partial batch kept (``sized.EveryRecordBatched``).

    fairseq's greedy loop (``data_utils_fast.batch_by_size_vec``), for sorted sizes: a batch starting at ``s``
    grows until position ``p`` overflows it (``p + 1 - s`` samples of the largest size, ``sizes[p]``, exceed
    ``max_tokens``, or the count exceeds ``max_sentences``); it keeps the largest multiple of
    ``required_batch_size_multiple`` (everything, below one multiple) and the rest (the tail, ``p`` included)
    starts the next batch, unless the tail itself overflows: then it is closed as one more batch, before ``p``.
    Overflow is monotone in ``p`` for sorted sizes, so a batch's end depends on its start only. Inside a run of
    equal sizes ``v`` every batch therefore holds ``keep(min(max_tokens // v, max_sentences))`` samples (the tail
    never overflows there): those are laid out at once, and only the batches that straddle two runs, or the end,
    are followed one by one. O(batches) array writes plus O(runs) Python steps.
    """
    values = np.asarray(values, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    run_ends = np.cumsum(counts)
    n = int(run_ends[-1]) if len(run_ends) else 0
    tokens = int(max_tokens) if max_tokens is not None and max_tokens > 0 else 0
    sentences = int(max_sentences) if max_sentences is not None and max_sentences > 0 else 0
    multiple = max(int(required_batch_size_multiple), 1)
    if n == 0:
        return np.zeros(1, np.int64)
    if tokens and int(values.max()) > tokens:
        raise AssertionError(f"Sentences lengths should not exceed max_tokens={tokens}")  # fairseq's message

    def keep(count: int) -> int:
        return count if count < multiple else count - count % multiple

    def size_at(positions: np.ndarray) -> np.ndarray:
        return values[np.searchsorted(run_ends, positions, side="right")]

    bounds: list = [np.zeros(1, np.int64)]
    start, run = 0, 0
    while start < n:
        while run_ends[run] <= start:
            run += 1
        size, run_end = int(values[run]), int(run_ends[run])
        caps = [c for c in (tokens // size if tokens else 0, sentences) if c]
        reach = min(caps) if caps else 0  # a batch starting at `start` overflows at start + reach inside a run
        if reach and start + reach < run_end:  # whole batches of equal size: lay them out at once
            step = keep(reach)
            count = (run_end - 1 - reach - start) // step + 1
            bounds.append(start + step * np.arange(1, count + 1, dtype=np.int64))
            start += step * count
            continue
        # a batch that reaches into the next run (or the end): fairseq's step, for this start
        overflow = n
        if tokens:
            positions = np.arange(start, min(n, start + tokens // size + 1), dtype=np.int64)
            # position q overflows a batch starting at s exactly when s <= q - tokens // sizes[q], a bound that
            # increases strictly with q: the first overflow is a searchsorted
            latest_start = positions - tokens // size_at(positions)
            found = int(np.searchsorted(latest_start, start, side="left"))
            overflow = start + found if found < len(positions) else n
        if sentences:
            overflow = min(overflow, start + sentences)
        overflow = min(overflow, n)
        end = start + keep(overflow - start)
        following = n if overflow >= n else end
        if tokens and overflow < n and int(size_at(np.array([overflow]))[0]) * (overflow + 1 - end) > tokens:
            following = overflow  # the tail overflows too: it closes as a batch of its own
        bounds.append(np.array([end] if following == end else [end, following], dtype=np.int64))
        start = following
    return np.concatenate(bounds)


#: values compared per vectorised step of :func:`is_sorted` (bounds its temporaries)
CHUNK = 1 << 16


def size_counts(sizes: np.ndarray) -> np.ndarray:
    """``np.bincount(sizes)``, a chunk at a time (bincount would first copy int32 sizes to int64)."""
    sizes = np.asarray(sizes)
    counts = np.zeros(int(sizes.max()) + 1 if len(sizes) else 0, np.int64)
    for start in range(0, len(sizes), CHUNK):
        counts += np.bincount(sizes[start : start + CHUNK], minlength=len(counts))
    return counts


def is_sorted(values: np.ndarray) -> bool:
    """Non-decreasing, checked a chunk at a time (no temporary the size of ``values``)."""
    return all(not (np.diff(values[start : start + CHUNK + 1]) < 0).any() for start in range(0, len(values), CHUNK))


def fairseq_bounds(order: np.ndarray, sorted_sizes: np.ndarray, max_tokens: int | None, max_sentences: int | None,
                   required_batch_size_multiple: int = 1) -> np.ndarray:
    """:func:`batch_bounds` for any order (not length-sorted, or empty samples), by fairseq's own cython loop."""
    from fairseq.data.data_utils_fast import batch_by_size_vec

    batches = batch_by_size_vec(np.asarray(order, dtype=np.int64), np.asarray(sorted_sizes, dtype=np.int64),
                                int(max_tokens) if max_tokens is not None else -1,
                                int(max_sentences) if max_sentences is not None else -1,
                                required_batch_size_multiple)
    return np.concatenate([[0], np.cumsum([len(batch) for batch in batches], dtype=np.int64)])


class Batches:
    """An epoch's batches: ``order`` (sample indices in batch order) cut at ``bounds``; batch ``i`` is an int64
    array like fairseq's."""

    def __init__(self, order: np.ndarray, bounds: np.ndarray) -> None:
        self.order = order
        self.bounds = bounds

    @classmethod
    def build(cls, order: np.ndarray, sizes: np.ndarray, max_tokens: int | None, max_sentences: int | None,
              required_batch_size_multiple: int = 1, every_index: bool = False) -> "Batches":
        """fairseq's batches of ``order`` (sample indices sorted by size) for samples of ``sizes``.

        ``every_index``: ``order`` holds every index of ``sizes`` (nothing filtered out), so its sizes in order are
        known from a count of ``sizes`` (no gather, no check); otherwise they are gathered, and an order that is not
        length-sorted is batched by fairseq's own loop.
        """
        bounds_of = partial(run_batch_bounds, max_tokens=max_tokens, max_sentences=max_sentences,
                            required_batch_size_multiple=required_batch_size_multiple)
        if every_index and len(order) == len(sizes):
            counts = size_counts(sizes)
            values = np.flatnonzero(counts)
            if len(values) == 0 or values[0] >= 1:
                return cls(order, bounds_of(values, counts[values]))
        sorted_sizes = np.asarray(sizes)[order]
        if len(sorted_sizes) and (sorted_sizes[0] < 1 or not is_sorted(sorted_sizes)):
            bounds = fairseq_bounds(order, sorted_sizes, max_tokens, max_sentences, required_batch_size_multiple)
        else:
            bounds = batch_bounds(sorted_sizes, max_tokens, max_sentences, required_batch_size_multiple)
        return cls(order, bounds)

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"batch {i} of {len(self)}")
        return self.order[self.bounds[i] : self.bounds[i + 1]].astype(np.int64)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))

    def sizes_of_batches(self) -> np.ndarray:
        """Samples per batch."""
        return np.diff(self.bounds)


class BatchSelection:
    """Batches ``ids`` of ``batches`` in that order, ``-1`` standing for fairseq's empty padding batch (``[]``);
    sliceable like the list fairseq's ``FrozenBatchSampler`` holds."""

    def __init__(self, batches: Batches, ids: np.ndarray) -> None:
        self.batches = batches
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: Union[int, slice]):
        if isinstance(key, slice):
            return BatchSelection(self.batches, self.ids[key])
        batch = int(self.ids[key])
        return [] if batch < 0 else self.batches[batch]

    def __iter__(self) -> Iterator:
        return (self[i] for i in range(len(self)))


def epoch_selection(batches: Batches, seed: int, shuffle: bool, num_shards: int, shard_id: int) -> BatchSelection:
    """The batches rank ``shard_id`` of ``num_shards`` reads in an epoch whose shuffle seed is ``seed``: fairseq's
    ``EpochBatchIterator.ordered_batches`` (no prefetch, no grouped shuffling)."""
    ids = np.arange(len(batches), dtype=np.int64)
    if shuffle:
        np.random.RandomState(seed).shuffle(ids)  # = data_utils.numpy_seed(seed): np.random.shuffle(list)
    mine = ids[shard_id::num_shards]
    padded = int(math.ceil(len(ids) / float(num_shards)))
    if len(mine) < padded:
        mine = np.concatenate([mine, np.full(padded - len(mine), -1, np.int64)])
    return BatchSelection(batches, mine)


class CompactEpochBatchIterator(iterators.EpochBatchIterator):
    """fairseq's ``EpochBatchIterator`` over :class:`Batches`: the same batches, order, sharding, state dict and
    resume, without a Python object per batch. ``batches`` is the one batching of the run, or a callable
    ``(dataset, epoch) -> Batches`` for one per epoch (``--rebuild-batches``)."""

    def __init__(self, dataset, collate_fn, batches: Union[Batches, Callable[..., Batches]], **kwargs) -> None:
        fixed = None if callable(batches) else batches
        super().__init__(dataset, collate_fn, batches if fixed is None else (lambda _dataset, _epoch: fixed),
                         **kwargs)
        self._frozen_batches = fixed

    @property
    def frozen_batches(self) -> Batches:
        if self._frozen_batches is None:
            self._frozen_batches = self.batch_sampler(self.dataset, self.epoch)
        return self._frozen_batches

    def ordered_batches(self, epoch: int, fix_batches_to_gpus: bool, shuffle: bool) -> BatchSelection:
        return epoch_selection(self.frozen_batches, self.seed + epoch, shuffle, self.num_shards, self.shard_id)
