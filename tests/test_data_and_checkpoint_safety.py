"""Bad input is one clear error and official checkpoints work in fairseq's own tools, seen through the real
console scripts: fairseq-validate and fairseq-train with the plugin, and fairseq-esm-score.

A corrupt ``.idx`` (records not back to back), a missing or foreign ``dict.txt``, an unsafe checkpoint (whatever
torch's wording) and a full disk each stop a tool with one ``error:`` line naming the file; an official fair-esm
``.pt`` validates and resumes in fairseq-train like the fairseq checkpoint it converts to.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import shutil
import subprocess
import subprocess as sp
from pathlib import Path

import numpy as np
import pytest
import torch
from fairseq import checkpoint_utils
from helpers.proteins import write_fasta
from helpers.training import ROOT, environment, losses, train_args
from omegaconf import OmegaConf

import fairseq_esm.tasks  # noqa: F401  (the plugin, as fairseq-train / fairseq-validate load it)
from fairseq_esm.checkpoints import load_model
from fairseq_esm.checkpoints.pt_files import CheckpointError, read_file
from fairseq_esm.data import integrity
from fairseq_esm.data.binarize import write_index
from fairseq_esm.tasks.fairseq_checkpoint import fairseq_config, save_fairseq_checkpoint

pytestmark = [
    pytest.mark.filterwarnings(r"ignore:\s*'config' is validated against ConfigStore schema:UserWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning:hydra"),
    pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning"),
]
#: esm1b_t4_1M's sizes and the --max-positions of helpers.training.train_args, as a fair-esm release file
T4_1M = {"layers": 4, "dim": 128, "ffn": 512, "heads": 8, "max_positions": 64}


@pytest.fixture
def data(clean_data, tmp_path) -> Path:
    """A private copy of the clean data-bin, to corrupt."""
    return Path(shutil.copytree(clean_data, tmp_path / "data-bin"))


@pytest.fixture(scope="module")
def official(official_checkpoint) -> Path:
    """A random fair-esm ESM-1b in the release layout (``{"args": Namespace, "model": ...}`` + regression file)."""
    return official_checkpoint("esm1b", **T4_1M)


def run_tool(*cmd: str, stdout=sp.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=environment(), check=False, stdout=stdout, stderr=sp.PIPE, text=True)


def validate(data: Path, checkpoint: Path) -> subprocess.CompletedProcess:
    return run_tool("fairseq-validate", str(data), "--user-dir", "fairseq_esm", "--task", "protein_mlm", "--path",
                    str(checkpoint), "--max-tokens", "1024", "--num-workers", "0", "--cpu")


def train(data: Path, save_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_tool("fairseq-train", *train_args(data, save_dir, "--cpu", "--max-update", "2", "--no-save", *extra))


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """The ``error:`` lines a tool printed; a traceback fails the test."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def validation_loss(proc: subprocess.CompletedProcess) -> float:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return float(re.search(r"valid on 'valid' subset \| loss ([\d.]+)", proc.stdout + proc.stderr).group(1))


# --- .idx pointer continuity -------------------------------------------------------------------------------


def test_an_index_whose_records_overlap_stops_fairseq_validate(data, official):
    """fairseq-preprocess'd valid split with record 11's pointer and size copied into record 10: before the
    continuity check this validated silently (every record inside the .bin, the .bin's size right)."""
    _, sizes, offsets = integrity.read_index(str(data / "valid"))
    count, head = len(sizes), integrity.HEADER.size
    raw = np.memmap(data / "valid.idx", mode="r+", dtype=np.uint8)
    raw[head : head + 4 * count].view("<i4")[10] = sizes[11]
    raw[head + 4 * count : head + 12 * count].view("<i8")[10] = offsets[11]
    raw.flush()
    del raw
    proc = validate(data, official)
    assert proc.returncode != 0
    assert error_lines(proc) == [
        f"error: {data / 'valid.idx'}: record 10 starts at byte {offsets[11]:,}, but record 9 ends at byte "
        f"{offsets[10]:,}: the index is corrupt; {integrity.REBINARIZE}"
    ]


def test_the_continuity_check_covers_every_record_of_a_large_index(tmp_path):
    """A million records (the .bin sparse: only its size is looked at); a break at the very last is found."""
    sizes = np.full(1_000_000, 7, np.int64)
    prefix = tmp_path / "big"
    write_index(f"{prefix}.idx", sizes, np.uint16)
    with open(f"{prefix}.bin", "wb") as f:
        f.truncate(int(sizes.sum()) * 2)
    dtype, _, offsets = integrity.check_split_files(str(prefix))
    assert dtype == np.uint16 and offsets[-1] == (len(sizes) - 1) * 14
    sizes[-2] = 6  # the last record now starts 2 bytes after the one before ends
    write_index(f"{prefix}.idx", sizes, np.uint16)
    pointers = np.fromfile(f"{prefix}.idx", dtype="<i8", offset=integrity.HEADER.size + 4 * len(sizes))
    pointers[-1] += 2
    with open(f"{prefix}.idx", "r+b") as f:
        f.seek(integrity.HEADER.size + 4 * len(sizes))
        f.write(pointers.tobytes())
    with pytest.raises(integrity.DataIntegrityError, match="record 999999 starts at byte 13,999,986, but record "
                       "999998 ends at byte 13,999,984"):
        integrity.check_split_files(str(prefix))


# --- dict.txt: one loader, one line ------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["missing", pytest.param("not a dictionary", marks=pytest.mark.slow),
                                  "another dictionary"])  # the three fail alike; make test-all runs all
def test_missing_or_foreign_dictionary_is_one_line_naming_the_data_directory(case, data, official, tmp_path):
    """fairseq-validate and fairseq-train print the same single line (the plugin's excepthook)."""
    dict_txt = data / "dict.txt"
    if case == "missing":
        dict_txt.unlink()
        expected = (f"error: {data} has no dict.txt: not a data directory of fairseq-preprocess or "
                    f"fairseq-esm-binarize; check the path, or {integrity.REBINARIZE}")
    elif case == "not a dictionary":
        dict_txt.write_text("MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ\n")
        expected = (f"error: {dict_txt} is not a fairseq dictionary (line 1 is 'MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ'): "
                    f"{data} is not an ESM data directory; {integrity.REBINARIZE}")
    else:  # fairseq-preprocess without --srcdict: the residues by frequency
        dict_txt.write_text("A 100\nL 90\nG 80\n")
        expected = (f"error: {dict_txt} lists 3 symbols, the ESM data dictionary {integrity.DICT_DIR / 'esm1b.txt'} "
                    f"29; line 1 is 'A', expected 'L': {data} was binarized with another dictionary; "
                    f"{integrity.REBINARIZE}")
    tools = [validate(data, official)]
    if case != "another dictionary":  # the same check, reached the same way: one subprocess less
        tools.append(train(data, tmp_path / "ckpt"))
    for proc in tools:
        assert proc.returncode != 0
        assert error_lines(proc) == [expected]


def test_the_one_dictionary_loader_serves_binarize_and_the_tasks(data):
    """fairseq-esm-binarize's --srcdict, stored_sequences and the tasks all read dictionaries through it."""
    from fairseq_esm.data import binarize
    from fairseq_esm.tasks import protein_mlm, protein_ss8

    assert binarize.load_dictionary is integrity.load_dictionary
    assert protein_mlm.load_data_dictionary is protein_ss8.load_data_dictionary is integrity.load_data_dictionary
    assert len(binarize.stored_sequences(data, "valid")) == 40
    (data / "dict.txt").unlink()
    with pytest.raises(FileNotFoundError, match=f"{data} has no dict.txt"):  # still a FileNotFoundError
        binarize.stored_sequences(data, "valid")


# --- official checkpoints in fairseq's own tools ----------------------------------------------------------


@pytest.mark.parametrize("generation", ["esm1b", "esm1"])
def test_fairseq_reads_an_official_file_as_its_converted_fairseq_checkpoint(generation, official_checkpoint):
    """The state fairseq's loader returns: the config and weights fairseq-esm-convert --to fairseq would write."""
    official = official_checkpoint(generation, **T4_1M)
    state = checkpoint_utils.load_checkpoint_to_cpu(str(official))
    model, _ = load_model(official)
    arch = "esm1b_t4_1M" if generation == "esm1b" else "esm1"  # no named ESM-1 arch has these sizes
    assert state["cfg"].model._name == arch and state["cfg"].task._name == "protein_mlm"
    assert OmegaConf.to_container(state["cfg"], resolve=True, enum_to_str=True) == fairseq_config(model)
    assert state["model"].keys() == model.state_dict().keys()
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in state["model"].items())


def test_fairseq_validate_scores_an_official_file(clean_data, official, tmp_path):
    """The same loss as the fairseq checkpoint fairseq-esm-convert writes for it."""
    converted = save_fairseq_checkpoint(load_model(official)[0], tmp_path / "converted.pt")
    loss = validation_loss(validate(clean_data, official))
    assert loss == validation_loss(validate(clean_data, converted)) and 0 < loss < 10


def test_fairseq_train_restores_an_official_file(clean_data, official, tmp_path):
    restored = train(clean_data, tmp_path / "a", "--restore-file", str(official), "--reset-optimizer",
                     "--reset-dataloader", "--reset-meters")
    assert restored.returncode == 0, restored.stderr[-3000:]
    log = restored.stdout + restored.stderr
    assert f"Loaded checkpoint {official} (epoch 1 @ 0 updates)" in log
    fresh = train(clean_data, tmp_path / "b")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    restored_losses, fresh_losses = losses(log), losses(fresh.stdout + fresh.stderr)
    assert sorted(restored_losses) == [1, 2] and restored_losses != fresh_losses  # it trained from the file


# --- unsafe checkpoints: always our message, never torch's -----------------------------------------------


class CustomObject:
    """An object of a module of ours: a plain global that weights_only refuses."""


def payload(marker: Path):
    """Unpickling this runs a shell command that creates ``marker`` (``os.system``: a module torch blocks)."""

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return Payload()


def unsafe_files(tmp_path: Path) -> dict[str, Path]:
    marker = tmp_path / "code_ran"
    files = {
        "blocked module": ({"model": {}, "args": payload(marker)}, {}),
        "subprocess": ({"model": {}, "args": sp.Popen}, {}),
        "custom class": ({"model": {"w": torch.zeros(2)}, "args": CustomObject()}, {}),
        "plain global": ({"model": {}, "args": argparse.ArgumentParser}, {}),
        "legacy format": ({"model": {}, "args": payload(marker)}, {"_use_new_zipfile_serialization": False}),
    }
    paths = {}
    for name, (obj, options) in files.items():
        paths[name] = tmp_path / f"{name.replace(' ', '_')}.pt"
        torch.save(obj, paths[name], **options)
    paths["raw pickle"] = tmp_path / "raw_pickle.pt"
    with paths["raw pickle"].open("wb") as f:
        pickle.dump({"model": {}, "cfg": None, "payload": payload(marker)}, f)
    return paths


def test_unsafe_checkpoints_are_refused_naming_allow_unsafe(tmp_path):
    for name, path in unsafe_files(tmp_path).items():
        for read in (read_file, load_model, checkpoint_utils.load_checkpoint_to_cpu):
            with pytest.raises(CheckpointError) as err:
                read(str(path))
            message = str(err.value)
            assert message.startswith(f"{path} holds Python objects beyond tensors and argparse.Namespace"), name
            assert "--allow-unsafe" in message and "weights_only" not in message, name
            assert err.value.__cause__ is None and err.value.__suppress_context__, name  # torch's text hidden
    assert not (tmp_path / "code_ran").exists()
    assert "(posix.system)" in str(pytest.raises(CheckpointError, read_file, tmp_path / "blocked_module.pt").value)


def test_the_refusal_does_not_depend_on_torchs_wording(tmp_path, monkeypatch):
    """Whatever torch says in its UnpicklingError, the message is ours; junk stays 'not readable'."""
    paths = unsafe_files(tmp_path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))

    def refuse(*args, **kwargs):
        raise pickle.UnpicklingError("Some future wording. Re-run torch.load with weights_only=False to load it.")

    monkeypatch.setattr(torch, "load", refuse)
    for path in paths.values():
        with pytest.raises(CheckpointError, match="beyond tensors and argparse.Namespace.*--allow-unsafe"):
            read_file(path)
    with pytest.raises(CheckpointError, match=r"not a readable PyTorch checkpoint \(damaged, or another format\)$"):
        read_file(junk)


def test_unsafe_checkpoints_through_every_console_script(clean_data, tmp_path):
    """fairseq-validate --path, fairseq-train resuming checkpoint_last.pt and our fairseq-esm-score."""
    paths = unsafe_files(tmp_path)
    fasta = write_fasta(tmp_path / "p.fasta", ["MKTAYIAKQRQISFVKSHFSRQ"])
    save_dir = tmp_path / "save"
    save_dir.mkdir()
    shutil.copy(paths["blocked module"], save_dir / "checkpoint_last.pt")
    runs = {
        paths["raw pickle"]: validate(clean_data, paths["raw pickle"]),
        paths["legacy format"]: run_tool("fairseq-esm-score", str(paths["legacy format"]), str(fasta)),
        save_dir / "checkpoint_last.pt": run_tool(
            "fairseq-train", *train_args(clean_data, save_dir, "--cpu", "--max-update", "1")),
    }
    for path, proc in runs.items():
        assert proc.returncode != 0
        lines = error_lines(proc)
        assert len(lines) == 1 and lines[0].startswith(f"error: {path} holds Python objects"), proc.stderr[-2000:]
        assert "--allow-unsafe" in lines[0] and "weights_only" not in proc.stderr
    assert not (tmp_path / "code_ran").exists()


# --- write errors name the file ----------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_full_disk_names_the_output_file(official, tmp_path):
    fasta = write_fasta(tmp_path / "p.fasta", ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "MSEQNNTEMTFQIQRIYTKD"])
    proc = run_tool("fairseq-esm-score", str(official), str(fasta), "--out", "/dev/full")
    assert proc.returncode == 2
    assert error_lines(proc) == ["error: writing /dev/full: No space left on device — free space or write elsewhere"]
    with open("/dev/full", "w") as full:
        proc = run_tool("fairseq-esm-score", str(official), str(fasta), stdout=full)
    assert proc.returncode == 2
    assert error_lines(proc) == [
        "error: writing standard output: No space left on device — free space or write elsewhere"]
