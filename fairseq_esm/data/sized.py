"""Sizes that fairseq's batching reads, kept as an array, and whether they change with the epoch.

Crop and batching layers cache the token count of every sample. They stay valid for the whole run,
except under UR50/D sampling, where each epoch draws other records (``redraws_each_epoch``): then the
caches are refreshed in ``set_epoch`` and fairseq must rebuild its batches every epoch.
"""

from __future__ import annotations

import numpy as np


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


def sizes_follow_epoch(dataset) -> bool:
    """True if ``dataset`` or any dataset it wraps draws different records each epoch."""
    while dataset is not None:
        if getattr(dataset, "redraws_each_epoch", False):
            return True
        dataset = getattr(dataset, "dataset", None)
    return False
