"""``fairseq-esm-ngram --train T.fasta --valid V.fasta --heldout H.fasta``: the paper's
n-gram baseline. For every context size k, count the training proteins once, choose the Laplace alpha
with the lowest validation ECE, and score the held-out proteins at that alpha; the best model overall is
chosen on validation ECE alone. Each FASTA file goes through the project's residue policy (report on
stderr); progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

import numpy as np

from fairseq_esm.cli.common import UsageError, run_main
from fairseq_esm.evaluation.ngram import (
    MAX_CONTEXT,
    ContextResult,
    EncodedProteins,
    best_context,
    encode_proteins,
    sweep_context,
)
from fairseq_esm.io.fasta import FastaReport, read_fasta

DESCRIPTION = "The paper's n-gram baseline: Laplace alpha per context size chosen on validation, then held-out ECE."
DEFAULT_CONTEXTS = "0,1,2,3,4,5,6,7,8"
DEFAULT_ALPHAS = ",".join(f"{a:.3g}" for a in np.logspace(-3, 1, 17))  # 1e-3 .. 10, 4 per decade


def build_parser() -> argparse.ArgumentParser:
    """The three FASTA splits, the grid, the outputs."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-ngram", description=DESCRIPTION)
    parser.add_argument("--train", required=True, help="FASTA the n-gram counts come from (plain or gzip)")
    parser.add_argument("--valid", required=True, help="FASTA the Laplace alpha (and the best k) is chosen on")
    parser.add_argument("--heldout", required=True, help="FASTA scored once per k at its chosen alpha")
    parser.add_argument("--contexts", default=DEFAULT_CONTEXTS,
                        help=f"context sizes k (previous residues), comma-separated, 0..{MAX_CONTEXT} "
                        "(default %(default)s)")
    parser.add_argument("--alphas", default=DEFAULT_ALPHAS,
                        help="Laplace alphas to try, comma-separated (default: 17 log-spaced, 1e-3 .. 10)")
    parser.add_argument("--json", help="also write every number (ECE per k and alpha, FASTA reports) here")
    parser.add_argument("--markdown", help="also write the table as markdown here")
    return parser


def parse_list(text: str, flag: str, kind: type) -> list:
    """A comma-separated list of numbers, or a one-line error naming the flag."""
    try:
        values = [kind(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected comma-separated {kind.__name__}s") from None
    if not values:
        raise UsageError(f"{flag}: empty list")
    return list(dict.fromkeys(values))


def check_grid(contexts: list[int], alphas: list[float]) -> None:
    """Context sizes the keys can hold; positive finite alphas."""
    if any(not 0 <= k <= MAX_CONTEXT for k in contexts):
        raise UsageError(f"--contexts: each k must be in 0..{MAX_CONTEXT}, got {contexts}")
    if any(not 0 < a < float("inf") for a in alphas):
        raise UsageError(f"--alphas: each alpha must be a positive finite number, got {alphas}")


def load_split(name: str, path: str) -> tuple[EncodedProteins, FastaReport, set[str]]:
    """One FASTA split through the residue policy, encoded; its report printed to stderr."""
    report = FastaReport()
    sequences = [seq for _, seq in read_fasta(path, report=report)]
    print(f"[{name}] {report.format()}", file=sys.stderr)
    if not sequences:
        raise UsageError(f"{path}: no protein left in the {name} split (see the report above)")
    return encode_proteins(sequences), report, set(sequences)


def table_rows(results: list[ContextResult]) -> list[list[str]]:
    """Header and one row per context size."""
    rows = [["k", "best alpha", "train ECE", "valid ECE", "held-out ECE", "contexts"]]
    rows += [[str(r.k), f"{r.best_alpha:.3g}" + ("*" if r.alpha_at_grid_edge else ""), f"{r.train_ece:.3f}",
              f"{r.valid_ece:.3f}", f"{r.heldout_ece:.3f}", f"{r.n_contexts:,}"] for r in results]
    return rows


def best_line(best: ContextResult) -> str:
    """The model chosen on validation ECE, with its held-out ECE."""
    return (f"best (chosen on valid ECE): k={best.k} alpha={best.best_alpha:.3g}: valid ECE {best.valid_ece:.3f}, "
            f"held-out ECE {best.heldout_ece:.3f}")


def write_markdown(path: str, rows: list[list[str]], best: ContextResult, sizes: dict[str, int]) -> None:
    """The table and the chosen model as markdown."""
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "---|" * len(rows[0]))
    lines += ["", best_line(best) + ".", "",
              "Residues: " + ", ".join(f"{name} {n:,}" for name, n in sizes.items()) + "."]
    if any("*" in cell for row in rows[1:] for cell in row):
        lines[-1] += " `*`: the best alpha is at the edge of the grid."
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Load the three splits, sweep k x alpha, print the table and the chosen model, write the outputs."""
    args = build_parser().parse_args(argv)
    contexts = parse_list(args.contexts, "--contexts", int)
    alphas = sorted(parse_list(args.alphas, "--alphas", float))
    check_grid(contexts, alphas)
    splits = {name: load_split(name, path) for name, path in
              [("train", args.train), ("valid", args.valid), ("heldout", args.heldout)]}
    sizes = {name: len(split[0]) for name, split in splits.items()}
    in_train = len(splits["heldout"][2] & splits["train"][2])
    print(f"residues: {', '.join(f'{n} {s:,}' for n, s in sizes.items())}; {in_train:,} distinct held-out "
          "sequences also occur verbatim in train", file=sys.stderr)
    results = []
    for k in contexts:
        result = sweep_context(splits["train"][0], splits["valid"][0], splits["heldout"][0], k, alphas)
        edge = " (at the edge of the alpha grid)" if result.alpha_at_grid_edge else ""
        print(f"k={k}: {result.n_contexts:,} contexts, best alpha {result.best_alpha:.3g}{edge}, valid ECE "
              f"{result.valid_ece:.3f}, {result.seconds:.1f} s", file=sys.stderr)
        results.append(result)
    best = best_context(results)
    rows = table_rows(results)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print("\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows))
    print(best_line(best))
    if any(r.alpha_at_grid_edge for r in results):
        print("*: best alpha at the edge of the grid; widen --alphas to be sure of the optimum")
    if args.markdown:
        write_markdown(args.markdown, rows, best, sizes)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"residues": sizes, "heldout_sequences_in_train": in_train,
                       "fasta_reports": {name: split[1].to_dict() for name, split in splits.items()},
                       "results": [vars(r) for r in results], "best": {"k": best.k, "alpha": best.best_alpha,
                       "valid_ece": best.valid_ece, "heldout_ece": best.heldout_ece}}, handle, indent=2)
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
