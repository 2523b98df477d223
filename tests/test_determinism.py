"""Determinism: the real fairseq-train twice with the same seed gives the same log and bit-identical checkpoints
(CPU), and a sample's crop and mask do not depend on what other threads draw at the same time.

fairseq prepares batches in a background thread (``--data-buffer-size``); a mid-epoch checkpoint save runs
validation, whose batches are prepared in a second thread while the training prefetch thread is still busy.
Cropping and masking once reseeded numpy's global generator (``data_utils.numpy_seed``), so the two threads
could interleave their draws and a run depended on thread timing. Each draw now has its own generator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fairseq.data import Dictionary, data_utils
from helpers.training import TRAIN_PROTEINS, checkpoint, run, train_args, update_stats

from fairseq_esm.data.crop import CropDataset
from fairseq_esm.data.masking import MaskedProteinDataset, masking_scheme
from fairseq_esm.modules.alphabet import esm1b_alphabet

TIMINGS = {"wps", "ups", "wall", "train_wall", "gb_free"}


@pytest.fixture(scope="module")
def data_bin(clean_data) -> Path:
    return clean_data


def test_same_command_twice_gives_bit_identical_checkpoints(data_bin, tmp_path):
    """60 updates (4 epochs), validating at every save (each 3 updates), twice: the same per-update records and
    bit-identical weights, Adam moments and iterator state."""
    runs = [tmp_path / "a", tmp_path / "b"]
    logs = [
        run(["fairseq-train", *[a for a in train_args(data_bin, save) if a != "--disable-validation"], "--cpu",
             "--max-update", "60", "--save-interval-updates", "3", "--keep-interval-updates", "1"])
        for save in runs
    ]
    first, second = ({u: {k: v for k, v in r.items() if k not in TIMINGS} for u, r in update_stats(log).items()}
                     for log in logs)
    assert sorted(first) == list(range(1, 61)) and first == second
    assert logs[0].count('"valid_loss"') >= 20  # validated at every save: the concurrent-threads path ran
    assert len({r["loss"] for r in first.values()}) > 10  # it trained: the loss moved
    a, b = (checkpoint(save / "checkpoint_last.pt") for save in runs)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    adam_a, adam_b = a["last_optimizer_state"]["state"], b["last_optimizer_state"]["state"]
    assert all(torch.equal(adam_a[i][k], adam_b[i][k]) for i in adam_a for k in ("exp_avg", "exp_avg_sq"))
    assert a["extra_state"]["train_iterator"] == b["extra_state"]["train_iterator"]


def test_crops_and_masks_do_not_depend_on_other_threads(data_bin, monkeypatch):
    """Samples never touch numpy's global generator, which fairseq's other threads reseed: with every function
    of it that could draw or reseed replaced by a failure, the same samples come out."""
    stored = Dictionary.load(str(data_bin / "dict.txt"))
    records = data_utils.load_indexed_dataset(str(data_bin / "train"), stored)
    alphabet = esm1b_alphabet()
    cropped = CropDataset(records, alphabet, 64, stored.eos(), seed=3)
    samples = MaskedProteinDataset(cropped, masking_scheme(alphabet), 3)
    samples.set_epoch(2)

    def draw() -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(s["source"], s["target"]) for s in (samples[i] for i in range(TRAIN_PROTEINS))]

    alone = draw()
    for name in ("seed", "set_state", "get_state", "random_sample", "choice", "randint", "permutation"):
        monkeypatch.setattr(np.random, name, lambda *a, _name=name, **k: pytest.fail(f"np.random.{_name} used"))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(alone, draw()))
