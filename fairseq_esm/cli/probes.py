"""``fairseq-esm-probes CHECKPOINT``: linear SS8 and contact probes with SCOPe-level cross-validation (Table 3).

Labelled chains (``fairseq-esm-structure-labels`` output directories) get SCOPe domains by MMseqs2
transfer from an ASTRAL FASTA (rule in :mod:`fairseq_esm.evaluation.scope_folds`), or from a table a
previous run saved. For each held-out level (family, superfamily, fold) the domains are split into
``--folds`` partitions by group; each partition is scored by probes fitted on the others
(:mod:`fairseq_esm.evaluation.linear_probes`). Rows: the checkpoint, ``--untrained`` (same shape, seeded
init), ``--onehot`` (residue identity, no model), and chance (training majority state; random ranking).
The JSON keeps every domain's own test score per row and level; ``--png-dir`` draws their histograms.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from fairseq_esm.cli.common import (
    UsageError,
    add_alias,
    add_model_args,
    add_progress,
    apply_threads,
    load_inference_model,
    run_main,
    thread_count,
)
from fairseq_esm.cli.homology import SCOPE_FASTA
from fairseq_esm.evaluation.probe_settings import LEVELS, ContactProbeConfig

if TYPE_CHECKING:
    from fairseq_esm.evaluation.scope_folds import LabelledDomain
    from fairseq_esm.modules.alphabet import Alphabet
    from fairseq_esm.modules.esm1 import ESM1

ABBREVIATIONS = {"family": "fam", "superfamily": "SF", "fold": "fold"}


def build_parser() -> argparse.ArgumentParser:
    """The checkpoint, the labelled chains and their SCOPe domains, the probes and the outputs."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-probes", description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--labels", action="append", required=True, type=Path,
                        help="a fairseq-esm-structure-labels output directory (repeat for several)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--scope", default=SCOPE_FASTA, help="ASTRAL SCOPe FASTA searched with mmseqs "
                        "(default %(default)s)")
    source.add_argument("--assignments", type=Path, help="domain table written by --save-assignments (no search)")
    parser.add_argument("--save-assignments", type=Path, help="write the accepted domain hits here")
    parser.add_argument("--min-identity", type=float, default=0.9, help="SCOPe transfer (default %(default)s)")
    parser.add_argument("--min-coverage", type=float, default=0.8, help="of the domain (default %(default)s)")
    parser.add_argument("--levels", nargs="+", choices=LEVELS, default=list(LEVELS))
    parser.add_argument("--folds", type=int, default=5, help="partitions per level (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="partitions, probe init and --untrained's init")
    parser.add_argument("--repr-layers", type=int, default=-1, help="representation layer (default: last)")
    add_alias(parser, "--repr-layers", "--layer")
    parser.add_argument("--epochs", type=int, default=ContactProbeConfig.epochs, help="contact probe epochs")
    parser.add_argument("--lr", type=float, default=ContactProbeConfig.lr, help="contact probe AdamW lr")
    parser.add_argument("--untrained", action="store_true", help="add a random-init model of the same shape")
    parser.add_argument("--onehot", action="store_true", help="add the residue-identity one-hot baseline")
    parser.add_argument("--label", help="name of the checkpoint's row (default: its file name)")
    add_progress(parser)
    parser.add_argument("--json", type=Path, required=True, help="write settings, data counts and rows here")
    parser.add_argument("--markdown", type=Path, required=True, help="write the table here")
    parser.add_argument("--png-dir", type=Path, help="write per-domain score histograms here, one PNG per level "
                        "(probes_LEVEL.png; paper Figures S2/S3)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Enough partitions; the histogram directory made now, so a bad path fails before the probes run."""
    if args.folds < 2:
        raise UsageError(f"--folds {args.folds}: cross-validation needs at least 2 partitions")
    if args.png_dir is not None:
        try:
            args.png_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(f"--png-dir {args.png_dir}: {err.strerror}") from None


def load_domains(args: argparse.Namespace) -> tuple[list[LabelledDomain], dict]:
    """Labelled chains cut into SCOPe domains, and the counts of what was read, assigned and dropped."""
    from fairseq_esm.evaluation.scope_folds import (
        RULE,
        crop_domains,
        group_key,
        read_assignments,
        read_labels,
        search_domains,
        write_assignments,
    )

    chains = [chain for directory in args.labels for chain in read_labels(directory)]
    names = Counter(name for name, *_ in chains)
    if max(names.values(), default=0) > 1:
        raise UsageError(f"chain {names.most_common(1)[0][0]} appears in two --labels directories")
    if args.assignments:
        hits, rule = read_assignments(args.assignments), f"read from {args.assignments}"
    else:
        hits = search_domains([(name, seq) for name, seq, *_ in chains], args.scope, args.min_identity,
                              args.min_coverage, thread_count(args))
        rule = RULE.format(identity=args.min_identity, coverage=args.min_coverage)
    if args.save_assignments:
        write_assignments(args.save_assignments, hits)
    domains, dropped = crop_domains(chains, hits)
    counts = {"chains": len(chains), "assigned_regions": len(hits), "domains": len(domains),
              "residues": sum(len(d.sequence) for d in domains), "dropped": dict(dropped), "rule": rule,
              **{f"{level}_groups": len({group_key(d.sccs, level) for d in domains}) for level in LEVELS}}
    return domains, counts


def level_partitions(domains: list[LabelledDomain], levels: Sequence[str], folds: int, seed: int
                     ) -> dict[str, list[int]]:
    """Partition index of every domain, per level, balanced by residues."""
    from fairseq_esm.evaluation.scope_folds import group_key, partition

    weights = [len(d.sequence) for d in domains]
    return {level: partition([group_key(d.sccs, level) for d in domains], weights, folds, seed, level)
            for level in levels}


def score_row(label: str, features: list[np.ndarray], domains: list[LabelledDomain], parts: dict[str, list[int]],
              cfg: ContactProbeConfig, progress: bool) -> dict:
    """One table row: both probes cross-validated at every level."""
    from fairseq_esm.evaluation.linear_probes import cross_validate

    started = time.perf_counter()
    levels = {level: cross_validate(domains, features, part, cfg, f"{label} / {level}", progress)
              for level, part in parts.items()}
    return {"model": label, "dim": int(features[0].shape[1]), "levels": levels,
            "seconds": round(time.perf_counter() - started, 1)}


def chance_row(row: dict) -> dict:
    """Chance levels read off a scored row: majority training state (SS8), random ranking (contacts)."""
    levels = {level: {"ss8_accuracy": scores["ss8_majority"], "contact_long_P@L": scores["contact_random"]}
              for level, scores in row["levels"].items()}
    return {"model": "chance (majority state; random ranking)", "levels": levels}


def markdown(rows: list[dict], levels: Sequence[str]) -> str:
    """Rows as a markdown table: mean ± std over partitions, SS8 accuracy then contact Top-L long-range."""
    def cell(metric: dict) -> str:
        if metric["mean"] is None:
            return "–"
        return f"{metric['mean']:.3f}" + (f" ± {metric['std']:.3f}" if metric["std"] is not None else "")

    columns = (["model"] + [f"SS8 {ABBREVIATIONS[level]}" for level in levels]
               + [f"contact P@L LR {ABBREVIATIONS[level]}" for level in levels])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [row["model"]] + [cell(row["levels"][level]["ss8_accuracy"]) for level in levels]
        cells += [cell(row["levels"][level]["contact_long_P@L"]) for level in levels]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def describe(counts: dict, folds: int) -> str:
    """What was evaluated: chains, domains, groups per level, what was dropped and why."""
    dropped = "; ".join(f"{reason}: {n}" for reason, n in counts["dropped"].items()) or "none"
    return (f"SCOPe assignment: {counts['rule']}\n"
            f"{counts['chains']} labelled chains -> {counts['assigned_regions']} assigned regions -> "
            f"{counts['domains']} domains ({counts['residues']:,} residues); dropped: {dropped}\n"
            f"groups: {counts['family_groups']} families, {counts['superfamily_groups']} superfamilies, "
            f"{counts['fold_groups']} folds; {folds} partitions per level")


def write_histograms(rows: list[dict], levels: Sequence[str], directory: Path) -> None:
    """One per-domain histogram PNG per level (see :mod:`fairseq_esm.evaluation.probe_plots`)."""
    from fairseq_esm.evaluation.probe_plots import plot_probe_histograms  # matplotlib only when asked for
    for level in levels:
        print(f"wrote {plot_probe_histograms(rows, level, directory / f'probes_{level}.png')}")


def scored_rows(model: ESM1, alphabet: Alphabet, args: argparse.Namespace, domains: list[LabelledDomain],
                parts: dict[str, list[int]], cfg: ContactProbeConfig) -> list[dict]:
    """The checkpoint's row, then --untrained's and --onehot's, then chance."""
    from fairseq_esm.checkpoints import untrained_like
    from fairseq_esm.evaluation.linear_probes import onehot_features
    from fairseq_esm.inference.extract import residue_representations

    progress, sequences = not args.no_progress, [d.sequence for d in domains]

    def model_row(name: str, desc: str, net: ESM1) -> dict:
        features = residue_representations(net, alphabet, sequences, args.repr_layers, args.max_tokens, desc, progress)
        return score_row(name, features, domains, parts, cfg, progress)

    label = args.label or Path(args.checkpoint).name
    rows = [model_row(label, label, model)]
    if args.untrained:  # initialised only now: its seeding must not touch the rows before it
        rows.append(model_row(f"untrained (same shape, seed {args.seed})", "untrained",
                              untrained_like(model, alphabet, args.seed)))
    if args.onehot:
        rows.append(score_row("residue one-hot (25-dim, no model)", onehot_features(sequences), domains, parts, cfg,
                              progress))
    return rows + [chance_row(rows[0])]


def write_report(path: Path, args: argparse.Namespace, cfg: ContactProbeConfig, counts: dict,
                 domains: list[LabelledDomain], parts: dict[str, list[int]], rows: list[dict]) -> None:
    """Settings, data counts, every domain's partitions and the rows as JSON."""
    from fairseq_esm.evaluation.linear_probes import SS8_C

    settings = {k: (str(v) if isinstance(v, Path) else [str(p) for p in v] if k == "labels" else v)
                for k, v in vars(args).items()}
    report = {"settings": settings, "ss8_C": SS8_C, "contact_probe": asdict(cfg), "data": counts,
              "partition_domains": {level: np.bincount(part).tolist() for level, part in parts.items()},
              "domains": [{"name": d.name, "sccs": d.sccs, "length": len(d.sequence),
                           **{f"{level}_partition": part[i] for level, part in parts.items()}}
                          for i, d in enumerate(domains)],
              "rows": rows}
    path.write_text(json.dumps(report, indent=2))


def main(argv: Sequence[str] | None = None) -> int:
    """Cut the labelled chains into SCOPe domains, cross-validate the probes per level, print and write the table."""
    args = build_parser().parse_args(argv)
    apply_threads(args)
    check_args(args)

    model, alphabet = load_inference_model(args)
    domains, counts = load_domains(args)
    print(describe(counts, args.folds))
    parts = level_partitions(domains, args.levels, args.folds, args.seed)
    cfg = ContactProbeConfig(epochs=args.epochs, lr=args.lr, seed=args.seed)
    rows = scored_rows(model, alphabet, args, domains, parts, cfg)
    table = markdown(rows, args.levels)
    print(table, end="")
    args.markdown.write_text(table)
    write_report(args.json, args, cfg, counts, domains, parts, rows)
    if args.png_dir is not None:
        write_histograms(rows, args.levels, args.png_dir)
    return 0


def cli() -> None:
    raise SystemExit(run_main(main))


if __name__ == "__main__":
    cli()
