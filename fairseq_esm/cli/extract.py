"""``fairseq-esm-extract CHECKPOINT FASTA --out DIR``: representations of every protein of a FASTA file.

Modelled on fair-esm's ``esm-extract`` (its positional OUTPUT_DIR and underscore flags are accepted too):
chosen layers (negative counts from the end), per token, mean over residues, ``<cls>``, contacts, attention
maps; one fair-esm ``<id>.pt`` per protein or ``.npz`` shards, with ``index.tsv``. Resumable: what is already
in the output directory is skipped. Proteins longer than the model's context are windowed or truncated.

The FASTA is streamed: ``--sort-window`` proteins at a time are sorted by length and batched, so the sequences
held do not grow with the file (the output directory's index, kept for resume and naming, still does: about
1 KB per protein). ``--shard I/N`` computes the proteins k with k mod N = I, so N processes (on one machine or
many sharing a file system) split one FASTA into one output directory.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fairseq_esm.cli.common import (
    UsageError,
    add_alias,
    add_model_args,
    add_out,
    add_positional_out,
    add_progress,
    apply_threads,
    load_inference_model,
    out_or_positional,
    precision_of,
    run_main,
)
from fairseq_esm.inference.choices import INCLUDE, LONG_MODES
from fairseq_esm.io.fasta import FastaReport, add_policy_args, policy_from_args, read_fasta

if TYPE_CHECKING:
    import torch

    from fairseq_esm.inference.extract import ExtractSpec
    from fairseq_esm.inference.output import PtWriter, ShardWriter
    from fairseq_esm.modules.alphabet import Alphabet
    from fairseq_esm.modules.esm1 import ESM1

DESCRIPTION = "Extract per-layer representations (per token, mean, <cls>), contacts and attention maps."
MAX_EXAMPLES = 5
SORT_WINDOW = 10_000

Record = tuple[str, int, "str | None"]  # (id, copy number, sequence; None: another shard's record)


class _NoGpu(argparse.Action):
    """fair-esm's ``--nogpu``, hidden: sets ``--device cpu`` and says so."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, "device", nargs=0, help=argparse.SUPPRESS, default=argparse.SUPPRESS)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"note: {option_string} is deprecated; use --device cpu", file=sys.stderr)
        namespace.device = "cpu"


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` -> (I, N), 0 <= I < N."""
    index, slash, count = text.partition("/")
    if not (slash and index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"{text!r}: give I/N with 0 <= I < N, e.g. 0/4 (the first of 4 shards)")
    return int(index), int(count)


def build_parser() -> argparse.ArgumentParser:
    """The command line: model and batching, what to extract, long proteins, output format, residue policy."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-extract", description=DESCRIPTION)
    add_model_args(parser)
    parser.add_argument("fasta", help="proteins (FASTA, plain or gzip)")
    add_positional_out(parser, "output_dir")  # fair-esm's positional
    add_out(parser, required=False, type=Path, metavar="DIR",
            help="directory for the outputs (created; resumed if it exists)")
    parser.add_argument("--repr-layers", type=int, nargs="+", default=[-1], metavar="LAYER",
                        help="layers: 0 is the embedding, -1 the last layer (default: -1)")
    add_alias(parser, "--repr-layers", "--repr_layers")
    parser.add_argument("--include", nargs="+", choices=INCLUDE, default=["mean"], metavar="WHAT",
                        help=f"any of {', '.join(INCLUDE)}. mean: over residues (no <cls>/<eos>/padding); "
                        "per_tok: every residue; bos: <cls>; "
                        "contacts: (L, L) probabilities; attentions: (layers, heads, T, T), pt format only. "
                        "Default: mean")
    parser.add_argument("--format", choices=["pt", "npz-shards"], default="pt",
                        help="pt: one fair-esm <id>.pt per protein; npz-shards: shard-NNNNN.npz (default: pt)")
    parser.add_argument("--shard-size", type=int, default=1000, metavar="N",
                        help="proteins per shard (default %(default)s)")
    parser.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="I/N",
                        help="compute only the proteins k (0-based, in FASTA order) with k mod N = I, so N "
                        "processes split one FASTA; they may share one --out (default: 0/1, all)")
    parser.add_argument("--sort-window", type=int, default=SORT_WINDOW, metavar="N",
                        help="proteins read ahead and sorted by length for batching; bounds the sequences held in "
                        "memory, whatever the FASTA's size (default %(default)s)")
    long = parser.add_argument_group("proteins longer than the model's context")
    long.add_argument("--long", choices=LONG_MODES,
                      help="window: overlapping windows, overlapping positions averaged (default); "
                      "truncate: keep the first --max-residues residues, with a warning")
    long.add_argument("--max-residues", type=int, metavar="N",
                      help="residues per forward pass (default: the model's context "
                      "minus <cls>/<eos>, 1022 for ESM-1b)")
    long.add_argument("--window-overlap", type=int, metavar="K",
                      help="residues shared by consecutive windows (default: a quarter "
                      "of the window)")
    long.add_argument("--truncation-seq-length", type=int, metavar="N",
                      help="fair-esm's flag: --max-residues N with --long truncate")
    add_alias(parser, "--truncation-seq-length", "--truncation_seq_length")
    parser.add_argument("--nogpu", action=_NoGpu)
    add_progress(parser)
    add_policy_args(parser)
    return parser


def fold_args(args: argparse.Namespace) -> None:
    """The old positional OUTPUT_DIR into ``--out``; ``--truncation-seq-length`` into ``--long``/``--max-residues``."""
    args.out = Path(out_or_positional(args, "output_dir", "output directory"))
    if args.truncation_seq_length is not None:
        args.max_residues = args.max_residues or args.truncation_seq_length
        args.long = args.long or "truncate"
    args.long = args.long or "window"


def check_args(args: argparse.Namespace, device: torch.device) -> None:
    """Option combinations that cannot work, refused before anything is computed."""
    if args.max_tokens <= 0 or args.shard_size <= 0 or args.sort_window <= 0:
        raise UsageError("--max-tokens, --shard-size and --sort-window must be positive")
    if args.format == "npz-shards" and "attentions" in args.include:
        raise UsageError("attention maps are written only with --format pt (one file per protein)")


def build_spec(args: argparse.Namespace, model: ESM1, alphabet: Alphabet) -> ExtractSpec:
    """The :class:`ExtractSpec` of the command line; impossible layers or window sizes are usage errors."""
    from fairseq_esm.inference.extract import ExtractSpec, resolve_layers, window_geometry

    try:
        spec = ExtractSpec(layers=resolve_layers(args.repr_layers, model.num_layers),
                           include=frozenset(args.include), long=args.long, max_residues=args.max_residues,
                           overlap=args.window_overlap, toks_per_batch=args.max_tokens)
        size, overlap = window_geometry(model, alphabet, spec)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return ExtractSpec(spec.layers, spec.include, spec.long, size, overlap, spec.toks_per_batch)


def settings(args: argparse.Namespace, spec: ExtractSpec, model: ESM1) -> dict:
    """What the outputs depend on (not batching): a resumed run must match it."""
    weights = model.embed_tokens.weight.detach().float().cpu().numpy().tobytes()
    return {"format": args.format, "layers": list(spec.layers), "include": sorted(spec.include),
            "long": spec.long, "max_residues": spec.max_residues, "window_overlap": spec.overlap,
            "dtype": precision_of(args), "model": model.generation.name,
            "num_layers": model.num_layers, "embedding_sha1": hashlib.sha1(weights).hexdigest()[:16]}


@dataclass
class LongProteins:
    """Proteins longer than one forward pass, gathered group by group (``--sort-window``) for one line at the end."""

    count: int = 0
    windows: int = 0
    examples: list[str] = field(default_factory=list)

    def check(self, records: Sequence[tuple[str, str]], spec: ExtractSpec) -> None:
        """Refuse what the options cannot serve (before the group is computed); count the long proteins."""
        from fairseq_esm.inference.extract import check_plan, plan_spans

        plans = plan_spans([len(seq) for _, seq in records], spec.max_residues, spec.overlap, spec.long)
        try:
            check_plan(plans, [rid for rid, _ in records], spec.include)
        except ValueError as err:
            raise UsageError(str(err)) from None
        for (rid, seq), spans in zip(records, plans):
            if len(seq) > spec.max_residues:
                self.count, self.windows = self.count + 1, self.windows + len(spans)
                if len(self.examples) < MAX_EXAMPLES:
                    self.examples.append(f"{rid} ({len(seq):,})")

    def report(self, spec: ExtractSpec) -> None:
        """Say which proteins were windowed or truncated."""
        if not self.count:
            return
        examples = ", ".join(self.examples)
        if spec.long == "truncate":
            print(f"warning: {self.count:,} protein(s) longer than {spec.max_residues:,} residues are truncated to "
                  f"their first {spec.max_residues:,} (--long truncate): {examples}", file=sys.stderr)
        else:
            print(f"{self.count:,} protein(s) longer than {spec.max_residues:,} residues go in {self.windows:,} "
                  f"windows overlapping by {spec.overlap:,} residues, overlaps averaged: {examples}", file=sys.stderr)


def report_resume(writer: PtWriter | ShardWriter, out: Path) -> None:
    """Say which outputs already in ``out`` are redone because their sequence changed, and which are kept
    without a checksum to check them against (written by an older version)."""
    if writer.changed:
        print(f"note: {writer.changed:,} protein(s) in {out} have a different sequence than when their output was "
              f"written (e.g. {', '.join(writer.changed_examples)}): recomputing and overwriting them",
              file=sys.stderr)
    if writer.unverified:
        print(f"note: {writer.unverified:,} output(s) in {out} were indexed without a sequence checksum (older "
              "version): kept as matching their sequence, and the checksum is recorded now; delete a file to "
              "recompute it", file=sys.stderr)


def numbered(records: Iterable[tuple[str, str]], shard: tuple[int, int]) -> Iterator[Record]:
    """``(id, copy, sequence)`` of every record, the sequence ``None`` for another shard's (record k is shard
    k mod N's); copy numbers count the whole file, so every shard numbers a repeated id alike."""
    index, count = shard
    copies: Counter = Counter()
    for k, (record_id, sequence) in enumerate(records):
        copies[record_id] += 1
        yield record_id, copies[record_id], sequence if k % count == index else None


def groups_to_compute(records: Iterable[Record], writer: PtWriter | ShardWriter, size: int) -> Iterator[list]:
    """Groups of about ``size`` (at most 2 x ``size``) of this shard's records still to compute, in FASTA order:
    the writer plans ``size`` records at a time (naming, resume), so memory is bounded by ``size``."""
    todo: list[Record] = []
    records = iter(records)
    while group := list(itertools.islice(records, size)):
        todo += [group[i] for i in writer.plan(group)]
        if len(todo) >= size:
            yield todo
            todo = []
    if todo:
        yield todo


def peek(records: Iterator[tuple[str, str]], fasta: str) -> Iterator[tuple[str, str]]:
    """Open and read the FASTA up to its first protein (so a missing or malformed file fails before the model
    loads); the whole stream, that protein included."""
    first = next(records, None)
    if first is None:
        raise UsageError(f"{fasta}: no protein left after the residue policy; nothing to extract")
    return itertools.chain([first], records)


def main(argv: Sequence[str] | None = None) -> int:
    """Extract every protein of the FASTA (of this --shard) not already in --out; report and summary on stderr."""
    args = build_parser().parse_args(argv)
    apply_threads(args)
    fold_args(args)
    from tqdm import tqdm

    from fairseq_esm.checkpoints import pick_device
    from fairseq_esm.inference.extract import ExtractStats, extract_representations
    from fairseq_esm.inference.output import check_settings, open_writer

    device = pick_device(args.device)
    check_args(args, device)
    report = FastaReport()
    records = peek(read_fasta(args.fasta, policy_from_args(args), report), args.fasta)
    model, alphabet = load_inference_model(args, device=device)
    spec = build_spec(args, model, alphabet)
    args.out.mkdir(parents=True, exist_ok=True)
    try:  # an output directory of another run: refuse to mix its outputs with ours
        check_settings(args.out, settings(args, spec, model))
        writer = open_writer(args.format, args.out, args.shard_size)
    except ValueError as err:
        raise UsageError(str(err)) from None
    stats, long, start = ExtractStats(), LongProteins(), time.perf_counter()
    try:  # closing flushes the results already computed, also when interrupted
        with tqdm(unit="protein", file=sys.stderr, disable=True if args.no_progress else None) as bar:
            for group in groups_to_compute(numbered(records, args.shard), writer, args.sort_window):
                pairs = [(record_id, sequence) for record_id, _, sequence in group]
                long.check(pairs, spec)
                for position, result in extract_representations(model, alphabet, pairs, spec, stats):
                    writer.add(*group[position], result)
                    bar.update()
    finally:
        writer.close()
    seconds = time.perf_counter() - start
    print(report.format(), file=sys.stderr)
    report_resume(writer, args.out)
    long.report(spec)
    if args.shard[1] > 1:
        print(f"shard {args.shard[0]}/{args.shard[1]}: proteins k with k mod {args.shard[1]} = {args.shard[0]} of "
              f"the {report.records_written:,} kept", file=sys.stderr)
    print(f"wrote {stats.sequences:,} protein(s) ({stats.residues:,} residues, "
          f"{stats.residues / max(seconds, 1e-9):,.0f} residues/s) to {args.out}; skipped "
          f"{writer.skipped:,} already there; recomputed {writer.changed:,} whose sequence changed; "
          f"windowed {stats.windowed:,}, truncated {stats.truncated:,}", file=sys.stderr)
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
