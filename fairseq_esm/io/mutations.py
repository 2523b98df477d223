"""Mutation codes (``A24G``, multi-mutants ``A24G:K30R``) checked against a wild-type sequence, and the
wild type looked up in a ProteinGym reference table.

A code names the wild-type residue, its position in the user's numbering and the new residue;
``offset`` is the number the user gives the first residue of the sequence (1 for 1-based
numbering), so the residue's index in the sequence is ``position - offset``. Every row that
cannot be scored gets a status and a one-line reason; nothing is dropped without being counted.
A code whose every mutation keeps the wild-type residue (``P311P``) is ``synonymous``: counted, and scored
only on request (it is the wild type itself).
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from fairseq_esm.errors import InputError
from fairseq_esm.io.residues import CANONICAL_AMINO_ACIDS, RESIDUE_LETTERS

MULTI_SEPARATOR = ":"
MAX_EXAMPLES = 5
#: row statuses, in report order; ``ok`` and ``duplicate`` rows are scored, ``synonymous`` ones on request,
#: ``not_sampled`` marks scorable rows left out by a subsample (``--max-variants``)
STATUSES = ("ok", "duplicate", "malformed", "out_of_range", "wt_mismatch", "beyond_context", "synonymous",
            "not_sampled")
#: statuses the summary line always shows (the others only when some row has them)
ALWAYS_SHOWN = STATUSES[:-1]
_CODE = re.compile(r"([A-Z])(-?\d+)([A-Z])")


class MutationError(InputError):
    """A code that cannot be scored; ``status`` is one of :data:`STATUSES`."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, order=True)
class Mutation:
    """One substitution: ``index`` is 0-based in the wild-type sequence, ``position`` as written."""

    index: int
    wt: str
    mt: str
    position: int

    @property
    def code(self) -> str:
        return f"{self.wt}{self.position}{self.mt}"


Variant = tuple[Mutation, ...]  # sorted by index, one mutation per index


def parse_mutation(code: str, offset: int = 1) -> Mutation:
    """``"A24G"`` -> Mutation; the wild-type letter may be any residue letter, the new one must be canonical."""
    match = _CODE.fullmatch(code.strip())
    if match is None:
        raise MutationError("malformed", f"{code!r} is not a mutation code like A24G "
                            "(wild-type letter, position, new letter; multi-mutants joined with ':')")
    wt, position, mt = match.group(1), int(match.group(2)), match.group(3)
    if wt not in RESIDUE_LETTERS:
        raise MutationError("malformed", f"{code!r}: {wt!r} is not a residue letter")
    if mt not in CANONICAL_AMINO_ACIDS:
        raise MutationError("malformed", f"{code!r}: the new residue {mt!r} is not one of the 20 amino acids")
    return Mutation(index=position - offset, wt=wt, mt=mt, position=position)


def parse_variant(code: str, offset: int = 1) -> Variant:
    """``"A24G:K30R"`` -> mutations sorted by position; a position mutated twice is malformed."""
    if not code.strip():
        raise MutationError("malformed", "empty mutation code")
    mutations = sorted(parse_mutation(part, offset) for part in code.split(MULTI_SEPARATOR))
    for first, second in zip(mutations, mutations[1:]):
        if first.index == second.index:
            raise MutationError("malformed", f"{code!r} mutates position {first.position} twice")
    return tuple(mutations)


def check_variant(variant: Variant, sequence: str, offset: int = 1, max_span: int | None = None) -> None:
    """Raise :class:`MutationError` if a position is outside the sequence, its residue differs, or the
    mutations lie further apart than ``max_span`` residues (the model's context, where it matters)."""
    for m in variant:
        if not 0 <= m.index < len(sequence):
            raise MutationError("out_of_range", f"{m.code}: position {m.position} is outside the sequence "
                                f"(positions {offset}..{offset + len(sequence) - 1} with --offset {offset})")
        if sequence[m.index] != m.wt:
            raise MutationError("wt_mismatch", f"{m.code}: the sequence has {sequence[m.index]} at position "
                                f"{m.position}, not {m.wt}")
    span = variant[-1].index - variant[0].index + 1
    if max_span is not None and span > max_span:
        raise MutationError("beyond_context", f"the mutations span {span} residues, more than the model's "
                            f"context ({max_span}); additive masked-marginal, wt-marginal and pseudo-likelihood "
                            "have no such limit")


def is_synonymous(variant: Variant) -> bool:
    """Every mutation keeps the wild-type residue (``P311P``): the variant is the wild type."""
    return all(m.wt == m.mt for m in variant)


def mutant_sequence(sequence: str, variant: Variant) -> str:
    """The wild-type sequence with the variant's substitutions applied."""
    residues = list(sequence)
    for m in variant:
        residues[m.index] = m.mt
    return "".join(residues)


@dataclass
class RowCheck:
    """The verdict on one table row: its variant when it is to be scored, else why not."""

    status: str
    note: str = ""
    variant: Variant | None = None


@dataclass(frozen=True)
class OffsetHint:
    """An ``--offset`` under which more wild-type letters of the codes match the sequence."""

    offset: int
    matches: int  # mutations (over all rows) whose wild-type letter it matches
    total: int  # mutations over all rows that parse

    @property
    def all_agree(self) -> bool:
        """Every wild-type letter of the table matches the sequence under this offset."""
        return self.matches == self.total

    def format(self) -> str:
        """One line for the report (and for the error when nothing could be scored)."""
        if self.all_agree:
            return (f"--offset {self.offset} would match the wild type at all {self.total:,} mutated positions: "
                    "every wild-type letter agrees")
        return (f"--offset {self.offset} would match the wild type at {self.matches:,} of the {self.total:,} mutated "
                "positions (no offset makes every wild-type letter agree)")


@dataclass
class TableReport:
    """Counts of every status with the first few rows of each, for stderr."""

    rows: int = 0
    scored: int = 0
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    suggested_offset: OffsetHint | None = None

    def add(self, row_number: int, code: str, check: RowCheck) -> None:
        """Count one row and keep it as an example if it is not plainly ok."""
        self.rows += 1
        self.scored += check.variant is not None
        self.counts[check.status] += 1
        examples = self.examples.setdefault(check.status, [])
        if check.status != "ok" and len(examples) < MAX_EXAMPLES:
            examples.append(f"row {row_number} {code!r}: {check.note}")

    def format(self) -> str:
        """One line of totals, then one line per problem status with examples."""
        shown = [s for s in STATUSES if s in ALWAYS_SHOWN or self.counts[s]]
        lines = [f"mutation table: {self.rows:,} rows, {self.scored:,} scored, "
                 + ", ".join(f"{status} {self.counts[status]:,}" for status in shown)]
        for status in STATUSES[1:]:
            if self.counts[status]:
                lines.append(f"  {status}: {self.counts[status]:,}, e.g. {'; '.join(self.examples[status])}")
        if self.suggested_offset is not None:
            lines.append(f"  hint: {self.suggested_offset.format()}")
        return "\n".join(lines)


def check_rows(codes: Sequence[str], sequence: str, offset: int = 1, max_span: int | None = None,
               keep_synonymous: bool = False) -> tuple[list[RowCheck], TableReport]:
    """Parse and check every code; a variant seen in an earlier row is a (scored) ``duplicate``; a synonymous one
    (``P311P``) is counted and scored only with ``keep_synonymous``."""
    checks, report, first_row = [], TableReport(), {}
    for row_number, code in enumerate(codes, start=1):
        try:
            variant = parse_variant(code, offset)
            check_variant(variant, sequence, offset, max_span)
        except MutationError as err:
            check = RowCheck(err.status, str(err))
        else:
            key = tuple((m.index, m.mt) for m in variant)
            if is_synonymous(variant):
                check = (RowCheck("synonymous", "the wild-type residue itself: scored as the wild type", variant)
                         if keep_synonymous else
                         RowCheck("synonymous", "the wild-type residue itself: not scored (--keep-synonymous)"))
            elif key in first_row:
                check = RowCheck("duplicate", f"same mutations as row {first_row[key]}", variant)
            else:
                first_row[key] = row_number
                check = RowCheck("ok", "", variant)
        checks.append(check)
        report.add(row_number, code, check)
    bad = report.counts["wt_mismatch"] + report.counts["out_of_range"]
    if bad:
        hint = suggest_offset(codes, sequence, offset)
        if hint is not None and (hint.all_agree or bad > report.counts["ok"]):
            report.suggested_offset = hint
    return checks, report


def suggest_offset(codes: Sequence[str], sequence: str, offset: int) -> OffsetHint | None:
    """The offset under which the most wild-type letters of the codes match the sequence (the one nearest
    ``offset`` among equals), if it matches more than ``offset`` does."""
    where: dict[str, list[int]] = {}
    for index, residue in enumerate(sequence):
        where.setdefault(residue, []).append(index)
    votes: Counter = Counter()  # offset -> mutated positions whose wild-type letter it matches
    total = 0
    for code in codes:
        for part in code.split(MULTI_SEPARATOR):
            try:
                m = parse_mutation(part, 0)
            except MutationError:
                continue
            total += 1
            votes.update(m.position - index for index in where.get(m.wt, []))
    if not votes:
        return None
    best, matches = max(votes.items(), key=lambda item: (item[1], -abs(item[0] - offset)))
    return OffsetHint(best, matches, total) if best != offset and matches > votes[offset] else None


def subsample(n: int, limit: Optional[int], seed: int) -> list[int]:
    """At most ``limit`` of n indices, drawn with ``seed`` and kept in their original order."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(n, size=limit, replace=False).tolist())


def sample_rows(checks: list[RowCheck], report: TableReport, limit: Optional[int], seed: int) -> None:
    """Keep a seeded subsample of at most ``limit`` of the rows to be scored; the others become ``not_sampled``
    (counted in ``report``, not scored)."""
    todo = [i for i, c in enumerate(checks) if c.variant is not None]
    kept = set(subsample(len(todo), limit, seed))
    for n, i in enumerate(todo):
        if n not in kept:
            report.counts[checks[i].status] -= 1
            report.counts["not_sampled"] += 1
            report.scored -= 1
            checks[i] = RowCheck("not_sampled", f"{checks[i].status}, left out by --max-variants {limit}")
            examples = report.examples.setdefault("not_sampled", [])
            if len(examples) < MAX_EXAMPLES:
                examples.append(f"row {i + 1}: {checks[i].note}")


# ProteinGym's reference table (reference_files/DMS_substitutions.csv): one row per assay

REFERENCE_ID, REFERENCE_SEQUENCE = "DMS_id", "target_seq"


@dataclass(frozen=True)
class ReferenceEntry:
    """One assay of a ProteinGym reference table: its wild type (``target_seq``, mutations numbered from 1 on it)."""

    dms_id: str
    target_seq: str
    filename: str | None = None  # DMS_filename
    uniprot_id: str | None = None  # UniProt_ID


def reference_entry(path: str | Path, dms_id: str | None, table: str | Path | None = None) -> ReferenceEntry:
    """The row of ``dms_id`` in a ProteinGym reference table (``DMS_substitutions.csv`` layout); without an id, the
    row whose ``DMS_filename`` is the table's file name (or whose ``DMS_id`` is its stem)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        text = handle.read()
    delimiter = "\t" if Path(path).suffix.lower() in (".tsv", ".tab") else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    columns = list(reader.fieldnames or [])
    for column in (REFERENCE_ID, REFERENCE_SEQUENCE):
        if column not in columns:
            raise InputError(f"{path}: no column {column!r} (columns: {', '.join(columns) or 'none'}) — --reference "
                             "expects ProteinGym's DMS_substitutions.csv layout (DMS_id, target_seq, ...)")
    rows = list(reader)
    if dms_id is None:
        name = Path(table).name if table is not None else ""
        rows = [r for r in rows if name and (r.get("DMS_filename") == name or r[REFERENCE_ID] == Path(name).stem)]
        if len(rows) != 1:
            raise InputError(f"{path}: {len(rows)} rows name the table {name!r} (DMS_filename or DMS_id) — pass "
                             "--dms-id")
    else:
        ids = [r[REFERENCE_ID] for r in rows]
        rows = [r for r in rows if r[REFERENCE_ID] == dms_id]
        if len(rows) != 1:
            near = ", ".join(sorted(i for i in ids if dms_id.split("_")[0].lower() in i.lower())[:5])
            which = f"no DMS_id {dms_id!r}" if not rows else f"{len(rows)} rows with DMS_id {dms_id!r}"
            raise InputError(f"{path}: {which} among its {len(ids):,} assays"
                             + (f" (similar: {near})" if near and not rows else "") + " — check --dms-id")
    row = rows[0]
    sequence = (row[REFERENCE_SEQUENCE] or "").strip().upper()
    bad = sorted(set(sequence) - set(RESIDUE_LETTERS))
    if not sequence or bad:
        what = "empty" if not sequence else "not residue letters: " + "".join(bad)
        raise InputError(f"{path}: target_seq of {row[REFERENCE_ID]!r} is {what}")
    declared = (row.get("seq_len") or "").strip()
    if declared and declared.isdigit() and int(declared) != len(sequence):
        raise InputError(f"{path}: {row[REFERENCE_ID]!r} has seq_len {declared} but its target_seq has "
                         f"{len(sequence)} residues — the table is damaged")
    return ReferenceEntry(row[REFERENCE_ID], sequence, row.get("DMS_filename") or None, row.get("UniProt_ID") or None)
