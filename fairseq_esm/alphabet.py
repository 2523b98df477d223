"""The ESM vocabularies as fairseq ``Dictionary`` objects, index-compatible with fair-esm.

fairseq's ``Dictionary`` always puts four special symbols at 0-3; choosing their names as
``<cls>, <pad>, <eos>, <unk>`` and loading the remaining symbols from ``dicts/esm1b.txt``
reproduces ``esm.Alphabet.from_architecture("ESM-1b")`` token for token. ESM-1 uses a
35-token alphabet with ``<null_0>`` at 0 and ``<cls>`` appended at 32; the residue
symbols sit at the same indices (4-30) in both, so one binarized dataset serves both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from fairseq.data import Dictionary

DICT_DIR = Path(__file__).parent / "dicts"

#: the 20 canonical amino acids; random BERT replacements are drawn only from these
CANONICAL_AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
#: every residue letter the ESM alphabets carry (canonical + X B U Z O)
RESIDUE_LETTERS = "LAGVSERTIDPKQNFYMHWCXBUZO"
GAP_SYMBOLS = ".-"

_ALIASES = {
    "esm1b": "esm1b",
    "esm-1b": "esm1b",
    "roberta_large": "esm1b",
    "esm1": "esm1",
    "esm-1": "esm1",
    "protein_bert_base": "esm1",
}


class EsmAlphabet(Dictionary):
    """A fairseq ``Dictionary`` that knows the ESM conventions (which specials wrap a protein)."""

    def __init__(
        self,
        bos: str = "<cls>",
        pad: str = "<pad>",
        eos: str = "<eos>",
        unk: str = "<unk>",
        **kwargs,
    ) -> None:
        super().__init__(bos=bos, pad=pad, eos=eos, unk=unk, **kwargs)
        self.name = "esm1b"
        self.prepend_bos = True
        self.append_eos = True

    @property
    def padding_idx(self) -> int:
        return self.pad_index

    @property
    def cls_idx(self) -> int:
        return self.bos_index

    @property
    def mask_idx(self) -> int:
        return self.index("<mask>")

    def canonical_indices(self) -> list[int]:
        """Indices of the 20 canonical amino acids (the only legal random replacements)."""
        return [self.index(aa) for aa in CANONICAL_AMINO_ACIDS]

    def encode_residues(self, sequence: str) -> list[int]:
        """Residue letters to indices, without specials; unknown letters become ``<unk>``."""
        return [self.index(ch) for ch in sequence]

    def wrap(self, residue_ids: Iterable[int]) -> list[int]:
        """Add the specials this alphabet puts around a protein (``<cls>`` … ``<eos>``)."""
        ids = list(residue_ids)
        if self.prepend_bos:
            ids = [self.cls_idx] + ids
        if self.append_eos:
            ids = ids + [self.eos_index]
        return ids

    def tokenize(self, sequence: str) -> torch.Tensor:
        """One protein string to the model's input ids, specials included."""
        return torch.tensor(self.wrap(self.encode_residues(sequence)), dtype=torch.long)

    @property
    def num_specials_added(self) -> int:
        return int(self.prepend_bos) + int(self.append_eos)


def esm1b_alphabet() -> EsmAlphabet:
    """The 33-token ESM-1b alphabet (``<cls>`` … ``<eos>``)."""
    alphabet = EsmAlphabet.load(str(DICT_DIR / "esm1b.txt"))
    alphabet.name = "esm1b"
    return alphabet


def esm1_alphabet() -> EsmAlphabet:
    """The 35-token ESM-1 alphabet: ``<null_0>`` at 0, ``<cls>`` at 32 prepended, no ``<eos>``."""
    alphabet = EsmAlphabet(bos="<null_0>")
    alphabet.add_from_file(str(DICT_DIR / "esm1.txt"))
    alphabet.bos_index = alphabet.index("<cls>")
    alphabet.bos_word = "<cls>"
    alphabet.name = "esm1"
    alphabet.append_eos = False
    return alphabet


def load_alphabet(name: str) -> EsmAlphabet:
    """Alphabet by name: ``esm1b``/``ESM-1b``/``roberta_large`` or ``esm1``/``ESM-1``/``protein_bert_base``."""
    key = _ALIASES.get(name.lower())
    if key is None:
        raise ValueError(f"unknown ESM alphabet {name!r}; expected one of {sorted(set(_ALIASES))}")
    return esm1b_alphabet() if key == "esm1b" else esm1_alphabet()
