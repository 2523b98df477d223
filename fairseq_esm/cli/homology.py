"""``fairseq-esm-homology CHECKPOINT``: remote homology on SCOPe (the paper's Table 2) as a markdown + JSON table.

Each domain is embedded as the mean of its final-layer representations; faiss ranks all other domains by
cosine and by L2; Hit-10 and mean per-query AUC are reported at the fold and superfamily levels
(definitions in :mod:`fairseq_esm.evaluation.remote_homology`). ``--untrained`` adds a random-init model of
the checkpoint's shape (seeded), ``--composition`` the 25-letter amino-acid composition baseline, ``--hmm phmmer``
(and/or ``jackhmmer``) an all-vs-all HMMER search of the same domains ranked by bit score.
``--max-domains`` keeps whole folds in a seeded random order so a CPU run takes minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

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
from fairseq_esm.io.hmmer_search import TOOLS, HmmerResult, all_vs_all, hmmer_program

if TYPE_CHECKING:
    from fairseq_esm.evaluation.remote_homology import ScopSet
    from fairseq_esm.modules.alphabet import Alphabet
    from fairseq_esm.modules.esm1 import ESM1

#: the shipped SCOPe 2.07 ASTRAL 40% domains (examples/data/scope), relative to the repository root
SCOPE_FASTA = "examples/data/scope/astral-scopedom-seqres-gd-sel-gs-bib-40-2.07.fa.gz"
COLUMNS = ("model", "distance", "fold Hit-10", "fold AUC", "SF Hit-10", "SF AUC", "queries (fold / SF)")


def build_parser() -> argparse.ArgumentParser:
    """The checkpoint, the SCOPe set, the baselines and the outputs."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-homology", description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--fasta", default=SCOPE_FASTA, help="ASTRAL SCOPe FASTA, sccs as the header's 2nd token")
    parser.add_argument("--max-domains", type=int, help="keep whole folds (seeded order) up to this many domains")
    parser.add_argument("--max-length", type=int, default=1022,
                        help="skip (and count) domains with more residues (default %(default)s: ESM-1b's context)")
    parser.add_argument("--seed", type=int, default=1, help="seed of --max-domains and of --untrained's init")
    parser.add_argument("--untrained", action="store_true", help="add a random-init model of the same shape")
    parser.add_argument("--composition", action="store_true", help="add the amino-acid composition baseline")
    parser.add_argument("--hmm", action="append", default=[], choices=TOOLS,
                        help="add an all-vs-all HMMER search row (repeatable; jackhmmer runs 3 rounds; "
                        "HMMER's --cpu is --threads, default 1)")
    parser.add_argument("--label", help="name of the checkpoint's rows (default: its file name)")
    add_progress(parser)
    parser.add_argument("--json", type=Path, required=True, help="write settings, counts and rows here")
    parser.add_argument("--markdown", type=Path, required=True, help="write the table here")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Each search once; enough domains to rank."""
    args.hmm = list(dict.fromkeys(args.hmm))
    if args.max_domains is not None and args.max_domains < 2:
        raise UsageError(f"--max-domains {args.max_domains}: need at least 2 domains to rank")


def mean_embeddings(model: ESM1, alphabet: Alphabet, sequences: list[str], max_tokens: int,
                    desc: str, progress: bool = True) -> np.ndarray:
    """(n, C) mean of the final layer over each protein's residues, in input order."""
    from tqdm import tqdm

    from fairseq_esm.inference.extract import ExtractSpec, ExtractStats, extract_representations, resolve_layers

    last = resolve_layers([-1], model.num_layers)[0]
    spec = ExtractSpec(layers=(last,), toks_per_batch=max_tokens)
    records = [(str(i), seq) for i, seq in enumerate(sequences)]
    out = np.zeros((len(sequences), model.cfg.encoder_embed_dim), np.float32)
    stats = ExtractStats()
    for index, result in tqdm(extract_representations(model, alphabet, records, spec, stats), total=len(records),
                              desc=desc, unit="domain", disable=not progress):
        out[index] = result["mean_representations"][last].numpy()
    return out


def rows_for(label: str, embeddings: np.ndarray, sccs: list[str]) -> list[dict]:
    """One table row per distance: both levels' Hit-10, AUC and query counts."""
    from fairseq_esm.evaluation.remote_homology import DISTANCES, evaluate

    rows = []
    for distance in DISTANCES:
        started = time.perf_counter()
        results = {level: result.to_dict() for level, result in evaluate(embeddings, sccs, distance).items()}
        rows.append({"model": label, "distance": distance, "dim": int(embeddings.shape[1]),
                     "seconds": round(time.perf_counter() - started, 1), **results})
    return rows


def reported_positives(similarity: np.ndarray, sccs: list[str]) -> dict[str, str]:
    """Per level: positive pairs with a reported score, of all positive pairs (how much the search sees)."""
    from fairseq_esm.evaluation.remote_homology import LEVELS, hierarchy_codes, pair_labels

    codes, queries = hierarchy_codes(sccs), np.arange(len(sccs))
    counts = {}
    for level in LEVELS:
        positive = pair_labels(codes, queries, level) == 1
        counts[level] = f"{int((positive & np.isfinite(similarity)).sum()):,} of {int(positive.sum()):,}"
    return counts


def hmm_rows(tools: list[str], sequences: list[str], sccs: list[str], threads: int, seed: int,
             progress: bool) -> list[dict]:
    """One row per HMMER search: all-vs-all bit scores scored with the same Hit-10/AUC code."""
    from fairseq_esm.evaluation.remote_homology import evaluate_similarity

    rows = []
    for tool in tools:
        search: HmmerResult = all_vs_all(sequences, tool, threads, progress=progress)
        print(f"{search.label}: {len(sequences):,} queries x {len(sequences):,} domains, {threads} thread(s), "
              f"{search.seconds:.1f} s wall, {search.reported_pairs:,} pairs reported", flush=True)
        results = {level: result.to_dict() for level, result in evaluate_similarity(search.similarity, sccs,
                                                                                       seed).items()}
        rows.append({"model": search.label, "distance": "bit score", "dim": None, "seconds": round(search.seconds, 1),
                     "command": search.command, "reported_pairs": search.reported_pairs,
                     "reported_positive_pairs": reported_positives(search.similarity, sccs), **results})
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a markdown table (metrics to 3 decimals; "–" where no query had a positive)."""
    def metric(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        fold, sf = row["fold"], row["superfamily"]
        cells = [row["model"], row["distance"], metric(fold["hit10"]), metric(fold["auc"]), metric(sf["hit10"]),
                 metric(sf["auc"]), f"{fold['queries']:,} / {sf['queries']:,}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def describe(data: ScopSet) -> str:
    """One paragraph on the evaluated set: FASTA report, exclusions, subsampling, pair counts."""
    from fairseq_esm.evaluation.remote_homology import pair_counts

    counts, pairs = data.to_dict(), pair_counts([d.sccs for d in data.domains])
    return (f"{data.fasta.format()}\n"
            f"excluded related folds (Rossmann-like, beta-propellers): {data.excluded_fold_domains:,} domains; "
            f"left out by --max-domains: {data.subsampled_out:,}\n"
            f"evaluated: {counts['domains']:,} domains, {counts['folds']:,} folds, "
            f"{counts['superfamilies']:,} superfamilies, {counts['families']:,} families; "
            f"positive pairs: fold {pairs['fold']:,}, superfamily {pairs['superfamily']:,}")


def require_faiss() -> None:
    """Fail before any embedding is computed when faiss is missing."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        raise UsageError("faiss is not installed: pip install faiss-cpu (or faiss-gpu)") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Embed the SCOPe domains with each model, rank them, print and write the table."""
    args = build_parser().parse_args(argv)
    apply_threads(args)
    hmmer_threads = args.threads or 1  # HMMER's --cpu keeps its default of 1 unless --threads is given
    check_args(args)
    require_faiss()
    for tool in args.hmm:
        hmmer_program(tool)  # before any embedding is computed
    from fairseq_esm.checkpoints import untrained_like
    from fairseq_esm.evaluation.remote_homology import LEVELS, composition, load_scope_set, pair_counts

    model, alphabet = load_inference_model(args)
    data = load_scope_set(args.fasta, args.max_length, args.max_domains, args.seed)
    if len(data.domains) < 2:
        raise UsageError(f"{args.fasta}: {len(data.domains)} domain(s) left to evaluate; need at least 2")
    print(describe(data))
    sccs, sequences = [d.sccs for d in data.domains], [d.sequence for d in data.domains]
    label = args.label or Path(args.checkpoint).name
    progress = not args.no_progress
    rows = rows_for(label, mean_embeddings(model, alphabet, sequences, args.max_tokens, label, progress), sccs)
    if args.untrained:
        untrained = apply_precision(untrained_like(model, alphabet, args.seed), args)
        embeddings = mean_embeddings(untrained, alphabet, sequences, args.max_tokens, "untrained", progress)
        rows += rows_for(f"untrained (same shape, seed {args.seed})", embeddings, sccs)
    if args.composition:
        rows += rows_for("amino-acid composition (25-dim)", composition(sequences), sccs)
    rows += hmm_rows(args.hmm, sequences, sccs, hmmer_threads, args.seed, progress)
    table = markdown(rows)
    print(table, end="")
    args.markdown.write_text(table)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report = {"settings": settings, "data": data.to_dict(), "levels": list(LEVELS),
              "pairs": pair_counts(sccs), "rows": rows}
    args.json.write_text(json.dumps(report, indent=2))
    return 0


def cli() -> None:
    raise SystemExit(run_main(main))


if __name__ == "__main__":
    cli()
