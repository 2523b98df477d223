"""Corrupt or mismatched artefacts are refused with a message that names the file and what is wrong.

Binarized data through the protein_mlm task (and one real fairseq-train run for what a user sees);
checkpoints through fairseq's own loaders, the ones fairseq-train (resume) and fairseq-validate use.
"""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fairseq import checkpoint_utils, options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.trainer import Trainer
from fairseq_cli import preprocess
from helpers.training import ROOT, environment, train_args

from fairseq_esm.checkpoints.pt_files import CheckpointError
from fairseq_esm.data import integrity
from fairseq_esm.data.integrity import DataIntegrityError
from fairseq_esm.errors import install_excepthook
from fairseq_esm.modules.alphabet import DICT_DIR, esm1b_alphabet
from fairseq_esm.tasks.protein_mlm import ProteinMLMConfig, ProteinMLMTask


@pytest.fixture
def data(clean_data, tmp_path) -> Path:
    """A private copy of the clean data-bin, to corrupt."""
    return Path(shutil.copytree(clean_data, tmp_path / "data-bin"))


def load(data: Path, split: str = "train") -> ProteinMLMTask:
    task = ProteinMLMTask.setup_task(ProteinMLMConfig(data=str(data), max_positions=64, seed=1, train_subset="train"))
    task.load_dataset(split, combine=True)
    return task


def record_start(data: Path, split: str, record: int) -> int:
    """Token offset of ``record`` in ``split.bin`` (uint16 tokens, records back to back)."""
    offsets = integrity.read_index(str(data / split))[2]
    return int(offsets[record]) // 2


def test_clean_data_loads_and_every_record_reads(data):
    dataset = load(data).dataset("train")
    assert len(dataset) == 240 and all(len(dataset[i]["source"]) > 2 for i in range(len(dataset)))


def test_truncated_bin_stops_fairseq_train_with_one_error_line(data, tmp_path):
    bin_path = data / "train.bin"
    size = bin_path.stat().st_size
    with bin_path.open("r+b") as f:
        f.truncate(size - 100)
    proc = subprocess.run(["fairseq-train", *train_args(data, tmp_path / "ckpt", "--cpu", "--max-update", "1")],
                          cwd=ROOT, env=environment(), check=False, capture_output=True, text=True)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    expected = (
        f"error: {bin_path} has {size - 100:,} bytes, {data / 'train.idx'} describes 240 records ending at byte "
        f"{size:,}: truncated; {integrity.REBINARIZE}"
    )
    assert errors == [expected]
    assert "Traceback" not in proc.stderr


def test_truncated_index(data):
    idx = data / "train.idx"
    size = idx.stat().st_size
    with idx.open("r+b") as f:
        f.truncate(size - 8)
    with pytest.raises(DataIntegrityError, match=f"{idx} has {size - 8:,} bytes, its header announces 240 records"):
        load(data)
    with idx.open("r+b") as f:
        f.truncate(20)
    with pytest.raises(DataIntegrityError, match="less than a fairseq index header"):
        load(data)


def test_index_and_data_from_different_runs(data):
    shutil.copy(data / "train.bin", data / "valid.bin")
    with pytest.raises(DataIntegrityError, match="valid.bin has .* bytes, .*valid.idx describes 40 records.*longer"):
        load(data, "valid")


def overwrite_index_record(prefix: Path, record: int, size: int, pointer: int) -> None:
    """Set one record's size and byte pointer in a fairseq mmap ``.idx``, in place."""
    _, sizes, _ = integrity.read_index(str(prefix))
    count, head = len(sizes), integrity.HEADER.size
    raw = np.memmap(f"{prefix}.idx", mode="r+", dtype=np.uint8)
    raw[head : head + 4 * count].view("<i4")[record] = size
    raw[head + 4 * count : head + 12 * count].view("<i8")[record] = pointer
    raw.flush()


def test_index_records_must_lie_back_to_back(data):
    """Record 11's pointer and size copied into record 10: every record still lies inside the .bin and the .bin
    still ends where the last record does, but record 10 no longer starts where record 9 ends."""
    _, sizes, offsets = integrity.read_index(str(data / "train"))
    overwrite_index_record(data / "train", 10, int(sizes[11]), int(offsets[11]))
    expected = (f"{data / 'train.idx'}: record 10 starts at byte {offsets[11]:,}, but record 9 ends at byte "
                f"{offsets[10]:,}: the index is corrupt; {integrity.REBINARIZE}")
    with pytest.raises(DataIntegrityError) as err:
        load(data)
    assert str(err.value) == expected
    _, sizes, offsets = integrity.read_index(str(data / "valid"))
    overwrite_index_record(data / "valid", 0, int(sizes[0]), 2)
    with pytest.raises(DataIntegrityError, match="valid.idx: record 0 starts at byte 2, not at byte 0: the index is"):
        load(data, "valid")


def test_half_a_pair_and_a_foreign_index(data):
    (data / "valid.bin").unlink()
    with pytest.raises(DataIntegrityError, match="valid.idx exists but .*valid.bin does not"):
        load(data, "valid")
    (data / "train.idx").write_bytes(b"TNTIDX\x00\x00" + bytes(40))  # fairseq's legacy 'cached' format
    with pytest.raises(DataIntegrityError, match="train.idx is not a fairseq mmap index"):
        load(data)


def test_dictionary_of_another_binarization_is_refused(sample_proteins, tmp_path):
    """fairseq-preprocess without --srcdict: a frequency-ordered dictionary, consistent with its data, not ESM's."""
    (tmp_path / "train.txt").write_text("".join(" ".join(p) + "\n" for p in sample_proteins[:100]))
    args = options.get_preprocessing_parser().parse_args(
        ["--only-source", "--trainpref", str(tmp_path / "train.txt"), "--destdir", str(tmp_path / "bin"),
         "--dataset-impl", "mmap", "--workers", "1"]
    )
    preprocess.main(args)
    message = r"bin/dict.txt lists \d+ symbols, the ESM data dictionary .*esm1b.txt 29; line \d+ is .*--srcdict"
    with pytest.raises(DataIntegrityError, match=message):
        load(tmp_path / "bin")


def test_data_binarized_with_the_esm1_dictionary_file_is_accepted(data):
    """``--srcdict dicts/esm1.txt`` gives the same residue ids; only its trailing specials differ."""
    shutil.copy(DICT_DIR / "esm1.txt", data / "dict.txt")
    assert len(load(data).dataset("train")) == 240


def test_token_ids_beyond_the_dictionary_are_found_at_load(data):
    tokens = np.memmap(data / "train.bin", dtype=np.uint16, mode="r+")
    tokens[record_start(data, "train", 200) + 3] = 40
    tokens.flush()
    with pytest.raises(DataIntegrityError, match="train.bin record 200 holds token id 40, but dict.txt defines 33 ids"):
        load(data)


def test_records_beyond_the_load_scan_are_checked_when_read(data, monkeypatch):
    """With the scan limited to 2 tokens, bad ids and a stray <pad> are caught when their record is read."""
    monkeypatch.setattr(integrity, "SCAN_TOKENS", 2)
    tokens = np.memmap(data / "train.bin", dtype=np.uint16, mode="r+")
    tokens[record_start(data, "train", 100) + 5] = 40
    tokens[record_start(data, "train", 150) + 1] = esm1b_alphabet().padding_idx
    tokens.flush()
    dataset = load(data).dataset("train")
    dataset[99]
    for record in (100, 150):
        with pytest.raises(DataIntegrityError, match=f"train record {record} is not residue ids 3..32 followed by"):
            dataset[record]


def test_fairseq_cli_prints_file_errors_in_one_line_and_other_errors_in_full(capsys, monkeypatch):
    """The hook the plugin installs (the real fairseq-train run above shows it installed): what users see."""
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    install_excepthook()
    for error in (DataIntegrityError("data-bin/train.bin is truncated"), CheckpointError("x.pt is an esm1 checkpoint"),
                  KeyError("a bug")):
        sys.excepthook(type(error), error, None)
    lines = capsys.readouterr().err.splitlines()
    assert lines[:2] == ["error: data-bin/train.bin is truncated", "error: x.pt is an esm1 checkpoint"]
    assert lines[2:] == ["KeyError: 'a bug'"]


def save_untrained_checkpoint(data: Path, save_dir: Path, *arch: str) -> Path:
    """checkpoint_last.pt as fairseq-train writes it, for a freshly built model (no training needed)."""
    parsed = options.parse_args_and_arch(options.get_training_parser(), train_args(data, save_dir, "--cpu", *arch))
    cfg = convert_namespace_to_omegaconf(parsed)
    task = tasks.setup_task(cfg.task)
    trainer = Trainer(cfg, task, task.build_model(cfg.model), task.build_criterion(cfg.criterion))
    save_dir.mkdir()
    trainer.consolidate_optimizer()  # as fairseq's save_checkpoint does first
    position = {"version": 2, "epoch": 1, "iterations_in_epoch": 0, "shuffle": True}
    trainer.save_checkpoint(str(save_dir / "checkpoint_last.pt"), {"train_iterator": position, "val_loss": None})
    return save_dir / "checkpoint_last.pt"


def test_resuming_from_a_checkpoint_of_another_architecture_and_vocabulary_is_refused(clean_data, tmp_path):
    """An ESM-1 (35 tokens, 320 dims) checkpoint_last.pt in the save dir of an ESM-1b (33 tokens, 128 dims) run."""
    save = tmp_path / "ckpt"
    save_untrained_checkpoint(clean_data, save, "--arch", "esm1_t6_7M", "--alphabet", "esm1")
    proc = subprocess.run(["fairseq-train", *train_args(clean_data, save, "--cpu", "--max-update", "1")],
                          cwd=ROOT, env=environment(), check=False, capture_output=True, text=True)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: the checkpoint's weights do not fit this esm1b model (were --arch or its sizes changed?): "
        "vocabulary size mismatch: checkpoint embeds 35 tokens, the esm1b alphabet has 33",
        f"error: Cannot load model parameters from checkpoint {save / 'checkpoint_last.pt'}; "
        "please ensure that the architectures match.",
    ], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


class Payload:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_that_needs_full_unpickling_is_refused(tmp_path):
    """fairseq-train / fairseq-validate read checkpoints through the plugin's safe read (weights_only): no code
    runs, and the refusal is ours (naming --allow-unsafe), not torch's advice to pass weights_only=False."""
    marker, path = tmp_path / "code_ran", tmp_path / "checkpoint_last.pt"
    with path.open("wb") as f:
        pickle.dump({"model": {}, "cfg": None, "payload": Payload(marker)}, f)
    with pytest.raises(CheckpointError, match="beyond tensors and argparse.Namespace.*--allow-unsafe") as err:
        checkpoint_utils.load_checkpoint_to_cpu(str(path))
    assert "weights_only" not in str(err.value)
    assert not marker.exists()
    with path.open("rb") as f:  # the payload is live: full unpickling (what the flag would allow) runs it
        pickle.load(f)
    assert marker.exists()
