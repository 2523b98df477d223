"""Pfam alignment AUC on real Stockholm seeds: parsing against the raw text, pairs against brute force, cosines
against the model run directly, AUC against a pairwise count, and the CLI end to end."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fairseq_esm.checkpoints import load_model
from fairseq_esm.cli.common import run_main
from fairseq_esm.cli.pfam_auc import main
from fairseq_esm.evaluation.alignment_auc import (
    AlignmentError,
    family_auc,
    family_rng,
    final_representations,
    looks_nucleotide,
    pair_cosines,
    read_stockholm,
    same_column,
    sample_pairs,
    subsample,
)

STO = Path(__file__).resolve().parents[1] / "examples" / "data" / "pfam"


def raw_rows(path: Path) -> dict[str, str]:
    """Aligned rows straight from the file text (blocks concatenated), independent of Biopython."""
    rows: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith(("#", "//")):
            name, row = line.split()
            rows[name] = rows.get(name, "") + row
    return rows


def smc_slice(tmp_path: Path, n: int = 4) -> Path:
    """The header and first ``n`` members of SMC_N (lowercase insert states, ``.`` and ``-`` gaps)."""
    lines = (STO / "SMC_N.sto").read_text().splitlines()
    members = [line for line in lines if line.strip() and not line.startswith(("#", "//"))][:n]
    path = tmp_path / "SMC_N_slice.sto"
    path.write_text("# STOCKHOLM 1.0\n" + "\n".join(members) + "\n//\n")
    return path


def test_parsing_matches_raw_text(tmp_path):
    path = smc_slice(tmp_path)
    family, raw = read_stockholm(path), raw_rows(path)
    assert family.ids == list(raw) and family.width == len(next(iter(raw.values())))
    lowercase = 0
    for k, row in enumerate(raw.values()):
        kept = [(c, ch) for c, ch in enumerate(row) if ch not in ".-"]
        assert family.sequences[k] == "".join(ch.upper() for _, ch in kept)
        assert family.columns[k].tolist() == [c for c, _ in kept]
        assert family.match[k].tolist() == [ch.isupper() for _, ch in kept]
        lowercase += sum(ch.islower() for _, ch in kept)
    assert lowercase > 0 and family.counts["lowercase_to_upper"] == lowercase
    assert family.counts["gap_removed"] == sum(row.count(".") + row.count("-") for row in raw.values())


def test_multiblock_file_and_nucleotides():
    family, raw = read_stockholm(STO / "globins4.sto"), raw_rows(STO / "globins4.sto")
    assert family.sequences == [row.replace(".", "").replace("-", "") for row in raw.values()]
    assert all(m.all() for m in family.match)  # all uppercase: every residue is a match state
    assert not looks_nucleotide(family) and looks_nucleotide(read_stockholm(STO / "PSE.sto"))


def brute_force_aligned(family) -> set[tuple[int, int, int, int]]:
    """Every (a, i, b, j), a < b, with both residues match states in one column."""
    pairs = set()
    for a, b in itertools.combinations(range(len(family.sequences)), 2):
        for i, j in itertools.product(range(len(family.sequences[a])), range(len(family.sequences[b]))):
            if family.match[a][i] and family.match[b][j] and family.columns[a][i] == family.columns[b][j]:
                pairs.add((a, i, b, j))
    return pairs


@pytest.mark.parametrize("name", ["globins4.sto", "SMC_N_slice"])
def test_pairs_against_brute_force(tmp_path, name):
    family = read_stockholm(smc_slice(tmp_path, 3) if name == "SMC_N_slice" else STO / name)
    truth = brute_force_aligned(family)
    pairs = sample_pairs(family, 10**9, family_rng(0, "x"))
    assert pairs.positives_total == len(truth) == len(pairs.positives)
    assert set(map(tuple, pairs.positives.tolist())) == truth
    negatives = pairs.negatives
    assert len(negatives) + pairs.unmatched == len(truth) and pairs.unmatched < len(truth) // 100
    assert not same_column(family, negatives).any() and (negatives[:, 0] != negatives[:, 2]).all()
    assert not set(map(tuple, negatives.tolist())) & truth
    lengths = np.array([len(s) for s in family.sequences])
    assert (negatives[:, [1, 3]] >= 0).all() and (negatives[:, 1] < lengths[negatives[:, 0]]).all()
    assert (negatives[:, 3] < lengths[negatives[:, 2]]).all()
    offsets = lambda rows: sorted(np.abs(rows[:, 1] - rows[:, 3]).tolist())  # noqa: E731
    if not pairs.unmatched:  # position-matched: the same multiset of within-sequence offsets
        assert offsets(negatives) == offsets(pairs.positives)


def test_subsampling_is_uniform_without_replacement_and_seeded():
    family = read_stockholm(STO / "fn3.sto")
    first = sample_pairs(subsample(family, 20, family_rng(3, "fn3")), 500, family_rng(3, "fn3"))
    again = sample_pairs(subsample(family, 20, family_rng(3, "fn3")), 500, family_rng(3, "fn3"))
    members = subsample(family, 20, family_rng(3, "fn3"))
    assert len(members.sequences) == 20 and set(members.ids) <= set(family.ids)
    assert np.array_equal(first.positives, again.positives) and np.array_equal(first.negatives, again.negatives)
    assert len({tuple(r) for r in first.positives.tolist()}) == 500 < first.positives_total
    assert {tuple(r) for r in first.positives.tolist()} <= brute_force_aligned(members)


def test_cosines_and_auc_by_hand(official_checkpoint):
    model, alphabet = load_model(official_checkpoint("esm1b", layers=2, dim=32, ffn=64, max_positions=256))
    family = read_stockholm(STO / "globins4.sto")
    pairs = sample_pairs(family, 300, family_rng(0, "globins4"))
    reps = final_representations(model, alphabet, family.sequences, toks_per_batch=400)
    with torch.no_grad():  # each protein alone, no batching, no windows (context: 254 residues)
        direct = [model(alphabet.tokenize(s)[None], repr_layers=[2])["representations"][2][0, 1:-1]
                  for s in family.sequences]
    rows = np.concatenate([pairs.positives, pairs.negatives])
    expected = [torch.cosine_similarity(direct[a][i], direct[b][j], dim=0).item() for a, i, b, j in rows]
    assert np.allclose(pair_cosines(reps, rows), expected, atol=1e-5)
    pos, neg = pair_cosines(reps, pairs.positives), pair_cosines(reps, pairs.negatives)
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert family_auc(pos, neg) == pytest.approx(wins / (len(pos) * len(neg)), abs=1e-12)


def run_cli(*argv) -> int:
    return run_main(main, [str(a) for a in argv])


def test_cli_end_to_end(official_checkpoint, tmp_path, capsys):
    checkpoint = official_checkpoint("esm1b", layers=2, dim=32, ffn=64)
    for name in ("globins4.sto", "Caudal_act.sto", "PSE.sto"):
        shutil.copy(STO / name, tmp_path / name)
    outputs = {}
    for untrained in (False, True):
        out = tmp_path / f"untrained{untrained}.json"
        flags = ["--untrained"] if untrained else []
        assert run_cli(checkpoint, "--sto-dir", tmp_path, "--max-pairs", 800, "--json", out,
                       "--markdown", tmp_path / "t.md", *flags) == 0
        outputs[untrained] = json.loads(out.read_text())
    trained = outputs[False]
    assert [row["family"] for row in trained["families"]] == ["Caudal_act", "globins4"]
    assert "nucleotide" in trained["skipped"]["PSE"] and trained["untrained"] is False
    assert trained["mean_auc"] == pytest.approx(np.mean([row["auc"] for row in trained["families"]]))
    assert all(row["aligned_pairs"] == 800 and 0 <= row["auc"] <= 1 for row in trained["families"])
    assert [r["auc"] for r in trained["families"]] != [r["auc"] for r in outputs[True]["families"]]
    table = (tmp_path / "t.md").read_text()
    assert "| globins4 |" in table and "skipped PSE" in table and "mean AUC over 2 families" in capsys.readouterr().out


def test_malformed_alignment_is_one_error_line(official_checkpoint, tmp_path, capsys):
    rows = list(raw_rows(STO / "globins4.sto").items())
    bad = tmp_path / "bad.sto"
    bad.write_text(f"# STOCKHOLM 1.0\n{rows[0][0]} {rows[0][1]}\n{rows[1][0]} {rows[1][1][:-7]}\n//\n")
    with pytest.raises(AlignmentError, match="bad.sto: not a single Stockholm alignment"):
        read_stockholm(bad)
    assert run_cli(official_checkpoint("esm1b", layers=2, dim=32, ffn=64), "--sto-dir", tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "bad.sto" in err[0]
    assert run_cli("x.pt", "--sto-dir", tmp_path / "nowhere") == 2
    assert "no such directory" in capsys.readouterr().err
