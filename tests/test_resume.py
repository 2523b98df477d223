"""Resume after SIGKILL: fairseq-train killed mid-epoch, rerun with the same command, continues exactly.

One uninterrupted run of 22 updates (15 batches per epoch, so it crosses into epoch 2) and one run killed
with SIGKILL right after its first mid-epoch checkpoint (update 5), then restarted with the same command.
The restarted run must say it resumed from that update, log the uninterrupted run's losses from there on
and end with bit-identical weights; rebuilding the epoch iterator from the checkpoint must give the same
remaining batches (crops and masks included) as an uninterrupted iterator advanced as far.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from fairseq import checkpoint_utils, tasks, utils
from helpers.training import (
    ROOT,
    checkpoint,
    environment,
    losses,
    run,
    tiny_data,
    train_args,
)

MAX_UPDATE, SAVE_EVERY = 22, 5


@pytest.fixture(scope="module")
def runs(fairseq_preprocess, sample_proteins, tmp_path_factory) -> dict:
    """The uninterrupted run, the killed run (its checkpoint_last.pt kept aside) and the restarted run."""
    data = tiny_data(fairseq_preprocess, sample_proteins)
    work = tmp_path_factory.mktemp("resume")
    schedule = ("--cpu", "--max-update", str(MAX_UPDATE), "--save-interval-updates", str(SAVE_EVERY))
    full_log = run(["fairseq-train", *train_args(data, work / "full", *schedule)])
    command = ["fairseq-train", *train_args(data, work / "killed", *schedule)]
    killed_log = kill_after_first_checkpoint(command, work / "killed.log")
    shutil.copy(work / "killed" / "checkpoint_last.pt", work / "at_kill.pt")
    resumed_log = run(command)
    return {"full": work / "full", "killed": work / "killed", "at_kill": work / "at_kill.pt",
            "full_log": full_log, "killed_log": killed_log, "resumed_log": resumed_log}


def kill_after_first_checkpoint(command: list[str], log_path: Path, timeout: float = 300) -> str:
    """Start ``command``, SIGKILL it as soon as it logs a saved checkpoint; returns its log."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=environment(), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        while "Saved checkpoint" not in log_path.read_text():
            assert proc.poll() is None, f"fairseq-train ended before a checkpoint:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint within the timeout"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"fairseq-train finished before the kill (status {proc.returncode})"
    return log_path.read_text()


def test_killed_mid_epoch_after_a_checkpoint(runs):
    state = checkpoint(runs["at_kill"])
    saved = state["optimizer_history"][-1]["num_updates"]
    position = state["extra_state"]["train_iterator"]
    assert saved % SAVE_EVERY == 0 and saved < MAX_UPDATE
    assert position["epoch"] == 1 and 0 < position["iterations_in_epoch"] < 15
    assert max(losses(runs["killed_log"])) < MAX_UPDATE


def test_rerun_resumes_and_continues_the_loss_curve(runs):
    saved = checkpoint(runs["at_kill"])["optimizer_history"][-1]["num_updates"]
    last = runs["killed"] / "checkpoint_last.pt"
    assert f"Loaded checkpoint {last} (epoch 1 @ {saved} updates)" in runs["resumed_log"]
    full, before, after = losses(runs["full_log"]), losses(runs["killed_log"]), losses(runs["resumed_log"])
    assert sorted(after) == list(range(saved + 1, MAX_UPDATE + 1))
    assert after == {update: loss for update, loss in full.items() if update > saved}
    assert before == {update: loss for update, loss in full.items() if update in before}
    finished, uninterrupted = checkpoint(last), checkpoint(runs["full"] / "checkpoint_last.pt")
    assert finished["extra_state"]["train_iterator"] == uninterrupted["extra_state"]["train_iterator"]
    assert all(torch.equal(finished["model"][k], uninterrupted["model"][k]) for k in uninterrupted["model"])


def epoch_iterator(cfg, epoch: int):
    """The training EpochBatchIterator fairseq-train builds for ``cfg`` (a fresh task, as after a restart)."""
    task = tasks.setup_task(cfg.task)
    task.load_dataset(cfg.dataset.train_subset, epoch=epoch, combine=True)
    max_positions = utils.resolve_max_positions(task.max_positions(), cfg.model.max_positions, cfg.dataset.max_tokens)
    return task.get_batch_iterator(
        dataset=task.dataset(cfg.dataset.train_subset), max_tokens=cfg.dataset.max_tokens,
        max_sentences=cfg.dataset.batch_size, max_positions=max_positions,
        ignore_invalid_inputs=True, required_batch_size_multiple=cfg.dataset.required_batch_size_multiple,
        seed=cfg.common.seed, num_shards=1, shard_id=0, num_workers=0, epoch=epoch,
    )


def batch_tensors(batches: list[dict]) -> list[tuple[torch.Tensor, ...]]:
    return [(b["id"], b["net_input"]["src_tokens"], b["target"]) for b in batches]


def test_remaining_batches_after_resume_equal_the_uninterrupted_ones(runs):
    """Iterator state from the killed run's checkpoint → the same masked batches, to the end of epoch 2."""
    state = checkpoint_utils.load_checkpoint_to_cpu(str(runs["at_kill"]))
    cfg, position = state["cfg"], state["extra_state"]["train_iterator"]
    skipped = position["iterations_in_epoch"]

    restored = epoch_iterator(cfg, position["epoch"])
    restored.load_state_dict(position)
    resumed = list(restored.next_epoch_itr(shuffle=True))
    resumed_next_epoch = list(restored.next_epoch_itr(shuffle=True))

    uninterrupted = epoch_iterator(cfg, 1)
    whole_epoch = list(uninterrupted.next_epoch_itr(shuffle=True))
    next_epoch = list(uninterrupted.next_epoch_itr(shuffle=True))

    assert len(resumed) == len(whole_epoch) - skipped > 0
    expected = batch_tensors(whole_epoch[skipped:] + next_epoch)
    for got, want in zip(batch_tensors(resumed + resumed_next_epoch), expected):
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert len(resumed_next_epoch) == len(next_epoch)
    ids = torch.cat([b["id"] for b in whole_epoch[:skipped] + resumed])
    assert sorted(ids.tolist()) == list(range(240))  # the restart neither repeats nor skips a protein
