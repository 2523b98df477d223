"""Measured mutational effects of one protein, stored for fairseq and batched by masked wild-type window.

A data dir holds ``wild_type.fasta`` (one record) and one ``{split}.tsv`` per split: a header line
``mutant<TAB>score``, then one variant per line, its code (``A23G``, multi-mutants ``A23G:K40R``; positions
1-based in the wild type) and its target score. The dataset yields one sample per distinct set of mutated
positions: the wild type cut to the window the model scores those positions in, with the positions masked,
plus every variant at those positions (mutant and wild-type token ids, targets). All variants of a sample
share one forward pass: the masked marginal of ``fairseq-esm-variants``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from fairseq.data import FairseqDataset, data_utils

from fairseq_esm.data.integrity import DataIntegrityError
from fairseq_esm.data.sized import EveryRecordBatched, LengthOrdered, StoredSizes
from fairseq_esm.io.fasta import read_fasta
from fairseq_esm.io.mutations import Variant, check_variant, parse_variant
from fairseq_esm.modules.alphabet import Alphabet
from fairseq_esm.modules.batching import centred_window

WILD_TYPE = "wild_type.fasta"
HEADER = ["mutant", "score"]


def write_data_dir(directory: str | Path, wild_type: str, splits: dict[str, tuple[Sequence[str], Sequence[float]]]
                   ) -> Path:
    """Write ``wild_type.fasta`` and one ``{split}.tsv`` per ``split: (codes, targets)``; returns the dir."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / WILD_TYPE).write_text(f">wild_type\n{wild_type}\n")
    for split, (codes, targets) in splits.items():
        with open(directory / f"{split}.tsv", "w", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            writer.writerow(HEADER)
            writer.writerows((code, repr(float(target))) for code, target in zip(codes, targets))
    return directory


def read_wild_type(directory: str | Path) -> str:
    """The one record of ``wild_type.fasta`` in ``directory``."""
    path = Path(directory) / WILD_TYPE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a mutational_effect data dir holds {WILD_TYPE} and {{split}}.tsv")
    records = list(read_fasta(str(path)))
    if len(records) != 1:
        raise DataIntegrityError(f"{path}: {len(records)} records; the wild type must be exactly one")
    return records[0][1]


def parse_code(code: str, wild_type: str, budget: int) -> Variant:
    """``A23G:K40R`` -> mutations by position, checked against the wild type and the model's context."""
    variant = parse_variant(code)
    check_variant(variant, wild_type, max_span=budget)
    return variant


def read_split(path: str | Path, wild_type: str, budget: int) -> tuple[list[Variant], np.ndarray]:
    """Variants and targets of one ``{split}.tsv``; any bad line stops with its file and line number."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    if not rows or rows[0] != HEADER:
        raise DataIntegrityError(f"{path}: the first line must be the header {chr(9).join(HEADER)!r}")
    variants, targets = [], []
    for line, row in enumerate(rows[1:], start=2):
        try:
            if len(row) != 2:
                raise ValueError(f"{len(row)} fields, expected 2 (mutant, score)")
            variants.append(parse_code(row[0], wild_type, budget))
            targets.append(float(row[1]))
        except ValueError as err:
            raise DataIntegrityError(f"{path}:{line}: {err}") from None
    return variants, np.asarray(targets, dtype=np.float32)


class MutationalEffectDataset(EveryRecordBatched, LengthOrdered, StoredSizes, FairseqDataset):
    """One sample per distinct set of mutated positions: the masked window and the variants it scores."""

    def __init__(self, alphabet: Alphabet, wild_type: str, variants: Sequence[Variant],
                 targets: np.ndarray, budget: int, shuffle: bool = False, seed: int = 1) -> None:
        super().__init__()
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, variant in enumerate(variants):
            groups.setdefault(tuple(m.index for m in variant), []).append(i)
        self.keys = sorted(groups)
        self.alphabet, self.wild_type, self.budget = alphabet, wild_type, budget
        self.members = [groups[key] for key in self.keys]
        self.variants, self.targets = list(variants), torch.from_numpy(np.asarray(targets, dtype=np.float32))
        spans = [self._window(key) for key in self.keys]
        self._sizes = np.array([end - start + alphabet.num_specials_added for start, end in spans], dtype=np.int64)
        self.shuffle, self.seed, self.epoch = shuffle, seed, 1

    def _window(self, key: tuple[int, ...]) -> tuple[int, int]:
        return centred_window(key[0], key[-1], len(self.wild_type), self.budget)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def num_variants(self) -> int:
        return len(self.variants)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def can_reuse_epoch_itr_across_epochs(self) -> bool:
        """Training draws new batches every epoch (a seeded permutation per epoch)."""
        return not self.shuffle

    def __getitem__(self, index: int) -> dict[str, Any]:
        """``tokens`` (T,) with the positions masked, ``read_at`` (k,), ``mt`` / ``wt`` (n, k), ``target`` (n,)."""
        key, members = self.keys[index], self.members[index]
        start, end = self._window(key)
        tokens = self.alphabet.tokenize(self.wild_type[start:end])
        read_at = torch.tensor(key) + int(self.alphabet.prepend_bos) - start
        tokens[read_at] = self.alphabet.mask_idx
        mt = [[self.alphabet.index(m.mt) for m in self.variants[i]] for i in members]
        wt = [[self.alphabet.index(m.wt) for m in self.variants[i]] for i in members]
        return {"id": index, "tokens": tokens, "read_at": read_at, "mt": torch.tensor(mt), "wt": torch.tensor(wt),
                "target": self.targets[members]}

    def collater(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """``net_input``: padded tokens and the positions to read (``masked_tokens``); per substitution the
        row of the read logits (row-major), mutant and wild-type ids and its variant; per variant a target."""
        if not samples:
            return {}
        tokens = data_utils.collate_tokens([s["tokens"] for s in samples], self.alphabet.padding_idx, left_pad=False)
        read = torch.zeros_like(tokens, dtype=torch.bool)
        rows, variant, first_row, first_variant = [], [], 0, 0
        for b, s in enumerate(samples):
            read[b, s["read_at"]] = True
            n, k = s["mt"].shape
            rows.append((first_row + torch.arange(k)).repeat(n))
            variant.append((first_variant + torch.arange(n)).repeat_interleave(k))
            first_row, first_variant = first_row + k, first_variant + n
        return {
            "id": torch.tensor([s["id"] for s in samples], dtype=torch.long),
            "nsentences": len(samples),
            "ntokens": sum(len(s["tokens"]) for s in samples),
            "net_input": {"src_tokens": tokens, "masked_tokens": read},
            "rows": torch.cat(rows),
            "mt": torch.cat([s["mt"].reshape(-1) for s in samples]),
            "wt": torch.cat([s["wt"].reshape(-1) for s in samples]),
            "variant": torch.cat(variant),
            "target": torch.cat([s["target"] for s in samples]),
        }
