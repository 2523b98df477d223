"""SS8 confusion matrices of a protein_ss8 checkpoint on the test splits of a fairseq-esm-structure-dataset dir.

    fairseq-esm-ss8-confusion ss/checkpoint_best.pt data-ss --split test_cb513 --split test_ts115 --out cm

For each split (default: every ``test_NAME`` split of DATA), scores every labelled residue as ``fairseq-validate``
does (same task, windows, batches) and writes ``OUT/SPLIT.confusion.tsv`` (8x8 counts, rows = DSSP state,
columns = predicted, ``H G I E B T S C``) and ``OUT/SPLIT.confusion.png`` (rows as shares, counts in the cells);
prints one line per split with its residues, Q8 and Q3 (DSSP's 8->3 reduction of both states).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from fairseq_esm.cli.common import (
    UsageError,
    add_max_tokens,
    add_out,
    add_progress,
    add_threads,
    apply_threads,
    run_main,
)


def build_parser() -> argparse.ArgumentParser:
    """Checkpoint, data dir, splits, ``--out`` directory and the model flags."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-ss8-confusion", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="fairseq-train checkpoint of --task protein_ss8 (e.g. checkpoint_best.pt)")
    parser.add_argument("data", help="data dir of fairseq-esm-structure-dataset")
    parser.add_argument("--split", action="append", default=[],
                        help="split to score, repeatable (default: every test_NAME split of DATA)")
    add_out(parser, "output directory: SPLIT.confusion.tsv and SPLIT.confusion.png per split")
    add_max_tokens(parser, 8192)
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    add_threads(parser)
    add_progress(parser)
    return parser


def splits_of(data: Path, wanted: list[str]) -> list[str]:
    """``wanted`` (each must exist in ``data``) or every ``test_NAME`` split of ``data``, sorted."""
    if not data.is_dir():
        raise UsageError(f"{data}: no such directory; build it with fairseq-esm-structure-dataset")
    present = sorted(path.name[: -len(".names.txt")] for path in data.glob("*.names.txt"))
    if not wanted:
        wanted = [split for split in present if split.startswith("test_")]
        if not wanted:
            raise UsageError(f"{data}: no test_NAME split; build it with fairseq-esm-structure-dataset --test-set "
                             "NAME=FILE, or name splits with --split")
    missing = [split for split in wanted if split not in present]
    if missing:
        raise UsageError(f"{data}: no split {', '.join(missing)} (it has {', '.join(present) or 'none'})")
    return wanted


def main(argv: list[str] | None = None) -> int:
    """Score each split, write its TSV and PNG, print a line per split."""
    args = build_parser().parse_args(argv)
    apply_threads(args)
    data, out = Path(args.data), Path(args.out)
    splits = splits_of(data, args.split)
    if not Path(args.checkpoint).is_file():
        raise UsageError(f"{args.checkpoint}: no such checkpoint file")
    from fairseq_esm.checkpoints import pick_device
    from fairseq_esm.evaluation.ss8_confusion import confusion_counts, plot_confusion, q3, q8, write_tsv
    from fairseq_esm.tasks.ss8_predictions import load_ss8_checkpoint, split_predictions

    for noisy in ("fairseq", "matplotlib", "PIL"):  # fairseq's batching chatter; its root logger is at DEBUG
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", "'pin_memory' argument is set as true", UserWarning)  # fairseq's CPU loader
    device = str(pick_device(args.device))
    model, task = load_ss8_checkpoint(args.checkpoint, str(data))
    out.mkdir(parents=True, exist_ok=True)
    for split in splits:
        predicted, true = split_predictions(model, task, split, args.max_tokens, device, not args.no_progress)
        counts = confusion_counts(predicted, true)
        tsv = write_tsv(counts, out / f"{split}.confusion.tsv")
        summary = f"{split}: {int(counts.sum()):,} labelled residues, q8 {q8(counts):.2f}, q3 {q3(counts):.2f}"
        png = plot_confusion(counts, out / f"{split}.confusion.png", f"{summary}\n{args.checkpoint}")
        print(f"{summary} -> {tsv}, {png.name}")
    return 0


def cli() -> None:
    sys.exit(run_main(main))
