"""Zero-shot variant effects from a masked LM, the four strategies of Meier et al. 2021 (*Language
models enable zero-shot prediction of the effects of mutations on protein function*), section 3.

With ``M`` the mutated positions, ``x`` the wild type and ``x'`` the mutant:

* masked-marginal: sum over M of log p(x'_i | x with M masked) - log p(x_i | x with M masked)
  (``joint``, the paper's formula); ``additive`` masks each position alone and adds, as ESM-1v's
  scripts do for multi-mutants. One forward per distinct set of positions, so a table of single
  mutants costs at most L forwards, however many rows it has.
* wt-marginal: the same log-ratio read from one unmasked forward of the wild type.
* mutant-marginal: log p(x'_i | x') - log p(x_i | x'), one unmasked forward per mutant.
* pseudo-likelihood: PLL(x') - PLL(x), L masked forwards per mutant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from fairseq_esm.inference.choices import MULTI_MODES, STRATEGIES
from fairseq_esm.inference.scoring import Query, log_probs, pseudo_log_likelihoods, window_query
from fairseq_esm.io.mutations import Variant, mutant_sequence
from fairseq_esm.modules.alphabet import Alphabet
from fairseq_esm.modules.batching import residue_budget, windows
from fairseq_esm.modules.esm1 import ESM1

PLL_CHUNK = 32  # sequences whose masked copies are built at once (L queries each)


@dataclass
class VariantScores:
    """One score per variant (higher: the model favours the mutant more) and the sequences it ran."""

    scores: list[float]
    forwards: int


def needs_one_window(strategy: str, multi: str = "joint") -> bool:
    """Whether all of a variant's positions must fit in one model context for this strategy."""
    return strategy == "mutant-marginal" or (strategy == "masked-marginal" and multi == "joint")


def variant_span(variant: Variant) -> int:
    """Residues from the first to the last mutated position, both included."""
    return variant[-1].index - variant[0].index + 1


def score_variants(model: ESM1, alphabet: Alphabet, wild_type: str, variants: Sequence[Variant],
                   strategy: str = "masked-marginal", toks_per_batch: int = 4096, multi: str = "joint"
                   ) -> VariantScores:
    """Score every variant of ``wild_type`` (checked with :func:`mutations.check_variant`) by ``strategy``."""
    if strategy not in STRATEGIES or multi not in MULTI_MODES:
        raise ValueError(f"unknown strategy {strategy!r} / multi-mutant mode {multi!r}")
    budget = residue_budget(model.max_positions(), alphabet)
    if needs_one_window(strategy, multi):
        too_wide = [v for v in variants if variant_span(v) > budget]
        if too_wide:
            raise ValueError(f"{len(too_wide)} variants span more than the model's {budget} residues")
    if strategy == "pseudo-likelihood":
        return _pseudo_likelihood(model, alphabet, wild_type, variants, toks_per_batch)
    scorer = {"masked-marginal": _masked_marginal, "wt-marginal": _wt_marginal,
              "mutant-marginal": _mutant_marginal}[strategy]
    queries, combine = scorer(alphabet, wild_type, list(variants), budget, multi)
    rows = log_probs(model, queries, alphabet.mask_idx, alphabet.padding_idx, toks_per_batch)
    return VariantScores(combine(rows), len(queries))


def _log_ratio(alphabet: Alphabet, variant: Variant, rows: torch.Tensor) -> float:
    """sum_i log p(mt_i) - log p(wt_i), with ``rows`` (len(variant), V) in the variant's order."""
    mt = torch.tensor([alphabet.index(m.mt) for m in variant])
    wt = torch.tensor([alphabet.index(m.wt) for m in variant])
    picked = torch.arange(len(variant))
    return float((rows[picked, mt] - rows[picked, wt]).double().sum())


def _masked_marginal(alphabet, wild_type, variants, budget, multi):
    """One masked copy per distinct position set (joint) or per distinct position (additive)."""
    def key_sets(v: Variant) -> list[tuple[int, ...]]:
        return [tuple(m.index for m in v)] if multi == "joint" else [(m.index,) for m in v]

    keys = sorted({key for v in variants for key in key_sets(v)})
    slot = {key: i for i, key in enumerate(keys)}
    queries = [window_query(alphabet, wild_type, key, budget) for key in keys]

    def combine(rows):
        return [_log_ratio(alphabet, v, torch.cat([rows[slot[key]] for key in key_sets(v)])) for v in variants]

    return queries, combine


def _wt_marginal(alphabet, wild_type, variants, budget, multi):
    """Unmasked wild type; a long one in half-overlapping windows, each position read where most central."""
    wanted = sorted({m.index for v in variants for m in v})
    spans = windows(len(wild_type), budget, budget // 2)
    home = {i: max(spans, key=lambda s: min(i - s[0], s[1] - 1 - i)) for i in wanted}
    queries, where = [], {}
    for start, end in spans:
        mine = [i for i in wanted if home[i] == (start, end)]
        if mine:
            tokens = alphabet.tokenize(wild_type[start:end])
            shift = int(alphabet.prepend_bos) - start
            queries.append(Query(tokens, (), tuple(i + shift for i in mine)))
            where.update({i: (len(queries) - 1, row) for row, i in enumerate(mine)})

    def combine(rows):
        return [_log_ratio(alphabet, v, torch.stack([rows[where[m.index][0]][where[m.index][1]] for m in v]))
                for v in variants]

    return queries, combine


def _mutant_marginal(alphabet, wild_type, variants, budget, multi):
    """One unmasked forward per distinct mutant, in the window centred on its mutations."""
    distinct = sorted(set(variants))
    slot = {v: i for i, v in enumerate(distinct)}
    queries = [window_query(alphabet, mutant_sequence(wild_type, v), [m.index for m in v], budget, masked=False)
               for v in distinct]

    def combine(rows):
        return [_log_ratio(alphabet, v, rows[slot[v]]) for v in variants]

    return queries, combine


def _pseudo_likelihood(model: ESM1, alphabet: Alphabet, wild_type: str, variants: Sequence[Variant],
                       toks_per_batch: int) -> VariantScores:
    """PLL of the wild type and of each distinct mutant, a few sequences at a time to bound memory."""
    mutants = {v: mutant_sequence(wild_type, v) for v in variants}
    sequences = [wild_type] + sorted(set(mutants.values()) - {wild_type})
    pll: dict[str, float] = {}
    for start in range(0, len(sequences), PLL_CHUNK):
        chunk = sequences[start : start + PLL_CHUNK]
        pll.update(zip(chunk, pseudo_log_likelihoods(model, alphabet, chunk, toks_per_batch)))
    return VariantScores([pll[mutants[v]] - pll[wild_type] for v in variants], len(sequences) * len(wild_type))
