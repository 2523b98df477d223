"""BERT-style masking of protein tokens, restricted to residues and to canonical replacements.

fairseq's ``MaskTokensDataset`` may pick ``<mask>``, specials or ambiguity codes as "random"
replacements; the ESM recipe replaces a target only by a *different* canonical amino acid, so
the masking here is our own. It is a pure function of the tokens and an RNG, wrapped by a
dataset that seeds the RNG from ``(seed, epoch, index)`` like ``MaskTokensDataset``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset, FairseqDataset

from fairseq_esm.data.item_rng import item_rng
from fairseq_esm.io.mask_strategies import MASK_STRATEGIES
from fairseq_esm.io.residues import RESIDUE_LETTERS
from fairseq_esm.modules.alphabet import Alphabet


@dataclass(frozen=True, eq=False)
class MaskingScheme:
    """The indices and probabilities masking needs, taken once from the alphabet."""

    mask_idx: int
    pad_idx: int
    residue_table: np.ndarray  # bool over the vocabulary: which tokens may be selected
    canonical: np.ndarray  # the 20 canonical amino-acid indices
    mask_prob: float = 0.15
    leave_unmasked_prob: float = 0.1
    random_token_prob: float = 0.1
    strategy: str = "bert"


def masking_scheme(
    alphabet: Alphabet,
    mask_prob: float = 0.15,
    leave_unmasked_prob: float = 0.1,
    random_token_prob: float = 0.1,
    strategy: str = "bert",
) -> MaskingScheme:
    """Build a ``MaskingScheme``; ``all_mask`` turns every selected target into ``<mask>``."""
    if strategy not in MASK_STRATEGIES:
        raise ValueError(f"unknown mask strategy {strategy!r}; expected one of {MASK_STRATEGIES}")
    if not 0.0 < mask_prob < 1.0 or leave_unmasked_prob + random_token_prob > 1.0:
        raise ValueError("need 0 < mask_prob < 1 and leave_unmasked_prob + random_token_prob <= 1")
    residue_table = np.zeros(len(alphabet), dtype=bool)
    residue_table[[alphabet.index(letter) for letter in RESIDUE_LETTERS]] = True
    return MaskingScheme(
        mask_idx=alphabet.mask_idx,
        pad_idx=alphabet.padding_idx,
        residue_table=residue_table,
        canonical=np.asarray(alphabet.canonical_indices(), dtype=np.int64),
        mask_prob=mask_prob,
        leave_unmasked_prob=leave_unmasked_prob,
        random_token_prob=random_token_prob,
        strategy=strategy,
    )


def alternate_canonical(originals: np.ndarray, canonical: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """A uniform canonical amino acid per position, never equal to a canonical original."""
    ordered = np.sort(canonical)
    is_canonical = np.isin(originals, ordered)
    skip = np.where(is_canonical, np.searchsorted(ordered, originals), len(ordered))
    choices = np.where(is_canonical, len(ordered) - 1, len(ordered))
    draw = (rng.random_sample(len(originals)) * choices).astype(np.int64)
    return ordered[draw + (draw >= skip)]


def mask_tokens(
    tokens: np.ndarray, scheme: MaskingScheme, rng: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt ``int(mask_prob * n_residues + U)`` residues of one protein; returns (source, target).

    ``target`` holds the original token at the selected positions and ``<pad>`` elsewhere.
    """
    candidates = np.flatnonzero(scheme.residue_table[tokens])
    num = int(scheme.mask_prob * len(candidates) + rng.random_sample())
    selected = rng.choice(candidates, num, replace=False)
    source = tokens.copy()
    target = np.full_like(tokens, scheme.pad_idx)
    target[selected] = tokens[selected]
    if scheme.strategy == "all_mask":
        source[selected] = scheme.mask_idx
        return source, target
    u = rng.random_sample(num)
    replace = u < scheme.random_token_prob
    masked = u >= scheme.random_token_prob + scheme.leave_unmasked_prob
    source[selected[masked]] = scheme.mask_idx
    source[selected[replace]] = alternate_canonical(tokens[selected[replace]], scheme.canonical, rng)
    return source, target


class MaskedProteinDataset(BaseWrapperDataset):
    """Token tensors → ``{"source", "target"}`` masked per ``(seed, epoch, index)``.

    ``fixed_epoch`` pins the masks (a fixed held-out set); ``None`` follows ``set_epoch``.
    """

    def __init__(
        self,
        dataset: FairseqDataset,
        scheme: MaskingScheme,
        seed: int,
        fixed_epoch: Optional[int] = None,
    ) -> None:
        super().__init__(dataset)
        self.scheme = scheme
        self.seed = seed
        self.fixed_epoch = fixed_epoch
        self.epoch = fixed_epoch if fixed_epoch is not None else 1

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if self.fixed_epoch is None:
            self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        tokens = np.asarray(self.dataset[index], dtype=np.int64)
        source, target = mask_tokens(tokens, self.scheme, item_rng(self.seed, self.epoch, index))
        return {"source": torch.from_numpy(source), "target": torch.from_numpy(target)}
