"""Cluster membership of FASTA records: read from UniRef / MMseqs2 tables, or computed by running MMseqs2.

Three table layouts are read (plain or gzip):

==========================================  ===================================================
layout                                      recognised by
==========================================  ===================================================
MMseqs2 ``*_cluster.tsv``: ``rep<TAB>member``  two tab-separated columns, no header
``cluster<TAB>member``                      the same (the cluster name need not be a member)
UniProt UniRef TSV download                 a header with ``Cluster ID`` and ``Cluster members``
                                            (members separated by ``;``), optional ``Reference
                                            sequence``
==========================================  ===================================================

Members are matched to FASTA ids exactly, else by UniProt accession (``sp|P12345|NAME``,
``UniRef100_P12345`` and ``P12345`` all match each other). Nothing is dropped silently: members
missing from the FASTA, members listed in two clusters (the first wins), clusters with no record
and records in no cluster (each becomes a singleton cluster) are counted in a :class:`ClusterReport`.
A cluster's representative is the member named like the cluster (MMseqs2's rep, ``UniRef50_P12345``),
else the member with the table's reference sequence, else its first member found in the FASTA.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from fairseq_esm.errors import InputError
from fairseq_esm.io.fasta import open_fasta

MAX_EXAMPLES = 5
UNIPROT_ID, UNIPROT_MEMBERS, UNIPROT_REFERENCE = "Cluster ID", "Cluster members", "Reference sequence"
INSTALL_HINT = "install it with: bash preprocess/install_tools.sh (Debian package mmseqs2)"


class ClusterError(InputError):
    """A cluster table or MMseqs2 run that cannot be used, as one line naming the file and what to do."""


def accession(identifier: str) -> str:
    """The UniProt accession in an id: ``sp|P12345|NAME`` and ``UniRef100_P12345`` give ``P12345``."""
    parts = identifier.split("|")
    if len(parts) >= 2 and parts[1]:
        return parts[1]
    if identifier.startswith("UniRef") and "_" in identifier:
        return identifier.split("_", 1)[1]
    return identifier


@dataclass
class ClusterTable:
    """Clusters as a table lists them: names, member ids in table order, optional reference sequences."""

    source: str
    names: list[str] = field(default_factory=list)
    members: list[list[str]] = field(default_factory=list)
    references: list[str] | None = None


@dataclass
class ClusterReport:
    """Counts of what matching a table to a FASTA file found; ``examples`` keeps a few of each kind."""

    source: str
    clusters_read: int = 0
    members_read: int = 0
    members_matched: int = 0
    members_not_in_fasta: int = 0
    members_in_several_clusters: int = 0
    clusters_without_records: int = 0
    representatives_by_first_member: int = 0
    records_in_no_cluster: int = 0
    clusters: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, kind: str, example: str) -> None:
        """Count one event of ``kind`` and keep the first few examples."""
        setattr(self, kind, getattr(self, kind) + 1)
        kept = self.examples.setdefault(kind, [])
        if len(kept) < MAX_EXAMPLES:
            kept.append(example)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict."""
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}

    def format(self) -> str:
        """One summary line, then one line per kind of problem with examples."""
        lines = [f"{self.source}: {self.clusters_read:,} clusters, {self.members_read:,} members read; "
                 f"{self.members_matched:,} matched -> {self.clusters:,} clusters "
                 f"(incl. {self.records_in_no_cluster:,} singletons of records in no cluster)"]
        for kind, examples in sorted(self.examples.items()):
            lines.append(f"  {kind}: {getattr(self, kind):,}, e.g. {'; '.join(examples)}")
        return "\n".join(lines)


@dataclass
class Membership:
    """Every record's cluster (0..n_clusters-1, ordered by representative) and each cluster's representative."""

    cluster: np.ndarray  # (n_records,) int64
    representative: np.ndarray  # (n_clusters,) int64 record index, increasing
    report: ClusterReport

    @property
    def n_clusters(self) -> int:
        return len(self.representative)


def _open_text(path: str | Path) -> Iterator[str]:
    """Lines of a plain or gzip text file (gzip recognised by its magic bytes), opened once through
    :func:`open_fasta`, so ``-``, a FIFO or ``<(zcat x.gz)`` work."""
    with open_fasta(str(path)) as stream:
        yield from io.TextIOWrapper(stream, encoding="utf-8")


def _read_pairs(path: str, lines: Iterator[str], first: str, table: ClusterTable) -> ClusterTable:
    """``cluster<TAB>member`` lines (MMseqs2's layout), grouped by cluster in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for number, line in enumerate(_chain(first, lines), start=1):
        fields = line.rstrip("\r\n").split("\t")
        if fields == [""]:
            continue
        if len(fields) != 2 or not all(fields):
            raise ClusterError(f"{path}:{number}: expected 'cluster<TAB>member' (or a UniProt UniRef TSV with "
                               f"'{UNIPROT_ID}' and '{UNIPROT_MEMBERS}' columns), got {line.strip()[:80]!r}")
        groups.setdefault(fields[0], []).append(fields[1])
    table.names, table.members = list(groups), list(groups.values())
    return table


def _chain(first: str, lines: Iterator[str]) -> Iterator[str]:
    """The first line again, then the rest."""
    yield first
    yield from lines


def _read_uniprot(path: str, header: list[str], lines: Iterator[str], table: ClusterTable) -> ClusterTable:
    """UniProt's UniRef TSV: one cluster per row, members separated by ``;``."""
    id_col, members_col = header.index(UNIPROT_ID), header.index(UNIPROT_MEMBERS)
    ref_col = header.index(UNIPROT_REFERENCE) if UNIPROT_REFERENCE in header else None
    table.references = [] if ref_col is not None else None
    for number, line in enumerate(lines, start=2):
        fields = line.rstrip("\r\n").split("\t")
        if fields == [""]:
            continue
        if len(fields) != len(header):
            raise ClusterError(f"{path}:{number}: {len(fields)} tab-separated columns, the header has {len(header)}")
        table.names.append(fields[id_col].strip())
        table.members.append([m.strip() for m in fields[members_col].split(";") if m.strip()])
        if table.references is not None:
            table.references.append(fields[ref_col].strip().upper())
    return table


def read_cluster_table(path: str | Path) -> ClusterTable:
    """Read any of the three layouts (see module doc); an unknown layout is a one-line :class:`ClusterError`."""
    lines = _open_text(path)
    try:
        first = next(lines, "")
        header = first.rstrip("\r\n").split("\t")
        table = ClusterTable(source=str(path))
        if UNIPROT_ID in header and UNIPROT_MEMBERS in header:
            table = _read_uniprot(str(path), header, lines, table)
        else:
            table = _read_pairs(str(path), lines, first, table)
    except UnicodeDecodeError:
        raise ClusterError(f"{path}: not UTF-8 text — pass a cluster TSV (plain or gzip)") from None
    if not table.names:
        raise ClusterError(f"{path}: no clusters in the file — check the path or the step that wrote it")
    return table


def _index(ids: Sequence[str]) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Record indices by exact id and by accession."""
    by_id: dict[str, list[int]] = {}
    by_accession: dict[str, list[int]] = {}
    for record, rid in enumerate(ids):
        by_id.setdefault(rid, []).append(record)
        by_accession.setdefault(accession(rid), []).append(record)
    return by_id, by_accession


def _representative(name: str, records: list[int], ids: Sequence[str], reference: str | None,
                    sequences: Sequence[str] | None) -> int | None:
    """The record named like the cluster, else the one with the reference sequence; None if neither."""
    wanted = accession(name)
    named = [r for r in records if ids[r] == name or accession(ids[r]) == wanted]
    if named:
        return named[0]
    if reference and sequences is not None:
        return next((r for r in records if sequences[r] == reference), None)
    return None


def match_members(table: ClusterTable, ids: Sequence[str], sequences: Sequence[str] | None = None) -> Membership:
    """Assign every record (``ids`` in FASTA order) to a table cluster or to a singleton, counting every mismatch."""
    by_id, by_accession = _index(ids)
    report = ClusterReport(source=table.source, clusters_read=len(table.names))
    cluster = np.full(len(ids), -1, dtype=np.int64)
    reps: list[int] = []
    for c, (name, members) in enumerate(zip(table.names, table.members)):
        records: list[int] = []
        for member in members:
            report.members_read += 1
            found = by_id.get(member) or by_accession.get(accession(member))
            if not found:
                report.note("members_not_in_fasta", f"{member} (cluster {name})")
                continue
            report.members_matched += 1
            for record in found:
                if cluster[record] == -1:
                    cluster[record] = len(reps)
                    records.append(record)
                elif cluster[record] != len(reps):
                    report.note("members_in_several_clusters", f"{member} ({name}, kept in an earlier cluster)")
        if not records:
            report.note("clusters_without_records", name)
            continue
        reference = table.references[c] if table.references is not None else None
        rep = _representative(name, records, ids, reference, sequences)
        if rep is None:
            report.note("representatives_by_first_member", f"{name} -> {ids[records[0]]}")
            rep = records[0]
        reps.append(rep)
    for record in np.flatnonzero(cluster == -1).tolist():
        report.note("records_in_no_cluster", ids[record])
        cluster[record] = len(reps)
        reps.append(record)
    return _canonical(cluster, np.asarray(reps, dtype=np.int64), report)


def _canonical(cluster: np.ndarray, reps: np.ndarray, report: ClusterReport) -> Membership:
    """Renumber clusters by their representative's record index: the same membership gives the same numbers."""
    order = np.argsort(reps, kind="stable")
    new_number = np.empty_like(order)
    new_number[order] = np.arange(len(order))
    report.clusters = len(reps)
    return Membership(cluster=new_number[cluster], representative=reps[order], report=report)


def mmseqs_command(mode: str) -> str:
    """The MMseqs2 workflow of a mode: ``linclust`` (linear time, default) or ``cluster`` (more sensitive)."""
    if mode not in ("linclust", "cluster"):
        raise ClusterError(f"unknown MMseqs2 mode {mode!r}: use linclust or cluster")
    return f"easy-{mode}"


def run_mmseqs(sequences: Sequence[str], identity: float, coverage: float = 0.8, mode: str = "linclust",
               threads: int = 1) -> Membership:
    """Cluster ``sequences`` with MMseqs2 at ``identity``; records are fed as ``>r0``, ``>r1``, ... and mapped back.

    Our own record numbers as headers: MMseqs2 rewrites UniProt ids (``sp|P12345|NAME`` -> ``P12345``).
    """
    program = shutil.which("mmseqs")
    if program is None:
        raise ClusterError(f"mmseqs (MMseqs2) is not on PATH: {INSTALL_HINT}, or pass cluster tables")
    ids = [f"r{i}" for i in range(len(sequences))]
    with tempfile.TemporaryDirectory(prefix="fairseq-esm-mmseqs-") as work:
        fasta = Path(work) / "input.fasta"
        with fasta.open("w") as out:
            for rid, seq in zip(ids, sequences):
                out.write(f">{rid}\n{seq.replace('-', '').replace('.', '')}\n")
        command = [program, mmseqs_command(mode), str(fasta), str(Path(work) / "out"), str(Path(work) / "tmp"),
                   "--min-seq-id", str(identity), "-c", str(coverage), "--threads", str(threads), "-v", "1"]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ClusterError(f"{' '.join(command[:2])} failed (exit {proc.returncode}): {tail[0]}")
        table = read_cluster_table(Path(work) / "out_cluster.tsv")
    table.source = f"mmseqs {mmseqs_command(mode)} --min-seq-id {identity} -c {coverage}"
    return match_members(table, ids)


def membership_from_table(path: str | Path, ids: Sequence[str], sequences: Sequence[str] | None = None) -> Membership:
    """Read a cluster table and match it to the FASTA records ``ids`` (``sequences`` for reference matching)."""
    return match_members(read_cluster_table(path), ids, sequences)
