"""Sizes that fairseq's batching reads, kept as an array, and whether they change with the epoch.

Crop and batching layers cache the token count of every sample. They stay valid for the whole run,
except under UR50/D sampling, where each epoch draws other records (``redraws_each_epoch``): then the
caches are refreshed in ``set_epoch`` and fairseq must rebuild its batches every epoch.
"""

from __future__ import annotations

import numpy as np
from fairseq.data import data_utils


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
    with data_utils.numpy_seed(seed, epoch):
        tie_break = np.random.permutation(len(sizes))
    return np.lexsort([tie_break, sizes])


def sizes_follow_epoch(dataset) -> bool:
    """True if ``dataset`` or any dataset it wraps draws different records each epoch."""
    while dataset is not None:
        if getattr(dataset, "redraws_each_epoch", False):
            return True
        dataset = getattr(dataset, "dataset", None)
    return False
