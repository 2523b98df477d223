"""Every FASTA entry point (binarizer, extraction, scoring) on a corpus of hostile real-world inputs:
a documented result whose counts are in the report, or one ``error:`` line naming the file (and line);
never a traceback, never a silently shorter output."""

from __future__ import annotations

import json
import os
import re
import struct
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from fairseq.data import Dictionary
from helpers.hostile_inputs import Case, hostile_cases, markdown_table

from fairseq_esm.cli import binarize as binarize_fasta
from fairseq_esm.cli import extract, score
from fairseq_esm.cli.common import run_main
from fairseq_esm.modules.alphabet import DICT_DIR

ENTRY_POINTS = ("binarize", "extract", "score")
CASES = {case.name: case for case in hostile_cases()}




@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile")


def run(entry: str, case: Case, path: Path, out: Path, checkpoint: Path) -> int:
    """One entry point on one file, as its console script runs it."""
    if entry == "binarize":
        argv = ["--trainpref", path, "--destdir", out, "--report-json", out / "report.json"]
        return run_main(binarize_fasta.main, [str(a) for a in argv + case.args])
    if entry == "extract":
        return run_main(extract.main, [str(a) for a in [checkpoint, path, out] + case.args])
    out.mkdir()
    return run_main(score.main, [str(a) for a in [checkpoint, path, "--out", out / "scores.tsv", "--metrics", "ece"]
                                 + case.args])


def binarized(out: Path) -> tuple[list[str], list[list[int]], dict]:
    """Ids, token lists and report of a binarized split (index read by its documented layout)."""
    idx = (out / "train.idx").read_bytes()
    count = struct.unpack("<Q", idx[18:26])[0]
    sizes = np.frombuffer(idx[26 : 26 + 4 * count], np.int32)
    tokens = np.fromfile(out / "train.bin", np.uint16)
    assert len(tokens) == sizes.sum()
    bounds = np.concatenate(([0], np.cumsum(sizes))).tolist()
    ids = (out / "train.ids").read_text(encoding="utf-8").splitlines()
    report = json.loads((out / "report.json").read_text())["train"]
    return ids, [tokens[a:b].tolist() for a, b in zip(bounds, bounds[1:])], report


def check_outputs(entry: str, case: Case, out: Path) -> None:
    """The outputs hold exactly the expected records (ids, residues or lengths), in FASTA order."""
    ids = [rid for rid, _ in case.records]
    if entry == "binarize":
        got_ids, tokens, report = binarized(out)
        dictionary = Dictionary.load(str(DICT_DIR / "esm1b.txt"))
        assert got_ids == ids
        assert tokens == [[dictionary.index(ch) for ch in seq] + [dictionary.eos()] for _, seq in case.records]
        assert report["records_read"] == case.read and report["records_written"] == len(ids)
        assert report["residues_written"] == sum(len(s) for _, s in case.records)
        assert report["mapped"] == case.mapped and report["skipped"] == case.skipped
        assert report["duplicate_ids"] == case.duplicates
    elif entry == "extract":
        rows = [line.split("\t") for line in (out / "index.tsv").read_text(encoding="utf-8").splitlines()[1:]]
        assert sorted(rid for rid, *_ in rows) == sorted(ids)
        assert len(list(out.glob("*.pt"))) == len(ids)
        for rid, name, *_ in rows:
            saved = torch.load(out / name)
            assert saved["label"] == rid and torch.isfinite(saved["mean_representations"][3]).all()
    else:
        rows = [line.split("\t") for line in (out / "scores.tsv").read_text(encoding="utf-8").splitlines()]
        assert rows[0][:2] == ["id", "length"]
        assert [(rid, int(n)) for rid, n, *_ in rows[1:]] == [(rid, len(seq)) for rid, seq in case.records]


@contextmanager
def delivered(case: Case, path: Path):
    """``path`` holds the case's bytes: a file, or a named pipe a writer thread feeds once."""
    path.unlink(missing_ok=True)
    if not case.fifo:
        path.write_bytes(case.data)
        yield
        return
    os.mkfifo(path)
    writer = threading.Thread(target=path.write_bytes, args=(case.data,), daemon=True)
    writer.start()
    try:
        yield
    finally:
        if writer.is_alive():  # the tool never opened it: unblock the writer
            with open(path, "rb") as drain:
                drain.read()
        writer.join(timeout=10)


def report_lines(case: Case) -> list[str]:
    """Lines of ``FastaReport.format()`` the case must produce."""
    skipped = sum(case.skipped.values())
    total = sum(len(s) for _, s in case.records)
    lines = [f"records read {case.read:,}, written {len(case.records):,}, skipped {skipped:,}; "
             f"residues written {total:,}"]
    lines += [f"  {kind}: {sum(c.values()):,} (" for kind, c in case.mapped.items()]
    lines += [f"  skipped {reason}: {n:,}, e.g. " for reason, n in case.skipped.items()]
    lines += [f"  duplicate ids: {case.duplicates:,}, e.g. "] if case.duplicates else []
    return lines


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input(name, entry, corpus, official_checkpoint, tmp_path, capfd):
    case = CASES[name]
    path = corpus / f"{case.name}{case.suffix}"
    with delivered(case, path):
        status = run(entry, case, path, tmp_path / "out", official_checkpoint("esm1b"))
    captured = capfd.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    if not case.ok:
        assert status == 2, text
        assert len(errors) == 1 and path.name in errors[0] and re.search(case.error, errors[0]), text
        if case.line is not None:
            assert f"{path.name}:{case.line}:" in errors[0], errors
        return
    assert status == 0 and not errors, text
    report = captured.err if entry != "binarize" else text
    for line in report_lines(case):
        assert line in report, (line, report)
    check_outputs(entry, case, tmp_path / "out")


def test_corpus_is_big_enough():
    assert len(CASES) >= 30
    assert sum(not c.ok for c in CASES.values()) >= 10 and sum(c.ok for c in CASES.values()) >= 20


def test_reliability_doc_holds_the_table():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert markdown_table(list(CASES.values())) in doc
