"""``fairseq-esm-variants CHECKPOINT --sequence SEQ|--fasta WT|--reference REF --table muts.csv``: zero-shot
scores of the mutations in a table (``A24G``, ``A24G:K30R``) against a wild type, by any of Meier et al.'s
strategies; with one or more measured score columns, the Spearman correlation of each strategy (and of the
BLOSUM62 substitution score, the baseline) with each, and with ``--plot`` a scatter of each.

The wild type is a sequence, a FASTA record, or the ``target_seq`` of an assay in ProteinGym's reference table
(``--reference DMS_substitutions.csv --dms-id ID``; ProteinGym numbers the mutations from 1 on it). A
synonymous code (``P311P``) is counted and, unless ``--keep-synonymous``, neither scored nor correlated.

The output is the input table, every row in its order, plus one column per strategy
(``masked_marginal`` …), ``status`` and ``note``. Rows that cannot be scored (malformed code,
position outside the sequence, wild-type residue mismatch, mutations further apart than the model's
context) keep empty scores; repeated variants are scored and marked ``duplicate``. The counts, with
examples, go to stderr; ``--rejected`` lists every row whose status is not ``ok``.

Several checkpoints (``fairseq-esm-variants esm1v_t33_650M_UR90S_[1-5].pt …``, as ESM-1v scores variants) are
scored one after the other, one model in memory at a time: each model's scores go to its own column per
strategy (``masked_marginal_esm1v_t33_650M_UR90S_1`` …, named by the file stem) and the plain column
(``masked_marginal``) holds their mean, the ensemble score; Spearman is printed per model and for the mean.
The rows are checked once, against the smallest context of the models, so every model scores the same rows.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import stat
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from fairseq_esm.cli.common import (
    UsageError,
    add_alias,
    add_model_args,
    add_out,
    add_progress,
    apply_threads,
    load_inference_model,
    run_main,
)
from fairseq_esm.inference.choices import MULTI_MODES, STRATEGIES
from fairseq_esm.io.fasta import STDIN, FastaReport, read_fasta
from fairseq_esm.io.residues import RESIDUE_LETTERS

if TYPE_CHECKING:
    from fairseq_esm.io.mutations import RowCheck, TableReport
    from fairseq_esm.modules.alphabet import Alphabet
    from fairseq_esm.modules.esm1 import ESM1

DESCRIPTION = ("Zero-shot variant-effect scores of a mutation table against a wild-type protein, by one model "
               "or the mean of several (ESM-1v's five).")
DEFAULT_SCORE_COL = "DMS_score"
SEVERAL = ("several (ESM-1v's five, say) are loaded one at a time, so memory holds one model: each scores every "
           "row into its own column per strategy (masked_marginal_<file stem>), and the plain column "
           "(masked_marginal) is their mean, the ensemble score; all must share one alphabet")


def build_parser() -> argparse.ArgumentParser:
    """The command line: model, wild type, table and its columns, strategies, outputs."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-variants", description=DESCRIPTION)
    add_model_args(parser, several=SEVERAL)
    add_progress(parser)
    add_table_args(parser, None, f"one or more columns of measured scores, each correlated (Spearman's rho) with "
                   f"every strategy and with BLOSUM62 (default: {DEFAULT_SCORE_COL} if the table has it); an "
                   "explicitly named column must exist")
    parser.add_argument("--seed", type=int, default=1, help="the --max-variants subsample (default 1)")
    parser.add_argument("--scoring-strategy", nargs="+", choices=STRATEGIES, default=["masked-marginal"],
                        help="one or more (default masked-marginal)")
    parser.add_argument("--multi-mutant", choices=MULTI_MODES, default="joint",
                        help="masked-marginal of multi-mutants: mask all positions together (joint, the paper) "
                        "or each alone and add (additive)")
    add_out(parser, required=False, default="-",
            help="file for the scored table (default: stdout); .tsv/.csv sets the delimiter")
    parser.add_argument("--rejected", help="also write the rows whose status is not ok here (CSV)")
    parser.add_argument("--plot", metavar="PATH.png",
                        help="also draw each strategy's scores against each measured column (one scatter panel per "
                        "pair, Spearman's rho in its title) into this PNG")
    return parser


def add_table_args(parser: argparse.ArgumentParser, score_col: list[str] | None, score_help: str) -> None:
    """The wild type, the mutation table and how to read it, spelled alike in fairseq-esm-variants and
    fairseq-esm-finetune-variants."""
    wild_type = parser.add_mutually_exclusive_group(required=True)
    wild_type.add_argument("--sequence", help="the wild-type protein sequence (a FASTA file, - or a pipe given "
                           "here is read as FASTA)")
    wild_type.add_argument("--fasta", help="FASTA holding the wild type (one record, or pick it with --wt-id)")
    wild_type.add_argument("--reference", metavar="DMS_substitutions.csv",
                           help="ProteinGym's reference table: the wild type is the target_seq of the assay --dms-id "
                           "names (ProteinGym numbers mutations from 1 on it: --offset 1)")
    parser.add_argument("--wt-id", help="id of the wild-type record when its FASTA holds several")
    parser.add_argument("--dms-id", help="the assay's DMS_id in --reference (default: the row whose DMS_filename is "
                        "the --table's file name)")
    parser.add_argument("--table", required=True,
                        help="mutation table: CSV or TSV (by extension, else sniffed; ProteinGym's files work)")
    parser.add_argument("--mutation-col", default="mutant", help="column of mutation codes (default %(default)s)")
    add_alias(parser, "--mutation-col", "--mutant-column")
    parser.add_argument("--score-col", nargs="+", default=score_col, help=score_help)
    add_alias(parser, "--score-col", "--score-column")
    parser.add_argument("--offset", type=int, default=1,
                        help="the number the table gives the first residue of the sequence (default 1)")
    parser.add_argument("--keep-synonymous", action="store_true",
                        help="score synonymous codes (P311P: the wild type itself, 0 for the marginal strategies) "
                        "and keep them in Spearman's rho and the folds (default: counted, left out)")
    parser.add_argument("--max-variants", type=int, metavar="N", help="use a seeded subsample of at most N variants")


def check_table_settings(args: argparse.Namespace) -> None:
    """One-line errors for table flags that cannot work together."""
    if args.max_variants is not None and args.max_variants <= 0:
        raise UsageError(f"--max-variants {args.max_variants}: must be positive")
    if args.dms_id is not None and args.reference is None:
        raise UsageError("--dms-id names an assay of a ProteinGym reference table: pass --reference FILE too")


def read_table(path: str) -> tuple[list[str], list[dict[str, str]], str]:
    """(column names, rows, delimiter) of a CSV/TSV file; a UTF-8 BOM is ignored."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        text = handle.read()
    delimiter = table_delimiter(path, text)
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    if not reader.fieldnames:
        raise UsageError(f"{path}: empty table — expected a header row naming the columns")
    return list(reader.fieldnames), list(reader), delimiter


def table_delimiter(path: str, text: str) -> str:
    """Tab for .tsv/.tab, comma for .csv, otherwise whichever the header line uses."""
    suffix = Path(path).suffix.lower()
    if suffix in (".tsv", ".tab"):
        return "\t"
    if suffix == ".csv":
        return ","
    first = text.split("\n", 1)[0]
    return max("\t,;", key=first.count)


def need_column(columns: Sequence[str], name: str, flag: str, path: str) -> None:
    """A one-line error naming the missing column, the ones there are, and the flag to pass."""
    if name not in columns:
        raise UsageError(f"{path}: no column {name!r} (columns: {', '.join(columns)}) — pass {flag}")


def names_input(value: str) -> bool:
    """``-``, or a path that exists and is not a directory: a regular file, FIFO, pipe, socket or device."""
    if value == STDIN:
        return True
    try:
        return not stat.S_ISDIR(os.stat(value).st_mode)
    except (OSError, ValueError):  # no such path (or a sequence too long to be a file name)
        return False


def residue_letters(value: str, flag: str) -> str:
    """``value`` as uppercase residue letters, or a one-line error naming ``flag``."""
    sequence = value.strip().upper()
    bad = sorted(set(sequence) - set(RESIDUE_LETTERS))
    if not sequence or bad:
        raise UsageError(f"{flag}: {'empty' if not sequence else 'not residue letters: ' + ''.join(bad)}")
    return sequence


def fasta_wild_type(path: str, wt_id: str | None) -> str:
    """The one record of a FASTA (or the one with id ``wt_id``)."""
    report = FastaReport()
    records = list(read_fasta(path, report=report))
    print(report.format(), file=sys.stderr)
    if wt_id is not None:
        records = [r for r in records if r[0] == wt_id]
    if len(records) != 1:
        which = f"records with id {wt_id!r}" if wt_id is not None else "records"
        raise UsageError(f"{path}: {len(records)} {which}; the wild type must be exactly one (pass --wt-id)")
    return records[0][1]


@dataclass(frozen=True)
class WildType:
    """The wild type and where it came from (``dms_id``: the assay of a reference table)."""

    sequence: str
    source: str
    dms_id: str | None = None


def load_wild_type(args: argparse.Namespace) -> str:
    """The wild type (uppercase residue letters) from exactly one of --sequence (letters, or a FASTA file, ``-`` or
    pipe, each read once), --fasta (with --wt-id) or --reference (with --dms-id)."""
    return wild_type_record(args).sequence


def wild_type_record(args: argparse.Namespace) -> WildType:
    """:func:`load_wild_type` with its source: the flag and file, and the assay's DMS_id for --reference."""
    reference, fasta = getattr(args, "reference", None), getattr(args, "fasta", None)
    if reference is not None:
        from fairseq_esm.io.mutations import reference_entry

        table = getattr(args, "table", None)
        entry = reference_entry(reference, getattr(args, "dms_id", None), table)
        print(f"wild type: target_seq of {entry.dms_id} in {reference}, {len(entry.target_seq):,} residues"
              + (f" (UniProt {entry.uniprot_id})" if entry.uniprot_id else "")
              + f"; mutations numbered from --offset {getattr(args, 'offset', 1)}", file=sys.stderr)
        if entry.filename and table is not None and Path(table).name != entry.filename:
            print(f"note: {reference} names {entry.filename} as the table of {entry.dms_id}, not "
                  f"{Path(table).name}", file=sys.stderr)
        return WildType(entry.target_seq, f"--reference {reference}", entry.dms_id)
    if fasta is not None:
        return WildType(fasta_wild_type(fasta, args.wt_id), f"--fasta {fasta}")
    if names_input(args.sequence):
        return WildType(fasta_wild_type(args.sequence, args.wt_id), f"--sequence {args.sequence}")
    try:
        return WildType(residue_letters(args.sequence, "--sequence"), "--sequence")
    except UsageError as err:
        raise UsageError(f"--sequence {args.sequence[:40]!r}: no such file, and not a protein sequence ({err})")


def measured(value: str | None) -> float:
    """A measured score as float; NaN when empty or not a number."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def spearman_line(strategy: str, scores: list[float | None], values: list[float], column: str) -> str:
    """Spearman's rho of one strategy's scores with the measured column, over rows that have both."""
    from scipy.stats import spearmanr

    pairs = [(s, v) for s, v in zip(scores, values) if s is not None and not math.isnan(v)]
    unmeasured = sum(s is not None for s in scores) - len(pairs)
    rho, p = spearmanr(*zip(*pairs)) if len(pairs) >= 3 else (math.nan, math.nan)
    return (f"Spearman rho {strategy} vs {column}: {rho:.4f} (p={p:.2g}; n={len(pairs):,} scored rows; "
            f"{unmeasured:,} scored rows without a numeric {column})")


def write_table(path: str, columns: list[str], rows: list[dict[str, str]], delimiter: str) -> None:
    """Write rows as CSV/TSV (``-``: stdout); the delimiter follows a .tsv/.csv suffix, else the input's."""
    suffix = Path(path).suffix.lower()
    delimiter = "\t" if suffix in (".tsv", ".tab") else "," if suffix == ".csv" else delimiter
    handle = sys.stdout if path == "-" else open(path, "w", newline="", encoding="utf-8")
    try:
        writer = csv.DictWriter(handle, columns, delimiter=delimiter, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    finally:
        if handle is not sys.stdout:
            handle.close()


def score_rows(args: argparse.Namespace, model: ESM1, alphabet: Alphabet, wild_type: str,
               checks: list[RowCheck]) -> dict[str, list[float | None]]:
    """Per strategy, one score per row (None for rows that are not scored)."""
    from tqdm import tqdm

    from fairseq_esm.inference.variant_scoring import score_variants, variant_workload

    todo = [i for i, c in enumerate(checks) if c.variant is not None]
    variants = [checks[i].variant for i in todo]
    scores: dict[str, list[float | None]] = {s: [None] * len(checks) for s in args.scoring_strategy}
    for strategy in args.scoring_strategy if todo else []:
        work = variant_workload(model, alphabet, wild_type, variants, strategy, args.max_tokens, args.multi_mutant)
        print(f"{strategy}: {len(todo):,} rows need {work.copies:,} sequences through the model "
              f"({work.tokens:,} tokens) in {work.forwards:,} forward passes of at most {args.max_tokens:,} tokens",
              file=sys.stderr)
        with tqdm(total=work.copies, desc=strategy, unit="seq", disable=True if args.no_progress else None,
                  dynamic_ncols=True, leave=False) as bar:
            result = score_variants(model, alphabet, wild_type, variants, strategy, args.max_tokens,
                                    args.multi_mutant, progress=bar)
        ran = result.computed if result.computed is not None else result.forwards
        print(f"{strategy}: {ran:,} sequences through the model for {len(todo):,} rows", file=sys.stderr)
        for i, value in zip(todo, result.scores):
            scores[strategy][i] = value
    return scores


def column_name(strategy: str) -> str:
    """Output column of a strategy: ``masked-marginal`` -> ``masked_marginal``."""
    return strategy.replace("-", "_")


def model_labels(checkpoints: Sequence[str]) -> list[str]:
    """One name per checkpoint for its columns: the file stem (a directory's name), ``_2``, ``_3`` … where
    names repeat."""
    labels: list[str] = []
    for checkpoint in checkpoints:
        path = Path(os.path.abspath(checkpoint))  # not resolved: a link keeps the name the user gave it
        stem = (path.name if path.is_dir() else path.stem) or "model"
        label, n = stem, 2
        while label in labels:
            label, n = f"{stem}_{n}", n + 1
        labels.append(label)
    return labels


def score_columns(strategies: Sequence[str], labels: Sequence[str]) -> dict[str, tuple[str, str | None]]:
    """Output column -> (strategy, model label, or None for the mean of all models), in output order: one
    model gives the plain columns; several give per strategy the mean, then one column per model."""
    if len(labels) == 1:
        return {column_name(s): (s, labels[0]) for s in strategies}
    columns: dict[str, tuple[str, str | None]] = {}
    for strategy in strategies:
        columns[column_name(strategy)] = (strategy, None)
        columns.update({f"{column_name(strategy)}_{label}": (strategy, label) for label in labels})
    return columns


def check_columns(args: argparse.Namespace, columns: list[str], added: Sequence[str]) -> list[str]:
    """Fail on a missing column or one of the ``added`` score columns; return the measured-score columns (none,
    when not named and the table has no ``DMS_score``)."""
    need_column(columns, args.mutation_col, "--mutation-col", args.table)
    for column in args.score_col or []:
        need_column(columns, column, "--score-col", args.table)
    clash = [c for c in [*added, "status", "note"] if c in columns]
    if clash:
        raise UsageError(f"{args.table}: already has column(s) {', '.join(clash)} that the output adds — rename them")
    if args.score_col:
        return list(dict.fromkeys(args.score_col))
    return [DEFAULT_SCORE_COL] if DEFAULT_SCORE_COL in columns else []


def annotate(rows: list[dict[str, str]], checks: list[RowCheck], scores: dict[str, list[float | None]]) -> None:
    """Add the score columns (output column -> one score per row), ``status`` and ``note`` to every row."""
    for i, (row, check) in enumerate(zip(rows, checks)):
        row.update(status=check.status, note=check.note)
        row.update({column: "" if v[i] is None else f"{v[i]:.6f}" for column, v in scores.items()})


def mean_scores(columns: Sequence[list[float | None]]) -> list[float | None]:
    """Per row, the mean of the models' scores (None where any model left the row unscored)."""
    return [None if any(v is None for v in values) else math.fsum(values) / len(values)  # type: ignore[arg-type]
            for values in zip(*columns)]


def checkpoint_facts(path: str, allow_unsafe: bool) -> tuple[str, str, int]:
    """(generation, alphabet name, max_positions) of a checkpoint, without building its model: a zip file's
    tensors are mapped, not read; a HuggingFace directory is loaded (transformers reads it whole)."""
    from fairseq_esm.checkpoints import load_model
    from fairseq_esm.checkpoints.pt_files import checkpoint_contents, read_file

    if Path(path).is_dir():
        model, alphabet = load_model(path, "cpu", allow_unsafe)
        return model.generation.name, alphabet.name, model.max_positions()
    contents = checkpoint_contents(read_file(path, allow_unsafe, mmap=zipfile.is_zipfile(path)), path, allow_unsafe)
    generation = contents.generation
    # ESM-2 shares ESM-1b's alphabet (Generation.alphabet); a tree without ESM-2 names it after the generation
    return generation.name, getattr(generation, "alphabet", generation.name), contents.config.max_positions


def ensemble_context(checkpoints: Sequence[str], allow_unsafe: bool) -> int:
    """Check that the checkpoints share one alphabet (before any is scored); the smallest of their contexts."""
    facts = [checkpoint_facts(path, allow_unsafe) for path in checkpoints]
    (first_generation, first_alphabet, _), first = facts[0], checkpoints[0]
    for path, (generation, alphabet, _) in zip(checkpoints[1:], facts[1:]):
        if alphabet != first_alphabet:
            raise UsageError(
                f"{path} is an {generation} model (alphabet {alphabet}) but {first} is {first_generation} "
                f"(alphabet {first_alphabet}): the models of one ensemble must share one alphabet — score them in "
                "separate runs")
    return min(context for _, _, context in facts)


def score_checkpoints(args: argparse.Namespace, wild_type: str, codes: list[str], labels: list[str]
                      ) -> tuple[list[RowCheck], TableReport, dict[str, dict[str, list[float | None]]]]:
    """Load the checkpoints one at a time, check the rows once (against the smallest context of the models) and
    draw the --max-variants subsample, score every row with each model; returns the checks, their report and
    model label -> strategy -> one score per row."""
    from fairseq_esm.checkpoints import pick_device
    from fairseq_esm.inference.variant_scoring import needs_one_window
    from fairseq_esm.io.mutations import check_rows, sample_rows
    from fairseq_esm.modules.batching import residue_budget

    several = len(args.checkpoint) > 1
    context = ensemble_context(args.checkpoint, args.allow_unsafe) if several else None
    device = pick_device(args.device)
    checks: list[RowCheck] | None = None
    report: TableReport | None = None
    scores: dict[str, dict[str, list[float | None]]] = {}
    for n, (path, label) in enumerate(zip(args.checkpoint, labels), start=1):
        if several:
            print(f"model {n} of {len(labels)}: {path} (columns *_{label})", file=sys.stderr)
        model, alphabet = load_inference_model(args, path, device, quiet=n > 1)
        if checks is None:
            one_window = any(needs_one_window(s, args.multi_mutant) for s in args.scoring_strategy)
            span = residue_budget(context or model.max_positions(), alphabet) if one_window else None
            checks, report = check_rows(codes, wild_type, args.offset, span, args.keep_synonymous)
            sample_rows(checks, report, args.max_variants, args.seed)
            print(report.format(), file=sys.stderr)
        scores[label] = score_rows(args, model, alphabet, wild_type, checks)
        del model  # before the next one is loaded: memory holds one model
        if device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
    assert checks is not None and report is not None
    return checks, report, scores


def write_rejected(path: str, rows: list[dict[str, str]], mutation_col: str) -> None:
    """Every row whose status is not ok: its 1-based row number (header not counted), code, status, note."""
    rejected = [{"row": str(n), "mutant": r[mutation_col] or "", "status": r["status"], "note": r["note"]}
                for n, r in enumerate(rows, start=1) if r["status"] != "ok"]
    write_table(path, ["row", "mutant", "status", "note"], rejected, ",")


@dataclass
class Correlated:
    """One predictor's scores (None where not scored) and its name in the Spearman lines and the plot."""

    name: str
    scores: list[float | None]
    strategy: str | None  # a plotted column's (one model's, or the ensemble mean); None: per-model column, BLOSUM62


def predictors(outputs: dict[str, tuple[str, str | None]], scores: dict[str, list[float | None]],
               checks: list[RowCheck], models: int) -> list[Correlated]:
    """Every output column and BLOSUM62 over the same scored rows, in the order of the Spearman lines."""
    from fairseq_esm.evaluation.variant_baselines import blosum62_scores

    found = [Correlated(strategy if models == 1 else f"{strategy} ({label or f'mean of {models} models'})",
                        scores[column], strategy if label is None or models == 1 else None)
             for column, (strategy, label) in outputs.items()]
    todo = [i for i, c in enumerate(checks) if c.variant is not None]
    blosum: list[float | None] = [None] * len(checks)
    for i, value in zip(todo, blosum62_scores([checks[i].variant for i in todo]).tolist()):
        blosum[i] = value
    return found + [Correlated("BLOSUM62", blosum, None)]


def plot(path: str, correlated: list[Correlated], rows: list[dict[str, str]], measured_cols: list[str]) -> None:
    """The scatter panels of the plain strategy columns (the ensemble mean for several models)."""
    from fairseq_esm.evaluation.variant_plots import Panel, plot_scatter_grid

    panels = []
    for predictor in (p for p in correlated if p.strategy is not None):
        for column in measured_cols:
            pairs = [(s, v) for s, v in zip(predictor.scores, (measured(r[column]) for r in rows))
                     if s is not None and not math.isnan(v)]
            panels.append(Panel(predictor.name, column, [s for s, _ in pairs], [v for _, v in pairs]))
    written = plot_scatter_grid(panels, len(measured_cols), path)
    print(f"plot: {written} ({len(panels)} panel{'s' if len(panels) != 1 else ''})", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Check the table against the wild type, score it, write it, report."""
    args = build_parser().parse_args(argv)
    apply_threads(args)
    check_table_settings(args)
    args.scoring_strategy = list(dict.fromkeys(args.scoring_strategy))
    labels = model_labels(args.checkpoint)
    outputs = score_columns(args.scoring_strategy, labels)
    columns, rows, delimiter = read_table(args.table)
    measured_cols = check_columns(args, columns, list(outputs))
    if args.plot and not measured_cols:
        raise UsageError(f"--plot: {args.table} has no {DEFAULT_SCORE_COL} column to plot against — pass --score-col")
    wild_type = load_wild_type(args)
    codes = [row[args.mutation_col] or "" for row in rows]
    checks, report, per_model = score_checkpoints(args, wild_type, codes, labels)
    scores = {column: per_model[label][strategy] if label is not None
              else mean_scores([per_model[m][strategy] for m in labels])
              for column, (strategy, label) in outputs.items()}
    annotate(rows, checks, scores)
    write_table(args.out, columns + list(scores) + ["status", "note"], rows, delimiter)
    if args.rejected:
        write_rejected(args.rejected, rows, args.mutation_col)
    if not measured_cols:
        print(f"no {DEFAULT_SCORE_COL} column (or --score-col): no Spearman correlation", file=sys.stderr)
    correlated = predictors(outputs, scores, checks, len(labels)) if measured_cols else []
    for column in measured_cols:
        values = [measured(row[column]) for row in rows]
        for predictor in correlated:
            print(spearman_line(predictor.name, predictor.scores, values, column), file=sys.stderr)
    if not any(c.variant is not None for c in checks):
        hint = report.suggested_offset
        raise UsageError(f"{args.table}: no row could be scored — see the report above"
                         + (f"; {hint.format()}" if hint is not None and hint.all_agree else ""))
    if args.plot:
        plot(args.plot, correlated, rows, measured_cols)
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
