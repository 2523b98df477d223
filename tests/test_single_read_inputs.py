"""Inputs that can be read only once — a named FIFO (as ``<(zcat x.gz)`` gives), standard input — read once by
every entry point that takes them, with the same result as a file, on slices of real data."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from helpers.proteins import SAMPLE, read_records

from fairseq_esm.cli import split_fasta as split_cli
from fairseq_esm.cli.common import run_main
from fairseq_esm.cli.finetune_variants import names_input, wild_type_of
from fairseq_esm.evaluation.remote_homology import read_scope
from fairseq_esm.io.a3m import read_a3m
from fairseq_esm.io.clusters import read_cluster_table

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data"
SCOPE = DATA / "scope" / "astral-scopedom-seqres-gd-sel-gs-bib-40-2.07.fa.gz"
A3M = DATA / "msa" / "UniRef50_E9K9Y4.a3m"
WILD_TYPE = DATA / "dms" / "BLAT_ECOLX.fasta"


@contextmanager
def fifo(path: Path, data: bytes) -> Iterator[str]:
    """A named FIFO that a thread fills with ``data`` once. A reader that opens it a second time (the bug these
    tests guard against) gets an empty stream instead of waiting for a writer for ever, so it fails, not hangs."""
    os.mkfifo(path)
    done = threading.Event()

    def feed() -> None:
        with open(path, "wb") as pipe:
            pipe.write(data)
        while not done.wait(0.1):
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader waiting
                pass

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield str(path)
    finally:
        done.set()


@pytest.fixture(scope="module")
def sample_slice() -> bytes:
    """The first 120 records of the shipped UniProt sample, as its bytes."""
    with gzip.open(SAMPLE, "rb") as src:
        return b"\n>".join(src.read(200_000).split(b"\n>")[:120]) + b"\n"


@pytest.fixture(scope="module")
def scope_slice() -> bytes:
    """The first 150 domains of the real SCOPe 2.07 ASTRAL 40% file."""
    return b"\n>".join(gzip.decompress(SCOPE.read_bytes()).split(b"\n>")[:150]) + b"\n"


def split_outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_split_fasta_reads_a_fifo_once_and_splits_as_from_a_file(sample_slice, tmp_path, compress, capsys):
    (tmp_path / "in.fasta").write_bytes(sample_slice)
    args = ["--valid-count", "12", "--seed", "5"]
    assert split_cli.main([str(tmp_path / "in.fasta"), "--out", str(tmp_path / "file"), *args]) == 0
    data = gzip.compress(sample_slice) if compress else sample_slice
    with fifo(tmp_path / "in.pipe", data) as pipe:
        assert split_cli.main([pipe, "--out", str(tmp_path / "fifo"), *args]) == 0
    assert "120 records" in capsys.readouterr().out
    outputs = split_outputs(tmp_path / "fifo")
    assert list(outputs) == ["train.fasta", "valid.fasta"]  # the spool is gone
    assert outputs == split_outputs(tmp_path / "file") and outputs["valid.fasta"].count(b">") == 12


def test_split_fasta_fifo_error_leaves_no_output_dir(sample_slice, tmp_path, capsys):
    with fifo(tmp_path / "in.pipe", sample_slice) as pipe:
        assert run_main(split_cli.main, [pipe, "--out", str(tmp_path / "out"), "--valid-count", "500"]) == 2
    assert "cannot hold out 500 of 120 records" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_split_fasta_reads_standard_input(sample_slice, tmp_path):
    (tmp_path / "in.fasta").write_bytes(sample_slice)
    assert split_cli.main([str(tmp_path / "in.fasta"), "--out", str(tmp_path / "file"), "--valid-count", "7"]) == 0
    proc = subprocess.run([sys.executable, "preprocess/split_fasta.py", "-", "--out", str(tmp_path / "stdin"),
                           "--valid-count", "7"], input=gzip.compress(sample_slice), cwd=ROOT, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    assert split_outputs(tmp_path / "stdin") == split_outputs(tmp_path / "file")


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_read_scope_reads_a_fifo_once(scope_slice, tmp_path, compress):
    (tmp_path / "scope.fa").write_bytes(scope_slice)
    want_domains, want_report = read_scope(str(tmp_path / "scope.fa"), max_length=300)
    with fifo(tmp_path / "scope.pipe", gzip.compress(scope_slice) if compress else scope_slice) as pipe:
        domains, report = read_scope(pipe, max_length=300)
    assert domains == want_domains and len(domains) == 150 - report.skipped["too_long"] > 100
    assert domains[0].id == "d1dlwa_" and domains[0].sccs == "a.1.1.1" and domains[0].sequence.isupper()
    assert report.to_dict() | {"sources": []} == want_report.to_dict() | {"sources": []}


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_read_a3m_reads_a_fifo_once(tmp_path, compress):
    want = read_a3m(A3M)
    data = A3M.read_bytes()
    with fifo(tmp_path / "msa.pipe", gzip.compress(data) if compress else data) as pipe:
        rows = read_a3m(pipe)
    assert rows == want and len(rows) == data.count(b"\n>") + 1 and rows[0].name == "UniRef50_E9K9Y4"


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_read_cluster_table_reads_a_fifo_once(tmp_path, compress):
    ids = [rid for rid, _ in read_records(60)]
    pairs = "".join(f"{ids[i - i % 4]}\t{ids[i]}\n" for i in range(len(ids)))  # MMseqs2's rep<TAB>member
    uniprot = "Cluster ID\tCluster members\n" + "".join(
        f"UniRef50_{ids[i].split('|')[1]}\t{'; '.join(ids[i:i + 5])}\n" for i in range(0, len(ids), 5))
    for name, text in (("pairs", pairs), ("uniprot", uniprot)):
        (tmp_path / f"{name}.tsv").write_text(text)
        want = read_cluster_table(tmp_path / f"{name}.tsv")
        data = text.encode()
        with fifo(tmp_path / f"{name}.pipe", gzip.compress(data) if compress else data) as pipe:
            table = read_cluster_table(pipe)
        assert (table.names, table.members, table.references) == (want.names, want.members, want.references)
        assert len(table.names) in (15, 12) and sum(map(len, table.members)) == 60


def test_finetune_variants_sequence_reads_a_fifo_as_fasta(tmp_path, capsys):
    wild_type = read_records(1, WILD_TYPE)[0][1]
    with fifo(tmp_path / "wt.pipe", gzip.compress(WILD_TYPE.read_bytes())) as pipe:
        assert names_input(pipe)
        args = type("Args", (), {"sequence": pipe, "wt_id": None})()
        assert wild_type_of(args) == wild_type and len(wild_type) == 286
    assert "records read 1, written 1" in capsys.readouterr().err
    assert names_input("-") and names_input(str(WILD_TYPE))
    assert not names_input(wild_type) and not names_input(wild_type * 4)  # too long to be a file name: a sequence
    assert not names_input(str(tmp_path))  # a directory is no FASTA


def test_finetune_variants_sequence_dash_reads_standard_input():
    code = ("import argparse; from fairseq_esm.cli.finetune_variants import wild_type_of; "
            "print(wild_type_of(argparse.Namespace(sequence='-', wt_id=None)))")
    proc = subprocess.run([sys.executable, "-c", code], input=WILD_TYPE.read_bytes(), cwd=ROOT, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip() == read_records(1, WILD_TYPE)[0][1]
