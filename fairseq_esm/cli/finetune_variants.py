"""``fairseq-esm-finetune-variants CHECKPOINT --table DMS.csv --sequence WT.fasta``: fine-tune
the model to predict one protein's measured mutational effects (the paper's Figure 7) in k-fold
cross-validation, next to the zero-shot masked-marginal score on the same folds. Each fold trains through
fairseq's own loop (``--task mutational_effect --criterion mutational_effect``, fairseq's adam, constant lr).

Rows are checked as ``fairseq-esm-variants`` checks them; only ``ok`` rows with a numeric score enter the
folds. Every other row is counted on stderr and in the JSON: unscorable codes by status, ``duplicate``
(a variant measured twice could sit in both train and test), no numeric score, and rows left out by
``--max-variants``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import stat
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from fairseq_esm.cli.common import UsageError, add_alias, add_model_args, add_progress, apply_threads, run_main
from fairseq_esm.cli.variants import add_table_args, load_wild_type, measured, need_column, read_table
from fairseq_esm.io.fasta import STDIN

if TYPE_CHECKING:
    from fairseq_esm.evaluation.mutational_finetune import FoldResult
    from fairseq_esm.io.mutations import RowCheck

DESCRIPTION = ("Fine-tune on a deep mutational scan in k-fold cross-validation (fairseq's training loop); "
               "zero-shot score as baseline.")


def build_parser() -> argparse.ArgumentParser:
    """The command line: model, table and its columns, wild type, folds and optimisation, outputs."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-finetune-variants", description=DESCRIPTION)
    add_model_args(parser)
    parser.add_argument("--sequence", required=True,
                        help="FASTA holding the wild type (a file, - for standard input, or a pipe), "
                        "or the sequence itself")
    add_table_args(parser, "DMS_score", "column of measured scores (default %(default)s)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5: 80/20)")
    parser.add_argument("--epochs", type=int, default=3, help="passes over each training part (default 3)")
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate, constant (default %(default)s)")
    parser.add_argument("--weight-decay", type=float, default=0.01,
                        help="decoupled weight decay of fairseq's adam, as AdamW (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="masked wild-type copies per update; each carries every variant at its positions "
                        "(default %(default)s)")
    add_alias(parser, "--batch-size", "--batch-sequences")
    parser.add_argument("--train-layers", type=int, help="train only the last N layers and the LM head (default: all)")
    parser.add_argument("--max-variants", type=int, help="use a seeded subsample of at most N variants")
    parser.add_argument("--seed", type=int, default=1, help="folds, subsample and fairseq's batch order (default 1)")
    parser.add_argument("--json", required=True, help="results as JSON")
    parser.add_argument("--markdown", required=True, help="results as a markdown table")
    add_progress(parser)
    return parser


def check_settings(args: argparse.Namespace, num_layers: int) -> None:
    """One-line errors for settings that cannot run."""
    positive = {"--folds": args.folds - 1, "--epochs": args.epochs, "--lr": args.lr,
                "--batch-size": args.batch_size, "--max-variants": args.max_variants or 1}
    bad = [flag for flag, value in positive.items() if value <= 0]
    if bad:
        raise UsageError(f"{', '.join(bad)}: must be positive (--folds at least 2)")
    if args.train_layers is not None and not 1 <= args.train_layers <= num_layers:
        raise UsageError(f"--train-layers {args.train_layers}: the model has {num_layers} layers")


def names_input(value: str) -> bool:
    """``-``, or a path that exists and is not a directory: a regular file, FIFO, pipe, socket or device."""
    if value == STDIN:
        return True
    try:
        return not stat.S_ISDIR(os.stat(value).st_mode)
    except (OSError, ValueError):  # no such path (or a sequence too long to be a file name)
        return False


def wild_type_of(args: argparse.Namespace) -> str:
    """--sequence as FASTA when it is ``-`` (standard input) or names a file, FIFO or ``<(zcat x.gz)`` (each read
    once), else as the sequence itself."""
    if names_input(args.sequence):
        return load_wild_type(argparse.Namespace(sequence=None, fasta=args.sequence, wt_id=args.wt_id))
    try:
        return load_wild_type(argparse.Namespace(sequence=args.sequence, fasta=None, wt_id=None))
    except UsageError as err:
        raise UsageError(f"--sequence {args.sequence[:40]!r}: no such file, and not a protein sequence ({err})")


def usable_rows(args: argparse.Namespace, rows: list[dict[str, str]], checks: list[RowCheck]
                ) -> tuple[list[int], dict]:
    """Indices of the rows that enter the folds, and the counts of every row that does not."""
    from fairseq_esm.evaluation.mutational_finetune import subsample

    ok = [i for i, c in enumerate(checks) if c.status == "ok"]
    numeric = [i for i in ok if not math.isnan(measured(rows[i][args.score_col]))]
    kept = [numeric[i] for i in subsample(len(numeric), args.max_variants, args.seed)]
    counts = {"rows": len(rows), "used": len(kept)}
    for status in sorted({c.status for c in checks} - {"ok"}):
        counts[status] = sum(c.status == status for c in checks)
    counts["no_numeric_score"] = len(ok) - len(numeric)
    counts["left_out_by_max_variants"] = len(numeric) - len(kept)
    return kept, counts


def markdown(results: list[FoldResult], summary: dict) -> str:
    """Table with one row per fold and a mean ± std row."""
    lines = ["| fold | n_train | n_test | zero-shot ρ | fine-tuned ρ |", "|---|---|---|---|---|"]
    lines += [f"| {r.fold} | {r.n_train:,} | {r.n_test:,} | {r.zero_shot_rho:.3f} | {r.finetuned_rho:.3f} |"
              for r in results]
    z, f = summary["zero_shot_rho"], summary["finetuned_rho"]
    lines.append(f"| mean ± std | | | {z['mean']:.3f} ± {z['std']:.3f} | {f['mean']:.3f} ± {f['std']:.3f} |")
    return "\n".join(lines) + "\n"


def clean(value):
    """NaN -> None, recursively, so the JSON is standard."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Check the table, cross-validate fine-tuning against the zero-shot score, write JSON and markdown."""
    args = build_parser().parse_args(argv)
    apply_threads(args)
    started = time.time()
    columns, rows, _ = read_table(args.table)
    need_column(columns, args.mutation_col, "--mutation-col", args.table)
    need_column(columns, args.score_col, "--score-col", args.table)
    wild_type = wild_type_of(args)
    from fairseq_esm.checkpoints import load_model, pick_device
    from fairseq_esm.evaluation.mutational_finetune import FinetuneConfig, cross_validate, mean_std
    from fairseq_esm.io.mutations import check_rows
    from fairseq_esm.modules.batching import residue_budget

    model, alphabet = load_model(args.checkpoint, pick_device(args.device), args.allow_unsafe)
    check_settings(args, model.num_layers)
    budget = residue_budget(model.max_positions(), alphabet)
    checks, report = check_rows([row[args.mutation_col] or "" for row in rows], wild_type, args.offset, budget)
    print(report.format(), file=sys.stderr)
    kept, counts = usable_rows(args, rows, checks)
    print("cross-validation rows: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()), file=sys.stderr)
    if len(kept) < 3 * args.folds:
        raise UsageError(f"{args.table}: {len(kept)} usable variants, too few for {args.folds} folds "
                         f"(need at least {3 * args.folds}) — see the counts above")
    cfg = FinetuneConfig(args.folds, args.epochs, args.lr, args.weight_decay, args.batch_size,
                         args.train_layers, args.seed, args.max_tokens)
    results = cross_validate(model, alphabet, wild_type, [checks[i].variant for i in kept],
                             [measured(rows[i][args.score_col]) for i in kept], cfg,
                             progress=not args.no_progress)
    summary = {key: dict(zip(("mean", "std"), mean_std([getattr(r, key) for r in results])))
               for key in ("zero_shot_rho", "finetuned_rho")}
    table = markdown(results, summary)
    print(table, end="")
    for path in (args.markdown, args.json):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(args.markdown).write_text(table)
    output = {"checkpoint": args.checkpoint, "table": args.table, "score_column": args.score_col,
              "settings": asdict(cfg), "counts": counts, "folds": [asdict(r) for r in results],
              "summary": summary, "seconds": round(time.time() - started, 1)}
    Path(args.json).write_text(json.dumps(clean(output), indent=2) + "\n")
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
