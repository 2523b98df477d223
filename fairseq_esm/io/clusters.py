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
missing from the FASTA, members listed in two clusters (the first listed wins), clusters with no record
and records in no cluster (each becomes a singleton cluster) are counted in a :class:`ClusterReport`.
A cluster's representative is the member named like the cluster (MMseqs2's rep, ``UniRef50_P12345``),
else the member with the table's reference sequence, else its first member found in the FASTA.

Memory is bounded by compact arrays, never by a dict keyed by every id: a table is streamed a batch of rows
at a time and matched with numpy against sorted 96-bit keys of the FASTA ids (:class:`RecordIds`,
``io/record_keys.py``); the state is one cluster number per record and three record numbers per table
cluster. Two-column rows of one cluster are usually consecutive; a cluster whose rows come back later in the
file is still one cluster (its names are kept as keys). MMseqs2 runs on a FASTA whose records are named
``r0``, ``r1``, ... (:class:`Mmseqs`: one ``createdb``, then ``linclust``/``cluster`` and ``createtsv`` per
identity level; the same clusters as ``easy-linclust``/``easy-cluster``) and its table is mapped back by number.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from fairseq_esm.errors import InputError
from fairseq_esm.io.fasta import open_fasta
from fairseq_esm.io.record_keys import KeyIndex, KeySet, index_dtype, string_keys, text_hash

MAX_EXAMPLES = 5
UNIPROT_ID, UNIPROT_MEMBERS, UNIPROT_REFERENCE = "Cluster ID", "Cluster members", "Reference sequence"
INSTALL_HINT = "install it with: bash preprocess/install_tools.sh (Debian package mmseqs2)"
BATCH_MEMBERS = 1 << 16  # table members matched per numpy batch


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
        self.note_many(kind, 1, [example])

    def note_many(self, kind: str, count: int, examples: Iterable[str]) -> None:
        """Count ``count`` events of ``kind``; keep the first few of ``examples`` (their first ones)."""
        if count:
            setattr(self, kind, getattr(self, kind) + count)
            kept = self.examples.setdefault(kind, [])
            kept += list(examples)[: MAX_EXAMPLES - len(kept)]

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

    cluster: np.ndarray  # (n_records,) int32 (int64 beyond 2**31 records)
    representative: np.ndarray  # (n_clusters,) record index, increasing
    report: ClusterReport

    @property
    def n_clusters(self) -> int:
        return len(self.representative)


# ---------------------------------------------------------------------------------------------- reading tables


@dataclass
class TableRows:
    """Consecutive rows of a table (a UniProt row, or a run of two-column lines naming one cluster)."""

    names: list[str]
    members: list[str]  # every row's members, rows one after another
    sizes: list[int]  # members per row
    references: list[str] | None  # per row (UniProt's ``Reference sequence`` column), else None
    repeats_names: bool  # rows of one cluster may come back later (two-column layout)


def _open_text(path: str | Path) -> Iterator[str]:
    """Lines of a plain or gzip text file (gzip recognised by its magic bytes), opened once through
    :func:`open_fasta`, so ``-``, a FIFO or ``<(zcat x.gz)`` work."""
    with open_fasta(str(path)) as stream:
        yield from io.TextIOWrapper(stream, encoding="utf-8")


def _chain(first: str, lines: Iterator[str]) -> Iterator[str]:
    """The first line again, then the rest."""
    yield first
    yield from lines


def _pair_rows(path: str, lines: Iterator[str]) -> Iterator[tuple[str, list[str], None]]:
    """``cluster<TAB>member`` lines (MMseqs2's layout) as runs of consecutive lines naming one cluster."""
    name, members = None, []
    for number, line in enumerate(lines, start=1):
        fields = line.rstrip("\r\n").split("\t")
        if fields == [""]:
            continue
        if len(fields) != 2 or not all(fields):
            raise ClusterError(f"{path}:{number}: expected 'cluster<TAB>member' (or a UniProt UniRef TSV with "
                               f"'{UNIPROT_ID}' and '{UNIPROT_MEMBERS}' columns), got {line.strip()[:80]!r}")
        if fields[0] != name:
            if members:
                yield name, members, None
            name, members = fields[0], []
        members.append(fields[1])
    if members:
        yield name, members, None


def _uniprot_rows(path: str, header: list[str], lines: Iterator[str]) -> Iterator[tuple[str, list[str], str | None]]:
    """UniProt's UniRef TSV: one cluster per row, members separated by ``;``."""
    id_col, members_col = header.index(UNIPROT_ID), header.index(UNIPROT_MEMBERS)
    ref_col = header.index(UNIPROT_REFERENCE) if UNIPROT_REFERENCE in header else None
    for number, line in enumerate(lines, start=2):
        fields = line.rstrip("\r\n").split("\t")
        if fields == [""]:
            continue
        if len(fields) != len(header):
            raise ClusterError(f"{path}:{number}: {len(fields)} tab-separated columns, the header has {len(header)}")
        members = [m.strip() for m in fields[members_col].split(";") if m.strip()]
        yield fields[id_col].strip(), members, fields[ref_col].strip().upper() if ref_col is not None else None


def iter_table(path: str | Path, batch_members: int = BATCH_MEMBERS, grouped: bool = False) -> Iterator[TableRows]:
    """Any of the three layouts (see module doc), streamed in batches of whole rows; an unknown layout or an
    empty table is a one-line :class:`ClusterError`. ``grouped``: the two-column lines of a cluster are known
    to be consecutive (MMseqs2's own output), so its names need not be remembered."""
    lines, rows_read = _open_text(path), 0
    try:
        first = next(lines, "")
        header = first.rstrip("\r\n").split("\t")
        uniprot = UNIPROT_ID in header and UNIPROT_MEMBERS in header
        rows = _uniprot_rows(str(path), header, lines) if uniprot else _pair_rows(str(path), _chain(first, lines))
        repeats = not (uniprot or grouped)
        batch = TableRows([], [], [], [] if uniprot and UNIPROT_REFERENCE in header else None, repeats)
        for name, members, reference in rows:
            batch.names.append(name)
            batch.members += members
            batch.sizes.append(len(members))
            if batch.references is not None:
                batch.references.append(reference)
            rows_read += 1
            if len(batch.members) >= batch_members:
                yield batch
                batch = TableRows([], [], [], None if batch.references is None else [], repeats)
        if batch.names:
            yield batch
    except UnicodeDecodeError:
        raise ClusterError(f"{path}: not UTF-8 text — pass a cluster TSV (plain or gzip)") from None
    if not rows_read:
        raise ClusterError(f"{path}: no clusters in the file — check the path or the step that wrote it")


def read_cluster_table(path: str | Path) -> ClusterTable:
    """The whole table in memory (for small tables; the splits tool streams it with :func:`join_table`);
    two-column rows are grouped by cluster in order of first appearance."""
    table, number = ClusterTable(source=str(path)), {}
    for batch in iter_table(path):
        if batch.references is not None:
            table.references = (table.references or []) + batch.references
        ends = np.cumsum(batch.sizes).tolist()
        for name, a, b in zip(batch.names, [0] + ends[:-1], ends):
            if batch.repeats_names and name in number:  # a cluster's lines seen before
                table.members[number[name]] += batch.members[a:b]
                continue
            number[name] = len(table.names)
            table.names.append(name)
            table.members.append(batch.members[a:b])
    return table


def _rows_of(table: ClusterTable) -> Iterator[TableRows]:
    """An in-memory table as one batch (its names are unique clusters)."""
    if table.names:
        yield TableRows(list(table.names), [m for members in table.members for m in members],
                        [len(m) for m in table.members], table.references, False)


# ------------------------------------------------------------------------------------- matching rows to records


ID_KEY_DTYPES = (np.uint64, np.uint32, np.uint64, np.uint32)


def id_keys(ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The keys :class:`RecordIds` joins on: keys of each id and of its accession (arrays of ID_KEY_DTYPES)."""
    return (*string_keys(ids), *string_keys(map(accession, ids)))


class RecordIds:
    """FASTA ids as sorted 96-bit keys, exact and by accession: which records a table's member names."""

    def __init__(self, keys: list[np.ndarray]) -> None:
        """From the four arrays of :func:`id_keys`, taken out of ``keys`` one by one (only sorted copies stay)."""
        self.exact = KeyIndex(keys.pop(0), keys.pop(0))
        self.by_accession = KeyIndex(keys.pop(0), keys.pop(0))

    @classmethod
    def of(cls, ids: Sequence[str]) -> RecordIds:
        return cls(list(id_keys(ids)))

    def members(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(name number, record)`` for the records each name matches: its exact id, else its accession."""
        which, records = self.exact.lookup(*string_keys(names))
        missing = np.ones(len(names), bool)
        missing[which] = False
        others = np.flatnonzero(missing)
        more, more_records = self.by_accession.lookup(*string_keys(accession(names[i]) for i in others.tolist()))
        which, records = np.concatenate([which, others[more]]), np.concatenate([records, more_records])
        order = np.argsort(which, kind="stable")
        return which[order], records[order]

    def named(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(name number, record)`` for the records whose accession is the name's (named like the cluster)."""
        return self.by_accession.lookup(*string_keys(map(accession, names)))


class RecordNumbers:
    """Records named ``r0``, ``r1``, ... (the FASTA this module gives MMseqs2)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def members(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        numbers = np.fromiter((int(s[1:]) if s[:1] == "r" and s[1:].isdigit() else -1 for s in names),
                              np.int64, len(names))
        which = np.flatnonzero((numbers >= 0) & (numbers < self.n))
        return which, numbers[which]

    named = members


FIRST, NAMED, REFERENCE = range(3)  # columns of the per-cluster state: first record, named record, by reference


class _Join:
    """The matching rules of the module doc, applied to a table in order, a batch of rows at a time."""

    def __init__(self, n: int, records: RecordIds | RecordNumbers, report: ClusterReport,
                 seq_hashes: np.ndarray | None) -> None:
        self.n, self.records, self.report, self.seq_hashes = n, records, report, seq_hashes
        self.dtype = index_dtype(n)
        self.cluster = np.full(n, -1, self.dtype)  # table cluster of every record (the first listing wins)
        self.state = np.full((1024, 3), -1, self.dtype)  # per table cluster: FIRST, NAMED, REFERENCE record
        self.clusters = 0  # table clusters numbered so far
        self.names = KeySet()  # cluster names (two-column layout)
        self.members_seen = 0
        self.first_note: dict[str, tuple] = {}  # kind -> where the first one was: the order of report.examples
        self.candidates: dict[str, list[tuple[int, str]]] = {"clusters_without_records": [],
                                                             "representatives_by_first_member": []}

    def numbers(self, rows: TableRows) -> np.ndarray:
        """The table cluster number of every row: a new one per row, or per new name (two-column layout)."""
        if not rows.repeats_names:
            numbers = np.arange(self.clusters, self.clusters + len(rows.names), dtype=np.int64)
        else:
            hi, lo = string_keys(rows.names)
            numbers = self.names.get(hi, lo)
            new: dict[str, int] = {}  # names first seen in this batch -> their first row
            for row in np.flatnonzero(numbers < 0).tolist():
                first_row = new.setdefault(rows.names[row], row)
                numbers[row] = numbers[first_row] if first_row != row else self.clusters + len(new) - 1
            first_rows = np.fromiter(new.values(), np.int64, len(new))
            self.names.add(hi[first_rows], lo[first_rows], numbers[first_rows])
        self.clusters = max(self.clusters, int(numbers.max(initial=-1)) + 1)
        while len(self.state) < self.clusters:
            self.state = np.concatenate([self.state, np.full_like(self.state, -1)])
        return numbers

    def note(self, kind: str, where: tuple, count: int, examples: Iterable[str]) -> None:
        if count:
            self.first_note.setdefault(kind, where)
            self.report.note_many(kind, count, examples)

    def set_first(self, column: int, clusters: np.ndarray, records: np.ndarray, chosen: np.ndarray) -> None:
        """Per cluster whose ``column`` is unset: the first of ``records`` (in order) where ``chosen``."""
        picked = np.flatnonzero(chosen)
        numbers, first = np.unique(clusters[picked], return_index=True)
        unset = self.state[numbers, column] < 0
        self.state[numbers[unset], column] = records[picked[first[unset]]]

    def add(self, rows: TableRows) -> None:
        """Match one batch of rows (module doc): first listing wins, representatives, every mismatch counted."""
        numbers, report = self.numbers(rows), self.report
        row_of = np.repeat(np.arange(len(rows.names)), rows.sizes)
        report.members_read += len(rows.members)
        query, record = self.records.members(rows.members)
        found = np.zeros(len(rows.members), bool)
        found[query] = True
        report.members_matched += int(found.sum())
        missing = np.flatnonzero(~found)
        self.note("members_not_in_fasta", (numbers[row_of[missing[0]]], 0, self.members_seen + missing[0])
                  if len(missing) else (), len(missing),
                  (f"{rows.members[i]} (cluster {rows.names[row_of[i]]})" for i in missing[:MAX_EXAMPLES].tolist()))
        pair_row = row_of[query]
        pair_cluster = numbers[pair_row].astype(self.dtype)
        free = np.flatnonzero(self.cluster[record] < 0)
        new = np.sort(free[np.unique(record[free], return_index=True)[1]])  # a record's first listing
        self.cluster[record[new]] = pair_cluster[new]
        several = np.flatnonzero(self.cluster[record] != pair_cluster)
        self.note("members_in_several_clusters",
                  (pair_cluster[several[0]], 0, self.members_seen + query[several[0]]) if len(several) else (),
                  len(several), (f"{rows.members[query[p]]} ({rows.names[pair_row[p]]}, kept in an earlier cluster)"
                                 for p in several[:MAX_EXAMPLES].tolist()))
        self.members_seen += len(rows.members)
        clusters, records, new_rows = pair_cluster[new], record[new], pair_row[new]
        self.set_first(FIRST, clusters, records, np.ones(len(new), bool))
        name_row, name_record = self.records.named(rows.names)
        self.set_first(NAMED, clusters, records, np.isin(new_rows * self.n + records, name_row * self.n + name_record))
        if rows.references is not None and self.seq_hashes is not None:
            has = np.array([bool(r) for r in rows.references])
            hashes = np.array([text_hash(r) if r else 0 for r in rows.references], np.uint64)
            self.set_first(REFERENCE, clusters, records, has[new_rows] & (self.seq_hashes[records] == hashes[new_rows]))
        self.remember_candidates(rows, numbers)

    def remember_candidates(self, rows: TableRows, numbers: np.ndarray) -> None:
        """The first few clusters that (so far) have no record, or only a first-member representative."""
        state = self.state[numbers]
        for kind, rows_of_kind in (("clusters_without_records", state[:, FIRST] < 0),
                                   ("representatives_by_first_member",
                                    (state[:, FIRST] >= 0) & (state[:, NAMED] < 0) & (state[:, REFERENCE] < 0))):
            kept = self.candidates[kind]
            for row in np.flatnonzero(rows_of_kind)[: MAX_EXAMPLES].tolist():
                if len(kept) < MAX_EXAMPLES and all(c != numbers[row] for c, _ in kept):
                    kept.append((int(numbers[row]), rows.names[row]))

    def finish(self, ids_of: Callable[[list[int]], list[str]]) -> Membership:
        """Representatives, singletons for records in no cluster, canonical numbering; the report completed."""
        state, report = self.state[: self.clusters], self.report
        report.clusters_read = self.clusters
        has = state[:, FIRST] >= 0
        by_first = has & (state[:, NAMED] < 0) & (state[:, REFERENCE] < 0)
        unassigned = np.flatnonzero(self.cluster < 0)
        still = {"clusters_without_records": ~has, "representatives_by_first_member": by_first}
        examples = {kind: [(c, name) for c, name in kept if still[kind][c]] for kind, kept in self.candidates.items()}
        first_ids = ids_of([int(state[c, FIRST]) for c, _ in examples["representatives_by_first_member"]]
                           + unassigned[:MAX_EXAMPLES].tolist())
        rep_examples = [f"{name} -> {rid}" for (_, name), rid in zip(examples["representatives_by_first_member"],
                                                                    first_ids)]
        no_records = np.flatnonzero(~has)
        self.note("clusters_without_records", (int(no_records[0]), 1) if len(no_records) else (), len(no_records),
                  [name for _, name in examples["clusters_without_records"]])
        self.note("representatives_by_first_member", (int(np.argmax(by_first)), 1) if by_first.any() else (),
                  int(by_first.sum()), rep_examples)
        self.note("records_in_no_cluster", (self.clusters, 2), len(unassigned),
                  first_ids[len(rep_examples):])
        report.examples = dict(sorted(report.examples.items(), key=lambda item: self.first_note[item[0]]))
        self.names = self.records = None  # memory for what follows
        kept = np.flatnonzero(has)
        rep = state[:, FIRST].copy()
        for column in (REFERENCE, NAMED):  # the named record, else the reference sequence, else the first
            np.copyto(rep, state[:, column], where=state[:, column] >= 0)
        rep = rep[kept]
        self.state = state = has = by_first = None
        renumber = np.full(self.clusters + 1, -1, self.dtype)  # [-1]: still -1
        renumber[kept] = np.arange(len(kept), dtype=self.dtype)
        cluster, self.cluster = renumber[self.cluster], None
        cluster[unassigned] = np.arange(len(kept), len(kept) + len(unassigned), dtype=self.dtype)
        return _canonical(cluster, np.concatenate([rep, unassigned.astype(self.dtype)]), report)


def _canonical(cluster: np.ndarray, reps: np.ndarray, report: ClusterReport) -> Membership:
    """Renumber clusters by their representative's record index: the same membership gives the same numbers."""
    order = np.argsort(reps, kind="stable")
    new_number = np.empty(len(order), cluster.dtype)
    new_number[order] = np.arange(len(order), dtype=cluster.dtype)
    report.clusters = len(reps)
    return Membership(cluster=new_number[cluster], representative=reps[order], report=report)


def join_table(batches: Iterable[TableRows], source: str, n: int, records: RecordIds | RecordNumbers,
               ids_of: Callable[[list[int]], list[str]], seq_hashes: np.ndarray | None = None) -> Membership:
    """Assign each of ``n`` records to a table cluster or to a singleton, counting every mismatch (module doc).

    ``records`` says which records a member names; ``ids_of`` gives the ids of a few records (report
    examples); ``seq_hashes`` (``io/record_keys.sequence_hashes``) finds a UniProt row's reference sequence.
    """
    join = _Join(n, records, ClusterReport(source=source), seq_hashes)
    del records  # the join drops it before its last steps
    for rows in batches:
        join.add(rows)
    return join.finish(ids_of)


def _list_ids(ids: Sequence[str]) -> Callable[[list[int]], list[str]]:
    return lambda records: [ids[r] for r in records]


def _hashes(sequences: Sequence[str] | None) -> np.ndarray | None:
    return None if sequences is None else np.fromiter(map(text_hash, sequences), np.uint64, len(sequences))


def match_members(table: ClusterTable, ids: Sequence[str], sequences: Sequence[str] | None = None) -> Membership:
    """Assign every record (``ids`` in FASTA order) to a table cluster or to a singleton, counting every mismatch."""
    return join_table(_rows_of(table), table.source, len(ids), RecordIds.of(ids), _list_ids(ids), _hashes(sequences))


def membership_from_table(path: str | Path, ids: Sequence[str], sequences: Sequence[str] | None = None) -> Membership:
    """Read a cluster table and match it to the FASTA records ``ids`` (``sequences`` for reference matching)."""
    return join_table(iter_table(path), str(path), len(ids), RecordIds.of(ids), _list_ids(ids), _hashes(sequences))


# ------------------------------------------------------------------------------------------------------ MMseqs2


def mmseqs_command(mode: str) -> str:
    """The MMseqs2 workflow of a mode: ``linclust`` (linear time, default) or ``cluster`` (more sensitive)."""
    if mode not in ("linclust", "cluster"):
        raise ClusterError(f"unknown MMseqs2 mode {mode!r}: use linclust or cluster")
    return f"easy-{mode}"


class Mmseqs:
    """MMseqs2 on a single-line FASTA whose records are ``>r0``, ``>r1``, ... (one database for every level).

    ``createdb --createdb-mode 1`` links the FASTA instead of copying it and numbers records in file order;
    ``linclust``/``cluster`` then ``createtsv`` give the clusters ``easy-linclust``/``easy-cluster`` give.
    """

    def __init__(self, fasta: str | Path, n_records: int, mode: str, threads: int, work: str | Path) -> None:
        self.command = mmseqs_command(mode)
        self.program = shutil.which("mmseqs")
        if self.program is None:
            raise ClusterError(f"mmseqs (MMseqs2) is not on PATH: {INSTALL_HINT}, or pass cluster tables")
        self.fasta, self.n, self.mode, self.threads, self.work = str(fasta), n_records, mode, threads, Path(work)
        self.db: Path | None = None
        self.levels = 0

    def run(self, *args: str) -> None:
        command = [self.program, *args, "-v", "1"]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ClusterError(f"{' '.join(command[:2])} failed (exit {proc.returncode}): {tail[0]}")

    def cluster(self, identity: float, coverage: float) -> Membership:
        """Clusters at ``identity`` (fraction) and ``coverage``, mapped back to record numbers."""
        if self.db is None:
            self.db = self.work / "db"
            self.run("createdb", self.fasta, str(self.db), "--createdb-mode", "1")
        self.levels += 1
        clusters, tmp, tsv = (str(self.work / f"{stem}{self.levels}") for stem in ("clu", "tmp", "clu.tsv"))
        threads = ["--threads", str(self.threads)]
        self.run(self.mode, str(self.db), clusters, tmp, "--min-seq-id", str(identity), "-c", str(coverage), *threads)
        shutil.rmtree(tmp, ignore_errors=True)
        self.run("createtsv", str(self.db), str(self.db), clusters, tsv, *threads)
        source = f"mmseqs {self.command} --min-seq-id {identity} -c {coverage}"
        rows = iter_table(tsv, grouped=True)  # createtsv writes a cluster's lines together
        return join_table(rows, source, self.n, RecordNumbers(self.n), lambda rs: [f"r{r}" for r in rs])


def run_mmseqs(sequences: Sequence[str], identity: float, coverage: float = 0.8, mode: str = "linclust",
               threads: int = 1) -> Membership:
    """Cluster ``sequences`` with MMseqs2 at ``identity``; records are fed as ``>r0``, ``>r1``, ... and mapped back.

    Our own record numbers as headers: MMseqs2 rewrites UniProt ids (``sp|P12345|NAME`` -> ``P12345``).
    """
    mmseqs_command(mode)
    with tempfile.TemporaryDirectory(prefix="fairseq-esm-mmseqs-") as work:
        fasta = Path(work) / "input.fasta"
        with fasta.open("w") as out:
            for number, seq in enumerate(sequences):
                out.write(f">r{number}\n{seq.replace('-', '').replace('.', '')}\n")
        return Mmseqs(fasta, len(sequences), mode, threads, work).cluster(identity, coverage)
