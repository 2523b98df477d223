"""``fairseq-esm-lm-table DATA_BIN``: held-out ECE of several language models in one table (markdown + JSON).

Rows: fairseq checkpoints (``--model LABEL=PATH``: ESM or BiLSTM, each scored by its own criterion as
``fairseq-validate`` would), untrained architectures (``--untrained LABEL=ARCH``), the amino-acid
frequency baseline (``--unigram``) and n-gram sweeps (``--ngram-json``, from ``fairseq-esm-ngram``).
Masked models all see the same masks (``--seed``). ``--paper LABEL=ECE`` adds the paper's figure to the
row with that label (or label prefix).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
from pathlib import Path

from fairseq_esm.cli.common import (
    UsageError,
    add_max_tokens,
    add_precision,
    add_progress,
    add_threads,
    apply_precision,
    apply_threads,
    precision_of,
    run_main,
)

logger = logging.getLogger(__name__)
COLUMNS = ("model", "scored on", "parameters", "targets", "ECE", "paper ECE")


def labelled(text: str) -> tuple[str, str]:
    """``LABEL=VALUE`` → (label, value); the label may contain spaces, the value is after the last ``=``."""
    label, sep, value = text.rpartition("=")
    if not sep or not label or not value:
        raise argparse.ArgumentTypeError(f"expected LABEL=VALUE, got {text!r}")
    return label, value


def build_parser() -> argparse.ArgumentParser:
    """The data-bin, the rows to score and the outputs."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-lm-table", description=__doc__.splitlines()[0])
    parser.add_argument("data", help="data-bin directory holding the held-out split (and train, for --unigram)")
    parser.add_argument("--subset", default="heldout", help="split every model is scored on")
    parser.add_argument("--model", type=labelled, action="append", default=[], metavar="LABEL=CHECKPOINT")
    parser.add_argument("--untrained", type=labelled, action="append", default=[], metavar="LABEL=ARCH")
    parser.add_argument("--unigram", action="store_true", help="add the amino-acid frequency baseline (train split)")
    parser.add_argument("--ngram-json", type=Path, action="append", default=[], help="fairseq-esm-ngram --json output")
    parser.add_argument("--paper", type=labelled, action="append", default=[], metavar="LABEL=ECE")
    parser.add_argument("--seed", type=int, default=1, help="mask seed shared by every masked model")
    parser.add_argument("--max-positions", type=int, default=1024, help="for --untrained and --unigram")
    add_max_tokens(parser, 8192)
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    add_threads(parser)
    add_precision(parser)
    add_progress(parser)
    parser.add_argument("--markdown", type=Path, help="write the table here")
    parser.add_argument("--json", type=Path, help="write the rows here")
    return parser


def model_row(label: str, model, task, criterion, args: argparse.Namespace) -> dict:
    """Score one model on the subset and describe it as a table row."""
    from fairseq_esm.modules.esm1 import ESM1
    from fairseq_esm.tasks.heldout import score_split

    precision, parameters = precision_of(args), sum(p.numel() for p in model.parameters())
    if isinstance(model, ESM1):
        apply_precision(model.to(args.device), args)
    elif precision != "fp32":
        raise UsageError(f"--{precision} applies to ESM models; {label} is a {type(model).__name__}: score it in a "
                         "run without the flag")
    result = score_split(model, task, criterion, args.subset, args.max_tokens, progress=not args.no_progress,
                         device=args.device)
    scored = "masked targets" if "Masked" in result.criterion else "every residue"
    logger.info(f"{label}: ECE {result.ece:.3f} over {result.targets:,} {scored}")
    return {"model": label, "scored on": scored, "parameters": parameters, "targets": result.targets,
            "ECE": result.ece, "accuracy": result.accuracy}


def unigram_row(args: argparse.Namespace) -> dict:
    """The amino-acid composition baseline on the same masked targets as the ESM rows."""
    from fairseq_esm.cli.unigram_ece import build_parser as unigram_parser
    from fairseq_esm.cli.unigram_ece import unigram_report

    report = unigram_report(unigram_parser().parse_args([args.data, "--valid-split", args.subset, "--seed",
                                                         str(args.seed), "--max-positions", str(args.max_positions)]))
    return {"model": "unigram (amino-acid frequencies)", "scored on": "masked targets", "parameters": 25,
            "targets": report["n_targets"], "ECE": report["unigram_ece"]}


def ngram_rows(path: Path) -> list[dict]:
    """The best n-gram (chosen on validation) of a ``fairseq-esm-ngram`` sweep."""
    try:
        sweep = json.loads(path.read_text())
        best = sweep["best"]
        label = f"n-gram, context {best['k']}, Laplace alpha {best['alpha']:g} (best on valid)"
        return [{"model": label, "scored on": "every residue", "parameters": "",
                 "targets": sweep["residues"]["heldout"], "ECE": best["heldout_ece"]}]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{path}: not a fairseq-esm-ngram --json file ({err})") from None


def paper_figure(label: str, paper: dict[str, str]) -> str:
    """The ``--paper`` figure given for this row: its exact label, else the longest label it starts with."""
    if label in paper:
        return paper[label]
    prefixes = [key for key in paper if label.startswith(key)]
    return paper[max(prefixes, key=len)] if prefixes else ""


def markdown(rows: list[dict]) -> str:
    """The rows as a markdown table (ECE to 2 decimals, as in the paper)."""
    def cell(row: dict, key: str) -> str:
        value = row.get(key, "")
        if isinstance(value, float):
            return f"{value:.2f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row, key) for key in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Score every requested row, print the table, write the outputs."""
    args = build_parser().parse_args(argv)
    apply_threads(args)
    if not (args.model or args.untrained or args.unigram or args.ngram_json):
        raise UsageError("nothing to score: give --model, --untrained, --unigram or --ngram-json")
    from fairseq_esm.checkpoints import pick_device
    from fairseq_esm.tasks.heldout import build_untrained, load_checkpoint

    args.device = str(pick_device(args.device))
    rows = [row for path in args.ngram_json for row in ngram_rows(path)]
    rows += [unigram_row(args)] if args.unigram else []
    for label, arch in args.untrained:
        model, task, criterion = build_untrained(arch, args.data, args.seed, extra=["--max-positions",
                                                                                   str(args.max_positions)])
        rows.append(model_row(label, model, task, criterion, args))
    for label, path in args.model:
        if not Path(path).is_file():
            raise FileNotFoundError(errno.ENOENT, "no such checkpoint file", path)
        rows.append(model_row(label, *load_checkpoint(path, args.data, args.seed), args))
    for row in rows:
        row["paper ECE"] = paper_figure(row["model"], dict(args.paper))
    table = markdown(rows)
    print(table, end="")
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        args.json.write_text(json.dumps({"subset": args.subset, "seed": args.seed, "rows": rows}, indent=2))
    return 0


def cli() -> None:
    raise SystemExit(run_main(main))
