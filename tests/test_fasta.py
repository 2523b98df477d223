"""The residue policy, its report, and the whole-file errors of the FASTA reader (Python API)."""

from __future__ import annotations

import bz2
import gzip
import json
from pathlib import Path

import pytest
from helpers.proteins import SAMPLE

from fairseq_esm.io.fasta import (
    FastaFormatError,
    FastaReport,
    ResiduePolicy,
    clean_fasta,
    read_fasta,
)


def read(tmp_path: Path, content: str | bytes, policy: ResiduePolicy = ResiduePolicy(), name: str = "in.fasta",
         **kwargs) -> tuple[list[tuple[str, str]], FastaReport]:
    """Write ``content`` to a file and read it back through the policy."""
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    report = FastaReport()
    return list(read_fasta(str(path), policy, report, **kwargs)), report


def test_whole_sample_reads_with_ambiguity_codes_counted():
    report = FastaReport()
    records = list(read_fasta(str(SAMPLE), report=report))
    assert len(records) == report.records_read == report.records_written == 8000
    assert report.residues_written == sum(len(s) for _, s in records) == 3_632_841
    assert report.mapped == {"ambiguous_kept": {"X": 1497, "B": 2, "Z": 1}} and not report.skipped
    assert records[0][0] == "tr|W0FSK4|W0FSK4_9FLAV" and records[0][1].startswith("MNNQRKKTGKPS")


@pytest.mark.parametrize(
    "raw,expected,kind,key,n",
    [
        ("mkTay", "MKTAY", "lowercase_to_upper", "M", 1),
        ("MK TA\tY", "MKTAY", "whitespace_removed", "space", 1),
        ("MK1TA23Y", "MKTAY", "digit_removed", "2", 1),
        ("MKTAY*", "MKTAY", "terminal_stop_removed", "*", 1),
        ("MK*TAY", "MKXTAY", "internal_stop_to_X", "*", 1),
        ("MK-TA.Y-", "MKTAY", "gap_removed", "-", 2),
        ("MKBZUOXY", "MKBZUOXY", "ambiguous_kept", "U", 1),
        ("MKJTAjY", "MKXTAXY", "unknown_letter_to_X", "J", 2),
    ],
)
def test_each_mapping_is_applied_and_counted(tmp_path, raw, expected, kind, key, n):
    records, report = read(tmp_path, f">p1 description\n{raw}\n")
    assert records == [("p1", expected)]
    assert report.mapped[kind][key] == n
    assert report.residues_written == len(expected)


def test_keep_gaps_keeps_them_as_tokens(tmp_path):
    records, report = read(tmp_path, ">g\nMK-TA.Y\n", ResiduePolicy(keep_gaps=True))
    assert records == [("g", "MK-TA.Y")] and report.mapped == {"gap_kept": {"-": 1, ".": 1}}


def test_crlf_bom_gzip_and_multiline_records_read_the_same(tmp_path):
    plain, _ = read(tmp_path, ">a x\nMKT\nAY\n>b\nQQ\n")
    crlf = b"\xef\xbb\xbf>a x\r\nMKT\r\nAY\r\n\r\n>b\r\nQQ"
    assert read(tmp_path, crlf, name="crlf.fasta")[0] == plain
    # gzip is recognised by its magic bytes, whatever the name says
    assert read(tmp_path, gzip.compress(crlf), name="looks_plain.txt")[0] == plain


def test_records_crossing_chunk_boundaries_and_workers_give_the_same_output(tmp_path):
    path = tmp_path / "many.fasta"
    with gzip.open(SAMPLE, "rb") as src:
        path.write_bytes(src.read(400_000).rsplit(b"\n>", 1)[0] + "\n>bad 1\nMKé\n".encode())

    def run(**kwargs):
        parts = list(clean_fasta(str(path), **kwargs))
        report = FastaReport()
        for part in parts:
            report.merge(part.report)
        return b"".join(p.residues.tobytes() for p in parts), sum((p.ids for p in parts), []), report.to_dict()

    whole = run(chunk_bytes=1 << 22)
    assert run(chunk_bytes=5000) == whole
    assert run(chunk_bytes=5000, workers=2) == whole
    line = path.read_bytes().count(b"\n")  # the bad residue is on the file's last line
    assert whole[2]["skipped_examples"]["invalid_character"] == [f"{path}:{line} bad ('é', U+00E9)"]


def test_invalid_characters_skip_the_record_with_file_line_and_id(tmp_path):
    records, report = read(tmp_path, ">ok\nMKT\n>p2 x\nMKT\nMK;T\n>p3\nMK>T\n>p4\nMK\x01\n")
    assert records == [("ok", "MKT")]
    assert report.skipped == {"invalid_character": 3}
    assert report.skipped_examples["invalid_character"][0] == f"{tmp_path / 'in.fasta'}:5 p2 (';', U+003B)"
    assert report.records_read == 4 and report.records_written == 1


def test_a_header_in_another_encoding_skips_only_its_record(tmp_path):
    records, report = read(tmp_path, ">ok\nMKT\n>caf\xe9 latin-1\nMKT\n".encode("latin-1"))
    assert records == [("ok", "MKT")] and report.skipped == {"undecodable_header": 1}


def test_empty_too_long_and_missing_id_records_are_skipped_and_counted(tmp_path):
    text = ">empty\n>gaps_only\n--\n>long\nMKTAYIAKQR\n>\nMKT\n>ok\nMKT\n"
    records, report = read(tmp_path, text, ResiduePolicy(max_length=5))
    assert records == [("ok", "MKT")]
    assert report.skipped == {"empty": 2, "too_long": 1, "missing_id": 1}
    assert report.skipped_examples["too_long"] == [f"{tmp_path / 'in.fasta'}:4 long"]
    # the gaps of a skipped record are not counted as removed from the output
    assert "gap_removed" not in report.mapped


def test_duplicate_ids_keep_skip_or_error(tmp_path):
    text = ">a one\nMKT\n>b\nQQ\n>a two\nWW\n"
    kept, report = read(tmp_path, text)
    assert [r[1] for r in kept] == ["MKT", "QQ", "WW"] and report.duplicate_ids == 1
    assert report.duplicate_examples == [f"{tmp_path / 'in.fasta'}:5 a"]
    skipped, report = read(tmp_path, text, ResiduePolicy(duplicates="skip"))
    assert [r[1] for r in skipped] == ["MKT", "QQ"] and report.skipped == {"duplicate_id": 1}
    with pytest.raises(FastaFormatError, match=r"in\.fasta:5: duplicate id 'a'"):
        read(tmp_path, text, ResiduePolicy(duplicates="error"))


def test_report_merges_formats_and_serialises(tmp_path):
    _, first = read(tmp_path, ">a\nmkt*\n>b\n", name="one.fasta")
    _, second = read(tmp_path, ">c\nMJT\n", name="two.fasta")
    merged = FastaReport().merge(first).merge(second)
    assert merged.records_read == 3 and merged.records_written == 2 and merged.residues_written == 6
    assert merged.mapped["lowercase_to_upper"] == {"M": 1, "K": 1, "T": 1}
    assert merged.skipped == {"empty": 1}
    assert json.loads(json.dumps(merged.to_dict()))["mapped"]["unknown_letter_to_X"] == {"J": 1}
    text = merged.format()
    assert "records read 3, written 2, skipped 1" in text and "one.fasta:3 b" in text


WHOLE_FILE_ERRORS = [
    (b"", "empty file"),
    (b"\n  \n\n", "empty file"),
    (b"@read1\nACGT\n+\nIIII\n", "looks like FASTQ"),
    (b"LOCUS       X 10 bp\nORIGIN\n", "looks like GenBank"),
    (b"\nMKTAYIAK\n>p1\nMKT\n", "in.fasta:2: sequence data before any '>' header"),
    (b"PK\x03\x04\x00\x00binary\xff\xfe", "zip-compressed data (only gzip is read)"),
    (bz2.compress(b">p1\nMKT\n"), "bzip2-compressed data"),
    (bytes(range(256)) * 8, "binary data"),
    (SAMPLE.read_bytes()[:100_000], "truncated or corrupt gzip"),
    (b"\x1f\x8b\x08\x00garbage-after-the-magic", "truncated or corrupt gzip"),
]


@pytest.mark.parametrize("content,message", WHOLE_FILE_ERRORS)
def test_whole_file_errors_are_one_line_naming_the_file(tmp_path, content, message):
    with pytest.raises(FastaFormatError) as err:
        read(tmp_path, content)
    text = str(err.value)
    assert message in text and str(tmp_path / "in.fasta") in text and "\n" not in text and " — " in text
