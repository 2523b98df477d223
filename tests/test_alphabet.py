"""The ESM alphabets must equal fair-esm's index for index: checkpoints depend on it."""

import esm
import pytest
from fairseq.data import Dictionary

from fairseq_esm.modules.alphabet import DICT_DIR, esm1_alphabet, esm1b_alphabet, load_alphabet


@pytest.mark.parametrize("arch,factory", [("ESM-1b", esm1b_alphabet), ("ESM-1", esm1_alphabet)])
def test_every_index_matches_fair_esm(arch, factory):
    ref = esm.Alphabet.from_architecture(arch)
    ours = factory()
    assert len(ours) == len(ref)
    assert [ours[i] for i in range(len(ours))] == ref.all_toks
    assert (ours.cls_idx, ours.padding_idx, ours.mask_idx) == (ref.cls_idx, ref.padding_idx, ref.mask_idx)
    assert (ours.prepend_bos, ours.append_eos) == (ref.prepend_bos, ref.append_eos)
    if ref.append_eos:
        assert ours.eos() == ref.eos_idx


def test_tokenize_golden_values():
    assert esm1b_alphabet().tokenize("MKTAYIAK").tolist() == [0, 20, 15, 11, 5, 19, 12, 5, 15, 2]
    assert esm1_alphabet().tokenize("MKTAYIAK").tolist() == [32, 20, 15, 11, 5, 19, 12, 5, 15]


def test_tokenize_matches_fair_esm_batch_converter():
    seq = "MKTAYIAKQRQISFVKSHFSRQXBZUO"
    for arch, factory in [("ESM-1b", esm1b_alphabet), ("ESM-1", esm1_alphabet)]:
        _, _, ref = esm.Alphabet.from_architecture(arch).get_batch_converter()([("p", seq)])
        assert factory().tokenize(seq).tolist() == ref[0].tolist()


def test_plain_fairseq_dictionary_of_dict_file_gives_same_residue_indices():
    """fairseq-preprocess --srcdict loads a plain Dictionary; residue ids must not move."""
    plain = Dictionary.load(str(DICT_DIR / "esm1b.txt"))
    ours = esm1b_alphabet()
    assert len(plain) == len(ours)
    for i in range(4, len(ours)):
        assert plain[i] == ours[i]
    assert plain.eos() == ours.eos() and plain.pad() == ours.pad() and plain.unk() == ours.unk()


def test_canonical_indices_are_the_twenty_amino_acids():
    alphabet = esm1b_alphabet()
    assert sorted(alphabet[i] for i in alphabet.canonical_indices()) == sorted("ACDEFGHIKLMNPQRSTVWY")


@pytest.mark.parametrize("name", ["ESM-1b", "roberta_large", "esm1", "protein_bert_base"])
def test_load_alphabet_aliases(name):
    assert load_alphabet(name).name in {"esm1b", "esm1"}


def test_unknown_alphabet_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown ESM alphabet"):
        load_alphabet("esm3")
