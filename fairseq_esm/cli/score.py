"""``fairseq-esm-score CHECKPOINT FASTA``: per-sequence pseudo-log-likelihood, pseudo-perplexity and the
ECE of one seeded random masking, as a TSV (one row per protein, in FASTA order).

PLL masks every residue in turn (L masked copies per protein, batched under ``--max-tokens``);
proteins longer than the model's context are scored with each masked copy cut to the window centred
on it. Before scoring, stderr says how many masked copies, tokens and forward passes the file takes (a
FASTA read from a pipe or standard input cannot be read twice, so then it says so instead), and on a
terminal a progress bar counts the copies. ECE masks each protein exactly as ``fairseq-validate`` masks
record *i* of a held-out split with the same ``--seed`` and masking flags (long proteins get the same
seeded crop), so the ECE of a FASTA binarized with ``fairseq-esm-binarize`` equals fairseq-validate's
``ppl`` on it.
"""

from __future__ import annotations

import argparse
import math
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence, TextIO

from fairseq_esm.cli.common import (
    UsageError,
    add_model_args,
    add_out,
    add_progress,
    apply_threads,
    load_inference_model,
    run_main,
)
from fairseq_esm.io.fasta import FastaReport, add_policy_args, policy_from_args, read_fasta, reads_once
from fairseq_esm.io.mask_strategies import MASK_STRATEGIES

if TYPE_CHECKING:
    from fairseq_esm.data.masking import MaskingScheme
    from fairseq_esm.inference.scoring import Workload
    from fairseq_esm.modules.alphabet import Alphabet
    from fairseq_esm.modules.esm1 import ESM1

METRICS = ("pll", "ece")
DESCRIPTION = "Per-protein pseudo-log-likelihood, pseudo-perplexity and seeded random-masking ECE, as a TSV."
CHUNK_RESIDUES = 20_000  # proteins read and scored together: bounds memory, keeps batches full


def build_parser() -> argparse.ArgumentParser:
    """The command line: model and batching, what to compute, the masking, the residue policy."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-score", description=DESCRIPTION)
    add_model_args(parser)
    add_progress(parser)
    parser.add_argument("fasta", help="proteins to score (FASTA, plain or gzip)")
    add_out(parser, required=False, default="-", help="TSV file to write (default: stdout)")
    parser.add_argument("--metrics", nargs="+", choices=METRICS, default=["pll"],
                        help="pll: pseudo-log-likelihood + pseudo-perplexity (L forwards per protein); "
                        "ece: seeded random masking (1 forward per protein). Default: pll")
    masking = parser.add_argument_group("random masking for --metrics ece (protein_mlm's flags and defaults)")
    masking.add_argument("--seed", type=int, default=1, help="masks record i as fairseq-validate --seed does")
    masking.add_argument("--mask-strategy", choices=list(MASK_STRATEGIES), default="bert",
                         help="bert: 80%% <mask> / 10%% random / 10%% unchanged; all_mask: every target <mask>")
    masking.add_argument("--mask-prob", type=float, default=0.15, help="fraction of residues that are targets")
    masking.add_argument("--leave-unmasked-prob", type=float, default=0.1)
    masking.add_argument("--random-token-prob", type=float, default=0.1)
    add_policy_args(parser)
    return parser


def chunks(records: Iterator[tuple[str, str]]) -> Iterator[list[tuple[int, str, str]]]:
    """(record index, id, sequence) in groups of about ``CHUNK_RESIDUES`` residues."""
    group, residues = [], 0
    for index, (rid, seq) in enumerate(records):
        group.append((index, rid, seq))
        residues += len(seq)
        if residues >= CHUNK_RESIDUES:
            yield group
            group, residues = [], 0
    if group:
        yield group


@dataclass
class Totals:
    """Sums over the whole file for the summary lines."""

    proteins: int = 0
    residues: int = 0
    long: int = 0  # proteins longer than the model's context
    pll: float = 0.0
    ce: float = 0.0
    targets: int = 0


def header(metrics: Sequence[str]) -> list[str]:
    """TSV columns: id, length, then each metric's own."""
    pll = ["pll", "pseudo_perplexity"] if "pll" in metrics else []
    return ["id", "length"] + pll + (["ece", "n_masked"] if "ece" in metrics else [])


def score_chunk(model: ESM1, alphabet: Alphabet, group: list[tuple[int, str, str]], args: argparse.Namespace,
                scheme: MaskingScheme, totals: Totals, bar: Any = None) -> list[list[str]]:
    """TSV rows for one group of proteins; adds to ``totals``; ``bar`` (tqdm) counts the PLL's masked copies."""
    from fairseq_esm.inference.scoring import pseudo_log_likelihoods, pseudo_perplexity, random_mask_losses

    sequences = [seq for _, _, seq in group]
    rows = [[rid, str(len(seq))] for _, rid, seq in group]
    if "pll" in args.metrics:
        plls = pseudo_log_likelihoods(model, alphabet, sequences, args.max_tokens, progress=bar)
        for row, seq, pll in zip(rows, sequences, plls):
            row += [f"{pll:.6f}", f"{pseudo_perplexity(pll, len(seq)):.6g}"]
            totals.pll += pll
    if "ece" in args.metrics:
        indexed = [(index, seq) for index, _, seq in group]
        losses = random_mask_losses(model, alphabet, indexed, args.seed, scheme, args.max_tokens)
        for row, (ce, n) in zip(rows, losses):
            row += [f"{math.exp(ce / n):.6g}" if n else "nan", str(n)]
            totals.ce += ce
            totals.targets += n
    return rows


def pll_estimate(model: ESM1, alphabet: Alphabet, args: argparse.Namespace) -> Optional[Workload]:
    """The masked copies, tokens and forward passes of the file's PLL, from a first pass over the FASTA that
    keeps only lengths (grouped as :func:`chunks` groups them); None for a source that can be read only once."""
    from fairseq_esm.inference.scoring import Workload, pll_workload

    if reads_once(args.fasta):
        return None
    total = Workload()
    for group in chunks(read_fasta(args.fasta, policy_from_args(args), FastaReport())):
        total += pll_workload(model, alphabet, [len(seq) for _, _, seq in group], args.max_tokens)
    return total


def describe_workload(work: Optional[Workload], max_tokens: int) -> str:
    """The estimate line printed before PLL starts."""
    if work is None:
        return "pll: the input can be read only once (standard input or a pipe): no size estimate before scoring"
    return (f"pll: {work.sequences:,} proteins, {work.copies:,} masked copies ({work.tokens:,} tokens, "
            f"{work.padded_tokens:,} padded) in {work.forwards:,} forward passes of at most {max_tokens:,} tokens")


def summary(args: argparse.Namespace, totals: Totals, budget: int) -> str:
    """Totals over the whole file, for stderr."""
    from fairseq_esm.inference.scoring import pseudo_perplexity

    lines = [f"scored {totals.proteins:,} proteins, {totals.residues:,} residues"]
    if totals.long:
        how = {"pll": "pll from windows centred on each masked residue", "ece": "ece on fairseq-validate's seeded crop"}
        lines.append(f"  {totals.long:,} longer than the model's context ({budget} residues): "
                     + "; ".join(how[m] for m in METRICS if m in args.metrics))
    if "pll" in args.metrics:
        lines.append(f"pseudo-perplexity over all residues: {pseudo_perplexity(totals.pll, totals.residues):.4f}")
    if "ece" in args.metrics and totals.targets:
        lines.append(f"ECE over all {totals.targets:,} masked targets ({args.mask_strategy}, seed {args.seed}): "
                     f"{math.exp(totals.ce / totals.targets):.4f}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Score every protein of the FASTA; report and totals on stderr."""
    args = build_parser().parse_args(argv)
    apply_threads(args)
    if not 0 < args.mask_prob < 1:
        raise UsageError(f"--mask-prob {args.mask_prob} must be between 0 and 1")
    from fairseq_esm.data.masking import masking_scheme
    from fairseq_esm.modules.batching import residue_budget

    model, alphabet = load_inference_model(args)
    scheme = masking_scheme(alphabet, args.mask_prob, args.leave_unmasked_prob, args.random_token_prob,
                            args.mask_strategy)
    budget = residue_budget(model.max_positions(), alphabet)
    report = FastaReport()
    totals = Totals()
    with ExitStack() as stack:
        bar = None
        if "pll" in args.metrics:
            from tqdm import tqdm

            work = pll_estimate(model, alphabet, args)
            print(describe_workload(work, args.max_tokens), file=sys.stderr)
            # a bar only on a terminal (tqdm's disable=None), so logs and pipes stay clean
            bar = stack.enter_context(tqdm(total=work.copies if work else None, desc="pll", unit="copy",
                                           disable=True if args.no_progress else None, dynamic_ncols=True,
                                           leave=False))
        out: TextIO | None = None
        for group in chunks(read_fasta(args.fasta, policy_from_args(args), report)):
            rows = score_chunk(model, alphabet, group, args, scheme, totals, bar)
            if out is None:
                out = sys.stdout if args.out == "-" else stack.enter_context(open(args.out, "w"))
                out.write("\t".join(header(args.metrics)) + "\n")
            out.writelines("\t".join(row) + "\n" for row in rows)
            totals.proteins += len(group)
            totals.residues += sum(len(s) for _, _, s in group)
            totals.long += sum(len(s) > budget for _, _, s in group)
    print(report.format(), file=sys.stderr)
    if report.records_written == 0:
        raise UsageError(f"{args.fasta}: no record survived the residue policy — see the report above")
    print(summary(args, totals, budget), file=sys.stderr)
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
