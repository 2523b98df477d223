"""Remote homology detection on SCOPe by nearest-neighbour search in embedding space (ESM-1b paper, Table 2).

Every domain queries all others, ranked with faiss by cosine similarity (inner product of unit vectors)
or by L2 distance. Following the paper (appendix "Remote Homology", after Ma et al. 2014):

=============  ======================================  ==================  ======================
level          positive                                negative            excluded
=============  ======================================  ==================  ======================
fold           same fold, different superfamily        different fold      same superfamily
superfamily    same superfamily, different family      different SF        same family
=============  ======================================  ==================  ======================

Hit-10 is the fraction of queries with a positive among the 10 nearest non-excluded domains; AUC is the
ROC AUC of one query's ranking (ties count half), averaged over queries. The same code scores a precomputed
similarity matrix (an alignment search such as HMMER, where unreported pairs are ``-inf``: they tie at the
bottom and never count as hits). Queries without a positive are skipped and
counted. The related folds the paper (after Söding & Remmert 2011) excludes — Rossmann-like c.2-c.5,
c.27, c.28, c.30, c.31 and the four- to eight-bladed beta-propellers b.66-b.70 — are removed entirely:
neither queries nor database entries.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence, Tuple

import numpy as np
from scipy.stats import rankdata

from fairseq_esm.errors import InputError
from fairseq_esm.io.fasta import FastaReport, ResiduePolicy, clean_chunk, iter_chunks, read_chunks, record_starts
from fairseq_esm.io.residues import RESIDUE_LETTERS

EXCLUDED_FOLDS = frozenset({"c.2", "c.3", "c.4", "c.5", "c.27", "c.28", "c.30", "c.31",
                            "b.66", "b.67", "b.68", "b.69", "b.70"})
LEVELS = ("fold", "superfamily")
DISTANCES = ("cosine", "l2")
HIT_K = 10
SCCS = re.compile(r"^[a-l]\.\d+\.\d+\.\d+$")  # class.fold.superfamily.family, e.g. a.1.1.1
QUERY_BLOCK = 512  # queries ranked per faiss search: bounds the (block, n) score matrix


class ScopFormatError(InputError):
    """A FASTA header without a SCOPe sccs (``>d1dlwa_ a.1.1.1 ...``)."""


@dataclass(frozen=True)
class ScopDomain:
    """One SCOPe domain: ASTRAL id, sccs (``a.1.1.1``) and cleaned residues."""

    id: str
    sccs: str
    sequence: str

    @property
    def fold(self) -> str:
        return self.sccs.rsplit(".", 2)[0]

    @property
    def superfamily(self) -> str:
        return self.sccs.rsplit(".", 1)[0]


@dataclass
class ScopSet:
    """The domains kept for evaluation and the counts of those set aside."""

    domains: list[ScopDomain]
    fasta: FastaReport
    excluded_fold_domains: int = 0
    subsampled_out: int = 0

    def to_dict(self) -> dict:
        """JSON-ready counts (the FASTA report included)."""
        return {"domains": len(self.domains), "folds": len({d.fold for d in self.domains}),
                "superfamilies": len({d.superfamily for d in self.domains}),
                "families": len({d.sccs for d in self.domains}),
                "excluded_fold_domains": self.excluded_fold_domains, "subsampled_out": self.subsampled_out,
                "fasta": self.fasta.to_dict()}


def parse_header(header: str) -> tuple[str, str]:
    """``d1dlwa_ a.1.1.1 (A:) ...`` → (id, sccs); ScopFormatError if the second token is no sccs."""
    tokens = header.split(None, 2)
    if len(tokens) < 2 or not SCCS.match(tokens[1]):
        raise ScopFormatError(f"header {header[:60]!r} has no SCOPe sccs as its second token")
    return tokens[0], tokens[1]


def _chunk_sccs(path: str, data: bytes, first_line: int) -> dict[str, str]:
    """Id → sccs for every header of one chunk of records; one-line error naming the line."""
    sccs: dict[str, str] = {}
    starts, ends = record_starts(data)
    for start, end in zip(starts.tolist(), ends.tolist()):
        header = data[start + 1 : end].decode("utf-8", "replace").strip()
        try:
            rid, code = parse_header(header)
        except ScopFormatError as err:
            line = first_line + data.count(b"\n", 0, start)
            raise ScopFormatError(f"{path}:{line}: {err} — pass an ASTRAL SCOPe FASTA "
                                  "(headers like '>d1dlwa_ a.1.1.1 (A:) ...')") from None
        sccs[rid] = code
    return sccs


def read_sccs(path: str) -> dict[str, str]:
    """Id → sccs for every header of a SCOPe/ASTRAL FASTA (plain or gzip); one-line error naming the line."""
    sccs: dict[str, str] = {}
    for data, first_line in read_chunks(str(path)):
        sccs.update(_chunk_sccs(path, data, first_line))
    return sccs


def read_scope(path: str, max_length: int | None = None) -> tuple[list[ScopDomain], FastaReport]:
    """Domains of an ASTRAL FASTA through the residue policy (lowercase → upper, counted; too long → skipped).

    One read of the file (so ``-`` or a FIFO works): each chunk's headers give the sccs, the same chunk's
    cleaned records the sequences."""
    report = FastaReport()
    policy = ResiduePolicy(max_length=max_length, duplicates="error")  # ids key the sccs: must be unique
    domains = []
    for chunk in iter_chunks(str(path), policy):
        sccs = _chunk_sccs(path, chunk.data, chunk.first_line)
        part = clean_chunk(chunk, policy)
        report.merge(part.report)
        sequences = np.split(part.residues, np.cumsum(part.lengths)[:-1]) if part.ids else []
        domains += [ScopDomain(rid, sccs[rid], seq.tobytes().decode("ascii"))
                    for rid, seq in zip(part.ids, sequences)]
    return domains, report


def drop_excluded_folds(domains: Sequence[ScopDomain]) -> tuple[list[ScopDomain], int]:
    """Domains outside the paper's excluded related folds, and how many were dropped."""
    kept = [d for d in domains if d.fold not in EXCLUDED_FOLDS]
    return kept, len(domains) - len(kept)


def subsample_folds(domains: Sequence[ScopDomain], max_domains: int, seed: int) -> list[ScopDomain]:
    """Whole folds (so superfamilies and families stay whole) in a seeded random order, up to ``max_domains``."""
    by_fold: dict[str, list[ScopDomain]] = {}
    for domain in domains:
        by_fold.setdefault(domain.fold, []).append(domain)
    chosen: set[str] = set()
    total = 0
    for fold in np.random.default_rng(seed).permutation(sorted(by_fold)).tolist():
        if total + len(by_fold[fold]) <= max_domains:
            chosen.add(fold)
            total += len(by_fold[fold])
    return [d for d in domains if d.fold in chosen]


def load_scope_set(path: str, max_length: int | None, max_domains: int | None, seed: int) -> ScopSet:
    """Read, drop the excluded folds, subsample whole folds: the evaluation set with its counts."""
    domains, report = read_scope(path, max_length)
    kept, excluded = drop_excluded_folds(domains)
    sampled = subsample_folds(kept, max_domains, seed) if max_domains else kept
    return ScopSet(sampled, report, excluded, len(kept) - len(sampled))


def composition(sequences: Iterable[str]) -> np.ndarray:
    """(n, 25) residue-letter frequencies per sequence: the amino-acid composition baseline."""
    index = np.full(256, -1, np.int64)
    index[[ord(ch) for ch in RESIDUE_LETTERS]] = np.arange(len(RESIDUE_LETTERS))
    rows = []
    for sequence in sequences:
        codes = index[np.frombuffer(sequence.encode("ascii"), np.uint8)]
        counts = np.bincount(codes[codes >= 0], minlength=len(RESIDUE_LETTERS))
        rows.append(counts / max(counts.sum(), 1))
    return np.asarray(rows, np.float32).reshape(-1, len(RESIDUE_LETTERS))


def hierarchy_codes(sccs: Sequence[str]) -> dict[str, np.ndarray]:
    """Integer codes of fold, superfamily and family per domain (equal code ⇔ same group)."""
    parts = {"fold": [s.rsplit(".", 2)[0] for s in sccs], "superfamily": [s.rsplit(".", 1)[0] for s in sccs],
             "family": list(sccs)}
    return {level: np.unique(names, return_inverse=True)[1] for level, names in parts.items()}


def pair_labels(codes: dict[str, np.ndarray], queries: np.ndarray, level: str) -> np.ndarray:
    """(q, n) int8: 1 positive, 0 negative, -1 excluded (the query itself always excluded)."""
    coarse, fine = ("fold", "superfamily") if level == "fold" else ("superfamily", "family")
    same_coarse = codes[coarse][queries, None] == codes[coarse][None, :]
    same_fine = codes[fine][queries, None] == codes[fine][None, :]
    labels = np.where(same_coarse, 1, 0).astype(np.int8)
    labels[same_fine] = -1
    return labels


@dataclass
class LevelResult:
    """Per-level sums over scored queries; means are computed at the end."""

    hits: int = 0
    auc_sum: float = 0.0
    queries: int = 0
    skipped_no_positive: int = 0
    per_query_auc: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        """Hit-10, mean AUC (None when no query had a positive) and query counts."""
        n = self.queries
        return {"hit10": self.hits / n if n else None, "auc": self.auc_sum / n if n else None,
                "queries": n, "skipped_no_positive": self.skipped_no_positive}


def faiss_index(embeddings: np.ndarray, distance: str):
    """Exact faiss index: inner product on unit vectors (cosine) or squared L2."""
    import faiss  # optional dependency: only this evaluation needs it

    if distance not in DISTANCES:
        raise ValueError(f"distance {distance!r}: expected one of {DISTANCES}")
    index = faiss.IndexFlatIP(embeddings.shape[1]) if distance == "cosine" else faiss.IndexFlatL2(embeddings.shape[1])
    index.add(embeddings)
    return index


def prepare(embeddings: np.ndarray, distance: str) -> np.ndarray:
    """Contiguous float32 vectors, L2-normalised for cosine (zero vectors stay zero)."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if distance == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(x, dtype=np.float32)


def score_block(order: np.ndarray, similarity: np.ndarray, labels: np.ndarray, result: LevelResult) -> None:
    """Add one block of queries: ``order`` (q, n) ranking, best first; ``similarity``, ``labels`` (q, n) by domain.

    A hit needs a finite similarity: pairs a search method did not report (``-inf``) never count.
    """
    ranked = np.take_along_axis(labels, order, axis=1)  # (q, n) labels, nearest first
    reported = np.isfinite(np.take_along_axis(similarity, order, axis=1))  # (q, n), nearest first
    valid_ranked = ranked >= 0
    positives, negatives = (labels == 1).sum(1), (labels == 0).sum(1)
    scored = (positives > 0) & (negatives > 0)
    result.skipped_no_positive += int((positives == 0).sum())
    top = valid_ranked & (np.cumsum(valid_ranked, axis=1) <= HIT_K)  # 10 nearest non-excluded
    result.hits += int(((ranked == 1) & top & reported).any(1)[scored].sum())
    # AUC = (rank sum of positives - P(P+1)/2) / (P N), ascending average ranks (ties count half);
    # excluded pairs get +inf so they rank above every scored pair and leave its rank unchanged
    ranks = rankdata(np.where(labels >= 0, similarity, np.inf), axis=1)
    pos_rank_sum = np.where(labels == 1, ranks, 0.0).sum(1)
    auc = (pos_rank_sum - positives * (positives + 1) / 2) / np.maximum(positives * negatives, 1)
    result.per_query_auc += auc[scored].tolist()
    result.auc_sum += float(auc[scored].sum())
    result.queries += int(scored.sum())


#: ranks a block of query indices: (order best first, similarity in domain order), both (q, n)
Ranker = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]


def score_queries(rank: Ranker, sccs: Sequence[str], block: int = QUERY_BLOCK) -> dict[str, LevelResult]:
    """Hit-10 and mean per-query AUC at both levels for any method that ranks all domains per query."""
    codes = hierarchy_codes(sccs)
    results = {level: LevelResult() for level in LEVELS}
    n = len(sccs)
    for start in range(0, n, block):
        queries = np.arange(start, min(start + block, n))
        order, similarity = rank(queries)
        for level in LEVELS:
            score_block(order, similarity, pair_labels(codes, queries, level), results[level])
    return results


def evaluate(embeddings: np.ndarray, sccs: Sequence[str], distance: str,
             block: int = QUERY_BLOCK) -> dict[str, LevelResult]:
    """Hit-10 and mean per-query AUC at the fold and superfamily levels for one embedding and distance."""
    if len(embeddings) != len(sccs):
        raise ValueError(f"{len(embeddings)} embeddings for {len(sccs)} domains")
    x = prepare(embeddings, distance)
    index = faiss_index(x, distance)

    def rank(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores, order = index.search(x[queries], len(x))  # (q, n), nearest first; every domain ranked
        similarity = np.empty_like(scores)
        np.put_along_axis(similarity, order, scores if distance == "cosine" else -scores, axis=1)  # domain order
        return order, similarity

    return score_queries(rank, sccs, block)


def evaluate_similarity(similarity: np.ndarray, sccs: Sequence[str], seed: int = 0,
                        block: int = QUERY_BLOCK) -> dict[str, LevelResult]:
    """The same metrics for a precomputed (n, n) similarity (query rows, higher = closer; -inf = not reported).

    Equal scores (bit scores have one decimal) are ordered by a seeded random permutation for Hit-10, so no
    domain order in the file favours a query's relatives; AUC counts ties half as for embeddings.
    """
    n = len(sccs)
    if similarity.shape != (n, n):
        raise ValueError(f"similarity of shape {similarity.shape} for {n} domains")
    shuffle = np.random.default_rng(seed).permutation(n)

    def rank(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = similarity[queries]
        order = shuffle[np.argsort(-rows[:, shuffle], axis=1, kind="stable")]  # ties in shuffled order
        return order, rows

    return score_queries(rank, sccs, block)


def pair_counts(sccs: Sequence[str]) -> dict[str, int]:
    """Unordered positive pairs per level (the paper counts 256,806 fold and 92,944 superfamily pairs)."""
    groups = {"fold": Counter(s.rsplit(".", 2)[0] for s in sccs), "sf": Counter(s.rsplit(".", 1)[0] for s in sccs),
              "family": Counter(sccs)}
    pairs = {name: sum(c * (c - 1) // 2 for c in counter.values()) for name, counter in groups.items()}
    return {"fold": pairs["fold"] - pairs["sf"], "superfamily": pairs["sf"] - pairs["family"]}
