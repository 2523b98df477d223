"""UniRef-style pretraining sets with the paper's cluster-level hold-out, written as FASTA and fairseq data-bins.

    fairseq-esm-make-uniref-splits proteins.fasta.gz --out uniref --threads 4 \\
        [--ur50-clusters uniref50.tsv] [--ur100-clusters uniref100.tsv] [--fractions 0.01,0.1] [--shards K]

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
files everywhere). With --shards K each holds data-bin/shard0 ... shard{K-1} instead (no train.fasta):
K training shards, each a data directory with dict.txt, train.{bin,idx,ids} (and train.clusters.npy in
ur50d), valid and heldout in shard0 only, for fairseq-train DIR/shard0:DIR/shard1:... (one shard per
epoch). A 50% cluster is in one shard in every set; the training clusters are dealt to the shards in a
seeded random order. Clusters come from UniRef / MMseqs2 tables if given (fairseq_esm/io/clusters.py),
else from MMseqs2 run here (50%: --min-seq-id 0.5 -c 0.8; 100%: --min-seq-id 1.0 -c 1.0). A training
record whose 100% cluster or exact sequence also occurs in a held-out or validation cluster is removed
too (counted as removed_near_eval), so no evaluation sequence is trained on. OUT/splits.json has
every count, OUT/clusters.tsv every record's clusters and fate (heldout_cluster, valid_cluster,
removed_near_eval, train); the same input and seed give the same files.

Memory: the input is read once, through the residue policy, into a record store in OUT (removed at the
end); what stays in memory is a few numbers per protein (length, sequence hash, cluster numbers, the sets
it is in), so memory grows by about a hundred bytes per protein. Every FASTA file and data-bin is then
written in one more pass over the store, by --threads processes.
"""

from __future__ import annotations

import argparse
import errno
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fairseq_esm.cli.common import UsageError, add_alias, add_out, run_main, thread_count
from fairseq_esm.io.clusters import ID_KEY_DTYPES, Membership, Mmseqs, RecordIds, id_keys, iter_table, join_table
from fairseq_esm.io.fasta import ResiduePolicy, add_policy_args, policy_from_args
from fairseq_esm.io.record_keys import text_hash
from fairseq_esm.io.record_store import RecordScan, StoreChunk, read_store, scan_fasta

EVAL_SPLITS = ("valid", "heldout")
#: what happened to each record, in OUT/clusters.tsv
ASSIGNMENTS = ("heldout_cluster", "valid_cluster", "removed_near_eval", "train")
MAX_SETS = 32  # sets are bits of one uint32 per record


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
    parser.add_argument("--shards", type=int,
                        help="write K binarized training shards per set (data-bin/shard0..K-1, no train.fasta)")
    parser.add_argument("--mmseqs-mode", choices=["linclust", "cluster"], default="linclust",
                        help="MMseqs2 workflow when clustering here: easy-linclust (default) or easy-cluster")
    add_policy_args(parser)
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad fractions, thread and shard counts and missing cluster tables before reading a large FASTA."""
    args.fractions = parse_fractions(args.fractions)
    thread_count(args)
    if args.shards is not None and not 1 <= args.shards <= np.iinfo(np.uint16).max:
        raise UsageError(f"--shards {args.shards}: give 1 to {np.iinfo(np.uint16).max}")
    if len(args.fractions) + 5 > MAX_SETS:
        raise UsageError(f"--fractions: at most {MAX_SETS - 5} fractions")
    for table in (args.ur50_clusters, args.ur100_clusters):
        if table and (not os.path.exists(table) or os.path.isdir(table)):  # a FIFO or <(zcat t.gz) is fine
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


class Clustering:
    """Membership at each identity level, from a table or from MMseqs2 on the record store (one database)."""

    def __init__(self, scan: RecordScan, args: argparse.Namespace, work: Path) -> None:
        self.scan, self.args, self.work = scan, args, work
        self.mmseqs: Mmseqs | None = None
        self.records = RecordIds(scan.take_id_keys()) if scan.id_keys is not None else None
        self.tables_left = sum(1 for table in (args.ur50_clusters, args.ur100_clusters) if table)

    def record_ids(self) -> RecordIds:
        """The id index, handed over for the last table (freed when that join no longer needs it)."""
        self.tables_left -= 1
        records = self.records
        if not self.tables_left:
            self.records = None
        return records

    def level(self, name: str, table: str | None, identity: float, coverage: float) -> Membership:
        start, scan = time.time(), self.scan
        if table:
            membership = join_table(iter_table(table), table, scan.n, self.record_ids(), scan.ids_of, scan.seq_hashes)
        else:
            if self.mmseqs is None:
                self.mmseqs = Mmseqs(scan.mmseqs_fasta, scan.n, self.args.mmseqs_mode, self.args.threads, self.work)
            membership = self.mmseqs.cluster(identity, coverage)
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


def in_clusters(membership: Membership, clusters: np.ndarray) -> np.ndarray:
    """Whether each record is in one of ``clusters`` (a flag per cluster, not a sort of every record)."""
    flag = np.zeros(membership.n_clusters, bool)
    flag[clusters] = True
    return flag[membership.cluster]


def near_eval(in_eval: np.ndarray, ur100: Membership, sequences) -> np.ndarray:
    """Records outside evaluation clusters that share a 100% cluster or an exact sequence with one inside.

    ``sequences``: the records' sequence hashes (``io/record_keys``), or their sequences."""
    hashes = sequences if isinstance(sequences, np.ndarray) else np.fromiter(map(text_hash, sequences), np.uint64)
    shared_100 = in_clusters(ur100, ur100.cluster[in_eval])
    eval_hashes = np.unique(hashes[in_eval])
    at = np.minimum(np.searchsorted(eval_hashes, hashes), max(len(eval_hashes) - 1, 0))
    same_seq = eval_hashes[at] == hashes if len(eval_hashes) else np.zeros(len(hashes), bool)
    return (shared_100 | same_seq) & ~in_eval


def one_per_cluster(membership: Membership, keep: np.ndarray) -> tuple[np.ndarray, int]:
    """Per cluster with a kept record: its representative if kept, else its first kept member; and how many
    representatives were replaced."""
    kept = np.flatnonzero(keep)
    clusters, first = np.unique(membership.cluster[kept], return_index=True)
    reps = membership.representative[clusters]
    rep_kept = keep[reps]
    return np.sort(np.where(rep_kept, reps, kept[first])), int((~rep_kept).sum())


@dataclass
class Plan:
    """Where every record goes: the sets it is in (one bit each), its fate, the shard of its 50% cluster."""

    names: list[str]  # set names, in splits.json order: heldout, valid, ur50d, ur50s, ur100, fractions
    bits: np.ndarray  # uint32 per record: bit k set = in names[k]
    assignment: np.ndarray  # uint8 per record: index into ASSIGNMENTS
    shard_of_cluster: np.ndarray  # uint16 per 50% cluster
    shards: int | None

    def mask(self, name: str) -> np.ndarray:
        return (self.bits >> np.uint32(self.names.index(name))) & np.uint32(1) == 1

    @property
    def training_sets(self) -> list[str]:
        return [name for name in self.names if name not in EVAL_SPLITS]


def build_sets(ur50: Membership, ur100: Membership, scan: RecordScan, args: argparse.Namespace,
               summary: dict) -> Plan:
    """The sets every record is in, and its fate; counts into ``summary``."""
    held, valid = draw_clusters(ur50.n_clusters, args)
    in_held, in_valid = in_clusters(ur50, held), in_clusters(ur50, valid)
    near = near_eval(in_held | in_valid, ur100, scan.seq_hashes)
    train = ~(in_held | in_valid | near)
    held_reps = ur50.representative[held]
    fits = scan.lengths[held_reps] <= args.max_heldout_length
    sets = {"heldout": held_reps[fits], "valid": ur50.representative[valid], "ur50d": train}
    sets["ur50s"], replaced_50 = one_per_cluster(ur50, train)
    sets["ur100"], replaced_100 = one_per_cluster(ur100, train)
    shuffled = np.random.default_rng([args.seed, 1]).permutation(sets["ur50s"])
    for fraction in args.fractions:
        count = round(fraction * len(shuffled))
        if count < 1:
            raise UsageError(f"--fractions: {fraction} of {len(shuffled):,} UR50/S records is no record")
        sets[f"ur50s_{fraction * 100:g}pct"] = np.sort(shuffled[:count])
    del shuffled
    summary["draw"] = {"ur50_clusters": ur50.n_clusters, "heldout_clusters": len(held), "valid_clusters": len(valid),
                       "train_clusters": ur50.n_clusters - len(held) - len(valid),
                       "heldout_too_long": int((~fits).sum()), "ur50s_representatives_replaced": replaced_50,
                       "ur100_representatives_replaced": replaced_100}
    summary["accounting"] = {"records": scan.n, "in_heldout_clusters": int(in_held.sum()),
                             "in_valid_clusters": int(in_valid.sum()), "removed_near_eval": int(near.sum()),
                             "train": int(train.sum())}
    assignment = np.full(scan.n, ASSIGNMENTS.index("train"), np.uint8)
    for code, where in reversed(list(enumerate([in_held, in_valid, near]))):  # the first that applies wins
        assignment[where] = code
    bits = np.zeros(scan.n, np.uint32)
    for k, records in enumerate(sets.values()):
        bits[records] |= np.uint32(1 << k)
    shard_of_cluster = np.zeros(ur50.n_clusters, np.uint16)
    if args.shards:
        training = np.setdiff1d(np.arange(ur50.n_clusters), np.concatenate([held, valid]))
        dealt = np.random.default_rng([args.seed, 2]).permutation(training)
        shard_of_cluster[dealt] = np.arange(len(dealt)) % args.shards
    return Plan(list(sets), bits, assignment, shard_of_cluster, args.shards)


def set_counts(mask: np.ndarray, ur50: Membership, ur100: Membership, lengths: np.ndarray) -> dict:
    """Records, residues and the 50% / 100% clusters a set spans."""
    spanned = []
    for membership in (ur50, ur100):
        flag = np.zeros(membership.n_clusters, bool)
        flag[membership.cluster[mask]] = True
        spanned.append(int(flag.sum()))
    return {"records": int(mask.sum()), "residues": int(lengths[mask].sum(dtype=np.int64)),
            "clusters_50": spanned[0], "clusters_100": spanned[1]}


# ------------------------------------------------------------------------------------------------ the write pass


@dataclass
class Target:
    """One output of the write pass: a FASTA file or a binarized split of one set (and shard)."""

    kind: str  # "fasta", "split" or "audit" (OUT/clusters.tsv)
    path: Path  # the file, or the split's prefix
    set_bit: int = -1
    shard: int | None = None
    cluster_index: bool = False  # also write path.clusters.npy (ur50d)
    cluster_text: Path | None = None  # and this text copy of it
    records: int = 0
    residues: int = 0
    clusters: list[np.ndarray] = field(default_factory=list)


def shard_dirs(out: Path, name: str, shards: int | None) -> list[Path]:
    """The data directories of a training set: data-bin, or data-bin/shard0 ... shard{K-1}."""
    data_bin = out / name / "data-bin"
    return [data_bin] if shards is None else [data_bin / f"shard{k}" for k in range(shards)]


def targets_of(plan: Plan, out: Path) -> list[Target]:
    """Every file the write pass writes (eval splits into OUT/eval-bin, linked into the data-bins later)."""
    targets = [Target("audit", out / "clusters.tsv")]
    for bit, name in enumerate(plan.names):
        if name in EVAL_SPLITS:
            targets += [Target("fasta", out / f"{name}.fasta", bit), Target("split", out / "eval-bin" / name, bit)]
            continue
        if plan.shards is None:
            targets.append(Target("fasta", out / name / "train.fasta", bit))
        for k, folder in enumerate(shard_dirs(out, name, plan.shards)):
            text = out / name / "train.clusters.txt" if name == "ur50d" and plan.shards is None else None
            targets.append(Target("split", folder / "train", bit, None if plan.shards is None else k,
                                  cluster_index=name == "ur50d", cluster_text=text))
    return targets


@dataclass
class WritePass:
    """What the workers of the write pass share (inherited by fork)."""

    scan: RecordScan
    plan: Plan
    ur50: Membership
    ur100: Membership
    groups: list[list[Target]]


_PASS: WritePass | None = None  # the pass the forked workers run


def write_group(group: int) -> list[tuple[int, int]]:
    """Worker body: one read of the store, writing the targets of ``groups[group]``; their (records, residues)."""
    from fairseq_esm.data.binarize import load_dictionary
    from fairseq_esm.data.split_writer import SplitWriter
    from fairseq_esm.modules.alphabet import DICT_DIR

    job = _PASS
    targets = job.groups[group]
    dictionary = load_dictionary(DICT_DIR / "esm1b.txt")
    writers = {id(t): SplitWriter(t.path, dictionary) if t.kind == "split" else t.path.open("w", encoding="utf-8")
               for t in targets}
    ok = False
    try:
        for target in targets:
            if target.kind == "audit":
                writers[id(target)].write("id\tcluster_50\tcluster_100\tassignment\n")
        for chunk in read_store(job.scan):
            records = np.arange(chunk.first, chunk.first + len(chunk.ids))
            bits, c50 = job.plan.bits[records], job.ur50.cluster[records]
            shard = job.plan.shard_of_cluster[c50]
            for target in targets:
                if target.kind == "audit":
                    write_audit(writers[id(target)], chunk, c50, job.ur100.cluster[records],
                                job.plan.assignment[records])
                    continue
                chosen = (bits >> np.uint32(target.set_bit)) & np.uint32(1) == 1
                if target.shard is not None:
                    chosen &= shard == target.shard
                write_records(target, writers[id(target)], chunk, np.flatnonzero(chosen), c50)
        for target in targets:
            finish_target(target, job.ur50.n_clusters)
        ok = True
    finally:
        for target in targets:
            writer = writers[id(target)]
            writer.close(ok) if target.kind == "split" else writer.close()
    return [(t.records, t.residues) for t in targets]


def write_audit(out, chunk: StoreChunk, c50: np.ndarray, c100: np.ndarray, assignment: np.ndarray) -> None:
    """``id, cluster_50, cluster_100, assignment`` of every record: the split can be audited record by record."""
    names = [ASSIGNMENTS[a] for a in assignment.tolist()]
    out.write("".join(f"{rid}\t{a}\t{b}\t{fate}\n"
                      for rid, a, b, fate in zip(chunk.ids, c50.tolist(), c100.tolist(), names)))


def write_records(target: Target, writer, chunk: StoreChunk, chosen: np.ndarray, c50: np.ndarray) -> None:
    """The chosen records of a chunk into one target: ``>id`` plus one sequence line, or binarized."""
    if not len(chosen):
        return
    part = chunk.part(chosen)
    target.records += len(chosen)
    target.residues += int(part.lengths.sum())
    if target.kind == "split":
        writer.write(part)
        if target.cluster_index:
            target.clusters.append(c50[chosen])
        return
    text = part.residues.tobytes().decode("ascii")
    ends = np.cumsum(part.lengths).tolist()
    writer.write("".join(f">{rid}\n{text[a:b]}\n" for rid, a, b in zip(part.ids, [0] + ends[:-1], ends)))


def finish_target(target: Target, n_clusters: int) -> None:
    """A UR50/D split's cluster index: its records' 50% clusters, numbered 0.. in order of cluster (as the
    inverse of ``np.unique``, without sorting)."""
    if not target.cluster_index:
        return
    members = np.concatenate(target.clusters) if target.clusters else np.zeros(0, np.int64)
    target.clusters.clear()
    present = np.zeros(n_clusters, bool)
    present[members] = True
    rank = np.cumsum(present, dtype=np.int64) - 1
    dense = rank[members]
    del rank, present, members
    np.save(f"{target.path}.clusters.npy", dense)
    if target.cluster_text is not None:
        with target.cluster_text.open("w") as out:
            for start in range(0, len(dense), 1 << 16):
                out.write("".join(f"{c}\n" for c in dense[start : start + (1 << 16)].tolist()))


def balanced_groups(targets: list[Target], plan: Plan, lengths: np.ndarray, workers: int) -> list[list[Target]]:
    """Targets dealt to ``workers`` groups, the biggest first, each to the group with the fewest residues."""
    weight = {name: int(lengths[plan.mask(name)].sum(dtype=np.int64)) for name in plan.names}
    size = [weight[plan.names[t.set_bit]] // (plan.shards or 1) if t.set_bit >= 0 else 0 for t in targets]
    groups: list[list[Target]] = [[] for _ in range(max(1, min(workers, len(targets))))]
    load = [0] * len(groups)
    for i in sorted(range(len(targets)), key=lambda i: -size[i]):
        g = load.index(min(load))
        groups[g].append(targets[i])
        load[g] += size[i] + 1
    return [g for g in groups if g]


def write_outputs(job: WritePass, workers: int) -> None:
    """Run the write pass: in this process, or in ``workers`` forked processes (output identical)."""
    global _PASS
    _PASS = job
    try:
        if len(job.groups) == 1:
            results = [write_group(0)]
        else:
            with multiprocessing.get_context("fork").Pool(len(job.groups)) as pool:
                results = pool.map(write_group, range(len(job.groups)))
    finally:
        _PASS = None
    for group, counts in zip(job.groups, results):
        for target, (records, residues) in zip(group, counts):
            target.records, target.residues = records, residues


def check_shards(plan: Plan, ur50: Membership) -> None:
    """Refuse --shards that would leave a shard of some set with no record."""
    if not plan.shards:
        return
    shard = plan.shard_of_cluster[ur50.cluster]
    for name in plan.training_sets:
        counts = np.bincount(shard[plan.mask(name)], minlength=plan.shards)
        if not counts.all():
            raise UsageError(f"--shards {plan.shards}: {name} has {int(counts.sum()):,} records in "
                             f"{np.count_nonzero(counts)} shards; give fewer shards (or a larger fraction)")


def check_open_files(targets: list[Target], shards: int | None) -> None:
    """Every target stays open through the pass (a split: two files): raise the soft limit on open files if it is
    too low, or say what to do."""
    import resource

    needed = sum(2 if t.kind == "split" else 1 for t in targets) + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and needed > soft:
        if hard != resource.RLIM_INFINITY and needed > hard:
            raise UsageError(f"--shards {shards}: {needed:,} files open at once, the limit is {hard:,} "
                             "(ulimit -Hn): give fewer shards")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def link_or_copy(source: Path, target: Path) -> None:
    """Hard link (no extra space) where the file system allows, else a copy."""
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def make_folders(plan: Plan, out: Path) -> None:
    """Every set's data directories with dict.txt, and OUT/eval-bin."""
    from fairseq_esm.modules.alphabet import DICT_DIR

    (out / "eval-bin").mkdir(parents=True, exist_ok=True)
    for name in plan.training_sets:
        for folder in shard_dirs(out, name, plan.shards):
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(DICT_DIR / "esm1b.txt", folder / "dict.txt")


def link_eval_splits(plan: Plan, out: Path) -> None:
    """valid and heldout, binarized once, into every set's data-bin (the first shard's)."""
    eval_bin = out / "eval-bin"
    for name in plan.training_sets:
        folder = shard_dirs(out, name, plan.shards)[0]
        for split in EVAL_SPLITS:
            for suffix in (".bin", ".idx", ".ids"):
                link_or_copy(eval_bin / f"{split}{suffix}", folder / f"{split}{suffix}")
    shutil.rmtree(eval_bin)


def summarize_sets(plan: Plan, targets: list[Target], ur50: Membership, ur100: Membership, scan: RecordScan,
                   out: Path) -> dict:
    """splits.json's ``sets``: counts per set, its FASTA file or its shards; every record written checked."""
    sets = {}
    for bit, name in enumerate(plan.names):
        counts = set_counts(plan.mask(name), ur50, ur100, scan.lengths)
        mine = [t for t in targets if t.set_bit == bit]
        for target in mine:
            expected = counts["records"] if target.shard is None else None
            if expected is not None and target.records != expected:
                raise RuntimeError(f"{target.path}: {target.records} records written, {expected} expected")
        if sum(t.records for t in mine if t.kind == "split") != counts["records"]:
            raise RuntimeError(f"{name}: the shards hold {sum(t.records for t in mine)} records, "
                               f"{counts['records']} expected")
        fasta = next((t for t in mine if t.kind == "fasta"), None)
        if fasta is not None:
            counts["fasta"] = str(fasta.path.relative_to(out))
        if plan.shards is not None and name not in EVAL_SPLITS:
            counts["shards"] = [{"dir": str(t.path.parent.relative_to(out)), "records": t.records,
                                 "residues": t.residues} for t in mine]
        sets[name] = counts
        where = counts.get("fasta") or f"{len(mine)} shards of {name}/data-bin"
        progress(f"wrote {where}: {counts['records']:,} records, {counts['residues']:,} residues")
    return sets


def make_splits(args: argparse.Namespace) -> dict:
    """Read, cluster, draw, write FASTA and data-bins; returns the summary written to splits.json."""
    policy, out = policy_from_args(args), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".work-", dir=out) as work:
        scan = read_input(args, policy, Path(work))
        clustering = Clustering(scan, args, Path(work))
        ur50 = clustering.level("ur50", args.ur50_clusters, 0.5, 0.8)
        ur100 = clustering.level("ur100", args.ur100_clusters, 1.0, 1.0)
        del clustering
        summary = {"input": str(args.fasta), "seed": args.seed, "heldout_fraction": args.heldout_fraction,
                   "valid_fraction": args.valid_fraction, "max_heldout_length": args.max_heldout_length,
                   "residue_policy": scan.report.to_dict(), "clusters": {"ur50": ur50.report.to_dict(),
                                                                         "ur100": ur100.report.to_dict()}}
        if args.shards is not None:
            summary["shards"] = args.shards
        plan = build_sets(ur50, ur100, scan, args, summary)
        scan.seq_hashes = None  # not needed from here on
        check_shards(plan, ur50)
        make_folders(plan, out)
        targets = targets_of(plan, out)
        check_open_files(targets, plan.shards)
        start = time.time()
        groups = balanced_groups(targets, plan, scan.lengths, args.threads)
        write_outputs(WritePass(scan, plan, ur50, ur100, groups), args.threads)
        link_eval_splits(plan, out)
        kinds = [t.kind for t in targets]
        progress(f"wrote clusters.tsv, {kinds.count('fasta')} FASTA files and {kinds.count('split')} binarized splits "
                 f"in one pass over the records ({len(groups)} processes, {time.time() - start:.1f} s)")
        summary["sets"] = summarize_sets(plan, targets, ur50, ur100, scan, out)
    return summary


def read_input(args: argparse.Namespace, policy: ResiduePolicy, work: Path) -> RecordScan:
    """Every record the residue policy keeps, into the record store; the policy's report printed."""
    tables = bool(args.ur50_clusters or args.ur100_clusters)
    scan = scan_fasta(args.fasta, policy, args.threads, work, id_keys if tables else None, ID_KEY_DTYPES)
    progress(f"read {args.fasta}\n{scan.report.format()}")
    if not scan.n:
        raise UsageError(f"{args.fasta}: no record survived the residue policy — see the report above")
    return scan


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
