"""A3M reading and the MSA avg/cov features, on a real HHblits alignment shipped from fair-esm's examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fairseq_esm.checkpoints import load_model
from fairseq_esm.inference.msa_features import (
    AlignedEmbeddings,
    embed_rows,
    msa_average,
    msa_covariance,
    pca_projection,
    sequence_weights,
)
from fairseq_esm.io.a3m import A3mFormatError, read_a3m

A3M = Path(__file__).resolve().parents[1] / "examples" / "data" / "msa" / "UniRef50_E9K9Y4.a3m"
LETTERS = "ACDEFGHIKLMNPQRSTVWYXBZUO-"


def one_hot(rows) -> AlignedEmbeddings:
    """Identity 'embeddings' (one-hot residues): avg must then be the weighted position frequency matrix."""
    aligned = [row.aligned() for row in rows]
    values = np.zeros((len(rows), len(aligned[0]), len(LETTERS)), np.float32)
    for m, text in enumerate(aligned):
        for i, ch in enumerate(text):
            if ch != "-":
                values[m, i, LETTERS.index(ch)] = 1
    return AlignedEmbeddings(values, np.array([[ch != "-" for ch in t] for t in aligned]))


def test_reads_query_columns_and_insertions():
    rows = read_a3m(A3M)
    assert len(rows) == 17 and rows[0].name == "UniRef50_E9K9Y4"
    assert all(len(row.columns) == len(rows[0].sequence) == 98 for row in rows)
    for row in rows:  # each match column points at the residue the file puts there
        assert all(row.sequence[j] == ch for j, ch in zip(row.columns, row.aligned()) if j >= 0)
    assert any(len(row.sequence) > sum(j >= 0 for j in row.columns) for row in rows)  # insertions kept
    assert len(read_a3m(A3M, max_rows=5)) == 5


def test_bad_row_length_names_the_line(tmp_path):
    path = tmp_path / "bad.a3m"
    path.write_text(">q\nACDEF\n>m1\nAC-EF\n>m2\nACD\n")
    with pytest.raises(A3mFormatError, match=r"bad.a3m:5: m2 has 3 match columns, the query 5"):
        read_a3m(path)
    path.write_text(">q\nAC-EF\n")
    with pytest.raises(A3mFormatError, match="the query.* must be gap-free"):
        read_a3m(path)
    path.write_text(">q\nAC1EF\n")
    with pytest.raises(A3mFormatError, match=r"bad.a3m:1: character '1'"):
        read_a3m(path)


def test_weights_count_neighbours_above_70_percent():
    weights = sequence_weights(["AAAAAAAAAA", "AAAAAAAAAC", "CCCCCCCCCC"])
    assert weights.tolist() == [0.5, 0.5, 1.0]


def test_average_of_one_hot_is_the_weighted_frequency_matrix():
    rows = read_a3m(A3M)
    aligned = [row.aligned() for row in rows]
    weights = sequence_weights(aligned)
    avg = msa_average(one_hot(rows), weights)
    column = 60  # hand count for one column
    freq = {}
    for w, text in zip(weights, aligned):
        if text[column] != "-":
            freq[text[column]] = freq.get(text[column], 0) + w
    total = sum(freq.values())
    expected = {k: v / total for k, v in freq.items()}
    assert {LETTERS[i]: v for i, v in enumerate(avg[column]) if v} == pytest.approx(expected)
    assert np.allclose(avg.sum(axis=1), 1.0)


def test_covariance_matches_a_direct_loop():
    rows = read_a3m(A3M)
    emb = one_hot(rows)
    weights = sequence_weights([row.aligned() for row in rows])
    projection = pca_projection(emb.values[emb.present], k=3)
    cov = msa_covariance(emb, weights, projection)
    assert cov.shape == (9, 98, 98)
    i, j, k, m = 10, 70, 1, 2
    p = emb.values @ projection.T
    both = emb.present[:, i] & emb.present[:, j]
    expected = (weights * p[:, i, k] * p[:, j, m]).sum() / (weights * both).sum()
    assert cov[k * 3 + m, i, j] == pytest.approx(expected, rel=1e-4)
    assert np.allclose(cov[k * 3 + m], cov[m * 3 + k].T, atol=1e-5)


def test_model_embeddings_are_placed_in_query_columns(official_checkpoint):
    model, alphabet = load_model(official_checkpoint("esm1b", layers=2, dim=32, ffn=64, heads=4))
    rows = read_a3m(A3M, max_rows=4)
    emb = embed_rows(model, alphabet, rows)
    assert emb.values.shape == (4, 98, 32) and emb.skipped_empty == 0
    member = rows[2]
    tokens = torch.tensor([alphabet.tokenize(member.sequence).tolist()])
    with torch.no_grad():
        reps = model(tokens, repr_layers=[2])["representations"][2][0, 1:-1].numpy()
    hit = [c for c in member.columns if c >= 0]
    assert np.allclose(emb.values[2][emb.present[2]], reps[hit], atol=1e-5)
    assert not emb.values[2][~emb.present[2]].any()


def test_cli_writes_avg_and_cov_features(official_checkpoint, tmp_path):
    from fairseq_esm.cli.msa_features import main

    checkpoint = str(official_checkpoint("esm1b", layers=2, dim=32, ffn=64, heads=4))
    out = tmp_path / "features"
    assert main([checkpoint, str(A3M), "--out", str(out), "--cov-k", "4", "--max-rows", "8", "--no-progress"]) == 0
    avg, cov = np.load(out / "UniRef50_E9K9Y4.avg.npy"), np.load(out / "UniRef50_E9K9Y4.cov.npy")
    assert avg.shape == (98, 32) and cov.shape == (16, 98, 98) and cov.dtype == np.float16
    assert (out / "features.tsv").read_text().splitlines()[1].startswith("UniRef50_E9K9Y4\t98\t8\t")
    again = tmp_path / "again"  # reusing the PCA gives the same covariance
    main([checkpoint, str(A3M), "--out", str(again), "--cov-k", "4", "--max-rows", "8", "--no-progress",
          "--pca", str(out / "pca.npy")])
    assert np.array_equal(np.load(again / "UniRef50_E9K9Y4.cov.npy"), cov)


def test_cli_errors_are_one_line(official_checkpoint, tmp_path, capsys):
    from fairseq_esm.cli.common import run_main
    from fairseq_esm.cli.msa_features import main

    checkpoint = str(official_checkpoint("esm1b", layers=2, dim=32, ffn=64, heads=4))
    bad = tmp_path / "bad.a3m"
    bad.write_text(">q\nACDEF\n>m\nACD\n")
    assert run_main(main, [checkpoint, str(bad), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {bad}:3: m has 3 match columns, the query 5; lowercase "
                                                "letters are insertions, uppercase and '-' match")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((4, 7)))
    assert run_main(main, [checkpoint, str(A3M), "--out", str(tmp_path), "--cov-k", "4", "--pca", str(wrong)]) == 2
    assert "shape (4, 7), need (4, 32)" in capsys.readouterr().err


def test_old_spellings_still_parse_with_a_note(capsys):
    """--out-dir and --layer (the spellings before the one CLI contract) still work and say what replaced them."""
    from fairseq_esm.cli.msa_features import build_parser

    args = build_parser().parse_args(["m.pt", str(A3M), "--out-dir", "feats", "--layer", "3"])
    assert args.out == Path("feats") and args.repr_layers == 3
    err = capsys.readouterr().err
    assert "--out-dir is deprecated; use --out" in err and "--layer is deprecated; use --repr-layers" in err


def test_build_msas_finds_the_sample_homologs(tmp_path, capsys):
    import gzip
    import subprocess
    import sys

    sample = Path(__file__).resolve().parents[1] / "examples" / "data" / "uniprot_sample.fasta.gz"
    with gzip.open(sample, "rt") as f:
        text = f.read().split(">")[1:301]
    db = tmp_path / "db.fasta"
    db.write_text("".join(">" + record for record in text))
    queries = tmp_path / "q.fasta"
    header, residues = text[0].split("\n", 1)
    text[0] = header + "\n" + "UZ" + residues[2:]  # MMseqs2 prints U as X and Z as E: the MSA must keep U, Z
    queries.write_text("".join(">" + record for record in text[:40]))  # MMseqs2 shuffles keys: 40 catch it
    script = Path(__file__).resolve().parents[1] / "preprocess" / "build_msas.py"
    proc = subprocess.run([sys.executable, str(script), str(queries), "--db", str(db), "--out-dir",
                           str(tmp_path / "msas")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    index = (tmp_path / "msas" / "msas.tsv").read_text().splitlines()[1:]
    assert len(index) == 40
    wanted = {record.split("\n", 1)[0].split()[0]: "".join(record.split("\n", 1)[1].split()).upper()
              for record in text[:40]}
    for line in index:
        name, file, rows = line.split("\t")
        msa = read_a3m(tmp_path / "msas" / file)
        assert msa[0].name == name and msa[0].sequence == wanted[name]  # each MSA belongs to its own query
        assert len(msa) == int(rows) >= 2  # it finds itself in the db: the best hit matches wherever aligned
        assert all(a == b for a, b in zip(msa[1].aligned(), msa[0].sequence) if a != "-")
