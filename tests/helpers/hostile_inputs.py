"""A corpus of hostile, real-world-shaped FASTA inputs built from real UniProt residues, each with the
outcome the residue policy (table in fairseq_esm/data/fasta.py) promises for it."""

from __future__ import annotations

import argparse
import bz2
import gzip
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from helpers.proteins import read_proteins

STANDARD = set("ACDEFGHIKLMNPQRSTVWY")
NOTHING_LEFT = r"no (record survived|protein left)"  # binarize/score vs extract wording


@dataclass
class Case:
    """One input file and its expected outcome: ``ok`` with the records written, or an ``error`` message."""

    name: str
    what: str
    data: bytes
    records: list[tuple[str, str]] = field(default_factory=list)  # (id, cleaned sequence) written, in order
    read: int = 0
    mapped: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    error: str | None = None  # regex the one error line must match
    line: int | None = None  # line number the error must name
    args: list[str] = field(default_factory=list)
    suffix: str = ".fasta"
    fifo: bool = False  # given through a named pipe (read once, as from `<(zcat x.gz)` or standard input)

    @property
    def ok(self) -> bool:
        return self.error is None

    def outcome(self) -> str:
        """One-line summary of the expected outcome, for the README table."""
        if not self.ok:
            where = f" at line {self.line}" if self.line else ""
            return f"exit 2, one `error:` line{where} matching `{self.error}`"
        parts = [f"{k} {sum(v.values())}" for k, v in sorted(self.mapped.items())]
        parts += [f"skipped {k} {v}" for k, v in sorted(self.skipped.items())]
        parts += [f"duplicate ids {self.duplicates}"] if self.duplicates else []
        return f"exit 0, {len(self.records)}/{self.read} written" + (f"; {', '.join(parts)}" if parts else "")


def wrap(seq: str, width: int = 60) -> str:
    return "".join(seq[i : i + width] + "\n" for i in range(0, len(seq), width))


def letters(seq: str) -> dict[str, int]:
    return dict(Counter(seq.upper()))


def fasta(records: list[tuple[str, str]], width: int = 60) -> str:
    return "".join(f">{header}\n{wrap(seq, width)}" for header, seq in records)


def _proteins() -> tuple[list[str], str]:
    """Short real proteins of standard residues only (predictable counts, fit the tiny models), and ~100k residues."""
    proteins = read_proteins(400)
    short = [p for p in proteins if 30 <= len(p) <= 110 and set(p) <= STANDARD]
    long = "".join(p for p in proteins if set(p) <= STANDARD)
    assert len(short) >= 12 and len(long) >= 100_000
    return short, long[:100_000]


def _residue_cases(p: list[str]) -> list[Case]:
    """Cases where residues are mapped or removed but every record is written."""
    ids = [f"P{i:05d}" for i in range(4)]
    plain = list(zip(ids[:3], p[:3]))
    text = fasta(plain)
    lower = [(ids[0], p[0].lower()), (ids[1], p[1][:10] + p[1][10:30].lower() + p[1][30:])]
    star = [(i, s + "*") for i, s in plain]
    internal = [(ids[0], p[0][:20] + "*" + p[0][20:]), (ids[1], p[1] + "**")]
    genbank_style = "".join(f"{i + 1:>9} " + " ".join(p[0][j : j + 10].lower() for j in range(i, i + 60, 10)).rstrip()
                            + "\n" for i in range(0, len(p[0]), 60))
    digits = Counter(ch for ch in genbank_style if ch.isdigit())
    spaces = genbank_style.count(" ")
    gapped = p[2][:15] + "---" + p[2][15:40] + ".." + p[2][40:] + "-"
    sec = p[3][:10] + "U" + p[3][10:50] + "O" + p[3][50:]
    amb = p[4][:5] + "B" + p[4][5:25] + "Z" + p[4][25:] + "XX"
    tabbed = p[5][:30] + "\t" + p[5][30:60] + " " + p[5][60:]
    return [
        Case("plain", "reference: 3 records, 60-column lines", text.encode(), plain, 3),
        Case("crlf", "Windows CRLF line endings", text.replace("\n", "\r\n").encode(), plain, 3),
        Case("bom", "UTF-8 byte-order mark", b"\xef\xbb\xbf" + text.encode(), plain, 3),
        Case("gzip_bom_crlf_no_suffix", "gzip (named .fasta) of a BOM + CRLF file",
             gzip.compress(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode(), mtime=0), plain, 3),
        Case("gzip_multi_member", "two concatenated gzip members (`cat a.gz b.gz`)",
             gzip.compress(fasta(plain[:2]).encode(), mtime=0) + gzip.compress(fasta(plain[2:]).encode(), mtime=0),
             plain, 3, suffix=".fasta.gz"),
        Case("lowercase", "lowercase and soft-masked (mixed case) residues", fasta(lower).encode(),
             [(ids[0], p[0]), (ids[1], p[1])], 2, {"lowercase_to_upper": letters(p[0] + p[1][10:30])}),
        Case("terminal_stop", "`*` terminating every record", fasta(star).encode(), plain, 3,
             {"terminal_stop_removed": {"*": 3}}),
        Case("internal_stop", "`*` inside a record, and `**` at the end", fasta(internal).encode(),
             [(ids[0], p[0][:20] + "X" + p[0][20:]), (ids[1], p[1] + "X")], 2,
             {"internal_stop_to_X": {"*": 2}, "terminal_stop_removed": {"*": 1}}),
        Case("genbank_origin_lines", "GenBank ORIGIN-style lines pasted under a header: numbers, spaces, lowercase",
             f">{ids[0]}\n{genbank_style}".encode(), [(ids[0], p[0])], 1,
             {"digit_removed": dict(digits), "whitespace_removed": {"space": spaces},
              "lowercase_to_upper": letters(p[0])}),
        Case("tab_and_space", "a tab and a space inside a sequence line", fasta([(ids[0], tabbed)], 200).encode(),
             [(ids[0], p[5])], 1, {"whitespace_removed": {"tab": 1, "space": 1}}),
        Case("gaps_removed", "alignment gaps `-` and `.`", fasta([(ids[0], gapped)]).encode(), [(ids[0], p[2])], 1,
             {"gap_removed": {"-": 4, ".": 2}}),
        Case("gaps_kept", "alignment gaps with `--keep-gaps`", fasta([(ids[0], gapped)]).encode(),
             [(ids[0], gapped)], 1, {"gap_kept": {"-": 4, ".": 2}}, args=["--keep-gaps"]),
        Case("selenocysteine_pyrrolysine", "U and O residues", fasta([(ids[0], sec)]).encode(), [(ids[0], sec)], 1,
             {"ambiguous_kept": {"U": 1, "O": 1}}),
        Case("ambiguous_codes", "B, Z and X", fasta([(ids[0], amb)]).encode(), [(ids[0], amb)], 1,
             {"ambiguous_kept": {"B": 1, "Z": 1, "X": 2}}),
        Case("unknown_letter_J", "J (Leu/Ile, not in the alphabet)", fasta([(ids[0], p[6] + "J")]).encode(),
             [(ids[0], p[6] + "X")], 1, {"unknown_letter_to_X": {"J": 1}}),
    ]


def _record_cases(p: list[str], long: str) -> list[Case]:
    """Cases where whole records are skipped, kept despite odd headers, or very long."""
    a, b, c = p[7], p[8], p[9]
    uniprot = [("sp|P69905|HBA_HUMAN Hemoglobin subunit alpha OS=Homo sapiens OX=9606 GN=HBA1 PE=1 SV=2", a),
               ("tr|A0A024R161|A0A024R161_HUMAN Guanine nucleotide-binding protein OS=Homo sapiens", b)]
    odd = [("a/b", a), ("..", b), ("x" * 300, c)]
    dup = [("Q1", a), ("Q2", b), ("Q1 second copy", c)]
    return [
        Case("non_ascii_letter", "`é` inside one record of three",
             fasta([("r1", a), ("r2", b[:20] + "é" + b[20:]), ("r3", c)]).encode(), [("r1", a), ("r3", c)], 3,
             skipped={"invalid_character": 1}),
        Case("latin1_byte", "a Latin-1 byte (0xE9) inside a record",
             fasta([("r1", a), ("r2", b)]).encode().replace(b[:10].encode(), b[:10].encode() + b"\xe9", 1),
             [("r1", a)], 2, skipped={"invalid_character": 1}),
        Case("control_char", "an ESC control character inside a record",
             fasta([("r1", a[:9] + "\x1b" + a[9:]), ("r2", b)]).encode(), [("r2", b)], 2,
             skipped={"invalid_character": 1}),
        Case("gt_inside_line", "`>` in the middle of a sequence line (two records glued)",
             f">r1\n{a}>r2\n{b}\n>r3\n{c}\n".encode(), [("r3", c)], 2, skipped={"invalid_character": 1}),
        Case("empty_records", "header-only records between real ones",
             f">e1\n>r1\n{wrap(a)}>e2 nothing here\n\n>r2\n{wrap(b)}>e3\n".encode(), [("r1", a), ("r2", b)], 5,
             skipped={"empty": 3}),
        Case("missing_id", "`>` alone (skipped) and `> desc text` (id is `desc`)",
             f">\n{wrap(a)}> desc text\n{wrap(b)}>r3\n{wrap(c)}".encode(), [("desc", b), ("r3", c)], 3,
             skipped={"missing_id": 1}),
        Case("undecodable_header", "a header id that is not UTF-8",
             b">r\xff1\n" + wrap(a).encode() + f">r2\n{wrap(b)}".encode(), [("r2", b)], 2,
             skipped={"undecodable_header": 1}),
        Case("duplicate_ids_keep", "an id repeated (default `--duplicates keep`)", fasta(dup).encode(),
             [("Q1", a), ("Q2", b), ("Q1", c)], 3, duplicates=1),
        Case("duplicate_ids_skip", "an id repeated, `--duplicates skip`", fasta(dup).encode(),
             [("Q1", a), ("Q2", b)], 3, skipped={"duplicate_id": 1}, duplicates=1, args=["--duplicates", "skip"]),
        Case("duplicate_ids_error", "an id repeated, `--duplicates error`", fasta(dup).encode(),
             error="duplicate id 'Q1'", line=3 + len(wrap(a).splitlines()) + len(wrap(b).splitlines()),
             args=["--duplicates", "error"]),
        Case("uniprot_headers", "UniProt headers `sp|P69905|HBA_HUMAN description OS=...`", fasta(uniprot).encode(),
             [("sp|P69905|HBA_HUMAN", a), ("tr|A0A024R161|A0A024R161_HUMAN", b)], 2),
        Case("unsafe_file_name_ids", "ids `a/b`, `..` and a 300-character id", fasta(odd).encode(),
             [("a/b", a), ("..", b), ("x" * 300, c)], 3),
        Case("ids_differ_in_case", "ids `P69905`, `p69905` (one file each, also on case-insensitive file systems)",
             fasta([("P69905", a), ("p69905", b)]).encode(), [("P69905", a), ("p69905", b)], 2),
        Case("long_ids_shared_prefix", "two 300-character ids sharing their first 250 characters",
             fasta(long_ids := [("y" * 250 + "A" * 50, a), ("y" * 250 + "B" * 50, b)]).encode(), long_ids, 2),
        Case("long_header", "a 20,000-character description line", fasta([("r1 " + "desc " * 4000, a)]).encode(),
             [("r1", a)], 1),
        Case("blank_lines_no_final_newline", "blank lines before, between and inside records; no final newline",
             f"\n\n>r1\n{a[:40]}\n\n{a[40:]}\n\n>r2\n{b}".encode(), [("r1", a), ("r2", b)], 2),
        Case("residues_100k", "one 100,000-residue record (60-column lines) between two short ones",
             fasta([("r1", a), ("giant", long), ("r2", b)]).encode(), [("r1", a), ("giant", long), ("r2", b)], 3),
        Case("too_long", "`--max-length 60` with records of 30-110 residues",
             fasta([("r1", a), ("r2", b), ("r3", c)]).encode(),
             [(i, s) for i, s in [("r1", a), ("r2", b), ("r3", c)] if len(s) <= 60], 3,
             skipped={"too_long": sum(len(s) > 60 for s in (a, b, c))}, args=["--max-length", "60"]),
    ]


def _file_cases(p: list[str]) -> list[Case]:
    """Whole files that are not FASTA, or FASTA with nothing to write."""
    text = fasta([("r1", p[10]), ("r2", p[11])]).encode()
    rng = random.Random(0)
    junk = b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(4000))
    fastq = "".join(f"@read{i}\n{s}\n+\n{'I' * len(s)}\n" for i, s in enumerate(p[:2])).encode()
    genbank = (f"LOCUS       P69905   {len(p[0])} aa   linear   PRI\nDEFINITION  test.\n"
               f"ORIGIN\n        1 {p[0][:10].lower()}\n//\n").encode()
    records = [("r1", p[10]), ("r2", p[11])]
    return [
        Case("through_fifo", "plain FASTA through a named pipe (FIFO)", text, records, 2, fifo=True),
        Case("gzip_through_fifo", "gzip FASTA through a named pipe, as `<(cat x.fasta.gz)`", gzip.compress(text),
             records, 2, fifo=True),
        Case("empty_file", "a 0-byte file", b"", error="empty file"),
        Case("whitespace_only", "only blank lines", b"\n \r\n\t\n", error="empty file"),
        Case("header_only_file", "a file with one header and no residues", b">lonely protein\n",
             error=NOTHING_LEFT),
        Case("all_records_invalid", "every record has a non-ASCII letter",
             fasta([("r1", p[0][:5] + "ü" + p[0][5:])]).encode(), error=NOTHING_LEFT),
        Case("truncated_gzip", "a gzip file cut in the middle", gzip.compress(text * 50, mtime=0)[:-20],
             error="truncated or corrupt gzip", suffix=".fasta.gz"),
        Case("binary", "PNG header + random bytes", junk, error="binary data"),
        Case("nul_in_text", "a NUL byte inside an otherwise valid FASTA file",
             text.replace(b"\n>r2", b"\x00\n>r2"), error="binary data"),
        Case("bzip2", "bzip2-compressed FASTA", bz2.compress(text), error="bzip2-compressed", suffix=".fasta.bz2"),
        Case("fastq", "a FASTQ file passed as FASTA", fastq, error="looks like FASTQ", line=1),
        Case("genbank", "a GenBank flat file passed as FASTA", genbank, error="looks like GenBank", line=1),
        Case("sequence_before_header", "residues before the first `>` (after two blank lines)",
             b"\n\n" + p[0].encode() + b"\n" + text, error="sequence data before any '>' header", line=3),
        Case("pearson_comment", "an old Pearson `;comment` line before the first header",
             b";comment line\n" + text, error="sequence data before any '>' header", line=1),
        Case("classic_mac_cr", "CR-only (classic Mac) line endings: no newline at all",
             text.replace(b"\n", b"\r"), error="CR-only"),
    ]


def hostile_cases() -> list[Case]:
    """Every case, its file contents in memory."""
    short, long = _proteins()
    return _residue_cases(short) + _record_cases(short, long) + _file_cases(short)


def markdown_table(cases: list[Case]) -> str:
    """The README's table: every case, what it is, and the outcome all three entry points must give."""
    rows = ["| case | input | binarizer, extract and score give |", "|---|---|---|"]
    for c in cases:
        cells = [f"`{c.name}`", c.what, c.outcome()]
        rows.append("| " + " | ".join(cell.replace("|", r"\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Print the README table, or with ``--write DIR`` also write every case's file there to try by hand."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, metavar="DIR", help="write the corpus files (<case><suffix>) here")
    args = parser.parse_args(argv)
    cases = hostile_cases()
    if args.write:
        args.write.mkdir(parents=True, exist_ok=True)
        for case in cases:
            (args.write / f"{case.name}{case.suffix}").write_bytes(case.data)
    print(markdown_table(cases), end="")


if __name__ == "__main__":
    main()
