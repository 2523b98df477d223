"""``fairseq-esm-extract CHECKPOINT FASTA --out DIR``: representations of every protein of a FASTA file.

Modelled on fair-esm's ``esm-extract`` (its positional OUTPUT_DIR and underscore flags are accepted too):
chosen layers (negative counts from the end), per token, mean over residues, ``<cls>``, contacts, attention
maps; one fair-esm ``<id>.pt`` per protein or ``.npz`` shards, with ``index.tsv``. Resumable: what is already
in the output directory is skipped. Proteins longer than the model's context are windowed or truncated.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Sequence
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
    out_or_positional,
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


class _NoGpu(argparse.Action):
    """fair-esm's ``--nogpu``, hidden: sets ``--device cpu`` and says so."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, "device", nargs=0, help=argparse.SUPPRESS, default=argparse.SUPPRESS)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"note: {option_string} is deprecated; use --device cpu", file=sys.stderr)
        namespace.device = "cpu"


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
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="run the model in float16 (GPU only)")
    precision.add_argument("--bf16", action="store_true", help="run the model in bfloat16 (GPU only)")
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
    if args.max_tokens <= 0 or args.shard_size <= 0:
        raise UsageError("--max-tokens and --shard-size must be positive")
    if args.format == "npz-shards" and "attentions" in args.include:
        raise UsageError("attention maps are written only with --format pt (one file per protein)")
    if (args.fp16 or args.bf16) and device.type == "cpu":
        raise UsageError("--fp16/--bf16 need a GPU; on the CPU the model runs in float32")


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
            "dtype": "fp16" if args.fp16 else "bf16" if args.bf16 else "fp32", "model": model.generation.name,
            "num_layers": model.num_layers, "embedding_sha1": hashlib.sha1(weights).hexdigest()[:16]}


def plan_run(records: list[tuple[str, str]], spec: ExtractSpec) -> None:
    """Refuse what the options cannot serve, and say up front which proteins are windowed or truncated."""
    from fairseq_esm.inference.extract import check_plan, plan_spans

    plans = plan_spans([len(seq) for _, seq in records], spec.max_residues, spec.overlap, spec.long)
    try:
        check_plan(plans, [rid for rid, _ in records], spec.include)
    except ValueError as err:
        raise UsageError(str(err)) from None
    long = [(rid, len(seq), len(spans)) for (rid, seq), spans in zip(records, plans) if len(seq) > spec.max_residues]
    if not long:
        return
    examples = ", ".join(f"{rid} ({n:,})" for rid, n, _ in long[:MAX_EXAMPLES])
    if spec.long == "truncate":
        print(f"warning: {len(long):,} protein(s) longer than {spec.max_residues:,} residues are truncated to "
              f"their first {spec.max_residues:,} (--long truncate): {examples}", file=sys.stderr)
    else:
        print(f"{len(long):,} protein(s) longer than {spec.max_residues:,} residues go in "
              f"{sum(w for *_, w in long):,} windows overlapping by {spec.overlap:,} residues, overlaps averaged: "
              f"{examples}", file=sys.stderr)


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


def main(argv: Sequence[str] | None = None) -> int:
    """Extract every protein of the FASTA not already in --out; report and summary on stderr."""
    args = build_parser().parse_args(argv)
    apply_threads(args)
    fold_args(args)
    import torch
    from tqdm import tqdm

    from fairseq_esm.checkpoints import load_model, pick_device
    from fairseq_esm.inference.extract import ExtractStats, extract_representations
    from fairseq_esm.inference.output import check_settings, open_writer
    from fairseq_esm.io.file_names import copy_numbers

    device = pick_device(args.device)
    check_args(args, device)
    report = FastaReport()
    records = list(read_fasta(args.fasta, policy_from_args(args), report))
    print(report.format(), file=sys.stderr)
    if not records:
        raise UsageError(f"{args.fasta}: no protein left after the residue policy; nothing to extract")
    model, alphabet = load_model(args.checkpoint, device, args.allow_unsafe)
    spec = build_spec(args, model, alphabet)
    args.out.mkdir(parents=True, exist_ok=True)
    try:  # an output directory of another run: refuse to mix its outputs with ours
        check_settings(args.out, settings(args, spec, model))
        writer = open_writer(args.format, args.out, args.shard_size)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.fp16 or args.bf16:
        model = model.to(torch.float16 if args.fp16 else torch.bfloat16)
    copies = copy_numbers([rid for rid, _ in records])
    todo = writer.plan([(rid, copy, seq) for (rid, seq), copy in zip(records, copies)])
    report_resume(writer, args.out)
    plan_run([records[i] for i in todo], spec)
    stats, start = ExtractStats(), time.perf_counter()
    try:  # closing flushes the results already computed, also when interrupted
        with tqdm(total=len(todo), unit="protein", file=sys.stderr, disable=True if args.no_progress else None) as bar:
            for position, result in extract_representations(model, alphabet, [records[i] for i in todo], spec, stats):
                index = todo[position]
                writer.add(records[index][0], copies[index], records[index][1], result)
                bar.update()
    finally:
        writer.close()
    seconds = time.perf_counter() - start
    print(f"wrote {stats.sequences:,} protein(s) ({stats.residues:,} residues, "
          f"{stats.residues / max(seconds, 1e-9):,.0f} residues/s) to {args.out}; skipped "
          f"{writer.skipped:,} already there; recomputed {writer.changed:,} whose sequence changed; "
          f"windowed {stats.windowed:,}, truncated {stats.truncated:,}", file=sys.stderr)
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
