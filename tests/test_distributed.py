"""Data-parallel training through fairseq's own engine: 2 gloo ranks on CPU = 1 process with --update-freq 2;
and 4 ranks on 2 "nodes" (the launcher run twice, NODE_RANK 0 and 1, on localhost) over a 2-shard data-bin.

fairseq gives rank r the batches r, r+2, ... of each epoch, and one process with ``--update-freq 2``
accumulates batches 2k and 2k+1 into update k: the same proteins, crops and masks per update. The
gradients are summed in another order (and each rank runs on one thread), so the weights agree to
float32 rounding, not bit for bit. 10 updates cover the end of epoch 1 (15 batches: the last update
of the epoch has one batch, the second rank a dummy) and the start of epoch 2.

The multi-node recipe (docs/reliability.md): 2 nodes x 2 ranks train 3 epochs on ``shard0:shard1`` (epoch 1
reads shard0, epoch 2 shard1, epoch 3 shard0 again), with and without ``--cluster-sampling``. A test-only
``fairseq-train`` on PATH (fairseq's own ``cli_main``, its ``Trainer.train_step`` wrapped) logs the sample ids
each rank trains on in each update: over the 4 ranks every protein (every cluster, through one of its members)
is trained on exactly once per epoch. The same command rerun from the run's checkpoint in the middle of epoch 2
(what a run killed right after that save leaves) continues exactly: every per-update log record, every rank's
samples and the final weights equal the uninterrupted run's.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.training import (
    BIN,
    ROOT,
    checkpoint,
    environment,
    max_weight_difference,
    run,
    tiny_data,
    train_args,
    update_stats,
)

UPDATES = 10
#: logged values carry 3 decimals: allow one unit in the last place for a rounding flip
LOGGED_TOLERANCE = 1e-3
#: measured 1.2e-7 (OMP_NUM_THREADS=1 per rank vs 2 threads in the single process), 0 with equal threads
WEIGHT_TOLERANCE = 1e-5
LAUNCHER = "examples/train_distributed_cpu.sh"


@pytest.fixture(scope="module")
def data_bin(fairseq_preprocess, sample_proteins):
    return tiny_data(fairseq_preprocess, sample_proteins)


def test_two_ranks_match_one_process_with_the_same_total_batch(data_bin, tmp_path):
    two = run(["bash", LAUNCHER, "2", *train_args(data_bin, tmp_path / "two", "--max-update", str(UPDATES))])
    one = run(["fairseq-train", *train_args(data_bin, tmp_path / "one", "--cpu", "--max-update", str(UPDATES),
                                            "--update-freq", "2")])
    assert "distributed init (rank 0): tcp://127.0.0.1:" in two and "legacy_ddp" in two
    ranks, single = update_stats(two), update_stats(one)
    assert sorted(ranks) == sorted(single) == list(range(1, UPDATES + 1))
    for update, record in single.items():
        other = ranks[update]
        assert (other["epoch"], other["bsz"], other["wpb"]) == (record["epoch"], record["bsz"], record["wpb"])
        for key in ("loss", "accuracy", "gnorm"):
            assert abs(float(other[key]) - float(record[key])) <= LOGGED_TOLERANCE * max(1.0, abs(float(record[key])))
    assert {r["epoch"] for r in single.values()} == {1, 2}
    difference = max_weight_difference(tmp_path / "two" / "checkpoint_last.pt", tmp_path / "one" / "checkpoint_last.pt")
    assert difference <= WEIGHT_TOLERANCE


def test_launcher_stops_the_other_ranks_when_one_fails(tmp_path):
    """Rank 1 fails at once, rank 0 would wait forever (as a real rank does at its first all-reduce):
    the launcher must stop rank 0 and exit with rank 1's status. A stand-in fairseq-train plays the ranks."""
    fake = tmp_path / "bin" / "fairseq-train"
    fake.parent.mkdir()
    fake.write_text('#!/usr/bin/env bash\n[[ " $* " == *" --distributed-rank 1 "* ]] && exit 3\nexec sleep 300\n')
    fake.chmod(0o755)
    env = {**environment(), "PATH": f"{fake.parent}:{environment()['PATH']}"}
    start = time.monotonic()
    proc = subprocess.run(["bash", LAUNCHER, "2", "data-bin"], cwd=ROOT, env=env, check=False, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 3 and "stopping the others" in proc.stderr
    assert time.monotonic() - start < 60


def test_launcher_usage():
    proc = subprocess.run(["bash", LAUNCHER, "two", "data-bin"], cwd=ROOT, check=False, capture_output=True, text=True)
    assert proc.returncode == 2 and "usage:" in proc.stderr


# ---- 4 ranks on 2 "nodes", a sharded data-bin, exact resume ----------------------------------------------

#: proteins per shard, and UR50/D clusters per shard (cluster of record i: i % clusters)
SHARDS = ((0, 160, 97), (160, 288, 89))
NODES, RANKS_PER_NODE, EPOCHS = 2, 2, 3
#: a checkpoint after every update, all kept: the resumed run starts from the one in the middle of epoch 2
FOUR_RANKS = ("--max-tokens", "512", "--max-epoch", str(EPOCHS), "--save-interval-updates", "1")
TIMINGS = {"wps", "ups", "wall", "train_wall", "gb_free"}

#: fairseq-train, logging what each rank trains on: fairseq's own cli_main with Trainer.train_step wrapped
RANK_LOGGING_TRAIN = """#!{python}
import json, os, sys
from fairseq_cli.train import cli_main  # first: it configures fairseq's log format
from fairseq.trainer import Trainer

train_step = Trainer.train_step


def drawn_members(dataset):
    while dataset is not None and not hasattr(dataset, "members"):
        dataset = getattr(dataset, "dataset", None)
    return None if dataset is None else dataset.members


def logged_train_step(self, samples, raise_oom=False):
    dataset = self.task.dataset(self.cfg.dataset.train_subset)
    ids = [int(i) for sample in samples if sample for i in sample["id"]]  # a shard's padding batch is empty
    members = drawn_members(dataset)
    record = {{"update": self.get_num_updates() + 1, "epoch": dataset.epoch, "ids": ids,
              "members": None if members is None else [int(members[i]) for i in ids]}}
    with open(os.path.join(os.environ["RANK_LOG_DIR"], f"rank{{self.data_parallel_rank}}.jsonl"), "a") as out:
        out.write(json.dumps(record) + "\\n")
    return train_step(self, samples, raise_oom)


Trainer.train_step = logged_train_step
sys.argv[0] = "fairseq-train"
sys.exit(cli_main())
"""


@pytest.fixture(scope="module")
def sharded(fairseq_preprocess, sample_proteins, tmp_path_factory) -> Path:
    """``dir/shard0`` and ``dir/shard1``: two slices of real proteins, each fairseq-preprocess'd, each with its
    ``train.clusters.npy``."""
    root = tmp_path_factory.mktemp("sharded")
    valid = sample_proteins[1000:1040]
    for k, (first, last, clusters) in enumerate(SHARDS):
        shard = root / f"shard{k}"
        shutil.copytree(fairseq_preprocess(sample_proteins[first:last], valid), shard)
        np.save(shard / "train.clusters.npy", np.arange(last - first) % clusters)
    return root


@pytest.fixture(scope="module")
def rank_logging_bin(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bin")
    script = folder / "fairseq-train"
    script.write_text(RANK_LOGGING_TRAIN.format(python=sys.executable))
    script.chmod(0o755)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(data: str, save: Path, logs: Path, rank_logging_bin: Path, *extra: str) -> str:
    """The launcher on node 0 and node 1 (both localhost), 2 ranks each, one thread per rank; node 0's output."""
    logs.mkdir(parents=True, exist_ok=True)
    env = {**environment(), "PATH": f"{rank_logging_bin}:{BIN}:{environment()['PATH']}", "OMP_NUM_THREADS": "1",
           "NNODES": str(NODES), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "RANK_LOG_DIR": str(logs)}
    command = ["bash", LAUNCHER, str(RANKS_PER_NODE), *train_args(data, save, *FOUR_RANKS, *extra)]
    nodes = [subprocess.Popen(command, cwd=ROOT, env={**env, "NODE_RANK": str(node)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for node in range(NODES)]
    try:
        outputs = [node.communicate(timeout=600)[0] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    for node, output in zip(nodes, outputs):
        assert node.returncode == 0, output[-4000:]
    return outputs[0]


def rank_records(logs: Path) -> dict[int, list[dict]]:
    return {rank: [json.loads(line) for line in (logs / f"rank{rank}.jsonl").read_text().splitlines()]
            for rank in range(NODES * RANKS_PER_NODE)}


def without_timings(log: str) -> dict[int, dict]:
    return {u: {k: v for k, v in r.items() if k not in TIMINGS} for u, r in update_stats(log).items()}


@pytest.mark.slow  # 4 processes, two runs: behind `make test-all` (the 2-rank test covers DDP in `make test`)
@pytest.mark.parametrize("layout", ["plain", "cluster_sampling"])
def test_four_ranks_on_two_nodes_read_each_protein_once_per_epoch_and_resume_exactly(
        layout, sharded, rank_logging_bin, tmp_path):
    data = f"{sharded / 'shard0'}:{sharded / 'shard1'}"
    extra = ("--cluster-sampling",) if layout == "cluster_sampling" else ()
    log = two_nodes(data, tmp_path / "full", tmp_path / "full-logs", rank_logging_bin, *extra)
    assert "distributed init (rank 1): tcp://127.0.0.1:" in log  # node 0 ran ranks 0 and 1, node 1 ranks 2 and 3
    reference, ranks = without_timings(log), rank_records(tmp_path / "full-logs")
    assert sorted(ranks) == [0, 1, 2, 3] and all(ranks.values())

    for epoch in range(1, EPOCHS + 1):
        first, last, clusters = SHARDS[(epoch - 1) % 2]
        records = [r for rank in ranks.values() for r in rank if r["epoch"] == epoch]
        ids = sorted(i for r in records for i in r["ids"])
        expected = clusters if layout == "cluster_sampling" else last - first
        assert ids == list(range(expected)), epoch  # exactly once over the 4 ranks
        if layout == "cluster_sampling":  # each cluster through one of its own members, a different draw per epoch
            drawn = {i: m for r in records for i, m in zip(r["ids"], r["members"])}
            assert all(member % clusters == cluster for cluster, member in drawn.items())
        batches = sum(1 for r in records if r["ids"])  # one per rank and update; a padding batch is empty
        assert len({r["update"] for r in records}) == math.ceil(batches / 4) >= 3
    epochs = {u: r["epoch"] for u, r in reference.items()}
    assert sorted(epochs) == list(range(1, len(epochs) + 1)) and set(epochs.values()) == {1, 2, 3}

    # killed right after its save in the middle of epoch 2, then the same command again
    second = sorted(u for u, e in epochs.items() if e == 2)
    stop = second[len(second) // 2 - 1]
    save = tmp_path / "resumed"
    save.mkdir()
    shutil.copy(tmp_path / "full" / f"checkpoint_2_{stop}.pt", save / "checkpoint_last.pt")
    position = checkpoint(save / "checkpoint_last.pt")["extra_state"]["train_iterator"]
    assert position["epoch"] == 2 and 0 < position["iterations_in_epoch"]
    # resumed with the batches formed once and shared through a directory (--batch-cache-dir): the same run
    shared = tmp_path / "node-batches"
    resumed = two_nodes(data, save, tmp_path / "resumed-logs", rank_logging_bin, *extra, "--batch-cache-dir",
                        str(shared))
    assert "batches stored in" in resumed or "batches mapped from" in resumed  # rank 0's log: whichever it did
    assert len(list(shared.glob("*.bounds.npy"))) == 1  # the last epoch's entry; earlier ones removed
    assert f"@ {stop} updates)" in resumed.split("Loaded checkpoint", 1)[1].splitlines()[0]
    assert without_timings(resumed) == {u: r for u, r in reference.items() if u > stop}
    again = rank_records(tmp_path / "resumed-logs")
    assert all(again[rank] == [r for r in ranks[rank] if r["update"] > stop] for rank in ranks)
    finished, full = checkpoint(save / "checkpoint_last.pt"), checkpoint(tmp_path / "full" / "checkpoint_last.pt")
    assert all(torch.equal(finished["model"][k], full["model"][k]) for k in full["model"])
