"""Random streams keyed by ``(seed, epoch, index, ...)``, private to the caller and so thread-safe.

fairseq's ``data_utils.numpy_seed`` reseeds numpy's *global* generator and restores it afterwards. fairseq
builds batches in a background thread (``--data-buffer-size``), and during a mid-epoch validation two
such threads (training prefetch and validation) crop and mask at once: with one global generator their
draws interleave and a batch depends on thread timing. :func:`item_rng` gives each draw its own
``RandomState``, seeded exactly as ``numpy_seed`` seeds the global one, so the numbers are the same as
before and no longer depend on what any other thread does.
"""

from __future__ import annotations

import numpy as np


def item_seed(seed: int, *keys: int) -> int:
    """The seed ``fairseq.data.data_utils.numpy_seed(seed, *keys)`` gives numpy's generator."""
    if not keys:
        return int(seed)
    return int(hash((seed, *keys)) % 1e6)


def item_rng(seed: int, *keys: int) -> np.random.RandomState:
    """A fresh generator for one item; draws equal ``numpy_seed(seed, *keys)`` + ``np.random`` draws."""
    return np.random.RandomState(item_seed(seed, *keys))
