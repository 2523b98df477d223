"""The direct binarizer against the real fairseq-preprocess, and the preprocess CLIs, on sample slices."""

from __future__ import annotations

import gzip
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from fairseq.data import Dictionary, data_utils

from fairseq_esm.cli.common import run_main
from fairseq_esm.data.binarize import binarize_fasta
from fairseq_esm.io.fasta import read_fasta
from fairseq_esm.modules.alphabet import DICT_DIR

ROOT = Path(__file__).resolve().parents[1]
from helpers.proteins import SAMPLE

SRCDICT = DICT_DIR / "esm1b.txt"
# every mapping of the residue policy, and one record it must skip
ODD = (">odd1 lowercase and a terminal stop\nmktAYiak*\n>odd2 ambiguity, internal stop, J\nMKXBZ*QRJ\n"
       ">odd3 gaps, spaces, digits\nMK-TA.YU O12\n>odd4 invalid\nMK%T\n")
ODD_CLEAN = {"odd1": "MKTAYIAK", "odd2": "MKXBZXQRX", "odd3": "MKTAYUO"}


from fairseq_esm.cli import binarize as binarize_cli  # noqa: E402
from fairseq_esm.cli import fasta_to_text as text_cli  # noqa: E402
from fairseq_esm.cli import split_fasta as split_cli  # noqa: E402


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A slice of the sample plus ODD, binarized both ways (fairseq-preprocess as the real CLI)."""
    work = tmp_path_factory.mktemp("binarize")
    with gzip.open(SAMPLE, "rb") as src:
        records = src.read(300_000).split(b"\n>")[:300]
    (work / "slice.fasta").write_bytes(b"\n>".join(records) + b"\n" + ODD.encode())
    (work / "odd.fasta").write_text(ODD)
    assert text_cli.main([str(work / "slice.fasta"), "--out", str(work / "train.txt")]) == 0
    assert text_cli.main([str(work / "odd.fasta"), "--out", str(work / "gaps.txt"), "--keep-gaps"]) == 0
    ref = subprocess.run(
        [str(Path(sys.executable).parent / "fairseq-preprocess"), "--only-source", "--srcdict", str(SRCDICT),
         "--trainpref", str(work / "train.txt"), "--validpref", str(work / "gaps.txt"),
         "--destdir", str(work / "ref"), "--dataset-impl", "mmap", "--workers", "2"],
        capture_output=True, text=True)
    assert ref.returncode == 0, ref.stdout + ref.stderr
    assert "0.0% replaced" in ref.stdout + ref.stderr  # no residue fell back to <unk>
    assert binarize_cli.main(["--trainpref", str(work / "slice.fasta"), "--destdir", str(work / "ours")]) == 0
    assert binarize_cli.main(["--validpref", str(work / "odd.fasta"), "--destdir", str(work / "ours"),
                              "--keep-gaps"]) == 0
    return work


def test_bin_idx_dict_byte_identical_to_text_plus_fairseq_preprocess(work):
    for name in ("train.bin", "train.idx", "valid.bin", "valid.idx", "dict.txt"):
        assert (work / "ours" / name).read_bytes() == (work / "ref" / name).read_bytes(), name
    assert (work / "ours" / "train.ids").read_text() == (work / "train.ids").read_text()


def test_workers_and_chunk_size_do_not_change_the_output(work, tmp_path):
    dictionary = Dictionary.load(str(SRCDICT))
    report = binarize_fasta(work / "slice.fasta", tmp_path / "w2", dictionary, workers=2, chunk_bytes=20_000)
    for suffix in ("bin", "idx", "ids"):
        assert (tmp_path / f"w2.{suffix}").read_bytes() == (work / "ours" / f"train.{suffix}").read_bytes()
    assert report.records_read == 304 and report.records_written == 303


def test_ids_sidecar_names_every_written_record_in_order(work):
    ids = (work / "ours" / "train.ids").read_text().splitlines()
    headers = [line[1:].split()[0] for line in (work / "slice.fasta").read_text().splitlines() if line[:1] == ">"]
    assert ids == [h for h in headers if h != "odd4"]
    assert len(ids) == len(data_utils.load_indexed_dataset(str(work / "ours" / "train"), None))


def test_dataset_loads_with_fairseq_and_decodes_to_the_cleaned_sequences(work):
    dictionary = Dictionary.load(str(work / "ours" / "dict.txt"))
    dataset = data_utils.load_indexed_dataset(str(work / "ours" / "train"), dictionary)
    expected = list(read_fasta(str(work / "slice.fasta")))
    assert len(dataset) == len(expected) == 303
    for i, (rid, sequence) in enumerate(expected):
        tokens = dataset[i]
        assert tokens[-1].item() == dictionary.eos()
        assert dictionary.string(tokens[:-1]).replace(" ", "") == sequence
    assert {rid: seq for rid, seq in expected[-3:]} == ODD_CLEAN
    gaps = data_utils.load_indexed_dataset(str(work / "ours" / "valid"), dictionary)
    assert dictionary.string(gaps[2][:-1]).replace(" ", "") == "MK-TA.YUO"


def test_report_counts_every_mapping_of_the_odd_records(work, tmp_path):
    report = binarize_fasta(work / "odd.fasta", tmp_path / "odd", Dictionary.load(str(SRCDICT)))
    assert report.mapped == {
        "lowercase_to_upper": {"M": 1, "K": 2, "T": 1, "I": 1, "A": 1},
        "terminal_stop_removed": {"*": 1},
        "internal_stop_to_X": {"*": 1},
        "ambiguous_kept": {"X": 1, "B": 1, "Z": 1, "U": 1, "O": 1},
        "unknown_letter_to_X": {"J": 1},
        "gap_removed": {"-": 1, ".": 1},
        "whitespace_removed": {"space": 1},
        "digit_removed": {"1": 1, "2": 1},
    }
    assert report.skipped == {"invalid_character": 1}
    assert report.skipped_examples["invalid_character"] == [f"{work / 'odd.fasta'}:8 odd4 ('%', U+0025)"]
    assert report.residues_written == sum(map(len, ODD_CLEAN.values()))


@pytest.mark.parametrize(
    "content,message",
    [(b"", "empty file"), (b"@r1\nACGT\n+\nIIII\n", "looks like FASTQ"), (b"LOCUS  X\n", "looks like GenBank"),
     (b"MKT\n>p\nMKT\n", "in.fasta:1: sequence data before any '>' header"), (b"\x00\x01\x02\xff", "binary data"),
     (SAMPLE.read_bytes()[:50_000], "truncated or corrupt gzip")],
)
def test_cli_whole_file_errors_are_one_line_exit_2_and_leave_no_output(tmp_path, capsys, content, message):
    (tmp_path / "in.fasta").write_bytes(content)
    argv = ["--trainpref", str(tmp_path / "in.fasta"), "--destdir", str(tmp_path / "out")]
    assert run_main(binarize_cli.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'in.fasta'}") and message in err and err.count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dict.txt"]


def test_cli_missing_file_is_one_line(tmp_path, capsys):
    assert run_main(text_cli.main, [str(tmp_path / "nope.fasta"), "--out", str(tmp_path / "x.txt")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'nope.fasta'}: no such file — check the path\n"


def test_cli_as_subprocess_prints_no_traceback(tmp_path):
    (tmp_path / "reads.fastq").write_text("@r1\nACGT\n+\nIIII\n")
    proc = subprocess.run([sys.executable, "preprocess/fasta_to_text.py", str(tmp_path / "reads.fastq"),
                           "--out", str(tmp_path / "out.txt")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'reads.fastq'}:1: looks like FASTQ, not FASTA — convert it to FASTA: "
        "every record starts with a '>id' line")
    assert not (tmp_path / "out.txt").exists()


def test_split_fasta_holds_out_records_verbatim_and_reproducibly(work, tmp_path, capsys):
    source = work / "slice.fasta"
    for run in ("a", "b"):
        assert split_cli.main([str(source), "--out", str(tmp_path / run), "--valid-count", "30", "--seed", "7"]) == 0
    assert "304 records" in capsys.readouterr().out
    train, valid = ((tmp_path / "a" / f"{s}.fasta").read_bytes() for s in ("train", "valid"))
    assert valid == (tmp_path / "b" / "valid.fasta").read_bytes() and valid.count(b"\n>") + 1 == 30
    records = source.read_bytes().split(b"\n>")
    split_records = train.split(b"\n>") + valid.split(b"\n>")
    assert sorted(r.lstrip(b">").rstrip(b"\n") for r in split_records) == sorted(r.lstrip(b">").rstrip(b"\n")
                                                                               for r in records)
    assert split_cli.main([str(source), "--out", str(tmp_path / "c"), "--valid-fraction", "0.1"]) == 0
    assert (tmp_path / "c" / "valid.fasta").read_bytes().count(b"\n>") + 1 == 30


def test_fasta_to_text_old_positional_output_still_works(work, tmp_path, capsys):
    assert text_cli.main([str(work / "odd.fasta"), str(tmp_path / "old.txt")]) == 0
    assert "note: the positional TEXT is deprecated; use --out" in capsys.readouterr().err
    assert text_cli.main([str(work / "odd.fasta"), "--out", str(tmp_path / "new.txt")]) == 0
    assert (tmp_path / "old.txt").read_bytes() == (tmp_path / "new.txt").read_bytes()
    both = [str(work / "odd.fasta"), str(tmp_path / "a.txt"), "--out", str(tmp_path / "b.txt")]
    assert run_main(text_cli.main, both) == 2
    assert "error: two output text files" in capsys.readouterr().err


@pytest.mark.parametrize("tool,argv,expected", [
    ("split_fasta", ["x.fasta", "--valid-count", "1", "--out-dir", "d"], {"out": "d"}),
    ("make_uniref_splits", ["x.fasta", "--out-dir", "d", "--workers", "3"], {"out": "d", "threads": 3}),
    ("build_msas", ["q.fasta", "--db", "db.fasta", "--out-dir", "d"], {"out": Path("d")}),
    ("msa_split_features", ["data", "model.pt", "--db", "db.fasta", "--layer", "2", "--toks-per-batch", "99"],
     {"repr_layers": 2, "max_tokens": 99}),
    ("structure_labels", ["a.pdb", "--out-dir", "d"], {"out": "d"}),
    ("structure_dataset", ["labels", "--out-dir", "d"], {"out": "d"}),
    ("backbone_json_to_pdb", ["set.json", "--out-dir", "d"], {"out": Path("d")}),
])
def test_old_spellings_of_the_data_tools_still_parse_and_say_so(tool, argv, expected, capsys):
    args = importlib.import_module(f"fairseq_esm.cli.{tool}").build_parser().parse_args(argv)
    assert {key: getattr(args, key) for key in expected} == expected
    assert "is deprecated; use --" in capsys.readouterr().err
