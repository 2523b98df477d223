"""HMMER all-vs-all search on a real SCOPe slice: tblout parsing, the score matrix, chunking, missing tools."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import numpy as np
import pytest
from Bio import SearchIO

from fairseq_esm.evaluation.remote_homology import read_scope
from fairseq_esm.io.hmmer_search import (
    HmmerError,
    all_vs_all,
    fill_similarity,
    hmmer_program,
    hmmer_version,
    parse_tblout,
    write_fasta,
)

SCOPE = (Path(__file__).resolve().parents[1] / "examples/data/scope"
         / "astral-scopedom-seqres-gd-sel-gs-bib-40-2.07.fa.gz")


@pytest.fixture(scope="module")
def domains(tmp_path_factory) -> list:
    """The first 120 domains of the real SCOPe file (folds a.1-a.3, several superfamilies)."""
    records = gzip.decompress(SCOPE.read_bytes()).decode().split("\n>")[:120]
    path = tmp_path_factory.mktemp("scope") / "slice.fa"
    path.write_text("".join(">" + r.lstrip(">").rstrip("\n") + "\n" for r in records))
    return read_scope(str(path))[0]


@pytest.fixture(scope="module")
def phmmer_search(domains):
    return all_vs_all([d.sequence for d in domains], "phmmer", progress=False)


@pytest.fixture(scope="module")
def real_tblout(domains, tmp_path_factory) -> Path:
    """phmmer's own --tblout for 6 queries against the slice."""
    work = tmp_path_factory.mktemp("tbl")
    sequences = [d.sequence for d in domains]
    write_fasta(work / "db.fa", sequences, range(len(sequences)))
    write_fasta(work / "q.fa", sequences, range(0, 120, 20))
    subprocess.run([hmmer_program("phmmer"), "--tblout", str(work / "hits.tbl"), "--noali", "-E", "1000",
                    "-Z", "120", "-o", "/dev/null", str(work / "q.fa"), str(work / "db.fa")], check=True)
    return work / "hits.tbl"


def test_parse_tblout_agrees_with_biopython(real_tblout):
    hits = parse_tblout(real_tblout)
    expected = [(q.id, h.id, h.evalue, h.bitscore) for q in SearchIO.parse(str(real_tblout), "hmmer3-tab") for h in q]
    assert len(hits) > 12 and hits == expected
    assert {q for q, *_ in hits} == {f"s{i}" for i in range(0, 120, 20)}


def test_malformed_tblout_names_the_line(tmp_path):
    bad = tmp_path / "bad.tbl"
    bad.write_text("# comment\ns1 - s0 - 1e-5\n")
    with pytest.raises(HmmerError, match=r"bad.tbl:2: not a HMMER --tblout line"):
        parse_tblout(bad)


def test_matrix_holds_the_tblout_scores(phmmer_search, real_tblout):
    sim = phmmer_search.similarity
    assert sim.shape == (120, 120) and sim.dtype == np.float32
    rows = np.full((120, 120), -np.inf, np.float32)
    fill_similarity(rows, parse_tblout(real_tblout))
    queries = list(range(0, 120, 20))
    assert np.array_equal(sim[queries], rows[queries])  # same scores, same unreported pairs
    assert phmmer_search.reported_pairs == int(np.isfinite(sim).sum()) - 120


def test_own_sequence_then_own_superfamily_rank_first(phmmer_search, domains):
    sim = phmmer_search.similarity.copy()
    assert (sim.argmax(1) == np.arange(120)).all()  # every query finds itself best
    np.fill_diagonal(sim, -np.inf)
    found = np.isfinite(sim.max(1))
    best = sim.argmax(1)
    same_sf = [domains[b].superfamily == domains[i].superfamily for i, b in enumerate(best) if found[i]]
    assert found.sum() > 60 and np.mean(same_sf) > 0.9
    assert not np.isfinite(sim).all()  # most unrelated pairs are not reported


def test_chunks_do_not_change_scores(phmmer_search, domains):
    sequences = [d.sequence for d in domains[:30]]
    whole, chunked = (all_vs_all(sequences, "phmmer", chunk=size, progress=False) for size in (30, 7))
    assert np.array_equal(chunked.similarity, whole.similarity) and np.isfinite(whole.similarity).sum() > 30
    assert phmmer_search.label == f"phmmer (HMMER {hmmer_version(hmmer_program('phmmer'))})"
    assert "-Z 120" in phmmer_search.command and phmmer_search.seconds > 0


def test_jackhmmer_iterates_and_sees_more(domains):
    sequences = [d.sequence for d in domains[:20]]
    jack, single = (all_vs_all(sequences, tool, progress=False) for tool in ("jackhmmer", "phmmer"))
    assert jack.tool == "jackhmmer" and "-N 3" in jack.command
    phmmer_pairs = np.isfinite(single.similarity).sum()
    assert np.isfinite(jack.similarity).sum() >= phmmer_pairs  # profiles reach further than one sequence


def test_missing_tool_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HmmerError, match=r"phmmer not found on PATH .*bash preprocess/install_tools.sh hmmer"):
        all_vs_all(["MKV", "MKL"], "phmmer")
    with pytest.raises(HmmerError, match="unknown HMMER search 'hmmscan'"):
        hmmer_program("hmmscan")
