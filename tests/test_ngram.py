"""The n-gram baseline on real UniProt proteins: probabilities against a brute-force dict model, normalisation,
the unigram limit, over-fitting with context size, and the CLI end to end."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
from helpers.proteins import write_fasta

from fairseq_esm.cli.common import run_main
from fairseq_esm.cli.ngram import main
from fairseq_esm.evaluation.ngram import SYMBOLS, NgramCounts, V, encode_proteins, sweep_context

BEGIN = "^"


def brute_force_counts(proteins: list[str], k: int) -> tuple[Counter, Counter]:
    """c(ctx, x) and c(ctx) with plain dicts: ctx is the k previous residues, '^' before the protein start."""
    pairs, contexts = Counter(), Counter()
    for protein in proteins:
        padded = BEGIN * k + protein
        for i, residue in enumerate(protein):
            context = padded[i : i + k]
            pairs[context, residue] += 1
            contexts[context] += 1
    return pairs, contexts


def brute_force_log_probs(pairs: Counter, contexts: Counter, proteins: list[str], k: int, alpha: float) -> list[float]:
    out = []
    for protein in proteins:
        padded = BEGIN * k + protein
        for i, residue in enumerate(protein):
            context = padded[i : i + k]
            out.append(math.log((pairs[context, residue] + alpha) / (contexts[context] + alpha * V)))
    return out


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_log_probs_equal_a_brute_force_dict_model(sample_proteins, k):
    train, scored = sample_proteins[:40], sample_proteins[40:60]
    counts = NgramCounts.fit(encode_proteins(train), k)
    pairs, contexts = brute_force_counts(train, k)
    assert counts.n_contexts == len(contexts) and counts.n_residues == sum(map(len, train))
    for alpha in [1e-3, 0.5, 3.0]:
        for proteins in (train, scored):
            ours = counts.log_probs(encode_proteins(proteins), alpha)
            expected = brute_force_log_probs(pairs, contexts, proteins, k, alpha)
            np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9)
    protein = scored[0]
    for i in [0, 1, k, 17]:  # protein starts (shorter contexts) and interior positions
        context = protein[max(0, i - k) : i]
        expected = [(pairs[BEGIN * (k - len(context)) + context, x] + 0.5) / (contexts[BEGIN * (k - len(context))
                    + context] + 0.5 * V) for x in SYMBOLS]
        np.testing.assert_allclose(counts.distribution(context, 0.5), expected, rtol=0, atol=1e-12)


def test_every_context_distribution_sums_to_one(sample_proteins):
    counts = NgramCounts.fit(encode_proteins(sample_proteins[:300]), 2)
    contexts = ["", "M"] + [a + b for a in SYMBOLS for b in SYMBOLS]  # begin-of-protein, seen and unseen pairs
    for alpha in [1e-4, 0.1, 10.0]:
        sums = np.array([counts.distribution(c, alpha).sum() for c in contexts])
        np.testing.assert_allclose(sums, 1.0, rtol=0, atol=1e-12)
    assert counts.context_counts.sum() == counts.n_residues
    unseen = [c for c in contexts if np.all(counts.distribution(c, 1.0) == 1 / V)]
    assert 0 < len(unseen) < len(contexts)  # real data leaves some residue pairs unseen (U, O, B, Z ...)


def test_unigram_with_vanishing_alpha_is_the_amino_acid_frequency_cross_entropy(sample_proteins):
    train, scored = sample_proteins[:500], sample_proteins[500:700]
    counts = NgramCounts.fit(encode_proteins(train), 0)
    freq = Counter("".join(train))
    total = sum(freq.values())
    entropy = -sum(c / total * math.log(c / total) for c in freq.values())
    assert counts.cross_entropy(encode_proteins(train), [1e-12])[0] == pytest.approx(entropy, rel=1e-9)
    assert counts.train_cross_entropy([1e-12])[0] == pytest.approx(entropy, rel=1e-9)
    residues = "".join(scored)
    assert set(residues) <= set(freq)
    cross = -sum(math.log(freq[x] / total) for x in residues) / len(residues)
    assert counts.cross_entropy(encode_proteins(scored), [1e-12])[0] == pytest.approx(cross, rel=1e-9)


def test_more_context_fits_train_better_but_does_not_generalise(sample_proteins):
    train, valid, heldout = (encode_proteins(p) for p in
                             (sample_proteins[:1000], sample_proteins[1000:1250], sample_proteins[1250:1500]))
    alphas = list(np.logspace(-3, 1, 9))
    results = [sweep_context(train, valid, heldout, k, alphas) for k in range(9)]
    tiny = [NgramCounts.fit(train, k).train_cross_entropy([1e-9])[0] for k in range(9)]
    assert all(b <= a + 1e-9 for a, b in zip(tiny, tiny[1:])) and math.exp(tiny[8]) < 1.1  # memorised
    heldout_ece = [r.heldout_ece for r in results]
    best = int(np.argmin(heldout_ece))
    assert heldout_ece[1] < heldout_ece[0]  # one residue of context helps ...
    assert best <= 3 and heldout_ece[4] > heldout_ece[best] + 1.0  # ... four over-fit: not monotone in k
    k4 = NgramCounts.fit(train, 4)
    assert math.exp(k4.cross_entropy(heldout, [1e-9])[0]) > 10 * heldout_ece[4]  # smoothing is what saves it



def test_cli_writes_table_json_and_markdown(sample_proteins, tmp_path, capsys):
    train, valid, heldout = sample_proteins[:300], sample_proteins[300:350], sample_proteins[350:400]
    paths = [str(write_fasta(tmp_path / f"{n}.fasta", p)) for n, p in
             [("train", train), ("valid", valid), ("heldout", heldout)]]
    out_json, out_md = tmp_path / "ngram.json", tmp_path / "ngram.md"
    assert main(["--train", paths[0], "--valid", paths[1], "--heldout", paths[2], "--contexts", "0,1,2",
                 "--alphas", "1,0.01,0.1", "--json", str(out_json), "--markdown", str(out_md)]) == 0
    captured = capsys.readouterr()
    assert "records read 300, written 300" in captured.err and "k=2:" in captured.err
    report = json.loads(out_json.read_text())
    results = report["results"]
    assert [r["k"] for r in results] == [0, 1, 2] and results[0]["alphas"] == [0.01, 0.1, 1.0]
    assert report["residues"]["heldout"] == sum(map(len, heldout))
    best = min(results, key=lambda r: r["valid_ece"])
    assert report["best"]["k"] == best["k"] and f"best (chosen on valid ECE): k={best['k']}" in captured.out
    freq, total, alpha = Counter("".join(train)), sum(map(len, train)), results[0]["best_alpha"]
    unigram = -sum(math.log((freq[x] + alpha) / (total + alpha * V)) for x in "".join(heldout)) / len("".join(heldout))
    assert results[0]["heldout_ece"] == pytest.approx(math.exp(unigram), rel=1e-9)
    markdown = out_md.read_text()
    assert markdown.startswith("| k | best alpha |") and f"| {results[2]['heldout_ece']:.3f} |" in markdown


def test_best_model_is_chosen_on_validation_never_on_heldout(sample_proteins, tmp_path, capsys):
    train = str(write_fasta(tmp_path / "train.fasta", sample_proteins[:300]))
    valid = str(write_fasta(tmp_path / "valid.fasta", sample_proteins[300:400]))
    out_json = tmp_path / "ngram.json"
    # scoring the training proteins as "held-out" makes the largest k look best there; validation disagrees
    assert main(["--train", train, "--valid", valid, "--heldout", train, "--contexts", "0,2,4", "--alphas", "0.01,1",
                 "--json", str(out_json)]) == 0
    report = json.loads(out_json.read_text())
    heldout_best = min(report["results"], key=lambda r: r["heldout_ece"])
    distinct = len(set(sample_proteins[:300]))  # 299: the sample repeats a sequence
    assert heldout_best["k"] == 4 and report["best"]["k"] != 4 and report["heldout_sequences_in_train"] == distinct
    assert f"{distinct} distinct held-out sequences also occur verbatim in train" in capsys.readouterr().err


@pytest.mark.parametrize("content, extra, message", [
    ("", [], "empty file"),
    (">bad\nMKT;AY\n", [], "no protein left in the heldout split"),
    (None, ["--contexts", "0,13"], "--contexts: each k must be in 0..12"),
    (None, ["--alphas", "0.1,0"], "--alphas: each alpha must be a positive"),
    (None, ["--contexts", "one"], "--contexts 'one': expected comma-separated ints"),
])
def test_cli_bad_input_is_one_error_line_and_exit_2(sample_proteins, tmp_path, capsys, content, extra, message):
    good = str(write_fasta(tmp_path / "good.fasta", sample_proteins[:20]))
    heldout = tmp_path / "heldout.fasta"
    if content is None:
        write_fasta(heldout, sample_proteins[20:30])
    else:
        heldout.write_text(content)
    assert run_main(main, ["--train", good, "--valid", good, "--heldout", str(heldout), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
