"""Left-conditioning n-gram models of protein sequences with Laplace smoothing (the paper's Appendix baseline).

The model predicts every residue of a protein from the ``k`` residues before it (``k = 0``: the
unigram, amino-acid frequencies):

    P(x | ctx) = (c(ctx, x) + alpha) / (c(ctx) + alpha * V)

over the ``V = 25`` residue letters of the ESM-1b alphabet (20 canonical + ``X B U Z O``). Positions
near the start of a protein have fewer than ``k`` residues before them; the missing ones are a
begin-of-protein symbol, so "first residue" and "third residue after M" are contexts of their own.
Only residues are predicted, never an end-of-protein token: the same targets the masked-LM ECE scores.
ECE is ``exp(mean cross-entropy per residue in nats)``.

Counting is vectorised: a context is one int64 key (base-26 digits: 25 residues + begin-of-protein,
the nearest residue most significant), ``(context, residue)`` pairs are ``key * V + residue``, and
``np.unique`` / ``np.searchsorted`` on the sorted keys do all counting and lookup. One count pass per
``k`` serves every ``alpha``. Keys fit int64 up to ``k = 12`` (``MAX_CONTEXT``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from fairseq_esm.io.residues import RESIDUE_LETTERS

SYMBOLS = RESIDUE_LETTERS  # the predicted symbols, in ESM-1b dictionary order
V = len(SYMBOLS)  # 25
BEGIN = V  # begin-of-protein context symbol
CONTEXT_BASE = V + 1
MAX_CONTEXT = 12  # 26**12 * 25 < 2**63: the largest k whose pair keys fit int64
EDGE_TOLERANCE = 1e-4  # relative ECE change below which a flat alpha curve does not count as cut off
_INVALID = 255
_CODES = np.full(256, _INVALID, np.uint8)
_CODES[np.frombuffer(SYMBOLS.encode("ascii"), np.uint8)] = np.arange(V)


@dataclass(frozen=True)
class EncodedProteins:
    """Proteins as one array of residue codes, with each residue's position inside its protein."""

    tokens: np.ndarray  # int64 codes 0..V-1, all proteins concatenated
    positions: np.ndarray  # int64, 0 at the first residue of every protein
    n_proteins: int

    def __len__(self) -> int:
        return len(self.tokens)


def encode_proteins(sequences: Iterable[str]) -> EncodedProteins:
    """Residue strings (as ``read_fasta`` yields them) to codes; anything but the 25 letters is an error."""
    seqs = list(sequences)
    lengths = np.fromiter(map(len, seqs), np.int64, len(seqs))
    raw = np.frombuffer("".join(seqs).encode("ascii", "replace"), np.uint8)
    codes = _CODES[raw]
    bad = np.flatnonzero(codes == _INVALID)
    if len(bad):
        letters = "".join(sorted({chr(b) for b in raw[bad]}))
        raise ValueError(f"{len(bad):,} characters that are not ESM-1b residue letters ({letters!r})")
    starts = np.cumsum(lengths) - lengths
    positions = np.arange(len(raw), dtype=np.int64) - np.repeat(starts, lengths)
    return EncodedProteins(codes.astype(np.int64), positions, len(seqs))


def context_keys(proteins: EncodedProteins, k: int) -> np.ndarray:
    """The int64 key of the ``k`` residues before every position (begin-of-protein where there are none)."""
    check_context(k)
    keys = np.zeros(len(proteins), np.int64)
    for back in range(1, k + 1):
        # np.roll wraps across protein starts, but exactly those positions (position < back) take BEGIN
        previous = np.where(proteins.positions >= back, np.roll(proteins.tokens, back), BEGIN)
        keys = keys * CONTEXT_BASE + previous
    return keys


def check_context(k: int) -> None:
    """Context sizes the int64 keys can hold."""
    if not 0 <= k <= MAX_CONTEXT:
        raise ValueError(f"context size {k} outside 0..{MAX_CONTEXT} (int64 keys)")


def _lookup(keys: np.ndarray, counts: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The count stored under each query key in sorted ``keys`` (0 for keys never seen)."""
    if len(keys) == 0:
        return np.zeros(len(queries), np.int64)
    at = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return np.where(keys[at] == queries, counts[at], 0)


def _check_alpha(alpha: float) -> None:
    """Laplace smoothing needs alpha > 0, else unseen residues get probability 0."""
    if not alpha > 0 or not math.isfinite(alpha):
        raise ValueError(f"Laplace alpha must be a positive finite number, got {alpha}")


@dataclass(frozen=True)
class NgramCounts:
    """Training counts for one context size: sorted ``(context, residue)`` and context keys with counts."""

    k: int
    pair_keys: np.ndarray
    pair_counts: np.ndarray
    context_keys: np.ndarray
    context_counts: np.ndarray

    @classmethod
    def fit(cls, proteins: EncodedProteins, k: int) -> NgramCounts:
        """Count every (context, residue) pair of the training proteins in one sort."""
        pairs = context_keys(proteins, k) * V + proteins.tokens
        pair_keys, pair_counts = np.unique(pairs, return_counts=True)
        contexts, first = np.unique(pair_keys // V, return_index=True)
        context_counts = np.add.reduceat(pair_counts, first) if len(first) else np.zeros(0, np.int64)
        return cls(k, pair_keys, pair_counts, contexts, context_counts)

    @property
    def n_contexts(self) -> int:
        """Distinct contexts seen in training."""
        return len(self.context_keys)

    @property
    def n_residues(self) -> int:
        """Training residues counted."""
        return int(self.pair_counts.sum())

    def counts_at(self, proteins: EncodedProteins) -> tuple[np.ndarray, np.ndarray]:
        """``c(ctx, x)`` and ``c(ctx)`` at every position of ``proteins``."""
        contexts = context_keys(proteins, self.k)
        pairs = _lookup(self.pair_keys, self.pair_counts, contexts * V + proteins.tokens)
        return pairs, _lookup(self.context_keys, self.context_counts, contexts)

    def log_probs(self, proteins: EncodedProteins, alpha: float) -> np.ndarray:
        """Natural-log probability of every residue of ``proteins`` given its left context."""
        _check_alpha(alpha)
        pairs, contexts = self.counts_at(proteins)
        return np.log(pairs + alpha) - np.log(contexts + alpha * V)

    def cross_entropy(self, proteins: EncodedProteins, alphas: Sequence[float]) -> np.ndarray:
        """Mean nats per residue of ``proteins``, one per alpha, from a single count lookup."""
        if len(proteins) == 0:
            raise ValueError("no residues to score")
        for alpha in alphas:
            _check_alpha(alpha)
        pairs, contexts = self.counts_at(proteins)
        # positions sharing (c(ctx,x), c(ctx)) share a probability: score each distinct pair once
        base = int(pairs.max()) + 1
        combos, weights = np.unique(contexts * base + pairs, return_counts=True)
        pair_c, context_c = combos % base, combos // base
        return np.array([-(weights * (np.log(pair_c + a) - np.log(context_c + a * V))).sum() / len(proteins)
                         for a in alphas])

    def train_cross_entropy(self, alphas: Sequence[float]) -> np.ndarray:
        """Mean nats per training residue, one per alpha, from the counts alone (no pass over the data)."""
        for alpha in alphas:
            _check_alpha(alpha)
        return np.array([-((self.pair_counts * np.log(self.pair_counts + a)).sum()
                           - (self.context_counts * np.log(self.context_counts + a * V)).sum()) / self.n_residues
                         for a in alphas])

    def distribution(self, context: str, alpha: float) -> np.ndarray:
        """P(x | context) over ``SYMBOLS``; a context shorter than k means the protein starts there."""
        _check_alpha(alpha)
        if len(context) > self.k:
            raise ValueError(f"context {context!r} is longer than k={self.k}")
        codes = [BEGIN] * (self.k - len(context)) + encode_proteins([context]).tokens.tolist()
        key = 0
        for symbol in reversed(codes):  # the nearest residue first, as context_keys builds keys
            key = key * CONTEXT_BASE + symbol
        pairs = _lookup(self.pair_keys, self.pair_counts, key * V + np.arange(V, dtype=np.int64))
        total = _lookup(self.context_keys, self.context_counts, np.array([key], np.int64))[0]
        return (pairs + alpha) / (total + alpha * V)


@dataclass
class ContextResult:
    """One context size of a sweep: alpha chosen on validation, then scored once on held-out data."""

    k: int
    n_contexts: int
    alphas: list[float]
    valid_ece_by_alpha: list[float]
    best_alpha: float
    train_ece: float
    valid_ece: float
    heldout_ece: float
    seconds: float

    @property
    def alpha_at_grid_edge(self) -> bool:
        """The best alpha is the smallest or largest tried and validation ECE still falls there: widen the grid."""
        at = self.alphas.index(self.best_alpha)
        if len(self.alphas) < 2 or 0 < at < len(self.alphas) - 1:
            return False
        neighbour = self.valid_ece_by_alpha[1 if at == 0 else at - 1]
        return neighbour > self.valid_ece * (1 + EDGE_TOLERANCE)


def sweep_context(train: EncodedProteins, valid: EncodedProteins, heldout: EncodedProteins, k: int,
                  alphas: Sequence[float]) -> ContextResult:
    """Count once for ``k``, pick alpha on ``valid``, report train/valid/held-out ECE at that alpha."""
    start = time.perf_counter()
    alphas = sorted(alphas)
    counts = NgramCounts.fit(train, k)
    valid_ce = counts.cross_entropy(valid, alphas)
    best = int(np.argmin(valid_ce))
    alpha = float(alphas[best])
    return ContextResult(
        k=k,
        n_contexts=counts.n_contexts,
        alphas=[float(a) for a in alphas],
        valid_ece_by_alpha=np.exp(valid_ce).tolist(),
        best_alpha=alpha,
        train_ece=math.exp(float(counts.train_cross_entropy([alpha])[0])),
        valid_ece=math.exp(float(valid_ce[best])),
        heldout_ece=math.exp(float(counts.cross_entropy(heldout, [alpha])[0])),
        seconds=time.perf_counter() - start,
    )


def best_context(results: Sequence[ContextResult]) -> ContextResult:
    """The result with the lowest validation ECE (never chosen on held-out); ties go to the smaller k."""
    return min(results, key=lambda r: (r.valid_ece, r.k))
