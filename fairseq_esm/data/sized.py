"""Sizes that fairseq's batching reads, kept as an array, and whether they change with the epoch.

Crop and batching layers cache the token count of every sample. They stay valid for the whole run,
except under UR50/D sampling, where each epoch draws other records (``redraws_each_epoch``): then the
caches are refreshed in ``set_epoch`` and fairseq must rebuild its batches every epoch.

Batches are a function of the seed and the epoch only, whatever epoch the process started in
(``LengthOrdered``): that is what lets a resumed run read exactly the batches an uninterrupted one would.

At UniRef scale (tens of millions of proteins, every rank ordering all of them) the order is computed in O(N)
with small index types: the seeded tie-break permutation is inverted, then stably sorted by size with numpy's
radix sort (sizes fit in 16 bits), which gives exactly ``np.lexsort([tie_break, sizes])``.
"""

from __future__ import annotations

import numpy as np

from fairseq_esm.data.item_rng import item_rng


class EveryRecordBatched:
    """Mixin for a ``FairseqDataset``: fairseq's token-budget batches plus the final partial batch fairseq
    would drop, so every held-out protein is scored."""

    def batch_by_size(self, indices, max_tokens=None, max_sentences=None, required_batch_size_multiple=1):
        batches = list(super().batch_by_size(indices, max_tokens, max_sentences, required_batch_size_multiple))
        batched = sum(len(batch) for batch in batches)
        if batched < len(indices):
            batches.append(np.asarray(indices[batched:], dtype=np.int64))
        return batches


class StoredSizes:
    """``sizes`` / ``size`` / ``num_tokens`` from the ``_sizes`` array a dataset keeps."""

    _sizes: np.ndarray

    @property
    def sizes(self) -> np.ndarray:
        return self._sizes

    def size(self, index: int) -> int:
        return int(self._sizes[index])

    def num_tokens(self, index: int) -> int:
        return int(self._sizes[index])


def index_dtype(n: int) -> type:
    """The smallest signed integer type that indexes ``n`` items (int32 below 2**31)."""
    return np.int32 if n < 2**31 else np.int64


def stable_argsort(keys: np.ndarray, dtype: type = np.int64) -> np.ndarray:
    """``np.argsort(keys, kind="stable")`` for non-negative integer keys, in O(N): one radix pass per 16 bits of
    the largest key (numpy's stable sort is a radix sort for 16-bit types), indices returned as ``dtype``."""
    keys = np.asarray(keys)
    if len(keys) == 0 or not np.issubdtype(keys.dtype, np.integer) or int(keys.min()) < 0 or int(keys.max()) >= 2**32:
        return np.argsort(keys, kind="stable").astype(dtype, copy=False)  # not small non-negative integers
    if int(keys.max()) < 2**16:
        return np.argsort(keys.astype(np.uint16, copy=False), kind="stable").astype(dtype, copy=False)
    order = np.argsort(keys.astype(np.uint16), kind="stable").astype(dtype, copy=False)  # the low 16 bits
    high = (keys >> 16).astype(np.uint16)[order]  # least significant digit first: the low pass breaks high ties
    return order[np.argsort(high, kind="stable")]


def length_order(sizes: np.ndarray, shuffle: bool, seed: int, epoch: int, dtype: type = np.int64) -> np.ndarray:
    """Indices sorted by size; with ``shuffle``, ties broken by a permutation seeded with ``(seed, epoch)``.

    Equal to ``np.lexsort([item_rng(seed, epoch).permutation(n), sizes])``: the permutation is the same
    (``RandomState.permutation`` shuffles an ``arange``; shuffling one of a smaller type moves the same
    positions), and listing indices in tie-break order (the inverse permutation), then sorting them stably by
    size, puts equal sizes in tie-break order.
    """
    sizes = np.asarray(sizes)
    n = len(sizes)
    small = index_dtype(n)
    if not shuffle:
        return stable_argsort(sizes, small).astype(dtype, copy=False)
    tie_break = np.arange(n, dtype=small)
    item_rng(seed, epoch).shuffle(tie_break)
    by_tie_break = np.empty(n, dtype=small)  # by_tie_break[t] = the index whose tie-break is t
    by_tie_break[tie_break] = np.arange(n, dtype=small)
    del tie_break
    if n and int(sizes.max()) < 2**16 and int(sizes.min()) >= 0:
        sizes = sizes.astype(np.uint16)  # gathered in tie-break order next: 2 bytes a protein, radix-sorted
    return by_tie_break[stable_argsort(sizes[by_tie_break])].astype(dtype, copy=False)


class LengthOrdered:
    """``ordered_indices`` for fairseq's batching: by size, ties in a seeded order when ``shuffle``.

    fairseq batches a dataset once, in the epoch the process starts in, and reuses those batches in later
    epochs when ``can_reuse_epoch_itr_across_epochs`` (shuffling their order per epoch itself). The tie-break
    is then drawn for epoch 1, so a run resumed in epoch 5 forms the batches the uninterrupted run formed in
    epoch 1. A dataset that cannot be reused is rebatched every epoch and its tie-break follows the epoch.
    """

    _sizes: np.ndarray
    shuffle: bool
    seed: int
    epoch: int

    def ordered_indices(self) -> np.ndarray:
        return self.length_sorted_indices()

    def length_sorted_indices(self, dtype: type = np.int64) -> np.ndarray:
        """``ordered_indices`` as ``dtype`` (int32 halves the order fairseq's batches are cut from)."""
        shuffle, seed, epoch = self.tie_break()
        return length_order(self._sizes, shuffle, seed, epoch, dtype)

    def tie_break(self) -> tuple[bool, int, int]:
        """(shuffle, seed, epoch) of the tie-break: with the sizes, all the length order depends on."""
        return self.shuffle, self.seed, 1 if self.can_reuse_epoch_itr_across_epochs else self.epoch


def sizes_follow_epoch(dataset) -> bool:
    """True if ``dataset`` or any dataset it wraps draws different records each epoch."""
    while dataset is not None:
        if getattr(dataset, "redraws_each_epoch", False):
            return True
        dataset = getattr(dataset, "dataset", None)
    return False
