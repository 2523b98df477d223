"""Masked-LM scores of whole sequences: pseudo-log-likelihood (every residue masked in turn) and the
exponentiated cross-entropy (ECE) of one seeded random masking, the paper's held-out metric.

Everything runs as :class:`Query` objects (tokens, positions to mask, positions to read) batched
under a token budget, so one protein's masked copies and many proteins share forward passes.
A protein longer than the model's context is scored in windows: each masked copy is cut to the
window of ``residue_budget`` residues centred on its masked position (clipped at the protein's
ends), so every residue is predicted with as much context on both sides as the model can take.

PLL costs one masked copy per residue: :func:`pll_workload` says how many copies, tokens and forward
passes a job takes before it runs, and ``progress=True`` shows a bar over the copies. The copies go through
the model in padded batches under the token budget, longest first, only the masked rows projected to the
vocabulary; :func:`pseudo_log_likelihoods` with ``batch=False`` runs the reference loop instead, one copy
per forward, which the tests and ``benchmarks/pll_speed.py`` compare it with.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from tqdm import tqdm

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


#: ``progress`` of the scoring functions: False or None (no bar), True (a tqdm bar of the call's own on stderr) or an
#: open tqdm bar that the call advances by one per model row and leaves open (one bar over several calls)
Progress = Optional[Union[bool, tqdm]]


@contextmanager
def progress_bar(progress: Progress, total: int, desc: str = "masked copies") -> Iterator[Optional[tqdm]]:
    """The bar ``progress`` asks for: None, a new bar over ``total`` items (closed on exit), or the caller's."""
    if progress is False or progress is None:
        yield None
    elif progress is True:
        with tqdm(total=total, desc=desc, unit="copy", dynamic_ncols=True) as bar:
            yield bar
    else:
        yield progress


@dataclass(frozen=True)
class Workload:
    """The size of a masked-copy job, known before it runs (:func:`pll_workload`, ``variant_workload``)."""

    sequences: int = 0  # sequences scored (for variants: the wild type and the distinct mutants)
    copies: int = 0  # masked copies run through the model, one row of a forward pass each
    tokens: int = 0  # their tokens, <cls>/<eos> included, before padding
    padded_tokens: int = 0  # tokens of the padded batches
    forwards: int = 0  # forward passes under the token budget
    unshared_copies: int = 0  # copies without any sharing: one per residue of every sequence

    def __add__(self, other: Workload) -> Workload:
        return Workload(*(a + b for a, b in zip(astuple(self), astuple(other))))

    @classmethod
    def of_rows(cls, lengths: Sequence[int], toks_per_batch: int, sequences: int,
                unshared_copies: Optional[int] = None) -> Workload:
        """The workload of model rows of these token ``lengths``, batched as :func:`log_probs` batches them."""
        batches = length_batches(lengths, toks_per_batch)
        padded = sum(len(batch) * lengths[batch[0]] for batch in batches)  # row 0 is the batch's longest
        return cls(sequences, len(lengths), int(sum(lengths)), padded, len(batches),
                   len(lengths) if unshared_copies is None else unshared_copies)


@torch.inference_mode()
def log_probs(model: ESM1, queries: Sequence[Query], mask_idx: int, pad_idx: int,
              toks_per_batch: int = 4096, *, progress: Progress = False) -> list[torch.Tensor]:
    """Per query, (len(read_at), V) float32 log-probabilities on the CPU, in ``read_at`` order; padded batches of
    at most ``toks_per_batch`` tokens, longest first (a query longer than that runs alone)."""
    device = next(model.parameters()).device
    out: list[torch.Tensor] = [torch.empty(0)] * len(queries)
    with progress_bar(progress, len(queries)) as bar:
        for batch in length_batches([len(q.tokens) for q in queries], toks_per_batch):
            out_rows = _batch_log_probs(model, [queries[i] for i in batch], mask_idx, pad_idx, device)
            for i, block in zip(batch, out_rows):
                out[i] = block
            if bar is not None:
                bar.update(len(batch))
    return out


def _batch_log_probs(model: ESM1, queries: Sequence[Query], mask_idx: int, pad_idx: int,
                     device: torch.device) -> tuple[torch.Tensor, ...]:
    """One padded forward pass of ``queries``: their (len(read_at), V) log-probability blocks."""
    tokens = pad_tokens([q.tokens for q in queries], pad_idx)  # (B, T)
    read = torch.zeros_like(tokens, dtype=torch.bool)
    for row, query in enumerate(queries):
        tokens[row, list(query.mask_at)] = mask_idx
        read[row, list(query.read_at)] = True
    # only project the positions we read: (N, V) in row-major order of ``read``
    logits = model(tokens.to(device), masked_tokens=read.to(device))["logits"]
    return torch.log_softmax(logits.float(), dim=-1).cpu().split(read.sum(1).tolist())


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


def pll_workload(model: ESM1, alphabet: Alphabet, sequences: Sequence[Union[str, int]],
                 toks_per_batch: int = 4096) -> Workload:
    """What :func:`pseudo_log_likelihoods` will run for ``sequences`` (or just their lengths) before it runs: one
    masked copy per residue, cut to the model's context, batched under ``toks_per_batch``."""
    budget = residue_budget(model.max_positions(), alphabet)
    lengths = [len(s) if isinstance(s, str) else int(s) for s in sequences]
    rows = [min(n, budget) + alphabet.num_specials_added for n in lengths for _ in range(n)]
    return Workload.of_rows(rows, toks_per_batch, len(lengths))


def pseudo_log_likelihoods(model: ESM1, alphabet: Alphabet, sequences: Sequence[str],
                           toks_per_batch: int = 4096, *, batch: bool = True,
                           progress: Progress = False) -> list[float]:
    """PLL of each sequence: sum over residues of log p(residue | all others), each masked in turn.

    The masked copies of all ``sequences`` share padded forward passes of at most ``toks_per_batch`` tokens
    (:func:`pll_workload` counts them); ``batch=False`` is the reference loop, one copy per forward.
    ``progress`` (see :data:`Progress`) advances by one per copy."""
    with progress_bar(progress, sum(len(s) for s in sequences)) as bar:
        if not batch:
            return _pll_one_copy_at_a_time(model, alphabet, sequences, bar)
        budget = residue_budget(model.max_positions(), alphabet)
        queries, spans = [], []
        for sequence in sequences:
            spans.append((len(queries), len(queries) + len(sequence)))
            queries += pll_queries(alphabet, sequence, budget)
        rows = log_probs(model, queries, alphabet.mask_idx, alphabet.padding_idx, toks_per_batch,
                         progress=bar)
    return [float(true_log_probs(alphabet, s, rows[a:b]).double().sum()) for s, (a, b) in zip(sequences, spans)]


@torch.inference_mode()
def _pll_one_copy_at_a_time(model: ESM1, alphabet: Alphabet, sequences: Sequence[str],
                            bar: Optional[tqdm] = None) -> list[float]:
    """The reference PLL: per residue, its window's tokens cloned, that residue set to ``<mask>``, one forward of
    the whole vocabulary, log-softmax, the true residue's log-probability (fair-esm's recipe, windows added)."""
    device = next(model.parameters()).device
    budget = residue_budget(model.max_positions(), alphabet)
    plls = []
    for sequence in sequences:
        targets = alphabet.encode_residues(sequence)
        total = 0.0
        for i in range(len(sequence)):
            start, end = centred_window(i, i, len(sequence), budget)
            tokens = alphabet.tokenize(sequence[start:end])[None].to(device)  # (1, T)
            at = i + int(alphabet.prepend_bos) - start
            tokens[0, at] = alphabet.mask_idx
            logits = model(tokens)["logits"][0, at]
            total += float(torch.log_softmax(logits.float(), dim=-1)[targets[i]])
            if bar is not None:
                bar.update(1)
        plls.append(total)
    return plls


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
