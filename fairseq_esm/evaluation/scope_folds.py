"""SCOPe classes for structure-labelled chains, and k-fold partitions held out by family, superfamily or fold.

The ESM-1b paper's linear projections (appendix "Linear projections") use SCOPe 2.07 domains and split
them, independently per level, into five sets of families, superfamilies or folds. Here the labelled
chains come from ``fairseq-esm-structure-labels``; each chain gets SCOPe domains by transfer from
MMseqs2 hits against an ASTRAL FASTA (:data:`RULE`): a hit with at least ``min_identity`` sequence
identity covering at least ``min_coverage`` of the domain gives the chain region it aligns to that
domain's sccs. One chain may carry several (non-overlapping) domains; each becomes its own example,
cropped to the aligned region, and each ASTRAL domain is used once (its best-matching region).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from fairseq_esm.errors import InputError
from fairseq_esm.evaluation.probe_settings import LEVELS
from fairseq_esm.evaluation.remote_homology import read_sccs
from fairseq_esm.io.dssp import MASKED
from fairseq_esm.io.fasta import ResiduePolicy, read_fasta
from fairseq_esm.io.msa_search import easy_search

RULE = ("MMseqs2 easy-search of each chain against the ASTRAL FASTA; a hit with >= {identity:.0%} identity "
        "covering >= {coverage:.0%} of the domain assigns the aligned chain region to the domain's sccs; "
        "hits overlapping a better-scoring one on the chain are ignored")
M8_FIELDS = "query,target,fident,qstart,qend,tstart,tend,qlen,tlen,bits"


class FoldError(InputError):
    """Too few SCOPe groups for the requested partitions, or no usable assignment."""


@dataclass(frozen=True)
class DomainHit:
    """One chain region assigned to a SCOPe domain: 0-based half-open ``start:end`` on the chain."""

    chain: str
    domain: str
    sccs: str
    start: int
    end: int
    identity: float
    domain_coverage: float
    bits: float


def group_key(sccs: str, level: str) -> str:
    """``a.1.1.2`` -> family ``a.1.1.2``, superfamily ``a.1.1``, fold ``a.1``."""
    if level not in LEVELS:
        raise FoldError(f"level {level!r}: expected one of {', '.join(LEVELS)}")
    return sccs.rsplit(".", LEVELS.index(level))[0] if level != "family" else sccs


def assign_domains(rows: Sequence[Sequence[str]], sccs: dict[str, str], min_identity: float = 0.9,
                   min_coverage: float = 0.8) -> list[DomainHit]:
    """Accepted hits (see :data:`RULE`), best first per chain, without overlaps on the chain."""
    candidates = []
    for query, target, fident, qstart, qend, tstart, tend, _qlen, tlen, bits in rows:
        coverage = (int(tend) - int(tstart) + 1) / int(tlen)
        if float(fident) >= min_identity and coverage >= min_coverage and target in sccs:
            candidates.append(DomainHit(query, target, sccs[target], int(qstart) - 1, int(qend), float(fident),
                                        round(coverage, 3), float(bits)))
    kept: dict[str, list[DomainHit]] = {}
    for hit in sorted(candidates, key=lambda h: (h.chain, -h.bits, h.domain)):
        taken = kept.setdefault(hit.chain, [])
        if all(hit.end <= other.start or hit.start >= other.end for other in taken):
            taken.append(hit)
    return [hit for hits in kept.values() for hit in sorted(hits, key=lambda h: h.start)]


def search_domains(records: Sequence[tuple[str, str]], astral: str | Path, min_identity: float = 0.9,
                   min_coverage: float = 0.8, threads: int = 1) -> list[DomainHit]:
    """Assign SCOPe domains to ``(name, sequence)`` chains by MMseqs2 search against an ASTRAL FASTA."""
    sccs = read_sccs(str(astral))
    rows = easy_search(records, Path(astral), M8_FIELDS, threads)
    return assign_domains(rows, sccs, min_identity, min_coverage)


def write_assignments(path: Path, hits: Sequence[DomainHit]) -> None:
    """Tab-separated table with a header line: one accepted hit per row."""
    fields = list(asdict(hits[0]).keys()) if hits else list(DomainHit.__dataclass_fields__)
    lines = ["\t".join(fields)] + ["\t".join(str(v) for v in asdict(hit).values()) for hit in hits]
    path.write_text("\n".join(lines) + "\n")


def read_assignments(path: Path) -> list[DomainHit]:
    """The table :func:`write_assignments` wrote; one-line error naming the file and line if malformed."""
    lines = Path(path).read_text().splitlines()
    fields = list(DomainHit.__dataclass_fields__)
    if not lines or lines[0].split("\t") != fields:
        raise FoldError(f"{path}: not an assignments table (expected the header {' '.join(fields)})")
    hits = []
    for number, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        try:
            chain, domain, sccs, start, end, identity, coverage, bits = cells
            hits.append(DomainHit(chain, domain, sccs, int(start), int(end), float(identity), float(coverage),
                                  float(bits)))
        except ValueError:
            raise FoldError(f"{path}:{number}: expected {len(fields)} tab-separated fields, got {line[:60]!r}"
                            ) from None
    return hits


def partition(groups: Sequence[str], weights: Sequence[int], folds: int, seed: int, level: str = "") -> list[int]:
    """Partition index (0..folds-1) of every item; all items of one group share a partition.

    Groups go, heaviest first (ties in a seeded random order), to the partition with the least weight so far,
    which balances the partitions by ``weights`` (e.g. residues).
    """
    totals = Counter()
    for group, weight in zip(groups, weights):
        totals[group] += weight
    if len(totals) < folds:
        raise FoldError(f"{len(totals)} {level or 'group'} group(s) for {folds} partitions: need at least one "
                        f"group per partition (use fewer --folds or more labelled chains)")
    names = sorted(totals)
    random.Random(seed).shuffle(names)
    names.sort(key=lambda name: -totals[name])  # stable: equal weights keep the seeded order
    load, where = [0] * folds, {}
    for name in names:
        target = min(range(folds), key=lambda k: (load[k], k))
        where[name] = target
        load[target] += totals[name]
    return [where[group] for group in groups]


@dataclass(frozen=True)
class LabelledDomain:
    """One example of the probes: residues, DSSP 8-state string (``.`` masked), int8 contacts (-1 masked)."""

    name: str
    sccs: str
    sequence: str
    ss8: str
    contacts: np.ndarray

    @property
    def resolved(self) -> np.ndarray:
        """(L,) True where the residue has coordinates (the contact map's diagonal is not -1)."""
        return np.diagonal(self.contacts) >= 0


def read_labels(directory: str | Path) -> list[tuple[str, str, str, np.ndarray]]:
    """``(name, sequence, ss8, contacts)`` of every chain ``fairseq-esm-structure-labels`` wrote to ``directory``."""
    directory = Path(directory)
    records = list(read_fasta(str(directory / "labels.fasta"), ResiduePolicy()))
    states = (directory / "ss8.txt").read_text().splitlines()
    if len(states) != len(records):
        raise FoldError(f"{directory}: {len(records)} records in labels.fasta but {len(states)} lines in ss8.txt")
    chains = []
    for (name, sequence), ss8 in zip(records, states):
        contacts = np.load(directory / "contacts" / f"{name}.npy")
        if len(ss8) != len(sequence) or contacts.shape != (len(sequence), len(sequence)):
            raise FoldError(f"{directory}: {name} has {len(sequence)} residues, {len(ss8)} DSSP states and a "
                            f"{contacts.shape} contact map; re-run fairseq-esm-structure-labels")
        chains.append((name, sequence, ss8, contacts))
    return chains


def crop_domains(chains: Sequence[tuple[str, str, str, np.ndarray]], hits: Sequence[DomainHit],
                 min_length: int = 30) -> tuple[list[LabelledDomain], Counter]:
    """One example per ASTRAL domain: the chain region that matches it best; and what was dropped, by reason.

    Every region assigned to one ASTRAL domain is >= ``min_identity`` identical to it, so all but the best
    (identity, then domain coverage, then residues with a DSSP state) are near-duplicates and are dropped,
    as the paper's SCOPe set is clustered. Regions shorter than ``min_length`` residues are dropped too.
    """
    by_name = {name: (sequence, ss8, contacts) for name, sequence, ss8, contacts in chains}
    dropped = Counter({"chains without a SCOPe assignment": len(by_name.keys() - {hit.chain for hit in hits})})
    best: dict[str, tuple] = {}
    for hit in hits:
        sequence, ss8, contacts = by_name[hit.chain]
        labelled = hit.end - hit.start - ss8[hit.start:hit.end].count(MASKED)
        if hit.end - hit.start < min_length or not labelled:
            dropped[f"regions shorter than {min_length} residues or without DSSP states"] += 1
            continue
        rank = (-hit.identity, -hit.domain_coverage, -labelled, hit.chain)
        if hit.domain in best:
            dropped["regions matching an ASTRAL domain a better region matches (near-duplicates)"] += 1
        if hit.domain not in best or rank < best[hit.domain][0]:
            best[hit.domain] = (rank, hit)
    domains = []
    for _, hit in sorted(best.values(), key=lambda item: (item[1].chain, item[1].start)):
        sequence, ss8, contacts = by_name[hit.chain]
        cut = slice(hit.start, hit.end)
        domains.append(LabelledDomain(f"{hit.chain}/{hit.domain}", hit.sccs, sequence[cut], ss8[cut],
                                      contacts[cut, cut]))
    return domains, dropped
