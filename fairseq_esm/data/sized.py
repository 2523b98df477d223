"""Sizes that fairseq's batching reads, kept as an array, and whether they change with the epoch.

Crop and batching layers cache the token count of every sample. They stay valid for the whole run,
except under UR50/D sampling, where each epoch draws other records (``redraws_each_epoch``): then the
caches are refreshed in ``set_epoch`` and fairseq must rebuild its batches every epoch.

Batches are a function of the seed and the epoch only, whatever epoch the process started in
(``LengthOrdered``): that is what lets a resumed run read exactly the batches an uninterrupted one would.
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


def length_order(sizes: np.ndarray, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """Indices sorted by size; with ``shuffle``, ties broken by a permutation seeded with ``(seed, epoch)``."""
    if not shuffle:
        return np.argsort(sizes, kind="stable")
    tie_break = item_rng(seed, epoch).permutation(len(sizes))
    return np.lexsort([tie_break, sizes])


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
        epoch = 1 if self.can_reuse_epoch_itr_across_epochs else self.epoch
        return length_order(self._sizes, self.shuffle, self.seed, epoch)


def sizes_follow_epoch(dataset) -> bool:
    """True if ``dataset`` or any dataset it wraps draws different records each epoch."""
    while dataset is not None:
        if getattr(dataset, "redraws_each_epoch", False):
            return True
        dataset = getattr(dataset, "dataset", None)
    return False
