"""``fairseq-esm-unigram-ece DATA_DIR``: the unigram baseline's held-out ECE.

The held-out masked set is built through the ``protein_mlm`` task with the same options and
seed as training, so its targets are the ones ``fairseq-validate`` scores.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from fairseq_esm.cli.common import run_main
from fairseq_esm.io.mask_strategies import MASK_STRATEGIES


def build_parser() -> argparse.ArgumentParser:
    """Options mirror the ``protein_mlm`` task's."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-unigram-ece", description=__doc__.splitlines()[0])
    parser.add_argument("data", help="fairseq-preprocess'd data directory (dict.txt, SPLIT.bin/.idx)")
    parser.add_argument("--train-split", default="train", help="split the frequencies are counted on")
    parser.add_argument("--valid-split", default="valid", help="held-out split whose masked targets are scored")
    parser.add_argument("--seed", type=int, default=1, help="the training run's --seed")
    parser.add_argument("--alphabet", default="esm1b", choices=["esm1b", "esm1"])
    parser.add_argument("--max-positions", type=int, default=1024)
    parser.add_argument("--mask-prob", type=float, default=0.15)
    parser.add_argument("--leave-unmasked-prob", type=float, default=0.1)
    parser.add_argument("--random-token-prob", type=float, default=0.1)
    parser.add_argument("--mask-strategy", default="bert", choices=list(MASK_STRATEGIES))
    parser.add_argument("--json", help="also write the results to this JSON file")
    return parser


def unigram_report(args: argparse.Namespace) -> dict:
    """Count train frequencies, score the task's held-out targets, return the numbers."""
    from fairseq_esm.evaluation.unigram import UNIFORM_20_ECE, ece, heldout_targets, residue_counts, unigram_log_probs
    from fairseq_esm.tasks.protein_mlm import ProteinMLMConfig, ProteinMLMTask

    cfg = ProteinMLMConfig(
        data=args.data,
        alphabet=args.alphabet,
        max_positions=args.max_positions,
        mask_prob=args.mask_prob,
        leave_unmasked_prob=args.leave_unmasked_prob,
        random_token_prob=args.random_token_prob,
        mask_strategy=args.mask_strategy,
        seed=args.seed,
        train_subset=args.train_split,
    )
    task = ProteinMLMTask.setup_task(cfg)
    train = task.stored_tokens(args.train_split)  # same integrity checks as fairseq-train
    log_probs = unigram_log_probs(residue_counts((train[i] for i in range(len(train))), task.alphabet), task.alphabet)
    heldout = task.build_dataset(args.valid_split)
    targets = heldout_targets((heldout[i] for i in range(len(heldout))), task.alphabet.padding_idx)
    return {
        "unigram_ece": ece(log_probs, targets),
        "uniform_ece": UNIFORM_20_ECE,
        "n_targets": int(len(targets)),
        "valid_split": args.valid_split,
        "seed": args.seed,
        "max_positions": args.max_positions,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the unigram and uniform-over-20 ECEs; optionally write them as JSON."""
    args = build_parser().parse_args(argv)
    report = unigram_report(args)
    print(f"unigram ECE: {report['unigram_ece']:.4f} over {report['n_targets']:,} masked targets of "
          f"'{args.valid_split}'")
    print(f"uniform-over-20 ECE: {report['uniform_ece']:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
