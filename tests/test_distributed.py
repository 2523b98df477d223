"""Data-parallel training through fairseq's own engine: 2 gloo ranks on CPU = 1 process with --update-freq 2.

fairseq gives rank r the batches r, r+2, ... of each epoch, and one process with ``--update-freq 2``
accumulates batches 2k and 2k+1 into update k: the same proteins, crops and masks per update. The
gradients are summed in another order (and each rank runs on one thread), so the weights agree to
float32 rounding, not bit for bit. 10 updates cover the end of epoch 1 (15 batches: the last update
of the epoch has one batch, the second rank a dummy) and the start of epoch 2.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from helpers.training import (
    ROOT,
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
