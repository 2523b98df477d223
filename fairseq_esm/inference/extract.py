"""Representations of many proteins: chosen layers per token, their mean over residues, ``<cls>``,
contacts and attention maps, computed in token-budget batches of similar length.

Proteins longer than the model's context are cut into overlapping windows whose overlapping
positions are averaged (``long="window"``), or cut to their first residues (``long="truncate"``).
:func:`extract_representations` is a generator over ``(record number, result)``, so the CLI's
writers, scoring and benchmarks share it. Result dicts use fair-esm's ``esm-extract`` keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from fairseq_esm.inference.choices import LONG_MODES
from fairseq_esm.modules.alphabet import Alphabet
from fairseq_esm.modules.batching import length_batches, pad_tokens, residue_budget, windows
from fairseq_esm.modules.esm1 import ESM1

Span = tuple[int, int]  # half-open residue range of one forward pass


@dataclass(frozen=True)
class ExtractSpec:
    """What to compute (layers already resolved to 0..num_layers) and how to cut long proteins."""

    layers: tuple[int, ...]
    include: frozenset[str] = frozenset({"mean"})
    long: str = "window"
    max_residues: int | None = None  # residues per forward pass; None: the model's whole context
    overlap: int | None = None  # residues shared by consecutive windows; None: a quarter of a window
    toks_per_batch: int = 4096


@dataclass
class ExtractStats:
    """Counts for the run summary: proteins and residues done, how many were windowed or truncated."""

    sequences: int = 0
    residues: int = 0
    windowed: int = 0
    truncated: int = 0
    forward_rows: int = 0


def resolve_layers(layers: Iterable[int], num_layers: int) -> tuple[int, ...]:
    """fair-esm's layer numbering: 0 is the embedding, -1 the last layer; duplicates dropped, order kept."""
    resolved: list[int] = []
    for layer in layers:
        if not -(num_layers + 1) <= layer <= num_layers:
            raise ValueError(f"layer {layer} does not exist: the model has layers 0..{num_layers} "
                             f"(or -{num_layers + 1}..-1 counting from the end)")
        layer %= num_layers + 1
        if layer not in resolved:
            resolved.append(layer)
    return tuple(resolved)


def window_geometry(model: ESM1, alphabet: Alphabet, spec: ExtractSpec) -> tuple[int, int]:
    """(residues per forward pass, window overlap), checked against the model's context."""
    budget = residue_budget(model.max_positions(), alphabet)
    size = spec.max_residues if spec.max_residues is not None else budget
    if not 0 < size <= budget:
        raise ValueError(f"--max-residues {size}: the model's context holds 1..{budget} residues per pass")
    overlap = spec.overlap if spec.overlap is not None else size // 4
    if not 0 <= overlap < size:
        raise ValueError(f"--window-overlap {overlap}: must be at least 0 and below the window size {size}")
    return size, overlap


def plan_spans(lengths: Sequence[int], size: int, overlap: int, long: str) -> list[list[Span]]:
    """The forward passes of every protein: one span if it fits, else windows or its first ``size`` residues."""
    if long not in LONG_MODES:
        raise ValueError(f"long={long!r}: expected one of {LONG_MODES}")
    if long == "truncate":
        return [[(0, min(n, size))] for n in lengths]
    return [windows(n, size, overlap) for n in lengths]


def check_plan(plans: Sequence[list[Span]], labels: Sequence[str], include: frozenset[str]) -> None:
    """Refuse empty proteins, and attention maps of windowed ones (each row is a softmax over its own window)."""
    empty = [label for label, spans in zip(labels, plans) if spans[-1][1] == 0]
    if empty:
        raise ValueError(f"{len(empty)} protein(s) without residues (e.g. {empty[0]}): nothing to represent")
    long = [label for label, spans in zip(labels, plans) if len(spans) > 1]
    if "attentions" in include and long:
        raise ValueError(f"attentions asked for {len(long)} protein(s) longer than one window (e.g. {long[0]}): "
                         "their maps cannot be stitched; pass --long truncate or drop 'attentions' from --include")


@torch.inference_mode()
def _forward(model: ESM1, tokens: Tensor, spec: ExtractSpec) -> dict:
    """One padded batch -> the requested outputs on the CPU in float32, batch first."""
    out = model(tokens, repr_layers=spec.layers, need_head_weights="attentions" in spec.include,
                return_contacts="contacts" in spec.include)
    keep = {"representations": {k: v.to("cpu", torch.float32) for k, v in out["representations"].items()}}
    for key in ("contacts", "attentions"):
        if key in out and key in spec.include:
            keep[key] = out[key].to("cpu", torch.float32)
    return keep


class _Stitch:
    """Sums of the per-window outputs of one long protein; overlapping positions are averaged at the end."""

    def __init__(self, length: int, pieces: int) -> None:
        self.length, self.missing = length, pieces
        self.sums: dict[int, Tensor] = {}
        self.bos: dict[int, Tensor] = {}
        self.counts = torch.zeros(length, 1)
        self.contact_sums = self.contact_counts = None

    def add(self, span: Span, per_tok: dict[int, Tensor], bos: dict[int, Tensor], contacts: Tensor | None) -> None:
        start, end = span
        for layer, rep in per_tok.items():
            self.sums.setdefault(layer, torch.zeros(self.length, rep.size(-1)))[start:end] += rep
        if start == 0:  # <cls> of the first window: the one that saw the protein's start
            self.bos = {layer: rep.clone() for layer, rep in bos.items()}  # not a view: frees the batch
        self.counts[start:end] += 1
        if contacts is not None:
            if self.contact_sums is None:
                self.contact_sums = torch.zeros(self.length, self.length)
                self.contact_counts = torch.zeros(self.length, self.length)
            self.contact_sums[start:end, start:end] += contacts
            self.contact_counts[start:end, start:end] += 1
        self.missing -= 1

    def outputs(self) -> tuple[dict[int, Tensor], dict[int, Tensor], Tensor | None]:
        """Averaged per-token representations, ``<cls>`` of the first window, contacts (NaN: no shared window)."""
        per_tok = {layer: total / self.counts for layer, total in self.sums.items()}
        contacts = None
        if self.contact_sums is not None:
            contacts = torch.where(self.contact_counts > 0, self.contact_sums / self.contact_counts.clamp(min=1),
                                   torch.full_like(self.contact_sums, float("nan")))
        return per_tok, self.bos, contacts


def _result(label: str, include: frozenset[str], per_tok: dict[int, Tensor], bos: dict[int, Tensor],
            contacts: Tensor | None = None, attentions: Tensor | None = None) -> dict:
    """fair-esm's per-protein dict; ``clone`` so a result never keeps its whole batch alive."""
    result: dict = {"label": label}
    if "per_tok" in include:
        result["representations"] = {layer: rep.clone() for layer, rep in per_tok.items()}
    if "mean" in include:
        result["mean_representations"] = {layer: rep.mean(0) for layer, rep in per_tok.items()}
    if "bos" in include:
        result["bos_representations"] = {layer: rep.clone() for layer, rep in bos.items()}
    if contacts is not None:
        result["contacts"] = contacts.clone()
    if attentions is not None:
        result["attentions"] = attentions.clone()
    return result


def _row(out: dict, row: int, n: int, n_tokens: int, first: int) -> tuple:
    """One batch row's outputs: per-token and ``<cls>`` representations, contacts, attentions (or None)."""
    reps = out["representations"]
    per_tok = {layer: rep[row, first : first + n] for layer, rep in reps.items()}
    bos = {layer: rep[row, 0] for layer, rep in reps.items()}
    contacts = out["contacts"][row, :n, :n] if "contacts" in out else None
    attentions = out["attentions"][row, ..., :n_tokens, :n_tokens] if "attentions" in out else None
    return per_tok, bos, contacts, attentions


def extract_representations(
    model: ESM1,
    alphabet: Alphabet,
    records: Sequence[tuple[str, str]],
    spec: ExtractSpec,
    stats: ExtractStats | None = None,
) -> Iterator[tuple[int, dict]]:
    """``(index into records, result)`` for every ``(label, sequence)``, in batch order (longest first).

    Runs on the model's device and dtype; results are float32 CPU tensors: ``representations``
    {layer: (L, C)}, ``mean_representations`` / ``bos_representations`` {layer: (C,)}, ``contacts`` (L, L),
    ``attentions`` (layers, heads, T, T) over all T tokens the model saw (``<cls>`` and ``<eos>`` included).
    """
    stats = stats if stats is not None else ExtractStats()
    device = next(model.parameters()).device
    size, overlap = window_geometry(model, alphabet, spec)
    plans = plan_spans([len(seq) for _, seq in records], size, overlap, spec.long)
    check_plan(plans, [label for label, _ in records], spec.include)
    pieces = [(index, span) for index, spans in enumerate(plans) for span in spans]
    specials, first = alphabet.num_specials_added, int(alphabet.prepend_bos)
    stitches: dict[int, _Stitch] = {}
    for batch in length_batches([end - start + specials for _, (start, end) in pieces], spec.toks_per_batch):
        chosen = [pieces[i] for i in batch]
        tokens = [alphabet.tokenize(records[index][1][start:end]) for index, (start, end) in chosen]
        out = _forward(model, pad_tokens(tokens, alphabet.padding_idx).to(device), spec)
        stats.forward_rows += len(chosen)
        for row, (index, (start, end)) in enumerate(chosen):
            label, sequence = records[index]
            per_tok, bos, contacts, attentions = _row(out, row, end - start, len(tokens[row]), first)
            if len(plans[index]) == 1:
                stats.truncated += int(end < len(sequence))
                stats.sequences, stats.residues = stats.sequences + 1, stats.residues + end
                yield index, _result(label, spec.include, per_tok, bos, contacts, attentions)
                continue
            stitch = stitches.setdefault(index, _Stitch(len(sequence), len(plans[index])))
            stitch.add((start, end), per_tok, bos, contacts)
            if not stitch.missing:
                del stitches[index]
                stats.windowed += 1
                stats.sequences, stats.residues = stats.sequences + 1, stats.residues + len(sequence)
                yield index, _result(label, spec.include, *stitch.outputs())


def residue_representations(model: ESM1, alphabet: Alphabet, sequences: Sequence[str], layer: int = -1,
                            toks_per_batch: int = 4096, desc: str = "representations",
                            progress: bool = False) -> list[np.ndarray]:
    """(L, C) float32 representations of ``layer`` (fair-esm numbering, -1 = last) per sequence, in input order."""
    chosen = resolve_layers([layer], model.num_layers)[0]
    spec = ExtractSpec(layers=(chosen,), include=frozenset({"per_tok"}), toks_per_batch=toks_per_batch)
    out: list[np.ndarray] = [np.empty(0)] * len(sequences)
    records = [(str(i), seq) for i, seq in enumerate(sequences)]
    for index, result in tqdm(extract_representations(model, alphabet, records, spec), total=len(records),
                              desc=desc, unit="protein", disable=not progress):
        out[index] = result["representations"][chosen].numpy()
    return out
