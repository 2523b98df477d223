"""Exact resume: a fairseq-train run stopped or killed anywhere and rerun with the same command continues the
uninterrupted run's exact sequence of updates.

The reference is one uninterrupted run of 40 updates (15 batches per epoch, so it ends in epoch 3) with a
checkpoint every 4 updates. Runs stopped mid-epoch 2 (by ``--max-update``), killed mid-epoch 3 (SIGKILL) and
killed in the middle of a checkpoint save are rerun; every per-update log record after the restart (all but
the timings) must equal the uninterrupted run's, and the final weights must be bit-identical. Below the
CLI, the batches of an epoch are checked to depend on the seed and the epoch only, whatever epoch the process
started in: plain, with ``--cluster-sampling``, with sharded data directories and split over two ranks.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fairseq import options, tasks, utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from helpers.training import (
    ROOT,
    TRAIN_PROTEINS,
    VALID_PROTEINS,
    checkpoint,
    environment,
    run,
    train_args,
    update_stats,
)

import fairseq_esm.tasks  # noqa: F401  (registers the plugin: fairseq skips a --user-dir already imported)

MAX_UPDATE, SAVE_EVERY, BATCHES_PER_EPOCH = 40, 4, 15
SCHEDULE = ("--cpu", "--save-interval-updates", str(SAVE_EVERY), "--keep-interval-updates", "2")
TIMINGS = {"wps", "ups", "wall", "train_wall", "gb_free"}

#: fairseq-train, SIGKILLed by itself in the middle of writing one file of the save at update 24
KILLED_WHILE_SAVING = """
import os, shutil, signal, sys, torch
from fairseq_cli.train import cli_main
moment, target = sys.argv.pop(1), sys.argv.pop(1)

def half_then_die(write_half):
    write_half()
    os.kill(os.getpid(), signal.SIGKILL)

if moment == "copy":  # fairseq copies the checkpoint it saved (target) to checkpoint_last.pt
    copyfile = shutil.copyfile
    def patched_copy(src, dst, *args, **kwargs):
        if str(src).endswith(target) and str(dst).endswith("checkpoint_last.pt"):
            data = open(src, "rb").read()
            half_then_die(lambda: open(dst, "wb").write(data[: len(data) // 2]))
        return copyfile(src, dst, *args, **kwargs)
    shutil.copyfile = patched_copy
else:  # fairseq writes the checkpoint itself to a .tmp file
    save = torch.save
    def patched_save(obj, f, *args, **kwargs):
        if getattr(f, "name", "").endswith(target):
            half_then_die(lambda: f.write(b"PK\\x03\\x04" + bytes(1000)) and f.flush())
        return save(obj, f, *args, **kwargs)
    torch.save = patched_save
sys.argv[0] = "fairseq-train"
sys.exit(cli_main())
"""


@pytest.fixture(scope="module")
def data(clean_data) -> Path:
    return clean_data


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> dict:
    save = tmp_path_factory.mktemp("uninterrupted")
    log = run(["fairseq-train", *train_args(data, save, *SCHEDULE, "--max-update", str(MAX_UPDATE))])
    return {"save": save, "stats": records(log)}


def records(log: str) -> dict[int, dict]:
    """Per-update log records without the timings."""
    return {u: {k: v for k, v in r.items() if k not in TIMINGS} for u, r in update_stats(log).items()}


def command(data: Path, save: Path, max_update: int = MAX_UPDATE) -> list[str]:
    return ["fairseq-train", *train_args(data, save, *SCHEDULE, "--max-update", str(max_update))]


def assert_continues_exactly(resumed_log: str, since: int, save: Path, uninterrupted: dict) -> None:
    """The rerun resumed at update ``since``, then logged and ended exactly as the uninterrupted run."""
    assert f"@ {since} updates)" in resumed_log.split("Loaded checkpoint", 1)[1].splitlines()[0]
    after = records(resumed_log)
    assert sorted(after) == list(range(since + 1, MAX_UPDATE + 1))
    assert after == {u: r for u, r in uninterrupted["stats"].items() if u > since}
    finished = checkpoint(save / "checkpoint_last.pt")
    reference = checkpoint(uninterrupted["save"] / "checkpoint_last.pt")
    assert all(torch.equal(finished["model"][k], reference["model"][k]) for k in reference["model"])
    assert finished["extra_state"]["train_iterator"] == reference["extra_state"]["train_iterator"]


def kill_after(cmd: list[str], log_path: Path, saved: str, timeout: float = 300) -> str:
    """Start ``cmd``, SIGKILL it as soon as its log contains ``saved``; returns its log."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=environment(), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        while saved not in log_path.read_text():
            assert proc.poll() is None, f"fairseq-train ended before {saved!r}:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {saved!r} within the timeout"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"fairseq-train finished before the kill (status {proc.returncode})"
    return log_path.read_text()


def test_stopped_mid_epoch_2_continues_exactly(data, uninterrupted, tmp_path):
    save = tmp_path / "ckpt"
    first = run(command(data, save, max_update=22))  # epoch 2, batch 7
    assert sorted(records(first)) == list(range(1, 23))
    assert records(first) == {u: r for u, r in uninterrupted["stats"].items() if u <= 22}
    assert checkpoint(save / "checkpoint_last.pt")["extra_state"]["train_iterator"]["epoch"] == 2
    assert_continues_exactly(run(command(data, save)), 22, save, uninterrupted)


@pytest.mark.slow  # a second kill point; mid-epoch 2 stays in make test
def test_killed_mid_epoch_3_continues_exactly(data, uninterrupted, tmp_path):
    save = tmp_path / "ckpt"
    kill_after(command(data, save), tmp_path / "killed.log", "(epoch 3 @ 32 updates")
    position = checkpoint(save / "checkpoint_last.pt")["extra_state"]["train_iterator"]
    assert position == {"version": 2, "epoch": 3, "iterations_in_epoch": 2, "shuffle": True}
    assert_continues_exactly(run(command(data, save)), 32, save, uninterrupted)


@pytest.mark.parametrize("moment", ["copy", pytest.param("write", marks=pytest.mark.slow)])  # write: make test-all
def test_killed_during_a_checkpoint_save_resumes_from_the_newest_intact_one(moment, data, uninterrupted, tmp_path):
    """SIGKILL half-way through copying checkpoint_2_24.pt to checkpoint_last.pt (fairseq's non-atomic step),
    or half-way through writing checkpoint_2_24.pt.tmp: the same command resumes without manual steps."""
    save = tmp_path / "ckpt"
    target = "checkpoint_2_24.pt" if moment == "copy" else "checkpoint_2_24.pt.tmp"
    wrapper = [sys.executable, "-c", KILLED_WHILE_SAVING, moment, target]
    proc = subprocess.run([*wrapper, *command(data, save)[1:]], cwd=ROOT, env=environment(), capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-3000:]
    if moment == "copy":
        assert 0 < (save / "checkpoint_last.pt").stat().st_size < (save / "checkpoint_2_24.pt").stat().st_size
    truncated = (save / "checkpoint_last.pt").read_bytes()
    log = run(command(data, save))
    if moment == "copy":
        assert (save / "checkpoint_last.pt.skipped").read_bytes() == truncated  # kept, not deleted
        assert ("checkpoint_last.pt was truncated (killed while fairseq copied it); resuming from "
                "checkpoint_2_24.pt, the newest intact checkpoint (the skipped file is kept as "
                "checkpoint_last.pt.skipped)") in log
        assert_continues_exactly(log, 24, save, uninterrupted)
    else:  # the interrupted save never reached checkpoint_last.pt: the previous save is the newest intact one
        assert "newest intact" not in log
        assert_continues_exactly(log, 20, save, uninterrupted)


# ---- below the CLI: the batches of epoch E are a function of the seed and E only ----------------------


@pytest.fixture(scope="module")
def layouts(data, fairseq_preprocess, sample_proteins, tmp_path_factory) -> dict[str, tuple[str, ...]]:
    """fairseq-train data options: plain, UR50/D cluster sampling, two sharded data directories."""
    clustered = tmp_path_factory.mktemp("clustered") / "data-bin"
    shutil.copytree(data, clustered)
    np.save(clustered / "train.clusters.npy", np.arange(TRAIN_PROTEINS) % 97)  # 97 clusters of 2 or 3 members
    start = TRAIN_PROTEINS + VALID_PROTEINS
    second = fairseq_preprocess(sample_proteins[start : start + 200], sample_proteins[:VALID_PROTEINS])
    return {"plain": (str(data),), "cluster_sampling": (str(clustered), "--cluster-sampling"),
            "sharded": (f"{data}:{second}",)}


def training_config(data_options: tuple[str, ...], save: Path):
    """fairseq-train's config for the shared command line on ``data_options``."""
    args = train_args(Path(data_options[0]), save, "--cpu", *data_options[1:])
    return convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), args))


def train_iterator(task, cfg, epoch: int, shard_id: int, num_shards: int, load: bool):
    """What fairseq's Trainer.get_train_iterator returns at the start of ``epoch``."""
    split = cfg.dataset.train_subset
    if load:
        task.load_dataset(split, epoch=epoch, combine=True)
    max_positions = utils.resolve_max_positions(task.max_positions(), cfg.model.max_positions, cfg.dataset.max_tokens)
    return task.get_batch_iterator(
        dataset=task.dataset(split), max_tokens=cfg.dataset.max_tokens, max_sentences=cfg.dataset.batch_size,
        max_positions=max_positions, ignore_invalid_inputs=True,
        required_batch_size_multiple=cfg.dataset.required_batch_size_multiple, seed=cfg.common.seed,
        num_shards=num_shards, shard_id=shard_id, num_workers=0, epoch=epoch,
        disable_iterator_cache=task.has_sharded_data(split),
    )


def epochs_from(cfg, start: int, last: int, shard_id: int = 0, num_shards: int = 1, position: int = 0) -> dict:
    """{epoch: batches} as a process started in epoch ``start`` (at batch ``position``) reads them, to ``last``."""
    task = tasks.setup_task(cfg.task)
    itr = train_iterator(task, cfg, start, shard_id, num_shards, load=True)
    if position:
        itr.load_state_dict({"version": 2, "epoch": start, "iterations_in_epoch": position, "shuffle": True})
    seen = {}
    while itr.next_epoch_idx <= last:
        epoch = itr.next_epoch_idx
        seen[epoch] = [b for b in itr.next_epoch_itr(shuffle=True) if b]  # a shard's padding batch is empty
        itr = train_iterator(task, cfg, itr.next_epoch_idx, shard_id, num_shards, load=task.has_sharded_data("train"))
    return seen


def same_batches(a: list[dict], b: list[dict]) -> bool:
    keys = lambda batch: (batch["id"], batch["net_input"]["src_tokens"], batch["target"])  # noqa: E731
    return len(a) == len(b) and all(torch.equal(x, y) for p, q in zip(a, b) for x, y in zip(keys(p), keys(q)))


@pytest.mark.parametrize("layout", ["plain", "cluster_sampling", "sharded"])
def test_batches_of_an_epoch_do_not_depend_on_where_the_run_started(layout, layouts, tmp_path):
    cfg = training_config(layouts[layout], tmp_path)
    for num_shards in (1, 2):
        for shard in range(num_shards):
            from_start = epochs_from(cfg, 1, 3, shard, num_shards)
            assert not same_batches(from_start[2], from_start[3])  # epochs differ
            for start in (2, 3):
                resumed = epochs_from(cfg, start, 3, shard, num_shards)
                assert all(same_batches(resumed[e], from_start[e]) for e in range(start, 4)), (num_shards, start)
    for epoch in (2, 3):  # every protein (one member of every cluster) once per epoch, over both ranks
        batches = [b for shard in range(2) for b in epochs_from(cfg, epoch, epoch, shard, 2)[epoch]]
        ids = [i for b in batches for i in b["id"].tolist()]
        assert sorted(ids) == list(range(len(ids))) and len(ids) in (TRAIN_PROTEINS, 97, 200)


def test_mid_epoch_position_skips_exactly_the_batches_already_trained(layouts, tmp_path):
    cfg = training_config(layouts["plain"], tmp_path)
    for epoch in (2, 3):
        whole = epochs_from(cfg, epoch, epoch)[epoch]
        rest = epochs_from(cfg, epoch, epoch + 1, position=5)
        assert len(whole) == BATCHES_PER_EPOCH and same_batches(rest[epoch], whole[5:])
        assert same_batches(rest[epoch + 1], epochs_from(cfg, 1, epoch + 1)[epoch + 1])
        ids = torch.cat([b["id"] for b in whole[:5] + rest[epoch]])
        assert sorted(ids.tolist()) == list(range(TRAIN_PROTEINS))  # neither repeats nor skips a protein


@pytest.mark.slow  # three fairseq-train runs; ESM-2's fairseq-train path is also in test_esm2_tools (make test)
def test_esm2_with_cluster_sampling_stops_and_continues_exactly(layouts, tmp_path):
    """ESM-2 trains through the same task, criterion and checkpoints: stopped in epoch 2 of a UR50/D run and
    rerun, it logs and ends exactly as the uninterrupted run (weights, iterator position)."""
    data, *sampling = layouts["cluster_sampling"]

    def esm2(save: Path, max_update: int) -> list[str]:
        return ["fairseq-train", *train_args(Path(data), save, *SCHEDULE, *sampling, "--arch", "esm2_t4_1M",
                                             "--max-update", str(max_update))]

    full = tmp_path / "full"
    reference = records(run(esm2(full, 16)))
    assert sorted(reference) == list(range(1, 17))
    assert checkpoint(full / "checkpoint_last.pt")["cfg"]["model"]["_name"] == "esm2_t4_1M"
    save = tmp_path / "ckpt"
    first = records(run(esm2(save, 8)))  # 97 clusters, max-tokens 1024: epoch 2 starts within 8 updates
    assert first == {u: r for u, r in reference.items() if u <= 8}
    assert checkpoint(save / "checkpoint_last.pt")["extra_state"]["train_iterator"]["epoch"] == 2
    resumed = run(esm2(save, 16))
    assert "@ 8 updates)" in resumed.split("Loaded checkpoint", 1)[1].splitlines()[0]
    assert records(resumed) == {u: r for u, r in reference.items() if u > 8}
    finished, expected = checkpoint(save / "checkpoint_last.pt"), checkpoint(full / "checkpoint_last.pt")
    assert all(torch.equal(finished["model"][k], expected["model"][k]) for k in expected["model"])
    assert finished["extra_state"]["train_iterator"] == expected["extra_state"]["train_iterator"]
