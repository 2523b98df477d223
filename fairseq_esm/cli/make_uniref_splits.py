"""UniRef-style pretraining sets with the paper's cluster-level hold-out, written as FASTA and fairseq data-bins.

    fairseq-esm-make-uniref-splits proteins.fasta.gz --out uniref --threads 4 \\
        [--ur50-clusters uniref50.tsv] [--ur100-clusters uniref100.tsv] [--fractions 0.01,0.1]

Rives et al. (Section 3, Appendix "Datasets"): a random 10% of the 50%-identity clusters is held out
(their representatives of at most 1,024 residues are the evaluation set) and every member of a
held-out cluster is removed from every training set. A further 5% of the clusters (disjoint) is the
validation set, used to tune baselines. Training sets, from the remaining clusters:

    ur100/   one representative per 100%-identity cluster      (UR100)
    ur50s/   one representative per 50%-identity cluster       (UR50/S)
    ur50d/   every member, with train.clusters.npy: fairseq-train --cluster-sampling draws one member
             per 50% cluster per epoch                         (UR50/D)
    ur50s_1pct/, ur50s_10pct/, ...   nested random fractions of UR50/S (scaling rows)

Each holds train.fasta and data-bin/ (train, valid, heldout splits; valid and heldout are the same
files everywhere). Clusters come from UniRef / MMseqs2 tables if given (fairseq_esm/io/clusters.py),
else from MMseqs2 run here (50%: --min-seq-id 0.5 -c 0.8; 100%: --min-seq-id 1.0 -c 1.0). A training
record whose 100% cluster or exact sequence also occurs in a held-out or validation cluster is removed
too (counted as removed_near_eval), so no evaluation sequence is trained on. OUT/splits.json has
every count, OUT/clusters.tsv every record's clusters and fate (heldout_cluster, valid_cluster,
removed_near_eval, train); the same input and seed give the same files.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from fairseq_esm.cli.common import UsageError, add_alias, add_out, run_main, thread_count
from fairseq_esm.io.clusters import Membership, membership_from_table, run_mmseqs
from fairseq_esm.io.fasta import FastaReport, ResiduePolicy, add_policy_args, policy_from_args, read_fasta

EVAL_SPLITS = ("valid", "heldout")
#: what happened to each record, in OUT/clusters.tsv
ASSIGNMENTS = ("heldout_cluster", "valid_cluster", "removed_near_eval", "train")


def build_parser() -> argparse.ArgumentParser:
    """The command line of the module doc."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-make-uniref-splits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fasta", help="FASTA input, plain or gzip")
    add_out(parser, "output directory: the sets, splits.json and clusters.tsv", old=("--out-dir",))
    parser.add_argument("--ur50-clusters", help="50%% membership: UniProt UniRef50 TSV, MMseqs2 or cluster<TAB>member")
    parser.add_argument("--ur100-clusters", help="100%% membership, same layouts (default: MMseqs2 at 100%%)")
    parser.add_argument("--heldout-fraction", type=float, default=0.1, help="fraction of 50%% clusters held out")
    parser.add_argument("--valid-fraction", type=float, default=0.05, help="fraction of 50%% clusters for valid")
    parser.add_argument("--fractions", default="0.01,0.1", help="UR50/S fractions to write ('' for none)")
    parser.add_argument("--max-heldout-length", type=int, default=1024, help="longest held-out protein (residues)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--threads", type=int, default=1,
                        help="MMseqs2 threads and processes reading/binarizing FASTA (default %(default)s)")
    add_alias(parser, "--threads", "--workers")
    parser.add_argument("--mmseqs-mode", choices=["linclust", "cluster"], default="linclust",
                        help="MMseqs2 workflow when clustering here: easy-linclust (default) or easy-cluster")
    add_policy_args(parser)
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad fractions, thread counts and missing cluster tables before reading a large FASTA."""
    args.fractions = parse_fractions(args.fractions)
    thread_count(args)
    for table in (args.ur50_clusters, args.ur100_clusters):
        if table and not os.path.isfile(table):
            raise FileNotFoundError(errno.ENOENT, "no such file", table)


def parse_fractions(text: str) -> list[float]:
    """``0.01,0.1`` → ``[0.01, 0.1]``; each must lie in (0, 1)."""
    try:
        fractions = [float(f) for f in text.split(",") if f.strip()]
    except ValueError:
        raise UsageError(f"--fractions {text!r}: expected comma-separated numbers such as 0.01,0.1") from None
    if any(not 0 < f < 1 for f in fractions):
        raise UsageError(f"--fractions {text!r}: every fraction must lie strictly between 0 and 1")
    return fractions


def progress(message: str) -> None:
    """One progress line on stdout, flushed."""
    print(message, flush=True)


def cluster_level(name: str, table: str | None, identity: float, coverage: float, args: argparse.Namespace,
                  ids: list[str], seqs: list[str]) -> Membership:
    """Membership at one identity level: from the given table, else by running MMseqs2."""
    start = time.time()
    if table:
        membership = membership_from_table(table, ids, seqs)
    else:
        membership = run_mmseqs(seqs, identity, coverage, args.mmseqs_mode, args.threads)
    progress(f"{name}: {membership.report.format()} ({time.time() - start:.1f} s)")
    return membership


def draw_clusters(n_clusters: int, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Held-out and validation cluster numbers: disjoint, drawn with the seed."""
    n_held, n_valid = round(args.heldout_fraction * n_clusters), round(args.valid_fraction * n_clusters)
    if n_held < 1 or n_valid < 1 or n_held + n_valid >= n_clusters:
        raise UsageError(f"{args.fasta}: {n_clusters:,} clusters give {n_held} held-out and {n_valid} validation "
                         "clusters; need at least 1 of each and some left to train on")
    order = np.random.default_rng(args.seed).permutation(n_clusters)
    return np.sort(order[:n_held]), np.sort(order[n_held : n_held + n_valid])


def near_eval(in_eval: np.ndarray, ur100: Membership, seqs: list[str]) -> np.ndarray:
    """Records outside evaluation clusters that share a 100% cluster or an exact sequence with one inside."""
    shared_100 = np.isin(ur100.cluster, np.unique(ur100.cluster[in_eval]))
    eval_seqs = {seqs[i] for i in np.flatnonzero(in_eval).tolist()}
    same_seq = np.fromiter((s in eval_seqs for s in seqs), bool, len(seqs))
    return (shared_100 | same_seq) & ~in_eval


def one_per_cluster(membership: Membership, keep: np.ndarray) -> tuple[np.ndarray, int]:
    """Per cluster with a kept record: its representative if kept, else its first kept member; and how many
    representatives were replaced."""
    kept = np.flatnonzero(keep)
    clusters, first = np.unique(membership.cluster[kept], return_index=True)
    reps = membership.representative[clusters]
    rep_kept = keep[reps]
    return np.sort(np.where(rep_kept, reps, kept[first])), int((~rep_kept).sum())


def build_sets(ur50: Membership, ur100: Membership, seqs: list[str], args: argparse.Namespace,
               summary: dict) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Record indices of every output set (input order), the ur50d cluster index and every record's
    assignment; counts into ``summary``."""
    held, valid = draw_clusters(ur50.n_clusters, args)
    in_held, in_valid = np.isin(ur50.cluster, held), np.isin(ur50.cluster, valid)
    near = near_eval(in_held | in_valid, ur100, seqs)
    train = ~(in_held | in_valid | near)
    lengths = np.fromiter(map(len, seqs), np.int64, len(seqs))
    held_reps = ur50.representative[held]
    fits = lengths[held_reps] <= args.max_heldout_length
    sets = {"heldout": held_reps[fits], "valid": ur50.representative[valid], "ur50d": np.flatnonzero(train)}
    sets["ur50s"], replaced_50 = one_per_cluster(ur50, train)
    sets["ur100"], replaced_100 = one_per_cluster(ur100, train)
    shuffled = np.random.default_rng([args.seed, 1]).permutation(sets["ur50s"])
    for fraction in args.fractions:
        count = round(fraction * len(shuffled))
        if count < 1:
            raise UsageError(f"--fractions: {fraction} of {len(shuffled):,} UR50/S records is no record")
        sets[f"ur50s_{fraction * 100:g}pct"] = np.sort(shuffled[:count])
    summary["draw"] = {"ur50_clusters": ur50.n_clusters, "heldout_clusters": len(held), "valid_clusters": len(valid),
                       "train_clusters": ur50.n_clusters - len(held) - len(valid),
                       "heldout_too_long": int((~fits).sum()), "ur50s_representatives_replaced": replaced_50,
                       "ur100_representatives_replaced": replaced_100}
    summary["accounting"] = {"records": len(seqs), "in_heldout_clusters": int(in_held.sum()),
                             "in_valid_clusters": int(in_valid.sum()), "removed_near_eval": int(near.sum()),
                             "train": int(train.sum())}
    assignment = np.select([in_held, in_valid, near], ASSIGNMENTS[:3], ASSIGNMENTS[3])
    _, ur50d_clusters = np.unique(ur50.cluster[sets["ur50d"]], return_inverse=True)
    return sets, ur50d_clusters.astype(np.int64), assignment


def write_fasta(path: Path, ids: list[str], seqs: list[str], records: np.ndarray) -> None:
    """The chosen records as ``>id`` plus one sequence line (already cleaned by the residue policy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for r in records.tolist():
            out.write(f">{ids[r]}\n{seqs[r]}\n")


def write_membership(path: Path, ids: list[str], ur50: Membership, ur100: Membership,
                     assignment: np.ndarray) -> None:
    """``id, cluster_50, cluster_100, assignment`` of every record: the split can be audited record by record."""
    with path.open("w") as out:
        out.write("id\tcluster_50\tcluster_100\tassignment\n")
        for row in zip(ids, ur50.cluster.tolist(), ur100.cluster.tolist(), assignment.tolist()):
            out.write("\t".join(map(str, row)) + "\n")


def set_counts(records: np.ndarray, ur50: Membership, ur100: Membership, lengths: np.ndarray) -> dict:
    """Records, residues and the 50% / 100% clusters a set spans."""
    return {"records": len(records), "residues": int(lengths[records].sum()),
            "clusters_50": len(np.unique(ur50.cluster[records])),
            "clusters_100": len(np.unique(ur100.cluster[records]))}


def binarize(fasta: Path, prefix: Path, policy: ResiduePolicy, workers: int) -> None:
    """One split into ``prefix.{bin,idx,ids}``; every record written must come out (the policy is idempotent)."""
    from fairseq_esm.data.binarize import binarize_fasta, load_dictionary
    from fairseq_esm.modules.alphabet import DICT_DIR

    expected = sum(1 for line in fasta.open() if line.startswith(">"))
    report = binarize_fasta(fasta, prefix, load_dictionary(DICT_DIR / "esm1b.txt"), policy, workers)
    if report.records_written != expected:
        raise UsageError(f"{fasta}: {expected} records written but {report.records_written} binarized:\n"
                         f"{report.format()}")


def link_or_copy(source: Path, target: Path) -> None:
    """Hard link (no extra space) where the file system allows, else a copy."""
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_data_bins(out: Path, names: list[str], clusters: np.ndarray, policy: ResiduePolicy, workers: int) -> None:
    """``OUT/<name>/data-bin`` for every training set; valid and heldout binarized once and linked."""
    from fairseq_esm.modules.alphabet import DICT_DIR

    eval_bin = out / "eval-bin"
    eval_bin.mkdir(parents=True, exist_ok=True)
    for split in EVAL_SPLITS:
        binarize(out / f"{split}.fasta", eval_bin / split, policy, workers)
    for name in names:
        data_bin = out / name / "data-bin"
        data_bin.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DICT_DIR / "esm1b.txt", data_bin / "dict.txt")
        binarize(out / name / "train.fasta", data_bin / "train", policy, workers)
        for split in EVAL_SPLITS:
            for suffix in (".bin", ".idx", ".ids"):
                link_or_copy(eval_bin / f"{split}{suffix}", data_bin / f"{split}{suffix}")
        if name == "ur50d":
            np.save(data_bin / "train.clusters.npy", clusters)
        progress(f"binarized {name}/train.fasta -> {data_bin}/ (train, valid, heldout)")
    shutil.rmtree(eval_bin)


def read_input(args: argparse.Namespace, policy: ResiduePolicy) -> tuple[list[str], list[str], FastaReport]:
    """Ids and cleaned sequences of every record the residue policy keeps, and its report."""
    report = FastaReport()
    records = list(read_fasta(args.fasta, policy, report, args.threads))
    progress(f"read {args.fasta}\n{report.format()}")
    if not records:
        raise UsageError(f"{args.fasta}: no record survived the residue policy — see the report above")
    ids, seqs = (list(x) for x in zip(*records))
    return ids, seqs, report


def make_splits(args: argparse.Namespace) -> dict:
    """Read, cluster, draw, write FASTA and data-bins; returns the summary written to splits.json."""
    policy, out = policy_from_args(args), Path(args.out)
    ids, seqs, report = read_input(args, policy)
    ur50 = cluster_level("ur50", args.ur50_clusters, 0.5, 0.8, args, ids, seqs)
    ur100 = cluster_level("ur100", args.ur100_clusters, 1.0, 1.0, args, ids, seqs)
    summary = {"input": str(args.fasta), "seed": args.seed, "heldout_fraction": args.heldout_fraction,
               "valid_fraction": args.valid_fraction, "max_heldout_length": args.max_heldout_length,
               "residue_policy": report.to_dict(), "clusters": {"ur50": ur50.report.to_dict(),
                                                                "ur100": ur100.report.to_dict()}}
    sets, ur50d_clusters, assignment = build_sets(ur50, ur100, seqs, args, summary)
    out.mkdir(parents=True, exist_ok=True)
    write_membership(out / "clusters.tsv", ids, ur50, ur100, assignment)
    lengths = np.fromiter(map(len, seqs), np.int64, len(seqs))
    summary["sets"] = {}
    for name, records in sets.items():
        path = out / f"{name}.fasta" if name in EVAL_SPLITS else out / name / "train.fasta"
        write_fasta(path, ids, seqs, records)
        summary["sets"][name] = {**set_counts(records, ur50, ur100, lengths), "fasta": str(path.relative_to(out))}
        progress(f"wrote {path}: {len(records):,} records, {summary['sets'][name]['residues']:,} residues")
    (out / "ur50d" / "train.clusters.txt").write_text("".join(f"{c}\n" for c in ur50d_clusters.tolist()))
    write_data_bins(out, [n for n in sets if n not in EVAL_SPLITS], ur50d_clusters, policy, args.threads)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Make every set, write OUT/splits.json, print the accounting."""
    args = build_parser().parse_args(argv)
    check_args(args)
    summary = make_splits(args)
    path = Path(args.out) / "splits.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    progress(f"accounting: {summary['accounting']}\ndraw: {summary['draw']}\nwrote {path}")
    return 0


def cli() -> None:
    sys.exit(run_main(main))
