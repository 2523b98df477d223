"""Mutation codes (``A24G``, multi-mutants ``A24G:K30R``) checked against a wild-type sequence.

A code names the wild-type residue, its position in the user's numbering and the new residue;
``offset`` is the number the user gives the first residue of the sequence (1 for 1-based
numbering), so the residue's index in the sequence is ``position - offset``. Every row that
cannot be scored gets a status and a one-line reason; nothing is dropped without being counted.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from fairseq_esm.errors import InputError
from fairseq_esm.io.residues import CANONICAL_AMINO_ACIDS, RESIDUE_LETTERS

MULTI_SEPARATOR = ":"
MAX_EXAMPLES = 5
#: row statuses, in report order; only ``ok`` and ``duplicate`` rows are scored
STATUSES = ("ok", "duplicate", "malformed", "out_of_range", "wt_mismatch", "beyond_context")
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


def mutant_sequence(sequence: str, variant: Variant) -> str:
    """The wild-type sequence with the variant's substitutions applied."""
    residues = list(sequence)
    for m in variant:
        residues[m.index] = m.mt
    return "".join(residues)


@dataclass
class RowCheck:
    """The verdict on one table row: its variant when it can be scored, else why not."""

    status: str
    note: str = ""
    variant: Variant | None = None


@dataclass
class TableReport:
    """Counts of every status with the first few rows of each, for stderr."""

    rows: int = 0
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    suggested_offset: tuple[int, int] | None = None  # (offset, rows it would match)

    def add(self, row_number: int, code: str, check: RowCheck) -> None:
        """Count one row and keep it as an example if it is not plainly ok."""
        self.rows += 1
        self.counts[check.status] += 1
        examples = self.examples.setdefault(check.status, [])
        if check.status != "ok" and len(examples) < MAX_EXAMPLES:
            examples.append(f"row {row_number} {code!r}: {check.note}")

    def format(self) -> str:
        """One line of totals, then one line per problem status with examples."""
        lines = [f"mutation table: {self.rows:,} rows, {self.counts['ok'] + self.counts['duplicate']:,} scored, "
                 + ", ".join(f"{status} {self.counts[status]:,}" for status in STATUSES)]
        for status in STATUSES[1:]:
            if self.counts[status]:
                lines.append(f"  {status}: {self.counts[status]:,}, e.g. {'; '.join(self.examples[status])}")
        if self.suggested_offset is not None:
            offset, matches = self.suggested_offset
            lines.append(f"  hint: --offset {offset} would match the wild type at {matches:,} of the mutated positions")
        return "\n".join(lines)


def check_rows(codes: Sequence[str], sequence: str, offset: int = 1, max_span: int | None = None
               ) -> tuple[list[RowCheck], TableReport]:
    """Parse and check every code; a variant seen in an earlier row is a (scored) ``duplicate``."""
    checks, report, first_row = [], TableReport(), {}
    for row_number, code in enumerate(codes, start=1):
        try:
            variant = parse_variant(code, offset)
            check_variant(variant, sequence, offset, max_span)
        except MutationError as err:
            check = RowCheck(err.status, str(err))
        else:
            key = tuple((m.index, m.mt) for m in variant)
            if key in first_row:
                check = RowCheck("duplicate", f"same mutations as row {first_row[key]}", variant)
            else:
                first_row[key] = row_number
                check = RowCheck("ok", "", variant)
        checks.append(check)
        report.add(row_number, code, check)
    if report.counts["wt_mismatch"] + report.counts["out_of_range"] > report.counts["ok"]:
        report.suggested_offset = suggest_offset(codes, sequence, offset)
    return checks, report


def suggest_offset(codes: Sequence[str], sequence: str, offset: int) -> tuple[int, int] | None:
    """The offset under which the most wild-type letters of the codes match the sequence, if better."""
    where: dict[str, list[int]] = {}
    for index, residue in enumerate(sequence):
        where.setdefault(residue, []).append(index)
    votes: Counter = Counter()  # offset -> mutated positions whose wild-type letter it matches
    for code in codes:
        for part in code.split(MULTI_SEPARATOR):
            try:
                m = parse_mutation(part, 0)
            except MutationError:
                continue
            votes.update(m.position - index for index in where.get(m.wt, []))
    if not votes:
        return None
    best, matches = max(votes.items(), key=lambda item: (item[1], -abs(item[0] - offset)))
    return (best, matches) if best != offset and matches > votes[offset] else None
