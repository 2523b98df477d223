"""Do representations align families? Cosine AUC of aligned vs position-matched unaligned residue pairs
within Pfam Stockholm alignments (Rives et al. 2021, Table S1 and Figure 3).

Reading: gaps ``-``/``.`` are removed and every residue keeps the alignment column it came from, so each
sequence is the ungapped protein the model sees. Letters follow the residue policy of
:mod:`fairseq_esm.io.fasta` (lowercase -> uppercase, unknown letters -> ``X``, both counted); a sequence
with any other character is skipped and counted. In an alignment that mixes cases (HMMER/Pfam), lowercase
residues are insert states: they stay in the sequence (their positions count) but are aligned to nothing.

Pairs (the paper's supplement, section "Aligned pair distribution"): positives are residues of two different
sequences in the same match column, ``max_pairs`` of them drawn uniformly without replacement. For every
positive, a negative is drawn by the paper's rejection loop: take its within-sequence position difference
``d = |i - j|``, pick two different sequences at random, pick uniformly one residue pair ``(i', j')`` of them
with ``|i' - j'| = d``, keep it if the two residues are not in the same match column, else retry (at most
``max_tries`` times; failures are counted as ``unmatched``). Score: cosine similarity of final-layer
representations; AUC = sklearn's ``roc_auc_score``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from fairseq_esm.errors import InputError
from fairseq_esm.inference.extract import ExtractSpec, extract_representations
from fairseq_esm.io.residues import GAP_SYMBOLS, RESIDUE_LETTERS
from fairseq_esm.modules.alphabet import Alphabet
from fairseq_esm.modules.esm1 import ESM1

MAX_TRIES = 1000
NUCLEOTIDE_FRACTION = 0.9  # an alignment whose residues are >= 90 % ACGTU is DNA/RNA, not protein


class AlignmentError(InputError):
    """A Stockholm file that cannot be read as an alignment: one line naming the file."""


@dataclass
class AlignedFamily:
    """Ungapped member sequences of one alignment, each residue's column, and which residues are inserts."""

    name: str
    ids: list[str]
    sequences: list[str]
    columns: list[np.ndarray]  # per sequence: alignment column of each residue
    match: list[np.ndarray]  # per sequence: True where the residue is a match state (can be aligned)
    width: int
    counts: dict[str, int] = field(default_factory=dict)  # residue-policy changes and skipped sequences


@dataclass
class PairSample:
    """Residue pairs as (sequence a, residue i, sequence b, residue j) rows, and the unmatched count."""

    positives: np.ndarray  # (P, 4) int64
    negatives: np.ndarray  # (N, 4) int64
    positives_total: int  # aligned pairs in the family before subsampling
    unmatched: int = 0  # positives for which no unaligned pair with the same offset was found


def _count(counts: dict[str, int], key: str, n: int = 1) -> None:
    if n:
        counts[key] = counts.get(key, 0) + int(n)


def read_stockholm(path: str | Path) -> AlignedFamily:
    """One Stockholm alignment as ungapped sequences with column maps (one-line error when malformed)."""
    from Bio import AlignIO  # imported here: only this evaluation needs Biopython

    path = Path(path)
    try:
        alignment = AlignIO.read(str(path), "stockholm")
    except ValueError as err:  # Biopython: no alignment, more than one, unequal lengths, bad markup
        raise AlignmentError(f"{path}: not a single Stockholm alignment ({err}) — check the file") from None
    rows = [(record.id, str(record.seq)) for record in alignment]
    if not rows:
        raise AlignmentError(f"{path}: the alignment has no sequences — check the file")
    text = "".join(row for _, row in rows)
    mixed_case = text != text.upper() and text != text.lower()
    family = AlignedFamily(path.stem, [], [], [], [], alignment.get_alignment_length())
    for seq_id, row in rows:
        _add_row(family, seq_id, row, mixed_case)
    return family


def _add_row(family: AlignedFamily, seq_id: str, row: str, mixed_case: bool) -> None:
    """Ungap one aligned row under the residue policy; skip (and count) rows with foreign characters."""
    letters, columns, match = [], [], []
    for column, ch in enumerate(row):
        if ch in GAP_SYMBOLS:
            _count(family.counts, "gap_removed")
            continue
        up = ch.upper()
        if not (ch.isascii() and ch.isalpha()):
            _count(family.counts, "skipped_invalid_character")
            return
        _count(family.counts, "lowercase_to_upper", ch.islower())
        _count(family.counts, "unknown_letter_to_X", up not in RESIDUE_LETTERS)
        letters.append(up if up in RESIDUE_LETTERS else "X")
        columns.append(column)
        match.append(not (mixed_case and ch.islower()))
    if not letters:
        _count(family.counts, "skipped_empty")
        return
    family.ids.append(seq_id)
    family.sequences.append("".join(letters))
    family.columns.append(np.asarray(columns, dtype=np.int64))
    family.match.append(np.asarray(match, dtype=bool))


def looks_nucleotide(family: AlignedFamily) -> bool:
    """True when the residues are nearly all A/C/G/T/U: a DNA/RNA alignment the protein model must not score."""
    text = "".join(family.sequences)
    return bool(text) and sum(text.count(ch) for ch in "ACGTU") >= NUCLEOTIDE_FRACTION * len(text)


def subsample(family: AlignedFamily, max_seqs: int, rng: np.random.Generator) -> AlignedFamily:
    """At most ``max_seqs`` members chosen uniformly at random (order kept), as the paper's 128."""
    if len(family.sequences) <= max_seqs:
        return family
    keep = np.sort(rng.choice(len(family.sequences), max_seqs, replace=False))
    pick = lambda items: [items[k] for k in keep]  # noqa: E731
    return AlignedFamily(family.name, pick(family.ids), pick(family.sequences), pick(family.columns),
                         pick(family.match), family.width, dict(family.counts))


def flat_index(family: AlignedFamily) -> np.ndarray:
    """Offset of each sequence's first residue in the concatenation of all residues (length n + 1)."""
    return np.cumsum([0] + [len(c) for c in family.columns])


def column_occupants(family: AlignedFamily) -> tuple[np.ndarray, np.ndarray]:
    """(k, 2) rows of (sequence, residue) of every match-state residue sorted by column, and the bounds of
    column c's rows (``bounds[c]:bounds[c + 1]``)."""
    seq = np.concatenate([np.full(len(c), s) for s, c in enumerate(family.columns)])
    res = np.concatenate([np.arange(len(c)) for c in family.columns])
    col = np.concatenate(family.columns)
    keep = np.concatenate(family.match)
    seq, res, col = seq[keep], res[keep], col[keep]
    order = np.argsort(col, kind="stable")
    bounds = np.searchsorted(col[order], np.arange(family.width + 1))
    return np.stack([seq[order], res[order]], axis=1).astype(np.int64), bounds


def _triangle(p: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-major index ``p`` of the strict upper triangle of an n x n matrix -> (u, v), u < v."""
    u = (n - 2 - np.floor(np.sqrt(-8.0 * p + 4.0 * n * (n - 1) - 7) / 2.0 - 0.5)).astype(np.int64)
    v = p + u + 1 - n * (n - 1) // 2 + (n - u) * (n - u - 1) // 2
    return u, v


def aligned_pairs(family: AlignedFamily, max_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Up to ``max_pairs`` same-column residue pairs of two sequences, uniform without replacement; and the total."""
    members, bounds = column_occupants(family)
    sizes = np.diff(bounds)
    per_column = sizes * (sizes - 1) // 2
    total = int(per_column.sum())
    chosen = np.arange(total) if total <= max_pairs else np.sort(rng.choice(total, max_pairs, replace=False))
    ends = np.cumsum(per_column)
    column = np.searchsorted(ends, chosen, side="right")
    u, v = _triangle(chosen - (ends - per_column)[column], sizes[column])
    return np.concatenate([members[bounds[column] + u], members[bounds[column] + v]], axis=1), total


def same_column(family: AlignedFamily, rows: np.ndarray) -> np.ndarray:
    """True where both residues of a pair are match states in one column (i.e. aligned)."""
    start = flat_index(family)
    col, match = np.concatenate(family.columns), np.concatenate(family.match)
    left, right = start[rows[:, 0]] + rows[:, 1], start[rows[:, 2]] + rows[:, 3]
    return match[left] & match[right] & (col[left] == col[right])


def offset_pairs(lengths: np.ndarray, offsets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One try per offset: random sequence pairs (a != b) and a uniform residue pair with ``|i - j| = d``;
    rows with no such residue pair get ``a = -1``."""
    n = len(offsets)
    a = rng.integers(0, len(lengths), n)
    b = (a + rng.integers(1, len(lengths), n)) % len(lengths)
    la, lb, d = lengths[a], lengths[b], offsets
    forward = np.clip(np.minimum(la, lb - d), 0, None)  # i in [0, forward): j = i + d
    backward = np.where(d > 0, np.clip(np.minimum(la, lb + d) - d, 0, None), 0)  # i in [d, d + backward): j = i - d
    options = forward + backward
    r = np.floor(rng.random(n) * np.maximum(options, 1)).astype(np.int64)
    i = np.where(r < forward, r, d + r - forward)
    j = np.where(r < forward, i + d, i - d)
    return np.stack([np.where(options > 0, a, -1), i, b, j], axis=1)


def unaligned_pairs(family: AlignedFamily, positives: np.ndarray, rng: np.random.Generator,
                    max_tries: int = MAX_TRIES) -> tuple[np.ndarray, int]:
    """One position-matched unaligned pair per positive (the paper's rejection loop); and how many failed."""
    lengths = np.array([len(s) for s in family.sequences], dtype=np.int64)
    pending = np.abs(positives[:, 1] - positives[:, 3])
    found: list[np.ndarray] = []
    for _ in range(max_tries):
        if not len(pending):
            break
        rows = offset_pairs(lengths, pending, rng)
        ok = rows[:, 0] >= 0
        ok[ok] = ~same_column(family, rows[ok])
        found.append(rows[ok])
        pending = pending[~ok]
    negatives = np.concatenate(found) if found else np.empty((0, 4), dtype=np.int64)
    return negatives, len(pending)


def sample_pairs(family: AlignedFamily, max_pairs: int, rng: np.random.Generator) -> PairSample:
    """Positives and their position-matched negatives for one family."""
    positives, total = aligned_pairs(family, max_pairs, rng)
    negatives, unmatched = unaligned_pairs(family, positives, rng)
    return PairSample(positives, negatives, total, unmatched)


def final_representations(model: ESM1, alphabet: Alphabet, sequences: list[str],
                          toks_per_batch: int = 4096) -> list[torch.Tensor]:
    """Unit-normalised final-layer representations (L, C) of each sequence, via the extraction batching."""
    spec = ExtractSpec(layers=(model.num_layers,), include=frozenset({"per_tok"}), toks_per_batch=toks_per_batch)
    records = [(str(k), seq) for k, seq in enumerate(sequences)]
    reps: list[torch.Tensor] = [torch.empty(0)] * len(records)
    for index, result in extract_representations(model, alphabet, records, spec):
        reps[index] = torch.nn.functional.normalize(result["representations"][model.num_layers], dim=-1)
    return reps


def pair_cosines(reps: list[torch.Tensor], rows: np.ndarray) -> np.ndarray:
    """Cosine similarity of each (a, i, b, j) pair, from unit-normalised representations."""
    offsets = np.cumsum([0] + [len(r) for r in reps])
    flat = torch.cat(reps).numpy()
    left, right = flat[offsets[rows[:, 0]] + rows[:, 1]], flat[offsets[rows[:, 2]] + rows[:, 3]]
    return np.einsum("nc,nc->n", left, right).astype(np.float64)


def family_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC AUC of aligned (label 1) vs unaligned (label 0) cosine scores."""
    labels = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    return float(roc_auc_score(labels, np.concatenate([positive, negative])))


def identity_split_aucs(family: AlignedFamily, pairs: PairSample, pos: np.ndarray, neg: np.ndarray) -> dict:
    """AUC restricted to pairs of the same amino acid and of different ones (the paper's Figure 3b/c)."""
    start, letters = flat_index(family), np.frombuffer("".join(family.sequences).encode(), dtype=np.uint8)

    def same(rows: np.ndarray) -> np.ndarray:
        return letters[start[rows[:, 0]] + rows[:, 1]] == letters[start[rows[:, 2]] + rows[:, 3]]

    sp, sn = same(pairs.positives), same(pairs.negatives)
    out = {}
    for key, p, n in (("auc_same_aa", pos[sp], neg[sn]), ("auc_diff_aa", pos[~sp], neg[~sn])):
        out[key] = family_auc(p, n) if len(p) and len(n) else None
    return out


def family_rng(seed: int, name: str) -> np.random.Generator:
    """A generator fixed by the seed and the family name, so results do not depend on file order."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def evaluate_family(model: ESM1, alphabet: Alphabet, family: AlignedFamily, max_seqs: int, max_pairs: int,
                    seed: int, toks_per_batch: int = 4096) -> dict:
    """Sample members and pairs, embed, and score one family: AUC, mean cosines, counts."""
    rng = family_rng(seed, family.name)
    members = subsample(family, max_seqs, rng)
    if len(members.sequences) < 2:
        raise AlignmentError(f"{family.name}: {len(members.sequences)} usable sequence(s); pairs need at least 2")
    pairs = sample_pairs(members, max_pairs, rng)
    if not len(pairs.positives):
        raise AlignmentError(f"{family.name}: no two residues of different sequences share a match column")
    if not len(pairs.negatives):
        raise AlignmentError(f"{family.name}: no unaligned pair at the aligned pairs' position offsets "
                             f"(gapless alignment of equal-length sequences?)")
    reps = final_representations(model, alphabet, members.sequences, toks_per_batch)
    pos, neg = pair_cosines(reps, pairs.positives), pair_cosines(reps, pairs.negatives)
    return {
        "family": family.name, "sequences": len(family.sequences), "sequences_used": len(members.sequences),
        "columns": family.width, "residues": int(sum(len(s) for s in members.sequences)),
        "aligned_pairs_total": pairs.positives_total, "aligned_pairs": len(pos), "unaligned_pairs": len(neg),
        "unmatched": pairs.unmatched, "auc": family_auc(pos, neg), **identity_split_aucs(members, pairs, pos, neg),
        "mean_cos_aligned": float(pos.mean()), "mean_cos_unaligned": float(neg.mean()),
        "residue_policy": dict(sorted(family.counts.items())),
    }
