"""Batched pseudo-log-likelihood: the same scores as the one-copy-at-a-time reference (several lengths, windows,
token budgets down to below one copy), masked copies shared between variants and counted, the workload estimate
equal to what runs, and the progress bar."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.proteins import write_fasta
from tqdm import tqdm

from fairseq_esm.checkpoints import load_model
from fairseq_esm.cli.score import describe_workload, main
from fairseq_esm.inference import variant_scoring
from fairseq_esm.inference.scoring import Workload, pll_workload, pseudo_log_likelihoods
from fairseq_esm.inference.variant_scoring import _pseudo_likelihood, score_variants, variant_workload
from fairseq_esm.io.mutations import parse_variant
from fairseq_esm.modules.batching import centred_window, residue_budget

DMS = Path(__file__).resolve().parents[1] / "examples" / "data" / "dms"
WT = "".join((DMS / "BLAT_ECOLX.fasta").read_text().splitlines()[1:])  # TEM-1, 286 residues
PROTEINS = [59, 23, 16, 9]  # 7, 61 (with an X), 83 and 148 residues: the last exceeds a 128-position model
TINY = dict(layers=1, dim=32, ffn=64)


class Forwards:
    """Every forward pass of ``model``: its (B, T) shape and the tokens that are not padding."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.shapes: list[tuple[int, int]] = []
        self.tokens = 0
        self.pad = model.padding_idx
        self.handle = model.register_forward_pre_hook(self.hook)

    def hook(self, module: torch.nn.Module, args: tuple) -> None:
        self.shapes.append(tuple(args[0].shape))
        self.tokens += int(args[0].ne(self.pad).sum())

    def reset(self) -> None:
        self.shapes, self.tokens = [], 0

    @property
    def rows(self) -> int:
        return sum(b for b, _ in self.shapes)

    @property
    def padded(self) -> int:
        return sum(b * t for b, t in self.shapes)


@pytest.fixture(scope="module")
def proteins(sample_proteins) -> list[str]:
    return [sample_proteins[i] for i in PROTEINS]


@pytest.mark.parametrize("variant", ["esm1b", "esm1", "esm2"])
def test_batched_equals_one_copy_at_a_time_for_every_budget(official_checkpoint, proteins, variant):
    """In float64 the batched PLL is the reference's to 1e-5 (the same inputs, positions and targets); in float32
    both round differently (other batch shapes, one row projected instead of all), by ~1e-7 of the PLL."""
    sizes = dict(layers=2, dim=32, ffn=64, **({} if variant == "esm2" else {"max_positions": 64}))
    model, alphabet = load_model(official_checkpoint(variant, **sizes))
    budget = residue_budget(model.max_positions(), alphabet)
    picked = proteins if variant == "esm1b" else proteins[:3]
    if variant != "esm2":
        assert max(map(len, picked)) > budget  # some copies are cut to their centred window
    reference = pseudo_log_likelihoods(model, alphabet, picked, batch=False)
    for toks_per_batch in (10, 100_000):  # 10: below every copy's length but the 7-residue protein's
        batched = pseudo_log_likelihoods(model, alphabet, picked, toks_per_batch)
        np.testing.assert_allclose(batched, reference, rtol=1e-6, atol=0, err_msg=str(toks_per_batch))
    model = model.double()
    reference = pseudo_log_likelihoods(model, alphabet, picked, batch=False)
    for toks_per_batch in (10, 70, 1000, 100_000):
        batched = pseudo_log_likelihoods(model, alphabet, picked, toks_per_batch)
        np.testing.assert_allclose(batched, reference, atol=1e-5, rtol=0, err_msg=str(toks_per_batch))
    alone = [pseudo_log_likelihoods(model, alphabet, [seq], 500)[0] for seq in picked]
    np.testing.assert_allclose(alone, reference, atol=1e-5, rtol=0)


def test_workload_is_what_runs(official_checkpoint, proteins):
    model, alphabet = load_model(official_checkpoint("esm1b", max_positions=64))  # 62 residues per window
    forwards = Forwards(model)
    for toks_per_batch in (10, 200, 4096):
        forwards.reset()
        pseudo_log_likelihoods(model, alphabet, proteins, toks_per_batch)
        work = pll_workload(model, alphabet, proteins, toks_per_batch)
        assert work == pll_workload(model, alphabet, [len(p) for p in proteins], toks_per_batch)  # lengths do
        assert (work.copies, work.tokens, work.padded_tokens, work.forwards) == (
            forwards.rows, forwards.tokens, forwards.padded, len(forwards.shapes))
        assert work.copies == work.unshared_copies == sum(map(len, proteins)) and work.sequences == len(proteins)
        # a copy longer than the budget runs alone, as every tool does it; others share passes
        assert all(b == 1 for b, t in forwards.shapes if t > toks_per_batch)
        assert all(b * t <= toks_per_batch for b, t in forwards.shapes if t <= toks_per_batch)
    # 4096 tokens: 299 copies in 5 passes of up to 64 rows, longest first, proteins sharing passes (the 4th holds
    # 64- and 63-token copies, the last the 61-residue protein's rest and the 7-residue one's, padded to 63 tokens)
    assert forwards.shapes == [(64, 64)] * 4 + [(43, 63)]
    forwards.reset()
    pseudo_log_likelihoods(model, alphabet, proteins, batch=False)
    assert forwards.shapes == [(1, min(len(p), 62) + 2) for p in proteins for _ in p]
    assert Workload(1, 2, 3, 4, 5, 6) + Workload(1, 1, 1, 1, 1, 1) == Workload(2, 3, 4, 5, 6, 7)


@pytest.fixture(scope="module")
def tem1_codes(dms_rows) -> list[str]:
    """Three real singles, a double of two of them, a double of positions no single in the table has, a repeat
    and a synonymous code (the wild type itself): six distinct sequences with the wild type."""
    singles = [dms_rows[i]["mutant"] for i in (0, 130, 300)]
    outside = [r["mutant"] for r in dms_rows if r["mutant"][1:-1] not in {s[1:-1] for s in singles}]
    return singles + [f"{singles[0]}:{singles[2]}", f"{outside[0]}:{outside[-1]}", singles[1], f"{WT[40]}41{WT[40]}"]


def test_variants_share_masked_copies_and_keep_their_scores(official_checkpoint, tem1_codes):
    model, alphabet = load_model(official_checkpoint("esm1b", max_positions=320, **TINY))  # TEM-1 fits
    variants = [parse_variant(c) for c in tem1_codes]
    forwards = Forwards(model)
    shared = _pseudo_likelihood(model, alphabet, WT, variants, 3000)
    rows_run = forwards.rows
    L = len(WT)
    # the wild type: L; a single masked at its own residue is the wild type masked there: L - 1 new; a double of
    # two table singles masked at either residue is the other single masked there: L - 2; the double of residues
    # no single has shares nothing: L; the repeat and the synonymous code: none
    assert shared.computed == rows_run == L + 3 * (L - 1) + (L - 2) + L
    assert shared.forwards == 6 * L  # 5 distinct mutants + the wild type, as counted before sharing
    work = variant_workload(model, alphabet, WT, variants, "pseudo-likelihood", 3000)
    assert (work.copies, work.unshared_copies, work.forwards, work.sequences) == (
        rows_run, 6 * L, len(forwards.shapes), 6)
    assert shared.scores[-1] == 0.0 and shared.scores[-2] == shared.scores[1]  # synonymous, repeat
    forwards.reset()
    unshared = _pseudo_likelihood(model, alphabet, WT, variants, 3000, share=False)  # the path before sharing
    assert forwards.rows == unshared.computed == 6 * L
    np.testing.assert_allclose(shared.scores, unshared.scores, atol=1e-5, rtol=0)
    reference = _pseudo_likelihood(model, alphabet, WT, variants[3:4], 3000, batch=False)  # the double
    np.testing.assert_allclose(shared.scores[3], reference.scores[0], atol=1e-5, rtol=0)


def test_long_wild_type_shares_every_copy_whose_window_misses_the_mutation(official_checkpoint, tem1_codes,
                                                                           monkeypatch):
    monkeypatch.setattr(variant_scoring, "PLL_CHUNK_COPIES", 100)  # contexts split across groups of copies
    model, alphabet = load_model(official_checkpoint("esm1b", max_positions=64, **TINY))  # 62-residue windows
    budget = residue_budget(model.max_positions(), alphabet)
    variants = [parse_variant(c) for c in tem1_codes]
    forwards = Forwards(model)
    shared = _pseudo_likelihood(model, alphabet, WT, variants, 1000)
    windows = [centred_window(j, j, len(WT), budget) for j in range(len(WT))]
    sees = {p: {j for j, (a, b) in enumerate(windows) if a <= p < b and j != p}  # copies that show residue p
            for p in {m.index for v in variants for m in v}}
    inputs = set()  # the masked inputs other than the wild type's: (masked residue, substitutions it shows)
    for v in variants:
        mutations = {(m.index, m.mt) for m in v if m.mt != m.wt}
        inputs |= {(j, frozenset((p, x) for p, x in mutations if j in sees[p])) for j in range(len(WT))}
    expected = len(WT) + len({(j, shown) for j, shown in inputs if shown})
    assert shared.computed == forwards.rows == expected < len(WT) * 6 // 2
    work = variant_workload(model, alphabet, WT, variants, "pseudo-likelihood", 1000)
    assert (work.copies, work.forwards, work.tokens) == (expected, len(forwards.shapes), forwards.tokens)
    reference = _pseudo_likelihood(model, alphabet, WT, variants, 1000, share=False)
    np.testing.assert_allclose(shared.scores, reference.scores, atol=1e-5, rtol=0)
    public = score_variants(model, alphabet, WT, variants, "pseudo-likelihood", 1000)  # the strategy's entry point
    assert public.scores == shared.scores and public.computed == shared.computed and public.forwards == 6 * len(WT)


def test_progress_bars_count_the_copies(official_checkpoint, proteins, tem1_codes, capsys):
    model, alphabet = load_model(official_checkpoint("esm1b", max_positions=64, **TINY))
    pseudo_log_likelihoods(model, alphabet, proteins[:2], progress=True)
    copies = len(proteins[0]) + len(proteins[1])
    err = capsys.readouterr().err
    assert "masked copies" in err and f"{copies}/{copies}" in err
    with tqdm(file=io.StringIO()) as bar:  # one bar over several calls, left open
        pseudo_log_likelihoods(model, alphabet, proteins[:1], progress=bar)
        pseudo_log_likelihoods(model, alphabet, proteins[1:2], batch=False, progress=bar)
        assert bar.n == len(proteins[0]) + len(proteins[1])
    variants = [parse_variant(c) for c in tem1_codes]
    with tqdm(file=io.StringIO()) as bar:
        result = score_variants(model, alphabet, WT, variants, "pseudo-likelihood", progress=bar)
        assert bar.n == result.computed
    with tqdm(file=io.StringIO()) as bar:  # the other strategies count their model rows the same way
        result = score_variants(model, alphabet, WT, variants[:3], "masked-marginal", progress=bar)
        assert bar.n == result.forwards == variant_workload(model, alphabet, WT, variants[:3]).copies == 3


def test_score_cli_prints_the_estimate_before_scoring(official_checkpoint, proteins, tmp_path, capsys):
    checkpoint = official_checkpoint("esm1b", max_positions=64, **TINY)
    out = tmp_path / "scores.tsv"
    assert main([str(checkpoint), str(write_fasta(tmp_path / "in.fasta", proteins)), "--out", str(out),
                 "--max-tokens", "300"]) == 0
    model, alphabet = load_model(checkpoint)
    work = pll_workload(model, alphabet, proteins, 300)
    err = capsys.readouterr().err
    assert describe_workload(work, 300) in err.splitlines()
    assert f"pll: 4 proteins, {sum(map(len, proteins)):,} masked copies" in err
    with open(out, newline="") as handle:
        plls = [float(r["pll"]) for r in csv.DictReader(handle, delimiter="\t")]
    np.testing.assert_allclose(plls, pseudo_log_likelihoods(model, alphabet, proteins, batch=False), atol=1e-5, rtol=0)
    assert "read only once" in describe_workload(None, 300)
