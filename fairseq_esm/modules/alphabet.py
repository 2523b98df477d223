"""The ESM vocabularies, index-compatible with fair-esm, usable where fairseq expects a ``Dictionary``.

The symbols are fairseq's four specials followed by ``dicts/esm1b.txt`` (or ``esm1.txt``), which reproduces
``esm.Alphabet.from_architecture("ESM-1b")`` token for token. ESM-1 uses a 35-token alphabet with
``<null_0>`` at 0 and ``<cls>`` appended at 32; the residue symbols sit at the same indices (4-30) in both,
so one binarized dataset serves both. :class:`Alphabet` speaks both dialects: fair-esm's (``padding_idx``,
``get_idx``, ``get_batch_converter``) and the part of fairseq's ``Dictionary`` that tasks and datasets use
(``pad()``, ``eos()``, ``index()``, ``symbols``), without importing fairseq.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Sequence

import torch

from fairseq_esm.io.residues import CANONICAL_AMINO_ACIDS

#: a special token spelled out inside a sequence string (``<mask>``), as fair-esm's tokenizer reads it
SPECIAL_TOKEN = re.compile(r"(<[^<>\s]+>)")
DICT_DIR = Path(__file__).resolve().parents[1] / "dicts"
#: fairseq's ``Dictionary`` puts these first; ESM-1 names the first one ``<null_0>`` instead of ``<cls>``
SPECIALS = ("<pad>", "<eos>", "<unk>")

_ALIASES = {
    "esm1b": "esm1b",
    "esm-1b": "esm1b",
    "roberta_large": "esm1b",
    "esm1": "esm1",
    "esm-1": "esm1",
    "protein_bert_base": "esm1",
}


def read_dict_file(path: str | Path) -> list[str]:
    """The symbols of a fairseq ``dict.txt`` (``SYMBOL COUNT`` per line), in order."""
    return [line.rsplit(" ", 1)[0] for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


class Alphabet:
    """An ESM vocabulary: which token wraps a protein, and every symbol's index."""

    nspecial = 4  # fairseq's count of leading specials (bos, pad, eos, unk)

    def __init__(self, name: str, symbols: Sequence[str], cls_token: str, append_eos: bool) -> None:
        self.name = name
        self.symbols = list(symbols)
        self.indices = {symbol: i for i, symbol in enumerate(self.symbols)}
        self.prepend_bos = True
        self.append_eos = append_eos
        self.bos_word = cls_token
        self.bos_index = self.indices[cls_token]
        self.pad_index, self.eos_index, self.unk_index = (self.indices[s] for s in SPECIALS)

    @classmethod
    def from_architecture(cls, name: str) -> Alphabet:
        """Alphabet by name: ``esm1b``/``ESM-1b``/``roberta_large`` or ``esm1``/``ESM-1``/``protein_bert_base``."""
        key = _ALIASES.get(name.lower())
        if key is None:
            raise ValueError(f"unknown ESM alphabet {name!r}; expected one of {sorted(set(_ALIASES))}")
        if key == "esm1b":
            return cls("esm1b", ["<cls>", *SPECIALS, *read_dict_file(DICT_DIR / "esm1b.txt")], "<cls>", True)
        return cls("esm1", ["<null_0>", *SPECIALS, *read_dict_file(DICT_DIR / "esm1.txt")], "<cls>", False)

    def __len__(self) -> int:
        return len(self.symbols)

    def __getitem__(self, index: int) -> str:
        return self.symbols[index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Alphabet) and (self.name, self.symbols) == (other.name, other.symbols)

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.symbols)))

    def __repr__(self) -> str:
        return f"Alphabet({self.name!r}, {len(self)} tokens)"

    # fairseq Dictionary dialect
    def index(self, symbol: str) -> int:
        """Index of ``symbol``; ``<unk>``'s for a symbol the alphabet lacks."""
        return self.indices.get(symbol, self.unk_index)

    def pad(self) -> int:
        return self.pad_index

    def eos(self) -> int:
        return self.eos_index

    def bos(self) -> int:
        return self.bos_index

    def unk(self) -> int:
        return self.unk_index

    def string(self, tokens: Iterable[int], separator: str = " ") -> str:
        """Token ids back to their symbols (padding left out)."""
        return separator.join(self.symbols[int(t)] for t in tokens if int(t) != self.pad_index)

    # fair-esm Alphabet dialect
    @property
    def all_toks(self) -> list[str]:
        return self.symbols

    @property
    def tok_to_idx(self) -> dict[str, int]:
        return self.indices

    @property
    def padding_idx(self) -> int:
        return self.pad_index

    @property
    def cls_idx(self) -> int:
        return self.bos_index

    @property
    def eos_idx(self) -> int:
        return self.eos_index

    @property
    def unk_idx(self) -> int:
        return self.unk_index

    @property
    def mask_idx(self) -> int:
        return self.indices["<mask>"]

    def get_idx(self, token: str) -> int:
        return self.index(token)

    def get_tok(self, index: int) -> str:
        return self.symbols[index]

    def get_batch_converter(self) -> BatchConverter:
        """fair-esm's callable: ``[(label, sequence), ...]`` -> (labels, sequences, padded tokens (B, T))."""
        return BatchConverter(self)

    # ESM conventions
    def canonical_indices(self) -> list[int]:
        """Indices of the 20 canonical amino acids (the only legal random replacements)."""
        return [self.index(aa) for aa in CANONICAL_AMINO_ACIDS]

    def encode_residues(self, sequence: str) -> list[int]:
        """Residue letters to indices, without specials; unknown letters become ``<unk>``."""
        return [self.index(ch) for ch in sequence]

    def encode(self, text: str) -> list[int]:
        """A sequence string that may spell special tokens (``MK<mask>AY``) to indices, without wrapping."""
        ids: list[int] = []
        for part in SPECIAL_TOKEN.split(text):
            if part in self.indices and part.startswith("<"):
                ids.append(self.indices[part])
            else:
                ids.extend(self.encode_residues(part))
        return ids

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


class BatchConverter:
    """Labelled sequences -> (labels, sequences, tokens (B, T) padded with ``<pad>``), as fair-esm's."""

    def __init__(self, alphabet: Alphabet) -> None:
        self.alphabet = alphabet

    def __call__(self, batch: Sequence[tuple[str, str]]) -> tuple[list[str], list[str], torch.Tensor]:
        labels = [label for label, _ in batch]
        sequences = [sequence for _, sequence in batch]
        encoded = [torch.tensor(self.alphabet.wrap(self.alphabet.encode(s)), dtype=torch.long) for s in sequences]
        tokens = torch.full((len(encoded), max((len(t) for t in encoded), default=0)), self.alphabet.padding_idx)
        for row, ids in enumerate(encoded):
            tokens[row, : len(ids)] = ids
        return labels, sequences, tokens


def esm1b_alphabet() -> Alphabet:
    """The 33-token ESM-1b alphabet (``<cls>`` … ``<eos>``)."""
    return Alphabet.from_architecture("esm1b")


def esm1_alphabet() -> Alphabet:
    """The 35-token ESM-1 alphabet: ``<null_0>`` at 0, ``<cls>`` at 32 prepended, no ``<eos>``."""
    return Alphabet.from_architecture("esm1")


def load_alphabet(name: str) -> Alphabet:
    """Alphabet by name (see :meth:`Alphabet.from_architecture`)."""
    return Alphabet.from_architecture(name)
