"""Nothing computed is ever lost: concurrent extract runs into one directory keep a complete index; one file
naming rule (safe characters, a length cap, unique ignoring case); contacts.tsv is written as maps finish and
long ids work; resume notices a changed sequence; a pipe, FIFO or standard input is read once."""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.proteins import read_records, write_fasta

from fairseq_esm.cli.common import run_main
from fairseq_esm.cli.contacts import main as contacts_main
from fairseq_esm.cli.extract import main as extract_main
from fairseq_esm.inference import contacts as contacts_module
from fairseq_esm.inference.output import INDEX, read_shards, sequence_checksum
from fairseq_esm.io.fasta import FastaFormatError, FastaReport, read_fasta
from fairseq_esm.io.file_names import MAX_STEM, copy_numbers, file_stem, file_stems

CLI = [sys.executable, "-m"]


def extract(*argv: object) -> int:
    return run_main(extract_main, [str(a) for a in argv])


def index_rows(out: Path) -> list[list[str]]:
    lines = (out / INDEX).read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines[1:]]


def short_records(sample_proteins: list[str], count: int, prefix: str = "p") -> list[tuple[str, str]]:
    return [(f"{prefix}{i}", seq) for i, seq in enumerate([p for p in sample_proteins if len(p) <= 120][:count])]


# ---- one naming rule ---------------------------------------------------------------------------------------


def old_contacts_stems(ids: list[str]) -> list[str]:
    """The rule fairseq-esm-contacts used before (kept here to prove ordinary names did not change)."""
    import re

    stems, seen = [], set()
    for record_id in ids:
        base = re.sub(r"[^A-Za-z0-9._-]", "_", record_id).lstrip(".") or "protein"
        stem, n = base, 1
        while stem.lower() in seen:
            n += 1
            stem = f"{base}.{n}"
        seen.add(stem.lower())
        stems.append(stem)
    return stems


def test_one_rule_safe_capped_case_insensitive_numbered():
    ordinary = ["sp|P69905|HBA_HUMAN", "tr|W0FSK4|W0FSK4_9FLAV", "UniRef50_A0A1", "d1dlwa_", "1LCD_A", "a.b-c"]
    assert file_stems(ordinary) == old_contacts_stems(ordinary)  # ordinary ids keep their names
    assert file_stems(["sp|P69905|HBA_HUMAN"]) == ["sp_P69905_HBA_HUMAN"]
    long_a, long_b = "A" * 150 + "x" * 150, "A" * 150 + "y" * 150  # 300 characters, a shared 150-char prefix
    stems = file_stems([long_a, long_b, "ABC", "abc", "abc", "a/b", "a_b", "..", ".hidden", "é"])
    assert stems[0] != stems[1] and all(len(s) <= MAX_STEM + 13 for s in stems[:2])
    assert stems[0] == file_stem(long_a) and stems[0].startswith("A" * MAX_STEM + "-")
    assert stems[2:] == ["ABC", "abc.2", "abc.3", "a_b", "a_b.2", "protein", "hidden", "_"]
    assert len({s.casefold() for s in stems}) == len(stems)
    assert all(set(s) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") for s in stems)
    assert file_stems(["x", "X"], taken=["X"]) == ["x.2", "X.3"]
    assert copy_numbers(["a", "b", "a", "a"]) == [1, 1, 2, 3]


def test_extract_names_ids_that_differ_in_case_apart(official_checkpoint, sample_proteins, tmp_path):
    seqs = [p for p in sample_proteins if len(p) <= 120][:4]
    records = [("abc", seqs[0]), ("ABC", seqs[1]), ("x" * 300, seqs[2]), ("x" * 299 + "y", seqs[3])]
    out = tmp_path / "out"
    assert extract(official_checkpoint("esm1b"), write_fasta(tmp_path / "in.fasta", records), "--out", out) == 0
    names = {rid: name for rid, name, *_ in index_rows(out)}
    assert names["abc"] == "abc.pt" and names["ABC"] == "ABC.2.pt"
    assert len({n.casefold() for n in names.values()}) == 4 and all(len(n) < 120 for n in names.values())
    for rid, name in names.items():
        assert torch.load(out / name)["label"] == rid


# ---- concurrent runs ---------------------------------------------------------------------------------------


def test_two_concurrent_extract_runs_keep_a_complete_index(official_checkpoint, tmp_path):
    """150 different real proteins per run, two processes into one directory at once: every output indexed."""
    records = read_records(300)
    halves = [write_fasta(tmp_path / f"{n}.fasta", part) for n, part in (("a", records[:150]), ("b", records[150:]))]
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([*CLI, "fairseq_esm.cli.extract", str(official_checkpoint("esm1b")), str(fasta),
                               "--out", str(out), "--threads", "1", "--no-progress"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for fasta in halves]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "wrote 150 protein(s)" in err
    rows = index_rows(out)
    assert len(rows) == 300 and sorted(rid for rid, *_ in rows) == sorted(rid for rid, _ in records)
    assert sorted(p.name for p in out.glob("*.pt")) == sorted(name for _, name, *_ in rows)
    by_id = dict(records)
    for rid, name, copy, digest in rows[::15]:
        assert torch.load(out / name)["label"] == rid and copy == "1" and digest == sequence_checksum(by_id[rid])
    assert not list(out.glob("*.tmp"))


# ---- resume keys on the sequence ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["pt", "npz-shards"])
def test_changed_sequence_is_recomputed_and_overwritten(fmt, official_checkpoint, sample_proteins, tmp_path, capsys):
    checkpoint, out = official_checkpoint("esm1b"), tmp_path / "out"
    seqs = [p for p in sample_proteins if len(p) <= 120][:4]
    common = ["--out", out, "--format", fmt, "--include", "mean", "per_tok"]
    assert extract(checkpoint, write_fasta(tmp_path / "v1.fasta", [("a", seqs[0]), ("b", seqs[1])]), *common) == 0
    capsys.readouterr()
    assert extract(checkpoint, write_fasta(tmp_path / "v2.fasta", [("a", seqs[2]), ("b", seqs[1])]), *common) == 0
    err = capsys.readouterr().err
    assert "note: 1 protein(s) in" in err and "(e.g. a): recomputing and overwriting them" in err
    assert "wrote 1 protein(s)" in err and "skipped 1 already there; recomputed 1 whose sequence changed" in err
    rows = index_rows(out)
    assert len(rows) == 2  # one line per (id, copy): the stale one is gone
    digest = {row[0]: row[-1] for row in rows}
    assert digest == {"a": sequence_checksum(seqs[2]), "b": sequence_checksum(seqs[1])}
    if fmt == "pt":
        results = {rid: torch.load(out / name) for rid, name, *_ in rows}
        assert len(list(out.glob("*.pt"))) == 2
    else:
        results = {r["label"]: r for r in read_shards(out)}
        assert len(results) == 2
    assert results["a"]["representations"][3].shape[0] == len(seqs[2])
    assert extract(checkpoint, tmp_path / "v2.fasta", *common) == 0
    assert "wrote 0 protein(s)" in capsys.readouterr().err


def legacy_pt_name(record_id: str, copy: int) -> str:
    """The name the older rule gave a copy after the first (``<prefix>~<sha1 of id and copy>``)."""
    return f"{record_id}~{hashlib.sha1(f'{record_id}{chr(10)}{copy}'.encode()).hexdigest()[:16]}.pt"


def test_older_pt_index_without_checksums_resumes(official_checkpoint, sample_proteins, tmp_path, capsys):
    """An index of an older version (``id  file``, ``|`` kept in names, ``~`` names for repeats) is read: its
    outputs are taken as matching (not recomputed), their checksums recorded, the names kept."""
    checkpoint, out = official_checkpoint("esm1b"), tmp_path / "out"
    seqs = [p for p in sample_proteins if len(p) <= 120][:4]
    records = [("sp|P1|X", seqs[0]), ("dup", seqs[1]), ("dup", seqs[2])]
    fasta = write_fasta(tmp_path / "in.fasta", records)
    assert extract(checkpoint, fasta, "--out", out) == 0
    old_names = {("sp|P1|X", "1"): "sp|P1|X.pt", ("dup", "1"): "dup.pt", ("dup", "2"): legacy_pt_name("dup", 2)}
    for rid, name, copy, _ in index_rows(out):
        (out / name).rename(out / old_names[(rid, copy)])
    legacy = [("dup", old_names[("dup", "2")]), ("sp|P1|X", "sp|P1|X.pt"), ("dup", "dup.pt")]
    (out / INDEX).write_text("id\tfile\n" + "".join(f"{rid}\t{name}\n" for rid, name in legacy))
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")}
    capsys.readouterr()
    assert extract(checkpoint, fasta, "--out", out) == 0
    err = capsys.readouterr().err
    assert "wrote 0 protein(s)" in err and "skipped 3 already there" in err
    assert "note: 3 output(s) in" in err and "without a sequence checksum" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")} == stamps
    rows = {(rid, copy): (name, digest) for rid, name, copy, digest in index_rows(out)}
    assert {key: name for key, (name, _) in rows.items()} == old_names
    assert rows[("dup", "2")][1] == sequence_checksum(seqs[2])
    changed = write_fasta(tmp_path / "changed.fasta", [records[0], records[1], ("dup", seqs[3])])
    assert extract(checkpoint, changed, "--out", out) == 0  # the recorded checksum now catches an edit
    assert "recomputed 1 whose sequence changed" in capsys.readouterr().err
    assert torch.load(out / old_names[("dup", "2")])["mean_representations"][3].shape == (64,)


def test_older_shard_index_without_checksums_resumes(official_checkpoint, sample_proteins, tmp_path, capsys):
    checkpoint, out = official_checkpoint("esm1b"), tmp_path / "out"
    fasta = write_fasta(tmp_path / "in.fasta", short_records(sample_proteins, 5))
    common = ["--out", out, "--format", "npz-shards", "--shard-size", 2]
    assert extract(checkpoint, fasta, *common) == 0
    for shard in out.glob("shard-*.npz"):  # as an older version wrote them: no checksum array
        with np.load(shard) as data:
            arrays = {key: data[key] for key in data.files if key != "sequence_checksums"}
        np.savez(shard, **arrays)
    rows = index_rows(out)
    (out / INDEX).write_text("id\tcopy\tshard\trow\tlength\n" + "".join("\t".join(r[:5]) + "\n" for r in rows))
    capsys.readouterr()
    assert extract(checkpoint, fasta, *common) == 0
    err = capsys.readouterr().err
    assert "wrote 0 protein(s)" in err and "note: 5 output(s)" in err
    assert [row[:5] for row in index_rows(out)] == [row[:5] for row in rows]
    assert all(row[5] != "-" for row in index_rows(out))
    assert extract(checkpoint, fasta, *common) == 0
    assert "note:" not in capsys.readouterr().err


# ---- contacts ----------------------------------------------------------------------------------------------


def test_contacts_predict_with_a_300_character_id(official_checkpoint, sample_proteins, tmp_path, capsys):
    long_id = "sp|" + "Q" * 297
    records = [(long_id, sample_proteins[12]), ("ok", sample_proteins[16])]
    out = tmp_path / "out"
    argv = ["predict", str(official_checkpoint("esm1b")), str(write_fasta(tmp_path / "in.fasta", records)),
            "--out", str(out), "--device", "cpu"]
    assert run_main(contacts_main, argv) == 0
    rows = [line.split("\t") for line in (out / "contacts.tsv").read_text().splitlines()]
    assert rows[0] == ["id", "file", "length"] and [r[0] for r in rows[1:]] == [long_id, "ok"]
    name = rows[1][1]
    assert name == file_stem(long_id) + ".npy" and len(name) < 120
    assert np.load(out / name).shape == (len(sample_proteins[12]),) * 2
    assert (out / name).with_suffix(".png").is_file() and not list(out.glob("*.tmp"))


def test_contacts_index_is_written_as_maps_finish(official_checkpoint, sample_proteins, tmp_path, monkeypatch):
    """A run that dies after two maps leaves both maps and an index listing exactly them."""
    real = contacts_module.iter_predictions

    def dies_after_two(*args, **kwargs):
        for n, item in enumerate(real(*args, **kwargs)):
            if n == 2:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(contacts_module, "iter_predictions", dies_after_two)
    records = short_records(sample_proteins, 5)
    out = tmp_path / "out"
    argv = ["predict", str(official_checkpoint("esm1b")), str(write_fasta(tmp_path / "in.fasta", records)),
            "--out", str(out), "--device", "cpu", "--no-png", "--max-tokens", "130"]
    with pytest.raises(KeyboardInterrupt):
        contacts_main(argv)
    rows = [line.split("\t") for line in (out / "contacts.tsv").read_text().splitlines()]
    assert rows[0] == ["id", "file", "length"] and len(rows) == 3
    assert sorted(p.name for p in out.glob("*.npy")) == sorted(r[1] for r in rows[1:])
    lengths = dict(records)
    for rid, name, length in rows[1:]:
        assert np.load(out / name).shape == (len(lengths[rid]),) * 2 and int(length) == len(lengths[rid])
    monkeypatch.setattr(contacts_module, "iter_predictions", real)
    assert contacts_main(argv) == 0  # a rerun completes the index, in FASTA order
    rows = [line.split("\t") for line in (out / "contacts.tsv").read_text().splitlines()[1:]]
    assert [r[0] for r in rows] == [rid for rid, _ in records]


def test_contacts_keeps_listing_an_earlier_runs_maps(official_checkpoint, sample_proteins, tmp_path, capsys):
    checkpoint, out = str(official_checkpoint("esm1b")), tmp_path / "out"
    first = write_fasta(tmp_path / "a.fasta", [("ABC", sample_proteins[12])])
    second = write_fasta(tmp_path / "b.fasta", [("abc", sample_proteins[16])])
    for fasta in (first, second):
        assert contacts_main(["predict", checkpoint, str(fasta), "--out", str(out), "--no-png"]) == 0
    assert "also lists 1 map(s) of an earlier run" in capsys.readouterr().err
    rows = [line.split("\t") for line in (out / "contacts.tsv").read_text().splitlines()[1:]]
    assert rows == [["ABC", "ABC.npy", str(len(sample_proteins[12]))],
                    ["abc", "abc.2.npy", str(len(sample_proteins[16]))]]
    assert np.load(out / "ABC.npy").shape[0] == len(sample_proteins[12])


# ---- a pipe, FIFO or standard input is read once -----------------------------------------------------------


def feed_fifo(path: Path, data: bytes) -> threading.Thread:
    """A named FIFO at ``path`` with a thread that writes ``data`` into it (in small pieces) once a reader opens it."""
    os.mkfifo(path)

    def write() -> None:
        with open(path, "wb", buffering=0) as fifo:
            for byte in data[:3]:  # the first bytes one by one: the gzip sniff must not rely on one read
                fifo.write(bytes([byte]))
                time.sleep(0.01)
            fifo.write(data[3:])

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("gzipped", [False, True])
def test_reader_reads_a_named_fifo_once(gzipped, tmp_path):
    records = read_records(50)
    text = "".join(f">{rid}\n{seq}\n" for rid, seq in records).encode()
    writer = feed_fifo(tmp_path / "in.fifo", gzip.compress(text) if gzipped else text)
    report = FastaReport()
    assert list(read_fasta(str(tmp_path / "in.fifo"), report=report)) == records
    writer.join(10)
    assert report.records_written == 50
    unblock = threading.Timer(20, lambda: open(tmp_path / "in.fifo", "wb").close())  # a regression fails, not hangs
    unblock.start()
    try:
        with pytest.raises(FastaFormatError, match="can be read only once.*save the FASTA to a file"):
            list(read_fasta(str(tmp_path / "in.fifo")))  # a second pass: an error, not a hang or 'empty file'
    finally:
        unblock.cancel()


@pytest.mark.parametrize("gzipped", [False, True])
def test_reader_reads_an_anonymous_pipe(gzipped):
    """``<(zcat x.gz)`` hands a tool ``/dev/fd/N``: a pipe, opened by name."""
    records = read_records(20)
    text = "".join(f">{rid}\n{seq}\n" for rid, seq in records).encode()
    data = gzip.compress(text) if gzipped else text
    read_end, write_end = os.pipe()

    def write() -> None:
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(data)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        assert list(read_fasta(f"/dev/fd/{read_end}")) == records
    finally:
        thread.join(10)
        os.close(read_end)


@pytest.mark.parametrize("source", ["-", "fifo"])
def test_extract_cli_reads_stdin_and_fifo(source, official_checkpoint, sample_proteins, tmp_path):
    records = short_records(sample_proteins, 3)
    data = gzip.compress("".join(f">{rid}\n{seq}\n" for rid, seq in records).encode())
    out = tmp_path / "out"
    path = source
    if source == "fifo":
        path = str(tmp_path / "in.fifo")
        feed_fifo(Path(path), data)
    done = subprocess.run([*CLI, "fairseq_esm.cli.extract", str(official_checkpoint("esm1b")), path, "--out",
                           str(out), "--threads", "1", "--no-progress"], input=None if source == "fifo" else data,
                          capture_output=True, timeout=300, check=False)
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert "records read 3, written 3" in err and "wrote 3 protein(s)" in err
    assert sorted(rid for rid, *_ in index_rows(out)) == sorted(rid for rid, _ in records)
