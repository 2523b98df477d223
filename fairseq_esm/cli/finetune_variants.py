"""``fairseq-esm-finetune-variants CHECKPOINT --table DMS.csv --sequence WT|--fasta WT.fasta|--reference REF``:
fine-tune the model to predict one protein's measured mutational effects (the paper's Figure 7) in k-fold
cross-validation under ProteinGym's fold schemes (random, by position modulo K, by contiguous region), next
to baselines on the same test folds: the zero-shot masked-marginal score, BLOSUM62, and the per-position mean
and one-hot ridge regression fitted on the same training folds. Each fold trains through fairseq's own loop
(``--task mutational_effect --criterion mutational_effect``, fairseq's adam, constant lr).

Rows are checked as ``fairseq-esm-variants`` checks them; only ``ok`` rows (and ``synonymous`` ones with
``--keep-synonymous``) with a numeric score enter the folds. Every other row is counted on stderr and in the
JSON: unscorable codes by status, ``duplicate`` (a variant measured twice could sit in both train and test),
``synonymous``, no numeric score, and rows left out by ``--max-variants``. Several measured columns
(``--score-col A B``) are cross-validated one after the other, each on its own numeric rows.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from fairseq_esm.cli.common import UsageError, add_alias, add_model_args, add_progress, apply_threads, run_main
from fairseq_esm.cli.variants import (
    add_table_args,
    check_table_settings,
    load_wild_type,
    measured,
    names_input,
    need_column,
    read_table,
    wild_type_record,
)

if TYPE_CHECKING:
    from fairseq_esm.evaluation.mutational_finetune import FoldResult
    from fairseq_esm.io.mutations import RowCheck

__all__ = ["build_parser", "main", "names_input", "wild_type_of", "cli"]

DESCRIPTION = ("Fine-tune on a deep mutational scan in cross-validation under ProteinGym's fold schemes "
               "(fairseq's training loop), next to zero-shot and fitted baselines on the same folds.")
#: evaluation.dms_folds.SCHEMES, spelled here so that --help imports nothing heavy
FOLD_SCHEMES = ("random", "modulo", "contiguous")
#: markdown column titles of evaluation.mutational_finetune.METHODS
TITLES = {"finetuned": "fine-tuned ρ", "zero_shot": "zero-shot ρ", "blosum62": "BLOSUM62 ρ",
          "position_mean": "per-position mean ρ", "onehot_ridge": "one-hot ridge ρ"}


def build_parser() -> argparse.ArgumentParser:
    """The command line: model, table and its columns, wild type, folds and optimisation, outputs."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-finetune-variants", description=DESCRIPTION)
    add_model_args(parser, precision=False)
    add_table_args(parser, ["DMS_score"], "one or more columns of measured scores, each cross-validated in turn on "
                   "its own numeric rows (default DMS_score)")
    parser.add_argument("--fold-scheme", nargs="+", choices=FOLD_SCHEMES, default=list(FOLD_SCHEMES),
                        help="ProteinGym's fold schemes, each cross-validated: random (over variants), modulo (the "
                        "sorted mutated positions, position number mod K), contiguous (K runs of consecutive "
                        "positions) (default: all three)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds K (default 5: 80/20)")
    parser.add_argument("--epochs", type=int, default=3, help="passes over each training part (default 3)")
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate, constant (default %(default)s)")
    parser.add_argument("--weight-decay", type=float, default=0.01,
                        help="decoupled weight decay of fairseq's adam, as AdamW (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="masked wild-type copies per update; each carries every variant at its positions "
                        "(default %(default)s)")
    add_alias(parser, "--batch-size", "--batch-sequences")
    parser.add_argument("--train-layers", type=int, help="train only the last N layers and the LM head (default: all)")
    parser.add_argument("--seed", type=int, default=1,
                        help="random folds, ridge's inner folds, subsample and fairseq's batch order (default 1)")
    parser.add_argument("--json", required=True, help="results as JSON")
    parser.add_argument("--markdown", required=True, help="results as markdown tables")
    add_progress(parser)
    return parser


def check_settings(args: argparse.Namespace, num_layers: int) -> None:
    """One-line errors for settings that cannot run."""
    positive = {"--folds": args.folds - 1, "--epochs": args.epochs, "--lr": args.lr, "--batch-size": args.batch_size}
    bad = [flag for flag, value in positive.items() if value <= 0]
    if bad:
        raise UsageError(f"{', '.join(bad)}: must be positive (--folds at least 2)")
    if args.train_layers is not None and not 1 <= args.train_layers <= num_layers:
        raise UsageError(f"--train-layers {args.train_layers}: the model has {num_layers} layers")


def wild_type_of(args: argparse.Namespace) -> str:
    """The wild type of --sequence (letters; or FASTA when it is ``-`` or names a file, FIFO or ``<(zcat x.gz)``,
    each read once), --fasta or --reference."""
    return load_wild_type(args)


def usable_rows(args: argparse.Namespace, rows: list[dict[str, str]], checks: list[RowCheck], column: str
                ) -> tuple[list[int], dict]:
    """Indices of the rows that enter the folds of ``column``, and the counts of every row that does not."""
    from fairseq_esm.io.mutations import subsample

    entering = ("ok", "synonymous") if args.keep_synonymous else ("ok",)
    ok = [i for i, c in enumerate(checks) if c.status in entering and c.variant is not None]
    numeric = [i for i in ok if not math.isnan(measured(rows[i][column]))]
    kept = [numeric[i] for i in subsample(len(numeric), args.max_variants, args.seed)]
    counts = {"rows": len(rows), "used": len(kept)}
    for status in sorted({c.status for c in checks} - {"ok"}):
        counts[status] = sum(c.status == status for c in checks)
    counts["no_numeric_score"] = len(ok) - len(numeric)
    counts["left_out_by_max_variants"] = len(numeric) - len(kept)
    return kept, counts


def rho_cell(value: float) -> str:
    """A fold's rho, or n/a where it is undefined (a constant prediction)."""
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def summary_cell(entry: dict, folds: int) -> str:
    """mean ± sd over the folds where rho is defined (how many, when not all)."""
    if not entry["folds"]:
        return "n/a"
    some = f" ({entry['folds']}/{folds} folds)" if entry["folds"] < folds else ""
    return f"{entry['mean']:.3f} ± {entry['std']:.3f}{some}"


def markdown(column: str, results: list[FoldResult], summary: dict, methods: Sequence[str]) -> str:
    """One table for a measured column: a row per fold of every scheme, then each scheme's mean ± sd row."""
    header = "| scheme | fold | n_train | n_test | " + " | ".join(TITLES[m] for m in methods) + " |"
    lines = [f"## {column}", "", header, "|---|---|---|---|" + "---|" * len(methods)]
    for scheme, per_method in summary.items():
        folds = [r for r in results if r.scheme == scheme]
        lines += [f"| {scheme} | {r.fold} | {r.n_train:,} | {r.n_test:,} | "
                  + " | ".join(rho_cell(getattr(r, f"{m}_rho")) for m in methods) + " |" for r in folds]
        lines.append(f"| {scheme} | mean ± sd | | | "
                     + " | ".join(summary_cell(per_method[m], len(folds)) for m in methods) + " |")
    return "\n".join(lines) + "\n"


def clean(value):
    """NaN -> None, recursively, so the JSON is standard."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Check the table, cross-validate fine-tuning and the baselines under each fold scheme and measured column,
    write JSON and markdown."""
    args = build_parser().parse_args(argv)
    apply_threads(args)
    check_table_settings(args)
    started = time.time()
    columns, rows, _ = read_table(args.table)
    need_column(columns, args.mutation_col, "--mutation-col", args.table)
    score_cols, schemes = list(dict.fromkeys(args.score_col)), tuple(dict.fromkeys(args.fold_scheme))
    for column in score_cols:
        need_column(columns, column, "--score-col", args.table)
    record = wild_type_record(args)
    wild_type = record.sequence
    from fairseq_esm.checkpoints import load_model, pick_device
    from fairseq_esm.evaluation.dms_folds import assign_folds
    from fairseq_esm.evaluation.mutational_finetune import METHODS, FinetuneConfig, cross_validate, summarise
    from fairseq_esm.evaluation.variant_baselines import INNER_FOLDS, RIDGE_ALPHAS
    from fairseq_esm.io.mutations import check_rows
    from fairseq_esm.modules.batching import residue_budget

    model, alphabet = load_model(args.checkpoint, pick_device(args.device), args.allow_unsafe)
    check_settings(args, model.num_layers)
    budget = residue_budget(model.max_positions(), alphabet)
    checks, report = check_rows([row[args.mutation_col] or "" for row in rows], wild_type, args.offset, budget,
                                args.keep_synonymous)
    print(report.format(), file=sys.stderr)
    used: dict[str, tuple[list[int], dict]] = {}
    for column in score_cols:  # every column checked before any is trained
        kept, counts = usable_rows(args, rows, checks, column)
        print(f"cross-validation rows of {column}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()),
              file=sys.stderr)
        if len(kept) < 3 * args.folds:
            hint = report.suggested_offset
            raise UsageError(f"{args.table}: {len(kept)} usable variants, too few for {args.folds} folds (need at "
                             f"least {3 * args.folds}; measured column {column}) — see the counts above"
                             + (f"; {hint.format()}" if hint is not None and hint.all_agree else ""))
        for scheme in schemes:
            assign_folds([checks[i].variant for i in kept], scheme, args.folds, args.seed)
        used[column] = kept, counts
    cfg = FinetuneConfig(args.folds, args.epochs, args.lr, args.weight_decay, args.batch_size,
                         args.train_layers, args.seed, args.max_tokens, schemes)
    tables, per_column = [], {}
    for column, (kept, counts) in used.items():
        if len(score_cols) > 1 and not args.no_progress:
            print(f"measured column {column}", file=sys.stderr)
        results = cross_validate(model, alphabet, wild_type, [checks[i].variant for i in kept],
                                 [measured(rows[i][column]) for i in kept], cfg, progress=not args.no_progress)
        summary = summarise(results)
        tables.append(markdown(column, results, summary, METHODS))
        per_column[column] = {"counts": counts, "schemes": {
            scheme: {"left_out": len(kept) - (folds[0].n_train + folds[0].n_test), "summary": summary[scheme],
                     "folds": [asdict(r) for r in folds]}
            for scheme in schemes for folds in [[r for r in results if r.scheme == scheme]]}}
    text = "\n".join(tables)
    print(text, end="")
    for path in (args.markdown, args.json):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(args.markdown).write_text(text)
    output = {"checkpoint": args.checkpoint, "table": args.table,
              "wild_type": {"source": record.source, "dms_id": record.dms_id, "length": len(wild_type)},
              "score_columns": score_cols, "fold_schemes": list(schemes), "settings": asdict(cfg),
              "baselines": {"onehot_ridge_alphas": list(RIDGE_ALPHAS), "onehot_ridge_inner_folds": INNER_FOLDS},
              "rows": {status: count for status, count in report.counts.items() if count},
              "columns": per_column, "seconds": round(time.time() - started, 1)}
    Path(args.json).write_text(json.dumps(clean(output), indent=2) + "\n")
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
