"""The masked-LM dataset fairseq batches: length-sorted order and fairseq's sample dict.

Each item is one protein (never concatenated with others); the collater right-pads with
``<pad>`` and returns ``id``, ``nsentences``, ``ntokens``, ``net_input.src_tokens`` and ``target``.
Every protein lands in a batch: fairseq drops a final batch that is not a multiple of
``--required-batch-size-multiple`` (8 by default; fairseq issue #5036), which would skip the
longest proteins of every epoch and leave ``fairseq-validate`` scoring fewer targets than
the held-out set has.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from fairseq.data import FairseqDataset, data_utils

from fairseq_esm.data.sized import EveryRecordBatched, LengthOrdered, StoredSizes, sizes_follow_epoch


class ProteinMLMDataset(EveryRecordBatched, LengthOrdered, StoredSizes, FairseqDataset):
    """``{"source", "target"}`` items → fairseq samples, ordered by size (seeded shuffle for ties).

    A plain ``FairseqDataset`` rather than a wrapper, so fairseq's size filtering and
    ``batch_by_size`` run on these (cropped) sizes instead of the stored records'.
    """

    def __init__(self, dataset: FairseqDataset, pad_idx: int, shuffle: bool, seed: int) -> None:
        super().__init__()
        self.dataset = dataset
        self._sizes = np.asarray(dataset.sizes)  # the crop layer's int32 sizes, shared, not copied
        self.pad_idx = pad_idx
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 1

    def num_tokens_vec(self, indices: np.ndarray) -> np.ndarray:
        return self._sizes[indices]

    def __len__(self) -> int:
        return len(self.dataset)

    def filter_indices_by_size(self, indices: np.ndarray, max_sizes) -> tuple[np.ndarray, list]:
        """fairseq's filter, without its two per-protein temporaries when every size fits (the usual case:
        sizes are cropped to ``--max-positions``)."""
        if isinstance(max_sizes, (int, np.integer)) and (len(self._sizes) == 0 or self._sizes.max() <= max_sizes):
            return indices, []
        return super().filter_indices_by_size(indices, max_sizes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.set_epoch(epoch)
        if sizes_follow_epoch(self.dataset):
            self._sizes = np.asarray(self.dataset.sizes)

    @property
    def can_reuse_epoch_itr_across_epochs(self) -> bool:
        """Not when the records change with the epoch (UR50/D): batches are rebuilt from the new sizes."""
        return not sizes_follow_epoch(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"id": index, **self.dataset[index]}

    def collater(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Right-pad sources and targets with ``<pad>`` into fairseq's sample dict."""
        if not samples:
            return {}
        sources = [s["source"] for s in samples]
        return {
            "id": torch.tensor([s["id"] for s in samples], dtype=torch.long),
            "nsentences": len(samples),
            "ntokens": sum(len(s) for s in sources),
            "net_input": {"src_tokens": data_utils.collate_tokens(sources, self.pad_idx, left_pad=False)},
            "target": data_utils.collate_tokens([s["target"] for s in samples], self.pad_idx, left_pad=False),
        }
