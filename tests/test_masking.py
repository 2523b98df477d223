"""BERT masking of real proteins: rates, canonical alternate replacements, specials untouched."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fairseq.data import ListDataset

from fairseq_esm.data.masking import MaskedProteinDataset, alternate_canonical, mask_tokens, masking_scheme
from fairseq_esm.io.residues import CANONICAL_AMINO_ACIDS
from fairseq_esm.modules.alphabet import esm1_alphabet, esm1b_alphabet


@pytest.fixture(scope="module")
def proteins(sample_proteins) -> list[np.ndarray]:
    alphabet = esm1b_alphabet()
    return [alphabet.tokenize(seq).numpy() for seq in sample_proteins[:1500]]


def within(observed: float, expected: float, n: int, sigmas: float = 4.0) -> bool:
    """Is a rate within ``sigmas`` binomial standard errors of its expectation?"""
    return abs(observed - expected) <= sigmas * math.sqrt(expected * (1 - expected) / n)


def test_rates_on_real_proteins(proteins):
    alphabet = esm1b_alphabet()
    scheme = masking_scheme(alphabet)
    rng = np.random.RandomState(0)
    n_residues = selected = masked = replaced = unchanged = 0
    for tokens in proteins:
        source, target = mask_tokens(tokens, scheme, rng)
        chosen = target != alphabet.padding_idx
        n_residues += len(tokens) - 2
        selected += chosen.sum()
        masked += (source[chosen] == alphabet.mask_idx).sum()
        unchanged += (source[chosen] == target[chosen]).sum()
        replaced += ((source[chosen] != alphabet.mask_idx) & (source[chosen] != target[chosen])).sum()
        assert (source[~chosen] == tokens[~chosen]).all()
    assert n_residues > 500_000
    assert within(selected / n_residues, 0.15, n_residues)
    assert within(masked / selected, 0.8, selected)
    assert within(replaced / selected, 0.1, selected)
    assert within(unchanged / selected, 0.1, selected)


@pytest.mark.parametrize("factory", [esm1b_alphabet, esm1_alphabet])
def test_specials_never_selected_or_produced(factory, sample_proteins):
    alphabet = factory()
    scheme = masking_scheme(alphabet)
    canonical = set(alphabet.canonical_indices())
    rng = np.random.RandomState(1)
    for seq in sample_proteins[:200]:
        tokens = alphabet.tokenize(seq).numpy()
        source, target = mask_tokens(tokens, scheme, rng)
        assert target[0] == alphabet.padding_idx and source[0] == alphabet.cls_idx
        if alphabet.append_eos:
            assert target[-1] == alphabet.padding_idx and source[-1] == alphabet.eos()
        chosen = np.flatnonzero(target != alphabet.padding_idx)
        for pos in chosen:
            assert source[pos] == alphabet.mask_idx or source[pos] == tokens[pos] or source[pos] in canonical


def test_replacements_are_canonical_and_alternate(proteins):
    alphabet = esm1b_alphabet()
    scheme = masking_scheme(alphabet, leave_unmasked_prob=0.0, random_token_prob=1.0)
    canonical = set(alphabet.canonical_indices())
    rng = np.random.RandomState(2)
    n = 0
    for tokens in proteins[:300]:
        source, target = mask_tokens(tokens, scheme, rng)
        chosen = target != alphabet.padding_idx
        assert all(tok in canonical for tok in source[chosen])
        assert (source[chosen] != target[chosen]).all()
        n += chosen.sum()
    assert n > 10_000


def test_alternates_are_uniform_over_the_other_nineteen():
    alphabet = esm1b_alphabet()
    canonical = np.asarray(alphabet.canonical_indices())
    draws = alternate_canonical(np.full(19_000, alphabet.index("A")), canonical, np.random.RandomState(3))
    counts = {alphabet[i]: int((draws == i).sum()) for i in canonical}
    assert counts.pop("A") == 0
    assert set(counts) == set(CANONICAL_AMINO_ACIDS) - {"A"}
    assert all(within(c / 19_000, 1 / 19, 19_000) for c in counts.values())


def test_ambiguous_residues_are_replaced_by_any_canonical():
    alphabet = esm1b_alphabet()
    canonical = np.asarray(alphabet.canonical_indices())
    originals = np.asarray([alphabet.index(ch) for ch in "XBZUO" * 2000])
    draws = alternate_canonical(originals, canonical, np.random.RandomState(4))
    assert set(draws.tolist()) == set(canonical.tolist())


def test_all_mask_strategy(proteins):
    alphabet = esm1b_alphabet()
    scheme = masking_scheme(alphabet, strategy="all_mask")
    rng = np.random.RandomState(5)
    for tokens in proteins[:200]:
        source, target = mask_tokens(tokens, scheme, rng)
        chosen = target != alphabet.padding_idx
        assert (source[chosen] == alphabet.mask_idx).all()
        assert (source[~chosen] == tokens[~chosen]).all()


def test_unknown_strategy_rejected():
    with pytest.raises(ValueError, match="mask strategy"):
        masking_scheme(esm1b_alphabet(), strategy="span")


def test_dataset_reproducible_per_seed_epoch_index(proteins):
    alphabet = esm1b_alphabet()
    items = [torch.from_numpy(t) for t in proteins[:20]]
    data = ListDataset(items, np.array([len(t) for t in items]))

    def draw(epoch: int, seed: int = 7, fixed=None) -> list[torch.Tensor]:
        ds = MaskedProteinDataset(data, masking_scheme(alphabet), seed=seed, fixed_epoch=fixed)
        ds.set_epoch(epoch)
        return [ds[i]["target"] for i in range(len(ds))]

    assert all(torch.equal(a, b) for a, b in zip(draw(2), draw(2)))
    assert not all(torch.equal(a, b) for a, b in zip(draw(2), draw(3)))
    assert not all(torch.equal(a, b) for a, b in zip(draw(2), draw(2, seed=8)))
    assert all(torch.equal(a, b) for a, b in zip(draw(5, fixed=1), draw(1)))


def test_protein_without_residues_gets_no_targets():
    alphabet = esm1b_alphabet()
    tokens = alphabet.tokenize("").numpy()
    source, target = mask_tokens(tokens, masking_scheme(alphabet), np.random.RandomState(6))
    assert np.array_equal(source, tokens) and (target == alphabet.padding_idx).all()
