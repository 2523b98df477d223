"""The record store of fairseq-esm-make-uniref-splits (fairseq_esm/io/record_store.py) and the compact keys it
joins on (fairseq_esm/io/record_keys.py): the same records, report and errors as the FASTA reader, on the
hostile-input corpus and on real proteins, read back in order; key sets and indexes against Python's."""

from __future__ import annotations

import argparse
import random

import numpy as np
import pytest
from helpers.hostile_inputs import hostile_cases
from helpers.proteins import read_records, write_fasta

from fairseq_esm.io import record_store
from fairseq_esm.io.clusters import ID_KEY_DTYPES, id_keys
from fairseq_esm.io.fasta import FastaReport, add_policy_args, policy_from_args, read_fasta
from fairseq_esm.io.record_keys import KeyIndex, KeySet, string_keys
from fairseq_esm.io.record_store import read_store, scan_fasta

CASES = [case for case in hostile_cases() if not case.fifo]


def policy_of(args: list[str]):
    parser = argparse.ArgumentParser()
    add_policy_args(parser)
    return policy_from_args(parser.parse_known_args(args)[0])


def stored(scan) -> list[tuple[str, str]]:
    """Every record read back from the store: (id, residues)."""
    out = []
    for chunk in read_store(scan, chunk_bytes=4096):
        part = chunk.part(np.arange(len(chunk.ids)))
        text, ends = part.residues.tobytes().decode(), np.cumsum(part.lengths).tolist()
        out += [(rid, text[a:b]) for rid, a, b in zip(part.ids, [0] + ends[:-1], ends)]
    return out


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_store_holds_what_the_fasta_reader_reads(case, tmp_path, monkeypatch):
    """Small chunks (duplicates across chunk boundaries), every hostile input: same records, report, errors."""
    path = tmp_path / f"in{case.suffix}"
    path.write_bytes(case.data)
    policy = policy_of(case.args)
    monkeypatch.setattr(record_store, "CHUNK_BYTES", 256)
    report = FastaReport()
    try:
        want = list(read_fasta(str(path), policy, report))
    except Exception as err:  # the reader's own error, word for word
        with pytest.raises(type(err)) as got:
            scan_fasta(str(path), policy, 1, tmp_path, id_keys, ID_KEY_DTYPES)
        assert str(got.value) == str(err)
        return
    scan = scan_fasta(str(path), policy, 1, tmp_path, id_keys, ID_KEY_DTYPES)
    assert scan.report.to_dict() == report.to_dict()
    assert stored(scan) == want and scan.n == len(want)
    assert scan.lengths.tolist() == [len(seq) for _, seq in want]
    if want:
        assert scan.ids_of([scan.n - 1, 0]) == [want[-1][0], want[0][0]]
    keys = id_keys([rid for rid, _ in want])
    assert all(np.array_equal(a, b) for a, b in zip(scan.id_keys, keys))
    same = [a == b for (_, a) in want for (_, b) in want]
    hashes = scan.seq_hashes
    assert [a == b for a in hashes for b in hashes] == same


def test_store_with_workers_gaps_and_duplicates(tmp_path):
    """Two worker processes give the same store; with --keep-gaps MMseqs2 gets the sequences without gaps."""
    proteins = read_records(300)
    records = [(rid if i % 7 else proteins[0][0], seq[:40] + "-." + seq[40:]) for i, (rid, seq) in enumerate(proteins)]
    path = write_fasta(tmp_path / "gapped.fasta", records)
    policy = policy_of(["--keep-gaps", "--duplicates", "skip"])
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = scan_fasta(str(path), policy, 1, tmp_path / "one")
    two = scan_fasta(str(path), policy, 2, tmp_path / "two")
    assert stored(one) == stored(two) == list(read_fasta(str(path), policy))
    assert one.report.to_dict() == two.report.to_dict() and one.report.skipped["duplicate_id"] == 42
    assert one.store.read_bytes() == two.store.read_bytes() and b"-." in one.store.read_bytes()
    mmseqs = one.mmseqs_fasta.read_text().split("\n")
    assert mmseqs[0::2][:-1] == [f">r{i}" for i in range(one.n)]
    assert mmseqs[1::2] == [seq.replace("-", "").replace(".", "") for _, seq in stored(one)]


def test_key_index_and_key_set_match_python():
    rng = random.Random(1)
    words = [f"id{rng.randint(0, 3000)}" for _ in range(5000)]  # many repeats
    hi, lo = string_keys(words)
    index = KeyIndex(hi, lo)
    queries = [f"id{i}" for i in range(0, 3200, 3)]
    which, values = index.lookup(*string_keys(queries))
    got = {}
    for q, v in zip(which.tolist(), values.tolist()):
        got.setdefault(queries[q], []).append(v)
    want = {}
    for i, w in enumerate(words):
        want.setdefault(w, []).append(i)
    assert got == {q: want[q] for q in queries if q in want}  # every match, in stored order
    seen, first = KeySet(), {}
    for start in range(0, len(words), 97):  # levels merge as the set grows
        batch = words[start : start + 97]
        before = seen.get(*string_keys(batch))
        assert before.tolist() == [first.get(w, -1) for w in batch]
        seen.add(*string_keys(batch), np.arange(start, start + len(batch)))
        for i, w in enumerate(batch):
            first.setdefault(w, start + i)
    assert len(seen.levels) < 12 and len(seen) == len(words)
