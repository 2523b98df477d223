"""Random cropping of long proteins to the model's context, re-drawn every epoch.

A binarized record is one protein's residue ids followed by fairseq's ``</s>``. The wrapper
strips that ``</s>``, keeps a random window of at most ``max_positions - specials`` residues
(offset drawn from ``(seed, epoch, index)``, so a run is reproducible and each epoch sees a
different window), then adds the alphabet's own specials (``<cls>`` … ``<eos>`` or ``<cls>`` …).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset, FairseqDataset

from fairseq_esm.data.item_rng import item_rng
from fairseq_esm.data.sized import StoredSizes, sizes_follow_epoch
from fairseq_esm.modules.alphabet import Alphabet

#: extra seed component that keeps the crop draws independent of the masking draws
CROP_STREAM = 1


def crop_residues(residues: np.ndarray, budget: int, rng: np.random.RandomState) -> np.ndarray:
    """A uniformly placed window of ``budget`` residues; proteins that fit are returned whole."""
    if len(residues) <= budget:
        return residues
    offset = rng.randint(0, len(residues) - budget + 1)
    return residues[offset : offset + budget]


class CropDataset(StoredSizes, BaseWrapperDataset):
    """Stored records → wrapped, cropped token tensors of at most ``max_positions`` tokens.

    ``fixed_epoch`` pins the crop (validation / test); ``None`` follows ``set_epoch`` (training).
    """

    def __init__(
        self,
        dataset: FairseqDataset,
        alphabet: Alphabet,
        max_positions: int,
        stored_eos: int,
        seed: int,
        fixed_epoch: Optional[int] = None,
    ) -> None:
        super().__init__(dataset)
        self.alphabet = alphabet
        self.budget = max_positions - alphabet.num_specials_added
        if self.budget < 1:
            raise ValueError(f"max_positions={max_positions} leaves no room for residues")
        self.stored_eos = stored_eos
        self.seed = seed
        self.fixed_epoch = fixed_epoch
        self.epoch = fixed_epoch if fixed_epoch is not None else 1
        self._cropped_from = None  # the stored sizes ``_sizes`` were computed from
        self.refresh_sizes()

    def cropped_sizes(self) -> np.ndarray:
        """Tokens per sample after cropping and adding the alphabet's specials, as int32 (one array of the
        split's length per rank: the smallest type that holds any size)."""
        stored = np.asarray(self.dataset.sizes)  # residues + </s>
        sizes = np.minimum(stored, self.budget + 1).astype(np.int32, copy=False)  # a new array: min() copies
        sizes += self.alphabet.num_specials_added - 1
        return sizes

    def refresh_sizes(self) -> None:
        """Recompute ``sizes`` when the wrapped records changed (a new UR50/D draw), not at every ``set_epoch``."""
        stored = self.dataset.sizes
        if stored is not self._cropped_from:
            self._sizes = self.cropped_sizes()
            self._cropped_from = stored

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if self.fixed_epoch is None:
            self.epoch = epoch
        if sizes_follow_epoch(self.dataset):
            self.refresh_sizes()

    def residues(self, index: int) -> np.ndarray:
        """The stored protein without its trailing ``</s>``."""
        record = np.asarray(self.dataset[index], dtype=np.int64)
        if len(record) == 0 or record[-1] != self.stored_eos:
            raise ValueError(
                f"record {index} does not end with </s> ({self.stored_eos}); was it made by fairseq-preprocess?"
            )
        return record[:-1]

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = item_rng(self.seed, self.epoch, index, CROP_STREAM)
        window = crop_residues(self.residues(index), self.budget, rng)
        return torch.tensor(self.alphabet.wrap(window.tolist()), dtype=torch.long)
