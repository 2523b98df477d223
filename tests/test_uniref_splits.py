"""Cluster-level hold-out and UR100 / UR50/S / UR50/D sets (fairseq-esm-make-uniref-splits), membership
tables (fairseq_esm/data/clusters.py) and UR50/D cluster sampling, on real proteins with the real MMseqs2."""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fairseq.data import Dictionary, data_utils
from scipy.stats import chi2

from fairseq_esm.cli.common import run_main
from fairseq_esm.data.binarize import binarize_fasta, stored_sequences
from fairseq_esm.data.cluster_sampling import ClusterSampledDataset
from fairseq_esm.data.integrity import DataIntegrityError
from fairseq_esm.io.clusters import (
    ClusterError,
    ClusterTable,
    accession,
    match_members,
    membership_from_table,
    run_mmseqs,
)
from fairseq_esm.tasks.protein_mlm import ProteinMLMConfig, ProteinMLMTask

ROOT = Path(__file__).resolve().parents[1]
from helpers.proteins import SAMPLE, read_records

BIN = Path(sys.executable).parent
EVAL = ("heldout", "valid")


from fairseq_esm.cli import make_uniref_splits as splits_cli  # noqa: E402


def records(path: Path) -> list[tuple[str, str]]:
    """``(id, sequence)`` of every record of a FASTA file."""
    return read_records(-1, path)




@pytest.fixture(scope="module")
def family_slice(tmp_path_factory) -> Path:
    """~780 real proteins of the sample: all members of its 50% clusters with >= 5 members, plus the first 200
    others (so cluster sampling has families to draw from, and the hold-out has singletons too)."""
    ids, seqs = zip(*records(SAMPLE))
    full = run_mmseqs(seqs, 0.5, threads=1)
    in_family = np.bincount(full.cluster)[full.cluster] >= 5
    chosen = np.sort(np.concatenate([np.flatnonzero(in_family), np.flatnonzero(~in_family)[:200]]))
    path = tmp_path_factory.mktemp("slice") / "families.fasta"
    path.write_text("".join(f">{ids[i]}\n{seqs[i]}\n" for i in chosen.tolist()))
    return path


def make_splits(fasta: Path, out: Path, *extra: str) -> Path:
    """Run the CLI in-process; fail the test if it fails."""
    assert run_main(splits_cli.main, [str(fasta), "--out", str(out), "--fractions", "0.1", *extra]) == 0
    return out


@pytest.fixture(scope="module")
def splits(family_slice, tmp_path_factory) -> Path:
    return make_splits(family_slice, tmp_path_factory.mktemp("splits") / "out")


def audit(splits: Path) -> list[list[str]]:
    """Rows of OUT/clusters.tsv: id, cluster_50, cluster_100, assignment."""
    lines = (splits / "clusters.tsv").read_text().splitlines()
    assert lines[0] == "id\tcluster_50\tcluster_100\tassignment"
    return [line.split("\t") for line in lines[1:]]


def training_sets(summary: dict) -> list[str]:
    return [name for name in summary["sets"] if name not in EVAL]


def test_no_heldout_or_valid_member_in_any_training_set(splits, family_slice):
    summary = json.loads((splits / "splits.json").read_text())
    rows, proteins = audit(splits), records(family_slice)
    assert [r[0] for r in rows] == [rid for rid, _ in proteins]  # every record, in input order
    # the audit file's clusters are MMseqs2's own (an independent run on the same proteins)
    assert [int(r[1]) for r in rows] == run_mmseqs([s for _, s in proteins], 0.5, threads=1).cluster.tolist()
    evaluated = [i for i, r in enumerate(rows) if r[3] in ("heldout_cluster", "valid_cluster")]
    eval_ids, eval_seqs = {rows[i][0] for i in evaluated}, {proteins[i][1] for i in evaluated}
    assert len(evaluated) > 40
    for name in training_sets(summary):
        train = records(splits / name / "train.fasta")
        assert train and not {rid for rid, _ in train} & eval_ids, name
        assert not {seq for _, seq in train} & eval_seqs, name
        assert (splits / name / "data-bin" / "train.ids").read_text().split() == [rid for rid, _ in train]
    assert {tuple(r) for r in records(splits / "ur50d" / "train.fasta")} == {
        proteins[i] for i, r in enumerate(rows) if r[3] == "train"}


def test_every_record_and_cluster_is_accounted_for(splits, family_slice):
    summary = json.loads((splits / "splits.json").read_text())
    rows, n = audit(splits), len(records(family_slice))
    count, draw, sets = summary["accounting"], summary["draw"], summary["sets"]
    assert summary["residue_policy"]["records_read"] == count["records"] == n
    assert sum(v for k, v in count.items() if k != "records") == n
    for key, label in [("in_heldout_clusters", "heldout_cluster"), ("in_valid_clusters", "valid_cluster"),
                       ("removed_near_eval", "removed_near_eval"), ("train", "train")]:
        assert count[key] == sum(r[3] == label for r in rows)
    clusters = {int(r[1]) for r in rows}
    assert draw["ur50_clusters"] == len(clusters) == summary["clusters"]["ur50"]["clusters"]
    assert draw["heldout_clusters"] == round(0.1 * len(clusters))
    assert draw["valid_clusters"] == round(0.05 * len(clusters))
    assert {int(r[1]) for r in rows if r[3] == "heldout_cluster"}.isdisjoint(
        {int(r[1]) for r in rows if r[3] == "valid_cluster"})
    # one representative per evaluation cluster; one record per training cluster in UR50/S
    for name, label, expected in [("heldout", "heldout_cluster", draw["heldout_clusters"] - draw["heldout_too_long"]),
                                  ("valid", "valid_cluster", draw["valid_clusters"])]:
        ids = [rid for rid, _ in records(splits / f"{name}.fasta")]
        of = {r[0]: r for r in rows}
        assert len(ids) == sets[name]["records"] == sets[name]["clusters_50"] == expected
        assert all(of[rid][3] == label for rid in ids)
    assert sets["ur50s"]["records"] == sets["ur50s"]["clusters_50"] == sets["ur50d"]["clusters_50"]
    assert sets["ur50d"]["records"] == count["train"] > sets["ur50s"]["records"]
    assert sets["ur100"]["records"] == sets["ur100"]["clusters_100"] == len(
        {int(r[2]) for r in rows if r[3] == "train"})
    assert sets["ur50s_10pct"]["records"] == round(0.1 * sets["ur50s"]["records"])
    assert {tuple(r) for r in records(splits / "ur50s_10pct" / "train.fasta")} <= set(
        records(splits / "ur50s" / "train.fasta"))
    clusters_txt = (splits / "ur50d" / "train.clusters.txt").read_text().split()
    assert np.load(splits / "ur50d" / "data-bin" / "train.clusters.npy").tolist() == [int(c) for c in clusters_txt]
    for name in training_sets(summary):
        for split in EVAL:
            assert (splits / name / "data-bin" / f"{split}.bin").read_bytes() == (
                splits / "ur50s" / "data-bin" / f"{split}.bin").read_bytes()


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_files_other_seed_other_heldout(splits, family_slice, tmp_path):
    again = tree(make_splits(family_slice, tmp_path / "again"))
    assert again == tree(splits)
    other = make_splits(family_slice, tmp_path / "other", "--seed", "2", "--max-heldout-length", "200")
    assert (other / "heldout.fasta").read_bytes() != (splits / "heldout.fasta").read_bytes()
    draw = json.loads((other / "splits.json").read_text())["draw"]
    held = records(other / "heldout.fasta")
    assert draw["heldout_too_long"] > 0 and len(held) + draw["heldout_too_long"] == draw["heldout_clusters"]
    assert max(len(seq) for _, seq in held) <= 200


@pytest.fixture(scope="module")
def uniprot_slice(family_slice, splits, tmp_path_factory) -> tuple[Path, list[tuple[str, str]], Path]:
    """~130 proteins (the members of 20 families, 60 others) with their UniProt headers, and MMseqs2's own
    cluster TSV of them (accessions as ids)."""
    work = tmp_path_factory.mktemp("tables")
    of_cluster = np.array([int(row[1]) for row in audit(splits)])
    families = np.flatnonzero(np.bincount(of_cluster) >= 3)[:20]
    in_family = np.isin(of_cluster, families)
    chosen = np.sort(np.concatenate([np.flatnonzero(in_family), np.flatnonzero(~in_family)[:60]]))
    proteins = [records(family_slice)[i] for i in chosen.tolist()]
    fasta = work / "slice.fasta"
    fasta.write_text("".join(f">{rid}\n{seq}\n" for rid, seq in proteins))
    proc = subprocess.run(["mmseqs", "easy-linclust", str(fasta), str(work / "c50"), str(work / "tmp"),
                           "--min-seq-id", "0.5", "-c", "0.8", "--threads", "1", "-v", "1"], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    return fasta, proteins, work / "c50_cluster.tsv"


def test_accessions():
    assert accession("sp|Q7X0E5|NAME_HUMAN") == accession("UniRef100_Q7X0E5") == accession("Q7X0E5") == "Q7X0E5"
    assert accession("tr|A0A009GL41|A0A009GL41_ACIBA") == "A0A009GL41"
    assert accession("UniRef50_UPI0000000001") == "UPI0000000001"


def test_mmseqs_table_matches_uniprot_ids_by_accession(uniprot_slice):
    _, proteins, table = uniprot_slice
    ids = [rid for rid, _ in proteins]
    assert "|" not in table.read_text() and "|" in ids[0]  # MMseqs2 rewrote sp|P12345|NAME to P12345
    membership = membership_from_table(table, ids)
    report = membership.report
    assert report.members_matched == report.members_read == len(ids)
    assert report.members_not_in_fasta == report.records_in_no_cluster == report.representatives_by_first_member == 0
    reps = {line.split("\t")[0] for line in table.read_text().splitlines()}
    assert {accession(ids[r]) for r in membership.representative} == reps
    ours = run_mmseqs([seq for _, seq in proteins], 0.5, threads=1)  # fed as >r0, >r1, ...
    assert membership.cluster.tolist() == ours.cluster.tolist()
    assert membership.representative.tolist() == ours.representative.tolist()


def test_mmseqs_cluster_mode(uniprot_slice):
    """easy-cluster (the sensitive workflow) also returns every record; an unknown mode is refused."""
    seqs = [seq for _, seq in uniprot_slice[1]]
    sensitive = run_mmseqs(seqs, 0.5, mode="cluster")
    assert sensitive.report.source.startswith("mmseqs easy-cluster --min-seq-id 0.5")
    assert sensitive.report.members_matched == len(seqs) and sensitive.report.records_in_no_cluster == 0
    assert 1 < sensitive.n_clusters < len(seqs)
    with pytest.raises(ClusterError, match="unknown MMseqs2 mode 'fast'"):
        run_mmseqs(seqs, 0.5, mode="fast")


def uniprot_tsv(path: Path, clusters: list[tuple[str, list[str], str]]) -> Path:
    """A table in the layout of UniProt's UniRef TSV download (gzip, as downloaded)."""
    rows = ["Cluster ID\tCluster Name\tSize\tCluster members\tReference sequence"]
    rows += [f"{name}\tCluster: {name}\t{len(m)}\t{'; '.join(m)}\t{ref}" for name, m, ref in clusters]
    with gzip.open(path, "wt") as out:
        out.write("\n".join(rows) + "\n")
    return path


def test_uniprot_uniref_table(uniprot_slice, tmp_path):
    """Representatives by cluster id or reference sequence; unknown members and unlisted records counted."""
    _, proteins, table = uniprot_slice
    ids, seqs = [rid for rid, _ in proteins], [seq for _, seq in proteins]
    mmseqs = membership_from_table(table, ids)
    groups = [np.flatnonzero(mmseqs.cluster == c).tolist() for c in range(mmseqs.n_clusters)]
    family = next(k for k, g in enumerate(groups) if len(g) >= 3)
    absent = records(SAMPLE)[-1][0]  # a real accession outside the slice
    clusters, left_out = [], groups[-1][-1] if len(groups[-1]) == 1 else None
    for k, group in enumerate(groups):
        rep = int(mmseqs.representative[k])
        members = [accession(ids[r]) for r in group if r != left_out]
        if not members:
            continue
        name = f"UniRef50_{accession(ids[rep])}"
        if k == family:  # named after a sequence outside the file: the reference sequence finds the rep
            members, name = members + [accession(absent)], f"UniRef50_{accession(absent)}"
        clusters.append((name, members, seqs[rep]))
    membership = membership_from_table(uniprot_tsv(tmp_path / "uniref50.tsv.gz", clusters), ids, seqs)
    report = membership.report
    assert report.members_not_in_fasta == 1 and accession(absent) in report.examples["members_not_in_fasta"][0]
    assert report.records_in_no_cluster == (left_out is not None)
    assert report.representatives_by_first_member == 0 and report.clusters == mmseqs.n_clusters
    assert membership.cluster.tolist() == mmseqs.cluster.tolist()
    assert membership.representative.tolist() == mmseqs.representative.tolist()


def test_two_column_table_and_bad_tables(uniprot_slice, tmp_path, capsys):
    fasta, proteins, table = uniprot_slice
    ids = [rid for rid, _ in proteins]
    pairs = [line.split("\t") for line in table.read_text().splitlines()]
    names = {rep: f"family{k}" for k, rep in enumerate(dict.fromkeys(rep for rep, _ in pairs))}
    renamed = tmp_path / "families.tsv"
    renamed.write_text("".join(f"{names[rep]}\t{member}\n" for rep, member in pairs))
    membership = membership_from_table(renamed, ids)
    assert membership.cluster.tolist() == membership_from_table(table, ids).cluster.tolist()
    assert membership.report.representatives_by_first_member == len(names)  # no member is named like its cluster

    bad = tmp_path / "bad.tsv"
    bad.write_text("".join(f"{rep}\t{member}\n" for rep, member in pairs[:3]) + "A\tB\tC\n")
    with pytest.raises(ClusterError, match=f"{bad}:4: expected 'cluster<TAB>member'"):
        membership_from_table(bad, ids)
    assert run_main(splits_cli.main, [str(fasta), "--out", str(tmp_path / "o"), "--ur50-clusters", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "bad.tsv:4" in err[0]


def test_missing_mmseqs_is_one_clear_error(uniprot_slice, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ClusterError, match="install_tools.sh"):
        run_mmseqs(["MKTAYIAKQR"], 0.5)


def test_near_eval_guard_removes_identical_sequences(family_slice):
    proteins = records(family_slice)
    seqs = [seq for _, seq in proteins]
    ur100 = run_mmseqs(seqs, 1.0, coverage=1.0, threads=1)
    sizes = np.bincount(ur100.cluster)
    twin = int(np.flatnonzero(sizes >= 2)[0])
    members = np.flatnonzero(ur100.cluster == twin)
    in_eval = np.zeros(len(seqs), bool)
    in_eval[members[0]] = True
    assert np.flatnonzero(splits_cli.near_eval(in_eval, ur100, seqs)).tolist() == members[1:].tolist()
    singletons = match_members(ClusterTable(source="none"), [rid for rid, _ in proteins])
    identical = [i for i in range(len(seqs)) if seqs[i] == seqs[members[0]] and i != members[0]]
    assert identical and np.flatnonzero(splits_cli.near_eval(in_eval, singletons, seqs)).tolist() == identical


def ur50d_records(splits: Path) -> tuple[object, np.ndarray]:
    """The binarized UR50/D train split and its cluster index."""
    data_bin = splits / "ur50d" / "data-bin"
    dataset = data_utils.load_indexed_dataset(str(data_bin / "train"), Dictionary.load(str(data_bin / "dict.txt")))
    return dataset, np.load(data_bin / "train.clusters.npy")


def test_cluster_sampling_draws(splits):
    dataset, clusters = ur50d_records(splits)
    sampled = ClusterSampledDataset(dataset, clusters, seed=1, epoch=1)
    n_clusters = clusters.max() + 1
    assert len(sampled) == n_clusters and clusters[sampled.members].tolist() == list(range(n_clusters))
    assert sampled.sizes.tolist() == dataset.sizes[sampled.members].tolist()
    assert torch.equal(sampled[5], dataset[int(sampled.members[5])])
    first = sampled.members.copy()
    sampled.set_epoch(2)
    multi = np.bincount(clusters)[np.arange(n_clusters)] >= 2
    assert multi.sum() > 30 and (sampled.members != first)[multi].mean() > 0.3  # a new draw every epoch
    assert (sampled.members == first)[~multi].all()
    assert ClusterSampledDataset(dataset, clusters, seed=1, epoch=2).members.tolist() == sampled.members.tolist()
    assert ClusterSampledDataset(dataset, clusters, seed=2, epoch=1).members.tolist() != first.tolist()
    assert not sampled.can_reuse_epoch_itr_across_epochs
    # uniform over members: pooled chi-square over 2,000 epochs of every multi-member cluster
    counts = np.bincount(np.concatenate([sampled.draw(e) for e in range(1, 2001)]), minlength=len(dataset))
    sizes = np.bincount(clusters)[clusters]
    in_multi = sizes >= 2
    expected = 2000 / sizes[in_multi]
    statistic = (((counts[in_multi] - expected) ** 2) / expected).sum()
    dof = int(in_multi.sum() - multi.sum())  # sum over clusters of (members - 1)
    assert chi2.sf(statistic, dof) > 1e-3 and counts[in_multi].min() > 0


def sampling_task(data_bin: Path) -> ProteinMLMTask:
    cfg = ProteinMLMConfig(data=str(data_bin), max_positions=1024, seed=1, train_subset="train",
                           cluster_sampling=True)
    return ProteinMLMTask.setup_task(cfg)


def test_task_cluster_sampling_and_its_errors(splits, tmp_path):
    dataset, clusters = ur50d_records(splits)
    task = sampling_task(splits / "ur50d" / "data-bin")
    task.load_dataset("train", epoch=1)
    train = task.dataset("train")
    assert len(train) == clusters.max() + 1 and not train.can_reuse_epoch_itr_across_epochs
    sizes_1 = train.sizes.copy()
    itr = task.get_batch_iterator(train, max_tokens=16384, max_positions=1024, seed=1, epoch=2)
    members = ClusterSampledDataset(dataset, clusters, seed=1, epoch=2).members
    assert train.sizes.tolist() == (np.minimum(dataset.sizes[members] - 1, 1022) + 2).tolist() != sizes_1.tolist()
    seen = [i for batch in itr.next_epoch_itr(shuffle=True) for i in batch["id"].tolist()]
    assert sorted(seen) == list(range(len(train)))
    task.load_dataset("heldout")
    assert len(task.dataset("heldout")) == len(records(splits / "heldout.fasta"))

    with pytest.raises(DataIntegrityError, match="--cluster-sampling needs .*train.clusters.npy"):
        sampling_task(splits / "ur50s" / "data-bin").load_dataset("train")
    copy = tmp_path / "data-bin"
    shutil.copytree(splits / "ur50d" / "data-bin", copy)
    np.save(copy / "train.clusters.npy", clusters[:-1])
    with pytest.raises(DataIntegrityError, match=f"lists {len(clusters) - 1:,} records, the split has"):
        sampling_task(copy).load_dataset("train")


def run(cmd: list[str]) -> str:
    """A console script of this venv; fail the test with its output if it fails."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def test_fairseq_train_with_cluster_sampling_then_validate_heldout(splits, tmp_path):
    data_bin, save = splits / "ur50d" / "data-bin", tmp_path / "ckpt"
    task = ["--user-dir", "fairseq_esm", "--task", "protein_mlm", "--criterion", "esm_masked_lm",
            "--max-positions", "64", "--max-tokens", "16384", "--seed", "3", "--cpu", "--num-workers", "0"]
    log = run(["fairseq-train", str(data_bin), *task, "--cluster-sampling", "--arch", "esm1b_t4_1M",
               "--optimizer", "adam", "--lr", "1e-3", "--max-update", "3", "--disable-validation",
               "--save-dir", str(save), "--no-epoch-checkpoints", "--log-format", "json", "--log-interval", "1"])
    n_clusters = json.loads((splits / "splits.json").read_text())["sets"]["ur50d"]["clusters_50"]
    assert f"one member of each of {n_clusters:,} clusters per epoch" in log
    assert "can_reuse_epoch_itr = False" in log and "begin training epoch 2" in log
    losses = [float(json.loads(line[line.index("{"):])["loss"]) for line in log.splitlines() if "train_inner" in line]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    out = run(["fairseq-validate", str(data_bin), *task, "--path", str(save / "checkpoint_last.pt"),
               "--valid-subset", "heldout", "--log-format", "json"])
    stats = json.loads(next(line for line in out.splitlines() if '"heldout_ppl"' in line).split("|")[-1])
    assert 1.0 < float(stats["heldout_ppl"]) < 33.0


# ------------------------------------------------------------------------------------- --shards and cluster tables


@pytest.fixture(scope="module")
def sharded(family_slice, tmp_path_factory) -> Path:
    return make_splits(family_slice, tmp_path_factory.mktemp("sharded") / "out", "--shards", "3")


def shard_folders(out: Path, name: str) -> list[Path]:
    folders = sorted((out / name / "data-bin").iterdir())
    assert [f.name for f in folders] == [f"shard{k}" for k in range(len(folders))]
    return folders


def test_shards_hold_every_training_record_once(splits, sharded):
    """Same draw, audit and evaluation files; each set's records dealt to 3 shards by 50% cluster, each shard in
    input order, valid and heldout in shard0 only; the binarized records are the unsharded ones."""
    whole, parts = (json.loads((out / "splits.json").read_text()) for out in (splits, sharded))
    assert parts.pop("shards") == 3 and {k: v for k, v in parts.items() if k != "sets"} == {
        k: v for k, v in whole.items() if k != "sets"}
    assert (sharded / "clusters.tsv").read_bytes() == (splits / "clusters.tsv").read_bytes()
    for split in EVAL:
        assert (sharded / f"{split}.fasta").read_bytes() == (splits / f"{split}.fasta").read_bytes()
    cluster_50 = {row[0]: int(row[1]) for row in audit(splits)}
    shard_of_cluster: dict[int, int] = {}
    for name in training_sets(whole):
        unsharded = splits / name / "data-bin"
        order = {rid: i for i, rid in enumerate((unsharded / "train.ids").read_text().split())}
        sequences = dict(zip(order, stored_sequences(unsharded, "train")))
        folders = shard_folders(sharded, name)
        assert len(folders) == 3 and not (sharded / name / "train.fasta").exists()
        dealt = []
        for k, folder in enumerate(folders):
            ids = (folder / "train.ids").read_text().split()
            assert ids and [order[rid] for rid in ids] == sorted(order[rid] for rid in ids)  # input order
            assert stored_sequences(folder, "train") == [sequences[rid] for rid in ids]
            assert (folder / "dict.txt").read_bytes() == (unsharded / "dict.txt").read_bytes()
            for split in EVAL:  # evaluation splits in the first shard only
                present = (folder / f"{split}.bin").exists()
                assert present == (k == 0)
                if present:
                    assert (folder / f"{split}.bin").read_bytes() == (unsharded / f"{split}.bin").read_bytes()
            for rid in ids:  # a 50% cluster lives in one shard, in every set
                assert shard_of_cluster.setdefault(cluster_50[rid], k) == k
            entry = parts["sets"][name]["shards"][k]
            assert entry["dir"] == f"{name}/data-bin/shard{k}" and entry["records"] == len(ids)
            dealt += ids
        assert sorted(dealt) == sorted(order) and len(dealt) == len(set(dealt))  # every record exactly once
        assert {k: v for k, v in parts["sets"][name].items() if k != "shards"} == {
            k: v for k, v in whole["sets"][name].items() if k != "fasta"}
        if name == "ur50d":  # each shard's cluster index: the same grouping, numbered 0.. within the shard
            for folder in folders:
                ids = (folder / "train.ids").read_text().split()
                index = np.load(folder / "train.clusters.npy")
                assert index.dtype == np.int64 and len(index) == len(ids)
                assert index.tolist() == np.unique([cluster_50[rid] for rid in ids], return_inverse=True)[1].tolist()


def test_one_shard_is_the_unsharded_data_bin(splits, family_slice, tmp_path):
    """--shards 1: shard0 byte for byte the default data-bin, which is what binarize_fasta (and so
    fairseq-preprocess, tests/test_binarize.py) writes for the set's train.fasta."""
    one = make_splits(family_slice, tmp_path / "one", "--shards", "1")
    summary = json.loads((splits / "splits.json").read_text())
    for name in training_sets(summary):
        assert tree(one / name / "data-bin" / "shard0") == tree(splits / name / "data-bin")
    dictionary = Dictionary.load(str(splits / "ur50d" / "data-bin" / "dict.txt"))
    for name in ("ur50d", "ur50s_10pct"):
        binarize_fasta(splits / name / "train.fasta", tmp_path / name, dictionary)
        for suffix in (".bin", ".idx", ".ids"):
            assert (tmp_path / f"{name}{suffix}").read_bytes() == (
                splits / name / "data-bin" / f"train{suffix}").read_bytes()


def test_fairseq_train_cycles_through_shards(sharded, tmp_path):
    """fairseq-train SHARD0:SHARD1:SHARD2 trains on one shard per epoch (UR50/D cluster sampling within it) and
    validates on shard0's valid split."""
    folders = shard_folders(sharded, "ur50d")
    clusters = [len(np.unique(np.load(folder / "train.clusters.npy"))) for folder in folders]
    log = run(["fairseq-train", ":".join(map(str, folders)), "--user-dir", "fairseq_esm", "--task", "protein_mlm",
               "--criterion", "esm_masked_lm", "--arch", "esm1b_t4_1M", "--cluster-sampling", "--max-positions", "64",
               "--max-tokens", "16384", "--seed", "3", "--cpu", "--num-workers", "0", "--optimizer", "adam",
               "--lr", "1e-3", "--max-epoch", "3", "--save-dir", str(tmp_path / "ckpt"), "--no-save",
               "--log-format", "json", "--log-interval", "1"])
    for count in clusters:
        assert f"one member of each of {count:,} clusters per epoch" in log
    assert "begin training epoch 3" in log and '"valid_loss"' in log


def test_cluster_tables_through_the_tool(uniprot_slice, tmp_path):
    """MMseqs2's own 50% table and a 100% table whose lines are shuffled give the files MMseqs2 run by the tool
    gives; a UniProt UniRef50 download (gzip, reference sequences, a member outside the FASTA, a record in no
    cluster) gives the clusters and report of membership_from_table."""
    fasta, proteins, table = uniprot_slice
    ids, seqs = [rid for rid, _ in proteins], [seq for _, seq in proteins]
    here = make_splits(fasta, tmp_path / "here")
    exact = run_mmseqs(seqs, 1.0, coverage=1.0, threads=1)
    lines = [f"{ids[exact.representative[c]]}\t{ids[r]}\n" for r, c in enumerate(exact.cluster.tolist())]
    np.random.default_rng(5).shuffle(lines)
    (tmp_path / "ur100.tsv").write_text("".join(lines))
    given = make_splits(fasta, tmp_path / "given", "--ur50-clusters", str(table),
                        "--ur100-clusters", str(tmp_path / "ur100.tsv"))
    mine, theirs = tree(given), tree(here)
    assert mine.pop("splits.json") != theirs.pop("splits.json") and mine == theirs
    summary = json.loads((given / "splits.json").read_text())["clusters"]
    assert summary["ur100"]["clusters_read"] == exact.n_clusters == summary["ur100"]["clusters"]

    mmseqs = membership_from_table(table, ids)
    groups = [np.flatnonzero(mmseqs.cluster == c).tolist() for c in range(mmseqs.n_clusters)]
    family = next(k for k, g in enumerate(groups) if len(g) >= 3)
    absent, left_out = records(SAMPLE)[-1][0], groups[-1][-1]
    rows = []
    for k, group in enumerate(groups):
        members = [accession(ids[r]) for r in group if r != left_out]
        name = f"UniRef50_{accession(ids[int(mmseqs.representative[k])])}"
        if k == family:  # named after a sequence outside the file: the reference sequence finds the rep
            members, name = members + [accession(absent)], f"UniRef50_{accession(absent)}"
        if members:
            rows.append((name, members, seqs[int(mmseqs.representative[k])]))
    download = uniprot_tsv(tmp_path / "uniref50.tsv.gz", rows)
    tool = make_splits(fasta, tmp_path / "uniprot", "--ur50-clusters", str(download))
    expected = membership_from_table(download, ids, seqs)
    report = json.loads((tool / "splits.json").read_text())["clusters"]["ur50"]
    assert report == expected.report.to_dict() and report["members_not_in_fasta"] == 1
    assert report["records_in_no_cluster"] == 1 and report["representatives_by_first_member"] == 0
    assert [int(row[1]) for row in audit(tool)] == expected.cluster.tolist()


def test_write_pass_in_worker_processes(sharded, family_slice, tmp_path):
    """--threads 2 (MMseqs2 threads, readers and the processes writing the shards): the same files."""
    again = make_splits(family_slice, tmp_path / "threads", "--shards", "3", "--threads", "2")
    assert tree(again) == tree(sharded)
