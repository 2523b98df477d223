"""Embeddings of a protein's MSA as features (the paper's "avg" and "cov" feature combination, supplement 13).

Each member is embedded on its own ungapped sequence, then realigned to the query's columns with zero
vectors at gaps. With sequence weights w_m (1 / number of members within 70% identity, the usual debiasing):

    avg_i   = sum_m w_m h_i^m / sum_m w_m 1_i^m                     (L, d)
    cov_ijkl = sum_m w_m (P h_i^m)_k (P h_j^m)_l / sum_m w_m 1_i^m 1_j^m   (L, L, k, k), uncentered

with P the first k principal directions of the embeddings (k = 16 in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from fairseq_esm.inference.extract import residue_representations
from fairseq_esm.io.a3m import AlignedRow
from fairseq_esm.modules.alphabet import Alphabet
from fairseq_esm.modules.esm1 import ESM1
from fairseq_esm.modules.msa_covariance import weighted_covariance


@dataclass
class AlignedEmbeddings:
    """Per-member embeddings in query columns: ``values`` (M, L, d) with zeros at gaps, ``present`` (M, L)."""

    values: np.ndarray
    present: np.ndarray
    skipped_empty: int = 0


def sequence_weights(aligned: Sequence[str], identity: float = 0.7) -> np.ndarray:
    """(M,) 1 / number of rows whose column-wise identity with this row exceeds ``identity`` (self included)."""
    codes = np.array([np.frombuffer(row.encode(), dtype=np.uint8) for row in aligned])
    same = (codes[:, None, :] == codes[None, :, :]).mean(axis=2)  # (M, M) fraction of equal columns
    return 1.0 / (same > identity).sum(axis=1)


def embed_rows(model: ESM1, alphabet: Alphabet, rows: Sequence[AlignedRow], layer: int = -1,
               toks_per_batch: int = 4096) -> AlignedEmbeddings:
    """Embed every non-empty member (one forward per ungapped sequence) and place it in query columns."""
    kept = [row for row in rows if row.sequence]
    length, dim = len(rows[0].columns), model.cfg.encoder_embed_dim
    values = np.zeros((len(kept), length, dim), np.float32)
    present = np.zeros((len(kept), length), bool)
    reps = residue_representations(model, alphabet, [row.sequence for row in kept], layer, toks_per_batch)
    for index, (row, rep) in enumerate(zip(kept, reps)):
        columns = np.asarray(row.columns)
        hit = columns >= 0
        values[index, hit] = rep[columns[hit]]
        present[index] = hit
    return AlignedEmbeddings(values, present, skipped_empty=len(rows) - len(kept))


def msa_average(embeddings: AlignedEmbeddings, weights: np.ndarray) -> np.ndarray:
    """(L, d) weighted mean over the members with a residue in each column (0 where none has one)."""
    numerator = np.einsum("m,mld->ld", weights, embeddings.values)
    denominator = weights @ embeddings.present
    return numerator / np.maximum(denominator, 1e-12)[:, None]


def fit_pca(model: ESM1, alphabet: Alphabet, sequences: Sequence[str], layer: int, k: int,
            toks_per_batch: int = 4096) -> np.ndarray:
    """(k, d) PCA directions of the residue representations of ``sequences`` (the queries of a run or split)."""
    stacked = np.concatenate(residue_representations(model, alphabet, sequences, layer, toks_per_batch))
    if len(stacked) < k:
        raise ValueError(f"--cov-k {k}: only {len(stacked)} query residues to fit the PCA on")
    return pca_projection(stacked, k)


def pca_projection(vectors: np.ndarray, k: int = 16) -> np.ndarray:
    """(k, d) the top-k principal directions of (N, d) vectors (uncentered data is projected as is)."""
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return vt[:k]


def project_members(embeddings: AlignedEmbeddings, projection: np.ndarray) -> np.ndarray:
    """(M, L, k) members' embeddings on the (k, d) principal directions; zeros stay zeros at gaps."""
    return embeddings.values @ projection.T.astype(np.float32)


def msa_covariance(embeddings: AlignedEmbeddings, weights: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """(k*k, L, L) uncentered weighted covariance of projected embeddings (``weighted_covariance``), numpy."""
    projected = torch.from_numpy(project_members(embeddings, projection))
    present = torch.from_numpy(embeddings.present)
    return weighted_covariance(projected, present, torch.from_numpy(np.asarray(weights))).numpy()
