"""Zero-shot variant effects from a masked LM, the four strategies of Meier et al. 2021 (*Language
models enable zero-shot prediction of the effects of mutations on protein function*), section 3.

With ``M`` the mutated positions, ``x`` the wild type and ``x'`` the mutant:

* masked-marginal: sum over M of log p(x'_i | x with M masked) - log p(x_i | x with M masked)
  (``joint``, the paper's formula); ``additive`` masks each position alone and adds, as ESM-1v's
  scripts do for multi-mutants. One forward per distinct set of positions, so a table of single
  mutants costs at most L forwards, however many rows it has.
* wt-marginal: the same log-ratio read from one unmasked forward of the wild type.
* mutant-marginal: log p(x'_i | x') - log p(x_i | x'), one unmasked forward per mutant.
* pseudo-likelihood: PLL(x') - PLL(x), L masked copies per sequence, each distinct masked input run once:
  the mutant masked at its mutated residue *is* the wild type masked there, so is every copy of a long
  protein whose window leaves the mutations out, and a double mutant masked at one of its residues is the
  single mutant of the other masked there. :func:`variant_workload` counts the copies before they run.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from fairseq_esm.inference.choices import MULTI_MODES, STRATEGIES
from fairseq_esm.inference.scoring import (
    Progress,
    Query,
    Workload,
    log_probs,
    progress_bar,
    pseudo_log_likelihoods,
    window_query,
)
from fairseq_esm.io.mutations import Variant, mutant_sequence
from fairseq_esm.modules.alphabet import Alphabet
from fairseq_esm.modules.batching import centred_window, residue_budget, windows
from fairseq_esm.modules.esm1 import ESM1

PLL_CHUNK = 32  # sequences whose masked copies are built at once (L queries each) when copies are not shared
PLL_CHUNK_COPIES = 8192  # shared masked copies built and run at once (their token tensors are held together)


@dataclass
class VariantScores:
    """One score per variant (higher: the model favours the mutant more) and the sequences it ran.

    ``forwards`` counts the model rows the scores rest on (for pseudo-likelihood L per distinct sequence, the
    wild type included, as if none were shared); ``computed`` the rows actually run once identical masked
    inputs are shared (the same as ``forwards`` for the other strategies)."""

    scores: list[float]
    forwards: int
    computed: Optional[int] = field(default=None)

    def __post_init__(self) -> None:
        if self.computed is None:
            self.computed = self.forwards


def needs_one_window(strategy: str, multi: str = "joint") -> bool:
    """Whether all of a variant's positions must fit in one model context for this strategy."""
    return strategy == "mutant-marginal" or (strategy == "masked-marginal" and multi == "joint")


def variant_span(variant: Variant) -> int:
    """Residues from the first to the last mutated position, both included."""
    return variant[-1].index - variant[0].index + 1


def _check_width(strategy: str, multi: str, variants: Sequence[Variant], budget: int) -> None:
    """Refuse an unknown strategy, or variants wider than one context where the strategy needs one."""
    if strategy not in STRATEGIES or multi not in MULTI_MODES:
        raise ValueError(f"unknown strategy {strategy!r} / multi-mutant mode {multi!r}")
    if needs_one_window(strategy, multi):
        too_wide = [v for v in variants if variant_span(v) > budget]
        if too_wide:
            raise ValueError(f"{len(too_wide)} variants span more than the model's {budget} residues")


def score_variants(model: ESM1, alphabet: Alphabet, wild_type: str, variants: Sequence[Variant],
                   strategy: str = "masked-marginal", toks_per_batch: int = 4096, multi: str = "joint", *,
                   progress: Progress = False) -> VariantScores:
    """Score every variant of ``wild_type`` (checked with :func:`mutations.check_variant`) by ``strategy``;
    ``progress=True`` shows a bar over the model rows (:func:`variant_workload` counts them beforehand)."""
    budget = residue_budget(model.max_positions(), alphabet)
    _check_width(strategy, multi, variants, budget)
    if strategy == "pseudo-likelihood":
        return _pseudo_likelihood(model, alphabet, wild_type, variants, toks_per_batch, progress=progress)
    queries, combine = _SCORERS[strategy](alphabet, wild_type, list(variants), budget, multi)
    rows = log_probs(model, queries, alphabet.mask_idx, alphabet.padding_idx, toks_per_batch, progress=progress)
    return VariantScores(combine(rows), len(queries))


def variant_workload(model: ESM1, alphabet: Alphabet, wild_type: str, variants: Sequence[Variant],
                     strategy: str = "masked-marginal", toks_per_batch: int = 4096, multi: str = "joint"
                     ) -> Workload:
    """What :func:`score_variants` with these arguments will run, before it runs: model rows (``copies``; for
    pseudo-likelihood after sharing, ``unshared_copies`` without), their tokens and forward passes.
    ``sequences``: the distinct sequences read (the wild type, plus each distinct mutant for mutant-marginal and
    pseudo-likelihood)."""
    budget = residue_budget(model.max_positions(), alphabet)
    _check_width(strategy, multi, variants, budget)
    if strategy == "pseudo-likelihood":
        plan = _pll_plan(alphabet, wild_type, variants, budget)
        total = Workload()
        for flush in _pll_flushes(plan):
            total += Workload.of_rows([plan.copy_tokens] * sum(end - first for _, first, end in flush),
                                      toks_per_batch, 0, 0)
        return Workload(len(plan.sequences), total.copies, total.tokens, total.padded_tokens, total.forwards,
                        len(plan.sequences) * len(wild_type))
    queries, _ = _SCORERS[strategy](alphabet, wild_type, list(variants), budget, multi)
    sequences = len(set(variants)) if strategy == "mutant-marginal" else 1
    return Workload.of_rows([len(q.tokens) for q in queries], toks_per_batch, sequences)


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


_SCORERS = {"masked-marginal": _masked_marginal, "wt-marginal": _wt_marginal, "mutant-marginal": _mutant_marginal}

#: a mutant as its substitutions, (0-based index, new residue) ascending, none equal to the wild type's residue
Mutations = tuple[tuple[int, str], ...]


def _mutations(wild_type: str, variant: Variant) -> Mutations:
    """The substitutions that change ``wild_type`` (a synonymous variant has none: it is the wild type)."""
    return tuple(sorted((m.index, m.mt) for m in variant if m.mt != wild_type[m.index]))


@dataclass
class _PllPlan:
    """The distinct masked inputs the PLLs of the wild type and its mutants need, and who reads each.

    The copy of a sequence masked at residue j is the window centred on j with j masked, so it depends only on
    the substitutions that lie inside that window, j's own excluded (the *context*). Copies of one context are
    computed once; each sequence reads its residues in runs (*segments*) of one context."""

    sequences: list[Mutations]  # 0: the wild type, then each distinct mutant
    contexts: list[Mutations]  # 0: no visible substitution (the wild type's own copies)
    positions: list[np.ndarray]  # per context: the residues masked in it, ascending
    segments: dict[int, list[tuple[int, int, int, int]]]  # context -> (sequence, first, end, target or -1)
    budget: int  # residues per window
    copy_tokens: int  # tokens of every copy (substitutions keep the length, so all windows are alike)

    @property
    def copies(self) -> int:
        return sum(len(p) for p in self.positions)


def _pll_plan(alphabet: Alphabet, wild_type: str, variants: Sequence[Variant], budget: int) -> _PllPlan:
    """Every sequence's residues split into segments of one context; each context's residues to mask."""
    length = len(wild_type)
    spans = np.array([centred_window(j, j, length, budget) for j in range(length)], dtype=np.int64).reshape(-1, 2)
    starts, ends = spans[:, 0], spans[:, 1]  # both ascending in j
    sequences: list[Mutations] = [()] + sorted({_mutations(wild_type, v) for v in variants} - {()})
    context_ids: dict[Mutations, int] = {}
    contexts: list[Mutations] = []
    needed: list[np.ndarray] = []
    segments: dict[int, list[tuple[int, int, int, int]]] = defaultdict(list)
    for seq, mutations in enumerate(sequences):
        new = dict(mutations)
        # the copies j whose window holds residue p form one run [lo, hi): windows only move right with j
        seen = {p: (int(np.searchsorted(ends, p, "right")), int(np.searchsorted(starts, p, "right"))) for p in new}
        cuts = sorted({0, length} | {c for p, (lo, hi) in seen.items() for c in (lo, hi, p, p + 1)})
        for first, end in zip(cuts, cuts[1:]):  # p and p + 1 are cuts: a mutated residue is a segment of its own
            visible = tuple((p, x) for p, x in mutations if seen[p][0] <= first < seen[p][1] and p != first)
            if visible not in context_ids:
                context_ids[visible] = len(contexts)
                contexts.append(visible)
                needed.append(np.zeros(length, dtype=bool))
            ctx = context_ids[visible]
            needed[ctx][first:end] = True
            segments[ctx].append((seq, first, end, alphabet.index(new[first]) if first in new else -1))
    return _PllPlan(sequences, contexts, [np.flatnonzero(n) for n in needed], dict(segments), budget,
                    min(length, budget) + alphabet.num_specials_added)


def _pll_flushes(plan: _PllPlan) -> Iterator[list[tuple[int, int, int]]]:
    """The copies in groups of :data:`PLL_CHUNK_COPIES`, each a list of ``(context, first, end)`` slices of the
    context's positions, contexts in order (a large one is split across groups)."""
    chunk = PLL_CHUNK_COPIES
    group: list[tuple[int, int, int]] = []
    size = 0
    for ctx, positions in enumerate(plan.positions):
        first = 0
        while first < len(positions):
            end = min(len(positions), first + chunk - size)
            group.append((ctx, first, end))
            size += end - first
            first = end
            if size >= chunk:
                yield group
                group, size = [], 0
    if group:
        yield group


def _apply(wild_type: str, mutations: Mutations) -> str:
    """``wild_type`` with ``mutations`` applied."""
    residues = list(wild_type)
    for index, new in mutations:
        residues[index] = new
    return "".join(residues)


def _context_queries(alphabet: Alphabet, wild_type: str, plan: _PllPlan, ctx: int, first: int, end: int
                     ) -> list[Query]:
    """The masked copies of context ``ctx`` at its positions ``first:end``; copies in one window share tokens."""
    sequence = _apply(wild_type, plan.contexts[ctx])
    tokens: dict[tuple[int, int], torch.Tensor] = {}
    queries = []
    for j in plan.positions[ctx][first:end].tolist():
        start, stop = centred_window(j, j, len(sequence), plan.budget)
        if (start, stop) not in tokens:
            tokens[start, stop] = alphabet.tokenize(sequence[start:stop])
        at = (j + int(alphabet.prepend_bos) - start,)
        queries.append(Query(tokens[start, stop], at, at))
    return queries


def _shared_plls(model: ESM1, alphabet: Alphabet, wild_type: str, plan: _PllPlan, toks_per_batch: int,
                 bar: Progress) -> np.ndarray:
    """PLL of each of ``plan.sequences`` (float64), every distinct masked copy run once."""
    targets = torch.tensor(alphabet.encode_residues(wild_type))
    plls = np.zeros(len(plan.sequences))
    pending: dict[int, list[torch.Tensor]] = defaultdict(list)  # context -> row blocks computed so far
    for flush in _pll_flushes(plan):
        queries = [q for ctx, first, end in flush for q in _context_queries(alphabet, wild_type, plan, ctx, first, end)]
        rows = iter(log_probs(model, queries, alphabet.mask_idx, alphabet.padding_idx, toks_per_batch, progress=bar))
        for ctx, first, end in flush:
            pending[ctx].append(torch.cat([next(rows) for _ in range(end - first)]))
            if end < len(plan.positions[ctx]):
                continue  # the rest of this context runs in the next group
            block, positions = torch.cat(pending.pop(ctx)), plan.positions[ctx]
            for seq, a, b, target in plan.segments[ctx]:
                at = int(np.searchsorted(positions, a))  # a..b-1 are consecutive positions of the context
                wanted = targets[a:b] if target < 0 else torch.tensor([target])
                plls[seq] += float(block[at : at + b - a].gather(1, wanted[:, None]).double().sum())
    return plls


def _pseudo_likelihood(model: ESM1, alphabet: Alphabet, wild_type: str, variants: Sequence[Variant],
                       toks_per_batch: int, *, share: bool = True, batch: bool = True,
                       progress: Progress = False) -> VariantScores:
    """PLL(mutant) - PLL(wild type). ``share``: each distinct masked input once (see :class:`_PllPlan`);
    ``share=False``: every distinct sequence's L copies, a few sequences at a time; ``batch=False``: the
    reference loop, one copy per forward, no sharing."""
    keys = [_mutations(wild_type, v) for v in variants]
    unshared = len(wild_type) * len({(), *keys})
    if share and batch:
        plan = _pll_plan(alphabet, wild_type, variants, residue_budget(model.max_positions(), alphabet))
        with progress_bar(progress, plan.copies) as bar:
            plls = _shared_plls(model, alphabet, wild_type, plan, toks_per_batch, bar)
        slot = {mutations: i for i, mutations in enumerate(plan.sequences)}
        return VariantScores([float(plls[slot[k]] - plls[0]) for k in keys], unshared, plan.copies)
    sequences = [wild_type] + sorted({_apply(wild_type, k) for k in keys if k})
    pll: dict[str, float] = {}
    with progress_bar(progress, len(sequences) * len(wild_type)) as bar:
        for start in range(0, len(sequences), PLL_CHUNK):
            chunk = sequences[start : start + PLL_CHUNK]
            pll.update(zip(chunk, pseudo_log_likelihoods(model, alphabet, chunk, toks_per_batch, batch=batch,
                                                         progress=bar)))
    return VariantScores([pll[_apply(wild_type, k)] - pll[wild_type] for k in keys], unshared)
