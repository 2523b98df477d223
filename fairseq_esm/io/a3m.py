"""A3M multiple sequence alignments (HHblits / ColabFold output) as rows in the query's columns.

In A3M, uppercase letters and ``-`` are match columns (one per query residue); lowercase letters and
``.`` are insertions relative to the query. Every row therefore has exactly as many match characters as
the query has residues: a row that does not is an error naming the file and line, never silently cut.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from fairseq_esm.errors import InputError
from fairseq_esm.io.fasta import open_fasta
from fairseq_esm.io.residues import RESIDUE_LETTERS


class A3mFormatError(InputError):
    """A file that is not a valid A3M alignment; the message names the file and line."""


@dataclass(frozen=True)
class AlignedRow:
    """One MSA member: its id, its full ungapped sequence (insertions included, uppercased) and, per query
    column, the index into ``sequence`` of the residue aligned there (-1 for a gap)."""

    name: str
    sequence: str
    columns: tuple[int, ...]

    def aligned(self) -> str:
        """The row in query columns: the aligned residue or ``-``."""
        return "".join("-" if i < 0 else self.sequence[i] for i in self.columns)


def _row(name: str, text: str, where: str) -> AlignedRow:
    """Split one A3M row into residues (insertions kept) and its match-column map."""
    residues, columns = [], []
    for ch in text:
        if ch == "-":
            columns.append(-1)
        elif ch == ".":
            continue
        elif ch.isalpha() and ch.upper() in RESIDUE_LETTERS:
            if ch.isupper():
                columns.append(len(residues))
            residues.append(ch.upper())
        else:
            raise A3mFormatError(f"{where}: character {ch!r} is not a residue, '-', '.' or an insertion")
    return AlignedRow(name, "".join(residues), tuple(columns))


def _records(path: Path) -> list[tuple[str, str, int]]:
    """(header id, concatenated row text, header line number) for every record; '#' lines skipped.

    Opened once through :func:`open_fasta` (plain or gzip by magic bytes), so ``-``, a FIFO or ``<(zcat x.gz)``
    work."""
    records: list[tuple[str, str, int]] = []
    with open_fasta(str(path)) as stream:
        for number, line in enumerate(io.TextIOWrapper(stream, encoding="utf-8", errors="replace"), 1):
            line = line.rstrip("\r\n")
            if line.startswith("#") or not line.strip():
                continue
            if line.startswith(">"):
                records.append(((line[1:].split() or [""])[0], "", number))
            elif not records:
                raise A3mFormatError(f"{path}:{number}: alignment text before the first '>' header")
            else:
                name, text, start = records[-1]
                records[-1] = (name, text + line.strip(), start)
    return records


def read_a3m(path: str | Path, max_rows: int | None = None) -> list[AlignedRow]:
    """The query (first record) and up to ``max_rows - 1`` members, in file order."""
    path = Path(path)
    records = _records(path)
    if not records:
        raise A3mFormatError(f"{path}: no '>' record; not an A3M alignment")
    rows = [_row(name, text, f"{path}:{line}") for name, text, line in records[:max_rows]]
    query = rows[0]
    if not query.sequence or -1 in query.columns or len(query.columns) != len(query.sequence):
        raise A3mFormatError(f"{path}:{records[0][2]}: the first record (the query) must be gap-free uppercase "
                             "residues")
    for row, (_, _, line) in zip(rows[1:], records[1:]):
        if len(row.columns) != len(query.columns):
            raise A3mFormatError(f"{path}:{line}: {row.name} has {len(row.columns)} match columns, the query "
                                 f"{len(query.columns)}; lowercase letters are insertions, uppercase and '-' match")
    return rows
