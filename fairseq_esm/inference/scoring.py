"""Masked-LM scores of whole sequences: pseudo-log-likelihood (every residue masked in turn) and the
exponentiated cross-entropy (ECE) of one seeded random masking, the paper's held-out metric.

Everything runs as :class:`Query` objects (tokens, positions to mask, positions to read) batched
under a token budget, so one protein's masked copies and many proteins share forward passes.
A protein longer than the model's context is scored in windows: each masked copy is cut to the
window of ``residue_budget`` residues centred on its masked position (clipped at the protein's
ends), so every residue is predicted with as much context on both sides as the model can take.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from fairseq_esm.data.masking import MaskingScheme
from fairseq_esm.modules.alphabet import Alphabet
from fairseq_esm.modules.batching import centred_window, length_batches, pad_tokens, residue_budget
from fairseq_esm.modules.esm1 import ESM1
from fairseq_esm.tasks.protein_mlm import held_out_masking


@dataclass(frozen=True, eq=False)
class Query:
    """One forward pass row: ``tokens`` (T,) with ``mask_at`` set to ``<mask>``; log-probs wanted at
    ``read_at`` (token positions, ascending)."""

    tokens: torch.Tensor
    mask_at: tuple[int, ...]
    read_at: tuple[int, ...]


@torch.inference_mode()
def log_probs(model: ESM1, queries: Sequence[Query], mask_idx: int, pad_idx: int,
              toks_per_batch: int = 4096) -> list[torch.Tensor]:
    """Per query, (len(read_at), V) float32 log-probabilities on the CPU, in ``read_at`` order."""
    device = next(model.parameters()).device
    out: list[torch.Tensor] = [torch.empty(0)] * len(queries)
    for batch in length_batches([len(q.tokens) for q in queries], toks_per_batch):
        tokens = pad_tokens([queries[i].tokens for i in batch], pad_idx)  # (B, T)
        read = torch.zeros_like(tokens, dtype=torch.bool)
        for row, i in enumerate(batch):
            tokens[row, list(queries[i].mask_at)] = mask_idx
            read[row, list(queries[i].read_at)] = True
        # only project the positions we read: (N, V) in row-major order of ``read``
        logits = model(tokens.to(device), masked_tokens=read.to(device))["logits"]
        rows = torch.log_softmax(logits.float(), dim=-1).cpu().split(read.sum(1).tolist())
        for i, block in zip(batch, rows):
            out[i] = block
    return out


def window_query(alphabet: Alphabet, sequence: str, residues: Sequence[int], budget: int,
                 masked: bool = True) -> Query:
    """A query reading ``residues`` (0-based, ascending) of ``sequence``, masked or not, in their window."""
    start, end = centred_window(residues[0], residues[-1], len(sequence), budget)
    shift = int(alphabet.prepend_bos) - start
    at = tuple(r + shift for r in residues)
    return Query(alphabet.tokenize(sequence[start:end]), at if masked else (), at)


def pll_queries(alphabet: Alphabet, sequence: str, budget: int) -> list[Query]:
    """One masked copy per residue, cut to its centred window when the protein is too long; copies
    in the same window share one token tensor (the mask is applied when the batch is built)."""
    windows: dict[tuple[int, int], torch.Tensor] = {}
    queries = []
    for i in range(len(sequence)):
        start, end = centred_window(i, i, len(sequence), budget)
        if (start, end) not in windows:
            windows[start, end] = alphabet.tokenize(sequence[start:end])
        at = (i + int(alphabet.prepend_bos) - start,)
        queries.append(Query(windows[start, end], at, at))
    return queries


def true_log_probs(alphabet: Alphabet, sequence: str, rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """(L,) log p(true residue) from one (1, V) row per residue."""
    targets = torch.tensor(alphabet.encode_residues(sequence))
    return torch.cat(list(rows)).gather(1, targets[:, None])[:, 0]


def pseudo_log_likelihoods(model: ESM1, alphabet: Alphabet, sequences: Sequence[str],
                           toks_per_batch: int = 4096) -> list[float]:
    """PLL of each sequence: sum over residues of log p(residue | all others), each masked in turn."""
    budget = residue_budget(model.max_positions(), alphabet)
    queries, spans = [], []
    for sequence in sequences:
        spans.append((len(queries), len(queries) + len(sequence)))
        queries += pll_queries(alphabet, sequence, budget)
    rows = log_probs(model, queries, alphabet.mask_idx, alphabet.padding_idx, toks_per_batch)
    return [float(true_log_probs(alphabet, s, rows[a:b]).double().sum()) for s, (a, b) in zip(sequences, spans)]


def pseudo_perplexity(pll: float, length: int) -> float:
    """exp(-PLL / L): 1 for a perfect model, 20 for a uniform guess over the amino acids."""
    return math.exp(-pll / length)


def random_mask_losses(model: ESM1, alphabet: Alphabet, sequences: Iterable[tuple[int, str]],
                       seed: int, scheme: MaskingScheme, toks_per_batch: int = 4096) -> list[tuple[float, int]]:
    """(sum of cross-entropy in nats, number of targets) per ``(record index, sequence)``, masked as
    ``fairseq-validate`` masks record ``index`` of a held-out split with ``--seed seed``."""
    budget = residue_budget(model.max_positions(), alphabet)
    queries, targets = [], []
    for index, sequence in sequences:
        source, target = held_out_masking(alphabet, sequence, index, seed, scheme, budget)
        at = np.flatnonzero(target != alphabet.padding_idx)
        queries.append(Query(torch.from_numpy(source), (), tuple(at.tolist())))
        targets.append(torch.from_numpy(target[at]))
    results = [(0.0, 0)] * len(queries)
    todo = [i for i, t in enumerate(targets) if len(t)]  # a protein too short to get a target costs nothing
    rows = log_probs(model, [queries[i] for i in todo], alphabet.mask_idx, alphabet.padding_idx, toks_per_batch)
    for i, block in zip(todo, rows):
        results[i] = (-float(block.gather(1, targets[i][:, None]).double().sum()), len(targets[i]))
    return results
