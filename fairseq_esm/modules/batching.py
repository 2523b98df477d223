"""Proteins to model inputs: tokenizing, padding, token-budget batches sorted by length, and
overlapping windows for proteins longer than the model's context."""

from __future__ import annotations

from typing import Sequence

import torch

from fairseq_esm.modules.alphabet import Alphabet


def residue_budget(model_max_positions: int, alphabet: Alphabet) -> int:
    """Residues that fit in one forward pass (positions minus ``<cls>``/``<eos>``)."""
    return model_max_positions - alphabet.num_specials_added


def pad_tokens(token_lists: Sequence[torch.Tensor], pad: int) -> torch.Tensor:
    """1-D token tensors -> (B, T) right-padded with ``pad``."""
    width = max(len(t) for t in token_lists)
    batch = torch.full((len(token_lists), width), pad, dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        batch[row, : len(tokens)] = tokens
    return batch


def length_batches(lengths: Sequence[int], toks_per_batch: int) -> list[list[int]]:
    """Indices grouped so each padded batch holds at most ``toks_per_batch`` tokens (longest first;
    a single protein longer than the budget gets a batch of its own). Every index appears once."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        width = lengths[current[0]] if current else lengths[index]  # longest first: row 0 sets the width
        if current and width * (len(current) + 1) > toks_per_batch:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def windows(length: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Half-open residue windows of at most ``size`` covering ``[0, length)``, consecutive ones
    sharing at least ``overlap`` residues; the last window ends exactly at ``length``."""
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(f"need 0 <= overlap ({overlap}) < window size ({size})")
    if length <= size:
        return [(0, length)]
    step = size - overlap
    starts = list(range(0, length - size, step)) + [length - size]
    return [(s, s + size) for s in starts]


def centred_window(first: int, last: int, length: int, budget: int) -> tuple[int, int]:
    """Residues ``[start, end)``, at most ``budget`` long, centred on ``first..last`` and clipped to
    the protein; it contains both whenever ``last - first < budget``."""
    if length <= budget:
        return 0, length
    start = (first + last + 1) // 2 - budget // 2
    start = min(max(start, 0), length - budget)
    return start, start + budget
