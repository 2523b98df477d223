"""Unigram (amino-acid frequency) baseline: the ECE of predicting every target by its frequency.

Frequencies come from the training split with add-one smoothing over the residue letters, so
every possible target has non-zero probability; the ECE, ``exp(mean CE in nats)``, is taken over
the exact masked targets ``protein_mlm`` produces for a held-out split, i.e. the positions
``fairseq-validate`` scores, and is directly comparable with its ``ppl``.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch

from fairseq_esm.io.residues import RESIDUE_LETTERS
from fairseq_esm.modules.alphabet import Alphabet

#: ECE of a uniform guess over the 20 canonical amino acids
UNIFORM_20_ECE = 20.0


def residue_counts(records: Iterable[torch.Tensor], alphabet: Alphabet) -> np.ndarray:
    """Occurrences of each vocabulary index over stored records (specials included, ignored later)."""
    counts = np.zeros(len(alphabet), dtype=np.int64)
    for record in records:
        counts += np.bincount(np.asarray(record, dtype=np.int64), minlength=len(alphabet))[: len(alphabet)]
    return counts


def unigram_log_probs(counts: np.ndarray, alphabet: Alphabet) -> np.ndarray:
    """Add-one smoothed log-frequencies over the residue letters; ``-inf`` for every other token."""
    residues = [alphabet.index(letter) for letter in RESIDUE_LETTERS]
    log_probs = np.full(len(alphabet), -np.inf)
    smoothed = counts[residues] + 1.0
    log_probs[residues] = np.log(smoothed / smoothed.sum())
    return log_probs


def heldout_targets(dataset: Iterable[dict[str, torch.Tensor]], pad_idx: int) -> np.ndarray:
    """Every masked target (original token at a selected position) of a ``protein_mlm`` dataset."""
    chunks = [item["target"][item["target"].ne(pad_idx)].numpy() for item in dataset]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)


def ece(log_probs: np.ndarray, targets: np.ndarray) -> float:
    """Exponentiated mean cross-entropy of a fixed distribution on ``targets`` (= 2 ** bits)."""
    if len(targets) == 0:
        raise ValueError("no masked targets to score")
    return math.exp(-float(log_probs[targets].mean()))
