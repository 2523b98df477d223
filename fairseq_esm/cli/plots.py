"""``fairseq-esm-plots``: PNG pictures of a checkpoint: t-SNE of its output amino-acid embeddings
coloured by biochemical class (Figure 1), and per-family Pfam AUC histograms from ``pfam_auc --json`` files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

from fairseq_esm.cli.common import UsageError, add_checkpoint_args, add_out, apply_threads, run_main


def build_parser() -> argparse.ArgumentParser:
    """Checkpoint, output directory, optional AUC summaries."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-plots", description=__doc__.splitlines()[0].split(": ", 1)[1])
    add_checkpoint_args(parser, device="cpu")  # no GPU needed, and --untrained's seeded init stays the same
    add_out(parser, "directory the PNG files go to (created)", type=Path, old=("--out-dir",))
    parser.add_argument("--auc-json", type=Path, action="append", default=[],
                        help="a fairseq-esm-pfam-auc --json summary; repeat to overlay (e.g. trained and --untrained)")
    parser.add_argument("--untrained", action="store_true", help="also draw the t-SNE of a random-init model")
    parser.add_argument("--seed", type=int, default=1, help="t-SNE seed and --untrained's init seed")
    return parser


def read_summary(path: Path) -> dict:
    """One ``pfam_auc --json`` file, checked for the fields the histogram needs."""
    try:
        summary = json.loads(path.read_text())
        missing = {"families", "checkpoint", "untrained"} - set(summary)
        if missing or not summary["families"] or not all("auc" in row for row in summary["families"]):
            raise ValueError(f"missing {', '.join(sorted(missing)) or 'per-family AUCs'}")
    except (ValueError, TypeError, AttributeError) as err:
        raise UsageError(f"{path}: not a fairseq-esm-pfam-auc --json summary ({err})") from None
    return summary


def draw_tsne(args: argparse.Namespace) -> None:
    """One t-SNE PNG of the output embeddings per model: the checkpoint, and a random init with --untrained."""
    from fairseq_esm.checkpoints import load_model, untrained_like
    from fairseq_esm.evaluation.embedding_plots import output_embeddings, plot_embeddings, tsne_2d

    model, alphabet = load_model(args.checkpoint, args.device, args.allow_unsafe)
    args.out.mkdir(parents=True, exist_ok=True)
    models = [("trained", model)] + ([("untrained", untrained_like(model, alphabet, args.seed))] if args.untrained
                                     else [])
    for name, net in models:
        letters, vectors = output_embeddings(net, alphabet)
        title = f"output embeddings, {name} ({Path(args.checkpoint).name}), t-SNE"
        path = plot_embeddings(tsne_2d(vectors, args.seed), letters, args.out / f"tsne_{name}.png", title)
        print(f"wrote {path}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Draw the t-SNE pictures (and the AUC histogram) into --out."""
    args = build_parser().parse_args(argv)
    apply_threads(args)
    summaries = [read_summary(path) for path in args.auc_json]  # check inputs before the slow part
    draw_tsne(args)
    from fairseq_esm.evaluation.embedding_plots import BIOCHEMICAL_CLASSES, plot_auc_histogram

    if summaries:
        print(f"wrote {plot_auc_histogram(summaries, args.out / 'pfam_auc_hist.png')}")
    print("classes: " + "; ".join(f"{k} {v}" for k, v in BIOCHEMICAL_CLASSES.items()))
    return 0


def cli() -> None:
    raise SystemExit(run_main(main))


if __name__ == "__main__":
    cli()
