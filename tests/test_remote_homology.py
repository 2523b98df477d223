"""Remote homology on slices of the real SCOPe 2.07 ASTRAL 40% file: headers, exclusions, metrics, CLI."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fairseq_esm.checkpoints import load_model, untrained_like
from fairseq_esm.cli.common import run_main
from fairseq_esm.cli.homology import main
from fairseq_esm.evaluation.remote_homology import (
    EXCLUDED_FOLDS,
    ScopDomain,
    ScopFormatError,
    composition,
    drop_excluded_folds,
    evaluate,
    evaluate_similarity,
    load_scope_set,
    pair_counts,
    parse_header,
    read_scope,
    subsample_folds,
)
from fairseq_esm.io.hmmer_search import all_vs_all
from fairseq_esm.io.residues import RESIDUE_LETTERS

SCOPE = (Path(__file__).resolve().parents[1] / "examples/data/scope"
         / "astral-scopedom-seqres-gd-sel-gs-bib-40-2.07.fa.gz")
from helpers.proteins import SAMPLE


def scope_records() -> list[str]:
    """Every record of the real SCOPe file as its header + sequence lines."""
    return [">" + record.lstrip(">") for record in gzip.decompress(SCOPE.read_bytes()).decode().split("\n>")]


def write_records(path: Path, records: list[str]) -> Path:
    """A FASTA slice of the real file."""
    path.write_text("".join(record.rstrip("\n") + "\n" for record in records))
    return path


def fold_of(record: str) -> str:
    return record.split()[1].rsplit(".", 2)[0]


@pytest.fixture(scope="module")
def records() -> list[str]:
    return scope_records()


@pytest.fixture(scope="module")
def slice_fasta(records, tmp_path_factory) -> Path:
    """The first 240 domains (folds a.1-a.4: several have more than one superfamily or family)."""
    return write_records(tmp_path_factory.mktemp("scope") / "slice.fa", records[:240])


def test_parse_header_takes_id_and_sccs():
    assert parse_header("d1dlwa_ a.1.1.1 (A:) Protozoan/bacterial hemoglobin {Ciliate}") == ("d1dlwa_", "a.1.1.1")
    for bad in ("sp|P69905|HBA_HUMAN Hemoglobin subunit alpha", "d1dlwa_", "d1dlwa_ a.1.1 (A:)"):
        with pytest.raises(ScopFormatError, match="no SCOPe sccs"):
            parse_header(bad)


def test_read_scope_uppercases_and_reports(slice_fasta):
    domains, report = read_scope(str(slice_fasta), max_length=150)
    text = slice_fasta.read_text()
    assert domains[0].id == "d1dlwa_" and domains[0].sccs == "a.1.1.1" and domains[0].fold == "a.1"
    assert domains[0].superfamily == "a.1.1"
    assert domains[0].sequence == "".join(text.split("\n>")[0].splitlines()[1:]).upper()
    assert report.records_read == 240
    assert report.records_written == len(domains) == 240 - report.skipped["too_long"]
    assert report.skipped["too_long"] > 0 and all(len(d.sequence) <= 150 for d in domains)
    assert sum(report.mapped["lowercase_to_upper"].values()) == report.residues_written


def test_excluded_folds_are_the_papers_and_removed_entirely(records):
    picked = [r for r in records if fold_of(r) in {"c.2", "c.31", "b.66", "b.70"}][:20]
    near = [r for r in records if fold_of(r) in {"c.20", "c.26", "b.6", "c.1"}][:20]  # prefixes must not match
    assert len(picked) == 20 and len(near) == 20
    domains = [ScopDomain(r.split()[0][1:], r.split()[1], "A") for r in picked + near]
    kept, dropped = drop_excluded_folds(domains)
    assert dropped == 20 and [d.id for d in kept] == [d.id for d in domains[20:]]
    assert EXCLUDED_FOLDS == {f"c.{i}" for i in (2, 3, 4, 5, 27, 28, 30, 31)} | {f"b.{i}" for i in range(66, 71)}
    full = Counter(fold_of(r) for r in records)
    assert sum(full[f] for f in EXCLUDED_FOLDS) == 587  # domains of the real file in the excluded folds


def test_subsample_keeps_whole_folds_deterministically(slice_fasta):
    domains, _ = read_scope(str(slice_fasta))
    picked = subsample_folds(domains, 100, seed=3)
    assert picked == subsample_folds(domains, 100, seed=3) and 0 < len(picked) <= 100
    sizes = Counter(d.fold for d in domains)
    assert all(Counter(d.fold for d in picked)[f] == sizes[f] for f in {d.fold for d in picked})
    assert len({frozenset(d.fold for d in subsample_folds(domains, 100, seed)) for seed in range(6)}) > 1


def test_composition_is_letter_frequencies():
    seq = "MKTAYIAKQRQISFVKSHFSRQXBU"
    vec = composition([seq, "AAC"])
    assert vec.shape == (2, 25) and np.allclose(vec.sum(1), 1)
    counts = Counter(seq)
    assert np.allclose(vec[0], [counts[ch] / len(seq) for ch in RESIDUE_LETTERS])
    assert vec[1, RESIDUE_LETTERS.index("A")] == pytest.approx(2 / 3)


def brute_force(x: np.ndarray, sccs: list[str], level: str, distance: str) -> tuple[list, list, list, int]:
    """Per-query Hit-10 and sklearn ROC AUC with plain loops (the definitions, written out), in float64, and
    each AUC's float32 slack: the share of positive-negative pairs whose scores differ by under 1e-5."""
    x = x.astype(np.float64)
    if distance == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        sim = x @ x.T
    else:
        sim = -((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    depth = 2 if level == "fold" else 1
    coarse = [s.rsplit(".", depth)[0] for s in sccs]
    fine = [s.rsplit(".", depth - 1)[0] if depth > 1 else s for s in sccs]
    hits, aucs, slack, skipped = [], [], [], 0
    for i in range(len(sccs)):
        others = [j for j in range(len(sccs)) if fine[j] != fine[i]]
        labels = np.array([int(coarse[j] == coarse[i]) for j in others])
        if not labels.any():
            skipped += 1
            continue
        ranked = sorted(others, key=lambda j: -sim[i, j])
        hits.append(any(coarse[j] == coarse[i] for j in ranked[:10]))
        scores = sim[i, others]
        aucs.append(roc_auc_score(labels, scores))
        gaps = np.abs(scores[labels == 1][:, None] - scores[labels == 0][None, :])
        slack.append(float((gaps < 1e-5).mean()))
    return hits, aucs, slack, skipped


@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_metrics_match_brute_force(slice_fasta, distance):
    domains, _ = read_scope(str(slice_fasta))
    domains = domains[:160]
    sccs = [d.sccs for d in domains]
    # a seeded projection of the real compositions: rational compositions can tie exactly in float64 where
    # faiss's float32 ||x||^2 + ||y||^2 - 2xy breaks the tie, which a brute-force check would misread
    x = composition(d.sequence for d in domains) @ np.random.default_rng(0).normal(size=(25, 16)).astype(np.float32)
    results = evaluate(x, sccs, distance, block=37)  # blocks that do not divide n
    for level in ("fold", "superfamily"):
        hits, aucs, slack, skipped = brute_force(x, sccs, level, distance)
        got = results[level]
        assert got.queries == len(aucs) > 10 and got.skipped_no_positive == skipped > 0
        assert got.hits == sum(hits) and 0 < sum(hits) < len(hits)
        diff = np.abs(np.array(got.per_query_auc) - aucs)
        assert (diff <= np.array(slack) + 1e-9).all() and (diff < 1e-9).mean() > 0.95


def test_auc_counts_ties_half_and_ignores_excluded():
    # query 0 (a.1.1.1): same-family 1 excluded even though nearest; positive 2 (a.1.2.1) tied with negative 3
    x = np.array([[0.0], [0.1], [1.0], [1.0], [5.0]], np.float32)
    sccs = ["a.1.1.1", "a.1.1.1", "a.1.2.1", "b.1.1.1", "c.1.1.1"]
    fold = evaluate(x, sccs, "l2")["fold"]
    assert fold.per_query_auc[0] == pytest.approx(0.75)  # above c.1 (1), tied with b.1 (0.5)
    assert pair_counts(sccs) == {"fold": 2, "superfamily": 0}


def test_similarity_matrix_scores_like_embeddings(slice_fasta):
    domains, _ = read_scope(str(slice_fasta))
    sccs = [d.sccs for d in domains[:160]]
    x = composition(d.sequence for d in domains[:160]) @ np.random.default_rng(0).normal(size=(25, 16))
    unit = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    by_faiss, by_matrix = evaluate(unit, sccs, "cosine"), evaluate_similarity(unit @ unit.T, sccs, block=41)
    for level in ("fold", "superfamily"):
        a, b = by_faiss[level], by_matrix[level]
        assert (a.hits, a.queries, a.skipped_no_positive) == (b.hits, b.queries, b.skipped_no_positive)
        assert np.allclose(a.per_query_auc, b.per_query_auc, atol=1e-3) and a.queries > 10


def test_unreported_pairs_tie_half_and_never_hit():
    sccs = ["a.1.1.1", "a.1.1.1", "a.1.2.1", "b.1.1.1", "c.1.1.1", "a.1.3.1"]
    sim = np.full((6, 6), -np.inf, np.float32)
    sim[0, 3] = 5.0  # query 0: a negative reported; positives 2 and 5 unreported, tied with negative 4
    fold = evaluate_similarity(sim, sccs, seed=3)["fold"]
    assert fold.per_query_auc[0] == pytest.approx(0.25)  # below b.1 (0), tied with c.1 (0.5)
    assert fold.hits == 0 and fold.queries == 4  # b.1 and c.1 have no positive
    sim[0, 5] = 1.0
    again = evaluate_similarity(sim, sccs, seed=3)["fold"]
    assert again.per_query_auc[0] == pytest.approx(0.375) and again.hits == 1  # (0.5 + 0.25) / 2
    with pytest.raises(ValueError, match="shape"):
        evaluate_similarity(sim[:5], sccs)


def test_cli_writes_table_with_baselines(official_checkpoint, slice_fasta, tmp_path, capsys):
    checkpoint = official_checkpoint("esm1b", layers=2, dim=32, ffn=64, heads=4)
    out_json, out_md = tmp_path / "rh.json", tmp_path / "rh.md"
    argv = [str(checkpoint), "--fasta", str(slice_fasta), "--max-domains", "150", "--seed", "5", "--untrained",
            "--composition", "--max-tokens", "2048", "--no-progress", "--json", str(out_json),
            "--markdown", str(out_md)]
    assert run_main(main, argv) == 0
    printed = capsys.readouterr().out
    report = json.loads(out_json.read_text())
    rows = report["rows"]
    assert [(r["model"].split()[0], r["distance"]) for r in rows] == [
        (checkpoint.name, "cosine"), (checkpoint.name, "l2"), ("untrained", "cosine"), ("untrained", "l2"),
        ("amino-acid", "cosine"), ("amino-acid", "l2")]
    assert [r["dim"] for r in rows] == [32, 32, 32, 32, 25, 25]
    for row in rows:
        for level in ("fold", "superfamily"):
            assert 0 <= row[level]["hit10"] <= 1 and 0 <= row[level]["auc"] <= 1 and row[level]["queries"] > 0
    assert rows[0]["fold"]["auc"] != rows[2]["fold"]["auc"]  # the untrained model is another model
    assert report["data"]["domains"] <= 150 and report["data"]["subsampled_out"] > 0
    assert report["data"]["fasta"]["records_read"] == 240
    table = out_md.read_text()
    assert table in printed and table.count("\n") == 8 and "| fold Hit-10 |" in table
    assert "2 folds" in printed and "records read 240" in printed


def test_cli_level_without_positives_is_a_dash(official_checkpoint, slice_fasta, tmp_path):
    out_json, out_md = tmp_path / "rh.json", tmp_path / "rh.md"
    argv = [str(official_checkpoint("esm1b", layers=2, dim=32, ffn=64, heads=4)), "--fasta", str(slice_fasta),
            "--max-domains", "150", "--seed", "2", "--no-progress", "--json", str(out_json), "--markdown", str(out_md)]
    assert run_main(main, argv) == 0  # seed 2 keeps folds a.3 and a.4: one superfamily each in this slice
    fold = json.loads(out_json.read_text())["rows"][0]["fold"]
    assert fold["queries"] == 0 and fold["hit10"] is None and fold["skipped_no_positive"] > 0
    assert "| – | – |" in out_md.read_text()


def test_untrained_is_seeded_and_same_shape(official_checkpoint):
    model, alphabet = load_model(official_checkpoint("esm1b", layers=2, dim=32, ffn=64, heads=4))
    a, b = untrained_like(model, alphabet, 5), untrained_like(model, alphabet, 5)
    state, other = a.state_dict(), b.state_dict()
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], other[k]) for k in state)
    assert not torch.equal(state["layers.0.fc1.weight"], model.state_dict()["layers.0.fc1.weight"])


def test_fasta_without_sccs_is_one_line_error(tmp_path, capsys, official_checkpoint):
    argv = [str(official_checkpoint("esm1b", layers=2, dim=32, ffn=64, heads=4)), "--fasta", str(SAMPLE),
            "--json", str(tmp_path / "x.json"), "--markdown", str(tmp_path / "x.md")]
    assert run_main(main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and "uniprot_sample.fasta.gz:1:" in err
    assert "no SCOPe sccs" in err and not (tmp_path / "x.json").exists()


def test_cli_adds_hmmer_row(official_checkpoint, slice_fasta, tmp_path, capsys):
    out_json, out_md = tmp_path / "rh.json", tmp_path / "rh.md"
    argv = [str(official_checkpoint("esm1b", layers=2, dim=32, ffn=64, heads=4)), "--fasta", str(slice_fasta),
            "--max-domains", "150", "--seed", "5", "--composition", "--hmm", "phmmer", "--hmm", "phmmer",
            "--no-progress", "--json", str(out_json), "--markdown", str(out_md)]
    assert run_main(main, argv) == 0
    printed = capsys.readouterr().out
    rows = json.loads(out_json.read_text())["rows"]
    hmm = rows[-1]
    assert len(rows) == 5 and hmm["model"].startswith("phmmer (HMMER 3.") and hmm["distance"] == "bit score"
    assert f"{hmm['model']}: " in printed and " s wall, " in printed and f"| {hmm['model']} | bit score |" in printed
    assert ", 1 thread(s), " in printed  # HMMER's --cpu stays 1 without --threads
    assert hmm["reported_pairs"] > 0 and "-Z " in hmm["command"]
    composition_sf = rows[2]["superfamily"]
    assert hmm["superfamily"]["queries"] == composition_sf["queries"] > 0  # same domains, same rules
    domains = load_scope_set(str(slice_fasta), 1022, 150, 5).domains
    search = all_vs_all([d.sequence for d in domains], "phmmer", progress=False)
    expected = evaluate_similarity(search.similarity, [d.sccs for d in domains], seed=5)
    assert all(hmm[level] == expected[level].to_dict() for level in ("fold", "superfamily"))
    assert 0 < hmm["superfamily"]["hit10"] < 1


def test_missing_hmmer_fails_before_loading_the_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    argv = [str(tmp_path / "no_such_checkpoint.pt"), "--hmm", "jackhmmer", "--json", str(tmp_path / "x.json"),
            "--markdown", str(tmp_path / "x.md")]
    assert run_main(main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: jackhmmer not found on PATH")
    assert "bash preprocess/install_tools.sh hmmer" in err


def test_bad_threads_is_one_line_error(tmp_path, capsys):  # --threads: torch threads and HMMER's --cpu
    argv = ["any.pt", "--hmm", "phmmer", "--threads", "0", "--json", str(tmp_path / "x.json"), "--markdown",
            str(tmp_path / "x.md")]
    assert run_main(main, argv) == 2
    assert capsys.readouterr().err.strip() == "error: --threads 0: give at least 1"
