"""``fairseq-esm-pfam-auc``: aligned vs unaligned residue-pair cosine AUC over Pfam Stockholm
alignments (Table S1 of Rives et al. 2021), per family and averaged; ``--untrained`` scores a random-init model
of the checkpoint's shape instead. Definitions: :mod:`fairseq_esm.evaluation.alignment_auc`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from fairseq_esm.cli.common import (
    UsageError,
    add_model_args,
    add_progress,
    apply_precision,
    apply_threads,
    load_inference_model,
    run_main,
)

if TYPE_CHECKING:
    from fairseq_esm.modules.alphabet import Alphabet
    from fairseq_esm.modules.esm1 import ESM1

#: the shipped Pfam seed alignments (examples/data/pfam), relative to the repository root
STO_DIR = "examples/data/pfam"
COLUMNS = ("family", "sequences_used", "columns", "aligned_pairs", "unaligned_pairs", "mean_cos_aligned",
           "mean_cos_unaligned", "auc", "auc_same_aa", "auc_diff_aa")


def build_parser() -> argparse.ArgumentParser:
    """Checkpoint, alignment directory, sampling bounds and outputs."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-pfam-auc", description=__doc__.splitlines()[0].split(": ", 1)[1])
    add_model_args(parser)
    parser.add_argument("--sto-dir", type=Path, default=Path(STO_DIR),
                        help="directory of Stockholm alignments (default %(default)s)")
    parser.add_argument("--pattern", default="*.sto", help="file glob inside --sto-dir (default %(default)s)")
    parser.add_argument("--max-seqs", type=int, default=128, help="members sampled per family (paper: 128)")
    parser.add_argument("--max-pairs", type=int, default=50000, help="aligned pairs sampled per family (paper: 50,000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the sampling and of --untrained's init")
    parser.add_argument("--untrained", action="store_true", help="score a random-init model of the same shape")
    add_progress(parser)
    parser.add_argument("--json", type=Path, help="write per-family results and the mean here")
    parser.add_argument("--markdown", type=Path, help="write the printed table here")
    return parser


def alignment_files(directory: Path, pattern: str) -> list[Path]:
    """The alignments to score, sorted; a missing or empty directory is a usage error."""
    if not directory.is_dir():
        raise UsageError(f"{directory}: no such directory — pass --sto-dir")
    files = sorted(directory.glob(pattern))
    if not files:
        raise UsageError(f"{directory}: no file matches {pattern!r} — pass --sto-dir or --pattern")
    return files


def score_families(model: ESM1, alphabet: Alphabet, files: list[Path], args: argparse.Namespace
                   ) -> tuple[list[dict], dict[str, str]]:
    """Per-family results, and the families left out with the reason (nucleotides, too few pairs)."""
    from tqdm import tqdm

    from fairseq_esm.evaluation.alignment_auc import AlignmentError, evaluate_family, looks_nucleotide, read_stockholm

    rows, skipped = [], {}
    for path in tqdm(files, desc="families", unit="family", disable=True if args.no_progress else None):
        family = read_stockholm(path)  # a malformed file stops the run: one error line
        if looks_nucleotide(family):
            skipped[family.name] = "nucleotide alignment (>= 90% A/C/G/T/U), not protein"
            continue
        try:
            rows.append(evaluate_family(model, alphabet, family, args.max_seqs, args.max_pairs, args.seed,
                                        args.max_tokens))
        except AlignmentError as err:
            skipped[family.name] = str(err).split(": ", 1)[1]
    return rows, skipped


def markdown(rows: list[dict], skipped: dict[str, str], label: str) -> str:
    """Per-family table plus the mean AUC line and the skipped families."""
    def cell(value) -> str:
        if value is None:
            return "–"
        return f"{value:.3f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)

    lines = [f"model: {label}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row[key]) for key in COLUMNS) + " |" for row in rows]
    lines += ["", f"mean AUC over {len(rows)} families: {mean_auc(rows):.3f}"]
    lines += [f"skipped {name}: {why}" for name, why in skipped.items()]
    return "\n".join(lines) + "\n"


def mean_auc(rows: list[dict]) -> float:
    """Unweighted mean of the per-family AUCs (the paper's average over families)."""
    return float(np.mean([row["auc"] for row in rows])) if rows else float("nan")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Score every family's alignment, print the table and the mean AUC, write the outputs."""
    args = build_parser().parse_args(argv)
    apply_threads(args)
    if args.max_seqs < 2 or args.max_pairs < 1:
        raise UsageError("--max-seqs must be at least 2 and --max-pairs at least 1")
    files = alignment_files(args.sto_dir, args.pattern)
    from fairseq_esm.checkpoints import untrained_like

    model, alphabet = load_inference_model(args)
    label = f"untrained (same shape, seed {args.seed})" if args.untrained else f"trained ({args.checkpoint})"
    if args.untrained:
        model = apply_precision(untrained_like(model, alphabet, args.seed), args)
    rows, skipped = score_families(model, alphabet, files, args)
    if not rows:
        raise UsageError("no family could be scored: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    table = markdown(rows, skipped, label)
    print(table, end="")
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        summary = {"checkpoint": str(args.checkpoint), "model": label, "untrained": args.untrained, "seed": args.seed,
                   "max_seqs": args.max_seqs, "max_pairs": args.max_pairs, "families": rows, "skipped": skipped,
                   "mean_auc": mean_auc(rows)}
        args.json.write_text(json.dumps(summary, indent=2))
    print(f"scored {len(rows)} of {len(files)} alignment(s); mean AUC {mean_auc(rows):.3f}", file=sys.stderr)
    return 0


def cli() -> None:
    raise SystemExit(run_main(main))


if __name__ == "__main__":
    cli()
