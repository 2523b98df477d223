"""fairseq-esm-score on real UniProt proteins: PLL against fair-esm masking one residue at a time,
windows for long proteins, batching invariance, and the seeded ECE against protein_mlm's own masking."""

from __future__ import annotations

import csv
import functools
import math
import subprocess
import sys
from pathlib import Path

import esm
import numpy as np
import pytest
import torch
from helpers.proteins import write_fasta

from fairseq_esm.checkpoints import load_model
from fairseq_esm.cli.common import run_main
from fairseq_esm.cli.score import main
from fairseq_esm.inference.scoring import log_probs, pll_queries, pseudo_log_likelihoods, true_log_probs
from fairseq_esm.modules.batching import residue_budget
from fairseq_esm.tasks.protein_mlm import ProteinMLMConfig, ProteinMLMTask

SHORT = [16, 23, 59]  # 83, 61 (with an X) and 7 residues: fit a 128-position model





def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def fair_esm(checkpoint: Path):
    model, alphabet = esm.pretrained.load_model_and_alphabet_local(str(checkpoint))
    return model.eval(), alphabet


@functools.lru_cache(maxsize=None)
def direct_per_residue(checkpoint: Path, sequence: str, window: int | None = None) -> tuple[float, ...]:
    """Unbatched fair-esm: one forward per residue with that residue masked, log p(true residue); a
    long protein is cut to ``window`` residues with the masked one in the middle (clipped at the ends)."""
    model, alphabet = fair_esm(checkpoint)
    out = []
    for i in range(len(sequence)):
        start = 0 if window is None else min(max(i - window // 2, 0), len(sequence) - window)
        piece = sequence[start : start + window] if window else sequence
        _, _, tokens = alphabet.get_batch_converter()([("x", piece)])
        at = i - start + 1
        true = int(tokens[0, at])
        tokens[0, at] = alphabet.mask_idx
        with torch.no_grad():
            out.append(float(torch.log_softmax(model(tokens)["logits"][0, at], -1)[true]))
    return tuple(out)


def our_per_residue(checkpoint: Path, sequence: str, toks_per_batch: int = 4096) -> list[float]:
    """The same through our query batching (the path pseudo_log_likelihoods takes)."""
    model, alphabet = load_model(checkpoint)
    queries = pll_queries(alphabet, sequence, residue_budget(model.max_positions(), alphabet))
    rows = log_probs(model, queries, alphabet.mask_idx, alphabet.padding_idx, toks_per_batch)
    return true_log_probs(alphabet, sequence, rows).tolist()


@pytest.mark.parametrize("variant", ["esm1b", "esm1"])
def test_pll_equals_unbatched_fair_esm_per_residue(official_checkpoint, sample_proteins, tmp_path, variant):
    checkpoint = official_checkpoint(variant)
    proteins = [sample_proteins[i] for i in SHORT]
    out = tmp_path / "scores.tsv"
    assert main([str(checkpoint), str(write_fasta(tmp_path / "in.fasta", proteins)), "--out", str(out),
                 "--max-tokens", "1000", "--device", "cpu"]) == 0
    rows = read_tsv(out)
    assert list(rows[0]) == ["id", "length", "pll", "pseudo_perplexity"]
    assert [r["id"] for r in rows] == [f"p{i}" for i in range(len(proteins))]
    for row, seq in zip(rows, proteins):
        expected = direct_per_residue(checkpoint, seq)
        np.testing.assert_allclose(our_per_residue(checkpoint, seq), expected, atol=1e-4, rtol=0)
        assert int(row["length"]) == len(seq)
        assert float(row["pll"]) == pytest.approx(sum(expected), abs=1e-4 * len(seq))
        assert float(row["pseudo_perplexity"]) == pytest.approx(math.exp(-sum(expected) / len(seq)), rel=1e-4)


def test_pll_is_batching_invariant(official_checkpoint, sample_proteins):
    checkpoint = official_checkpoint("esm1b")
    proteins = [sample_proteins[i] for i in SHORT]
    model, alphabet = load_model(checkpoint)
    reference = pseudo_log_likelihoods(model, alphabet, proteins, 100_000)  # all copies in one batch
    for budget in (100, 1024):  # one masked copy per batch, a few
        np.testing.assert_allclose(pseudo_log_likelihoods(model, alphabet, proteins, budget), reference, atol=1e-4)
    alone = [pseudo_log_likelihoods(model, alphabet, [seq])[0] for seq in proteins]
    np.testing.assert_allclose(alone, reference, atol=1e-4)
    assert reference == pytest.approx([sum(our_per_residue(checkpoint, seq)) for seq in proteins], abs=1e-4)


def test_long_protein_is_scored_in_windows_centred_on_each_residue(official_checkpoint, sample_proteins, tmp_path,
                                                                    capsys):
    checkpoint = official_checkpoint("esm1b", max_positions=64)  # 62 residues per window
    protein = sample_proteins[9]  # 148 residues
    out = tmp_path / "scores.tsv"
    assert main([str(checkpoint), str(write_fasta(tmp_path / "in.fasta", [protein])), "--out", str(out)]) == 0
    expected = direct_per_residue(checkpoint, protein, window=62)
    np.testing.assert_allclose(our_per_residue(checkpoint, protein), expected, atol=1e-4, rtol=0)
    assert float(read_tsv(out)[0]["pll"]) == pytest.approx(sum(expected), abs=1e-4 * len(protein))
    assert "1 longer than the model's context (62 residues)" in capsys.readouterr().err


def ece_rows(checkpoint: Path, fasta: Path, out: Path, *extra: str) -> list[dict[str, str]]:
    assert main([str(checkpoint), str(fasta), "--out", str(out), "--metrics", "ece", *extra]) == 0
    return read_tsv(out)


def test_ece_is_reproducible_from_the_seed(official_checkpoint, sample_proteins, tmp_path):
    checkpoint = official_checkpoint("esm1b")
    fasta = write_fasta(tmp_path / "in.fasta", sample_proteins[:40])
    first = ece_rows(checkpoint, fasta, tmp_path / "a.tsv", "--seed", "3")
    again = ece_rows(checkpoint, fasta, tmp_path / "b.tsv", "--seed", "3", "--max-tokens", "300")
    other = ece_rows(checkpoint, fasta, tmp_path / "c.tsv", "--seed", "4")
    assert list(first[0]) == ["id", "length", "ece", "n_masked"]
    assert [(r["ece"], r["n_masked"]) for r in first] == [(r["ece"], r["n_masked"]) for r in again]
    changed = sum(a["ece"] != b["ece"] for a, b in zip(first, other))
    assert changed >= 35  # a new seed masks other residues of (nearly) every protein


def test_ece_masks_exactly_as_fairseq_validate(official_checkpoint, sample_proteins, fairseq_preprocess, tmp_path,
                                               capsys):
    """The held-out split of protein_mlm (same seed, crops of long proteins included), scored by
    fair-esm, gives each protein's ECE and target count and the file's total."""
    proteins = sample_proteins[:30]  # 12 of them longer than 126 residues: cropped by the task
    checkpoint = official_checkpoint("esm1b")
    task = ProteinMLMTask.setup_task(ProteinMLMConfig(data=str(fairseq_preprocess(proteins[:5], proteins)),
                                                      max_positions=128, seed=7, train_subset="train"))
    held_out = task.build_dataset("valid").dataset
    rows = ece_rows(checkpoint, write_fasta(tmp_path / "in.fasta", proteins), tmp_path / "e.tsv", "--seed", "7")
    model, alphabet = fair_esm(checkpoint)
    total_ce, total_n = 0.0, 0
    for index, row in enumerate(rows):
        item = held_out[index]
        chosen = item["target"].ne(alphabet.padding_idx)
        with torch.no_grad():
            lp = torch.log_softmax(model(item["source"][None])["logits"][0], -1)
        ce = -float(lp[chosen].gather(1, item["target"][chosen][:, None]).sum())
        assert int(row["n_masked"]) == int(chosen.sum()) > 0
        assert float(row["ece"]) == pytest.approx(math.exp(ce / int(chosen.sum())), rel=1e-4)
        total_ce, total_n = total_ce + ce, total_n + int(chosen.sum())
    assert f"ECE over all {total_n:,} masked targets (bert, seed 7): {math.exp(total_ce / total_n):.4f}" in \
        capsys.readouterr().err


def test_skipped_records_are_reported_and_empty_input_is_an_error(official_checkpoint, tmp_path, capsys):
    checkpoint = official_checkpoint("esm1b")
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">ok\nMKTAYIAKQR\n>bad\nMKT;AY\n>empty\n")
    out = tmp_path / "s.tsv"
    assert main([str(checkpoint), str(fasta), "--out", str(out)]) == 0
    assert [r["id"] for r in read_tsv(out)] == ["ok"]
    err = capsys.readouterr().err
    assert "skipped invalid_character: 1" in err and "skipped empty: 1" in err
    fasta.write_text(">bad\nMKT;AY\n")
    assert run_main(main, [str(checkpoint), str(fasta), "--out", str(tmp_path / "none.tsv")]) == 2
    assert "no record survived" in capsys.readouterr().err
    assert not (tmp_path / "none.tsv").exists()


def test_help_of_the_console_script_exits_0():
    script = Path(sys.executable).with_name("fairseq-esm-score")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--metrics" in result.stdout
