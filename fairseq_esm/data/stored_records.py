"""A binarized split read straight from its memory-mapped ``.bin``/``.idx``: no read of the whole ``.bin`` at load.

fairseq's ``MMapIndexedDataset`` reads every byte of the ``.idx`` and the ``.bin`` once when it opens them
(``_warmup_mmap_file``: tens of seconds per rank at UniRef50, at every start and, with sharded data directories,
every epoch). :class:`StoredRecords` maps the two files and reads only the records asked for; its items are
exactly ``MMapIndexedDataset``'s (the record's tokens as an int64 tensor) and its ``sizes`` the index's int32
sizes, memory-mapped (pages of the page cache that every rank of a node shares, not a private copy).
:func:`open_split` checks a split (``data/integrity.py``) and opens it, ``split``, ``split1``, … when combining.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import torch
from fairseq.data import ConcatDataset, Dictionary, FairseqDataset

from fairseq_esm.data.integrity import check_split_files, map_index, scan_token_range
from fairseq_esm.data.sized import StoredSizes

logger = logging.getLogger(__name__)


class StoredRecords(StoredSizes, FairseqDataset):
    """The records of one fairseq mmap split (``prefix.bin``/``.idx``), read on demand."""

    def __init__(self, prefix: str, dtype: np.dtype | None = None, sizes: np.ndarray | None = None,
                 offsets: np.ndarray | None = None) -> None:
        super().__init__()
        if dtype is None or sizes is None or offsets is None:
            dtype, sizes, offsets = map_index(prefix)
        self.prefix = prefix
        self.dtype = np.dtype(dtype)
        self._sizes = sizes
        self._offsets = offsets
        self._tokens: np.ndarray | None = None  # the .bin, mapped on first read (and again in a worker process)

    def __getstate__(self) -> dict:
        return {"prefix": self.prefix}  # a spawned loader worker maps the files itself (never pickles them)

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["prefix"])

    @property
    def tokens(self) -> np.ndarray:
        if self._tokens is None:
            self._tokens = np.memmap(self.prefix + ".bin", dtype=self.dtype, mode="r")
        return self._tokens

    def __len__(self) -> int:
        return len(self._sizes)

    def __getitem__(self, index: int) -> torch.Tensor:
        start = int(self._offsets[index]) // self.dtype.itemsize
        record = self.tokens[start : start + int(self._sizes[index])]
        return torch.from_numpy(np.array(record, dtype=np.int64))

    @property
    def supports_prefetch(self) -> bool:
        return False


def open_split(split_path: str, dictionary: Dictionary, combine: bool = False) -> FairseqDataset | None:
    """``split_path`` (and ``split_path1``, ``split_path2``, … with ``combine``), checked and opened; ``None``
    when there is no such split. Checks: the index (O(records), chunked), the ``.bin`` size and a bounded scan of
    the token ids against ``dictionary`` (``data/integrity.py``)."""
    parts = []
    for k in itertools.count():
        prefix = split_path + (str(k) if k > 0 else "")
        found = check_split_files(prefix)
        if found is None:
            break
        dtype, sizes, offsets = found
        scan_token_range(prefix, dtype, offsets, len(dictionary))
        parts.append(StoredRecords(prefix, dtype, sizes, offsets))
        logger.info(f"loaded {len(sizes):,} examples from: {prefix}")
        if not combine:
            break
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)
