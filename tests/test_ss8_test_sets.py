"""SS8 on several NetSurfP-format test sets: one split per set with its records' names, the identity hold-out
against all of them, fairseq-validate's q8 / q3 per split on proteins longer than the model's context, and the
confusion-matrix tool. Test sets are the shipped first 20 CB513 proteins split in two; training chains are short
proteins of the full CB513 file (no structures, so no mkdssp)."""

from __future__ import annotations

import contextlib
import csv
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fairseq_esm.cli import ss8_confusion, structure_dataset
from fairseq_esm.cli.common import run_main
from fairseq_esm.data.structure_labels_dataset import IGNORE, SS8_STATES, SS8_TO_SS3
from fairseq_esm.errors import InputError
from fairseq_esm.evaluation.ss8_confusion import confusion_counts, q3, q8, read_tsv
from fairseq_esm.tasks.fairseq_training import run_fairseq_train
from fairseq_esm.tasks.ss8_predictions import load_ss8_checkpoint, split_predictions

ROOT = Path(__file__).resolve().parents[1]
from helpers.training import run  # noqa: E402

FIRST20 = ROOT / "examples" / "data" / "cb513" / "CB513_HHblits_first20.csv"
FULL = Path("/work/shared/data/ss_cb513/CB513_HHblits.csv")
SIZES = dict(layers=2, dim=32, ffn=64, heads=4)  # max_positions 128: a context of 126 residues
CONTEXT = 126
PLANTED = "planted_copy_of_B19"  # a training chain identical to the 9th protein of the SECOND test set


def csv_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def labelled(row: list[str]) -> str:
    """dssp8 where disorder = cb513_mask = 1 (columns input, dssp3, dssp8, disorder, cb513_mask)."""
    return "".join(s if d == m == "1.0" else "." for s, d, m in zip(*(row[i].split() for i in (2, 3, 4))))


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    """Set ``a``: CB513 proteins 1-10 as shipped (no id column); set ``b``: proteins 11-20 with an ``id`` column."""
    work = tmp_path_factory.mktemp("sets")
    header, *rows = csv_rows(FIRST20)
    with (work / "a.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows[:10]])
    with (work / "b.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["id", *header], *([f"B{n}", *row] for n, row in enumerate(rows[10:], 11))])
    return {"a": work / "a.csv", "b": work / "b.csv"}


@pytest.fixture(scope="module")
def labels(tmp_path_factory) -> Path:
    """A structure-labels dir of 12 short CB513 proteins (not among the first 20; cb513_47 is a homolog of set a's
    7th protein) plus a copy of set b's B19."""
    out = tmp_path_factory.mktemp("labels")
    rows = [(n, row) for n, row in enumerate(csv_rows(FULL)) if n > 40 and 40 <= len(row[0].split()) <= 110][:12]
    records = [(f"cb513_{n}", row) for n, row in rows] + [(PLANTED, csv_rows(FIRST20)[19])]
    (out / "contacts").mkdir()
    fasta, ss8 = [], []
    for name, row in records:
        sequence = "".join(row[0].split())
        fasta.append(f">{name}\n{sequence}\n")
        ss8.append(labelled(row))
        np.save(out / "contacts" / f"{name}.npy", np.zeros((len(sequence),) * 2, dtype=np.int8))
    (out / "labels.fasta").write_text("".join(fasta))
    (out / "ss8.txt").write_text("\n".join(ss8) + "\n")
    return out


@pytest.fixture(scope="module")
def built(labels, sets, tmp_path_factory) -> tuple[Path, str]:
    out, report = tmp_path_factory.mktemp("data"), io.StringIO()
    with contextlib.redirect_stdout(report):
        assert structure_dataset.main([str(labels), "--test-set", f"a={sets['a']}", "--test-set", f"B={sets['b']}",
                                       "--out", str(out)]) == 0
    return out, report.getvalue()


def names(data: Path, split: str) -> list[str]:
    return (data / f"{split}.names.txt").read_text().splitlines()


def test_each_test_set_is_a_split_with_its_records_names(built):
    data, report = built
    assert names(data, "test_a") == [f"a_{n}" for n in range(1, 11)]  # no id column: NAME_N
    assert names(data, "test_b") == [f"B{n}" for n in range(11, 21)]  # the file's own ids
    assert names(data, "test") == names(data, "test_a") + names(data, "test_b")
    assert "named a_N (no id column)" in report and "names from its id column" in report
    assert "dssp3 = the 8->3 reduction of dssp8 on every scored residue" in report
    rows = csv_rows(FIRST20)[1:]
    for split, part in (("test_a", rows[:10]), ("test_b", rows[10:])):
        scored = sum(len(labelled(r).replace(".", "")) for r in part)
        residues = sum(len(r[0].split()) for r in part)
        assert f"{split}: 10 chains, {residues} residues, {scored} scored, {residues - scored} masked" in report


def test_training_chains_are_held_out_against_every_test_set(built):
    data, report = built
    kept = names(data, "train") + names(data, "valid")
    assert len(kept) == 11 and PLANTED not in kept and "cb513_47" not in kept  # B19's copy, a_7's homolog
    assert re.search(r"dropped 2 chains with >= 25% identity .* chains hitting each set: a 1, b 1\)", report), report


def test_a_file_in_another_layout_is_one_error_line(labels, sets, tmp_path, capsys):
    wrong = tmp_path / "ss.csv"
    wrong.write_text("input,q8\nA C D,C C C\n")
    argv = [str(labels), "--test-set", f"a={sets['a']}", "--test-set", f"x={wrong}", "--out", str(tmp_path / "o")]
    assert run_main(structure_dataset.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {wrong}: not a NetSurfP-format CSV: no column dssp3, dssp8, "
                                               "disorder"), err
    twice = ["--test-set", f"cb513={sets['a']}", "--cb513", str(sets["b"])]
    for argv, message in (([f"--test-set={sets['a']}"], "give NAME=FILE"), (twice, "two test sets named cb513")):
        assert run_main(structure_dataset.main, [str(labels), *argv, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


@pytest.fixture(scope="module")
def checkpoint(built, official_checkpoint, tmp_path_factory) -> Path:
    """A netsurf_ss8 head trained 3 updates with --max-positions 128: the test proteins are longer than both the
    task's max positions and the backbone's context."""
    save = tmp_path_factory.mktemp("ck")
    shutil.copy(official_checkpoint("esm1b", **SIZES), save / "backbone.pt")
    argv = [str(built[0]), "--user-dir", str(ROOT / "fairseq_esm"), "--task", "protein_ss8", "--arch", "netsurf_ss8",
            "--criterion", "protein_ss8", "--pretrained-checkpoint", str(save / "backbone.pt"), "--optimizer", "adam",
            "--lr", "3e-3", "--max-tokens", "1024", "--max-positions", "128", "--num-workers", "0", "--seed", "1",
            "--save-dir", str(save), "--no-epoch-checkpoints", "--disable-validation", "--max-update", "3",
            "--dropout", "0.0", "--cpu", "--log-format", "json", "--log-interval", "1"]
    run_fairseq_train(argv, save, torch.device("cpu"), progress=False)  # in this process: no second fairseq import
    return save / "checkpoint_last.pt"


@pytest.fixture(scope="module")
def direct(built, checkpoint) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per test split: (predicted, true) SS8 of every labelled residue, one protein per forward pass."""
    data = built[0]
    model, task = load_ss8_checkpoint(str(checkpoint), str(data))
    model.eval()
    found = {}
    for split in ("test_a", "test_b"):
        task.load_dataset(split)
        dataset = task.dataset(split)
        predicted, true = [], []
        for index in range(len(dataset)):
            sample = dataset.collater([dataset[index]])
            with torch.no_grad():
                logits = model(**sample["net_input"])[0]
            target = sample["target"][0]
            predicted.append(logits[target.ne(IGNORE)].argmax(-1).numpy())
            true.append(target[target.ne(IGNORE)].numpy())
        found[split] = (np.concatenate(predicted), np.concatenate(true))
    return found


def test_validate_reports_q8_and_q3_per_split_on_long_proteins(built, checkpoint, direct):
    data = built[0]
    rows = csv_rows(FIRST20)[1:]
    assert max(len(r[0].split()) for r in rows) > 512 > CONTEXT  # windowed, and alone in a --max-tokens 512 batch
    out = run(["fairseq-validate", str(data), "--user-dir", "fairseq_esm", "--task", "protein_ss8", "--path",
               str(checkpoint), "--valid-subset", "test_a,test_b", "--max-tokens", "512", "--num-workers", "0"])
    assert "invalid sizes" not in out and "skipped" not in out
    for split, part in (("test_a", rows[:10]), ("test_b", rows[10:])):
        line = re.search(rf"valid on '{split}' subset \|.*", out).group(0)
        printed = {key: float(value) for key, value in re.findall(r"\| (q8|q3|residues) ([\d.]+)", line)}
        predicted, true = direct[split]
        assert printed["residues"] == len(true) == sum(len(labelled(r).replace(".", "")) for r in part)
        assert printed["q8"] == pytest.approx(100 * np.mean(predicted == true), abs=0.006)
        want_q3 = 100 * np.mean(SS8_TO_SS3[predicted] == SS8_TO_SS3[true])
        assert printed["q3"] == pytest.approx(want_q3, abs=0.006)
        hand = {s: "HHHEECCC"[i] for i, s in enumerate("HGIEBTSC")}  # the standard DSSP 8 -> 3 mapping
        assert want_q3 == pytest.approx(100 * np.mean([hand[SS8_STATES[p]] == hand[SS8_STATES[t]]
                                                       for p, t in zip(predicted, true)]))


def test_held_out_proteins_are_refused_only_by_a_model_that_cannot_window(built, checkpoint):
    model, task = load_ss8_checkpoint(str(checkpoint), str(built[0]))
    task.load_dataset("test_a")
    dataset = task.dataset("test_a")
    every = np.arange(len(dataset))
    assert len(task.filter_indices_by_size(every, dataset, 128)) == len(dataset)  # netsurf_ss8 windows
    task.model_positions = 200  # a model that does not window
    with pytest.raises(InputError, match=r"test_a: 6 proteins longer than the model's 200 positions"):
        task.filter_indices_by_size(every, dataset, 128)
    assert len(task.filter_indices_by_size(every, dataset, 128, ignore_invalid_inputs=True)) == 4


def test_confusion_matrix_tool(built, checkpoint, direct, tmp_path, capsys):
    data = built[0]
    assert ss8_confusion.main([str(checkpoint), str(data), "--out", str(tmp_path), "--max-tokens", "512",
                               "--no-progress", "--threads", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed] == ["test_a", "test_b"]  # every test_NAME split by default
    for split, line in zip(("test_a", "test_b"), printed):
        predicted, true = direct[split]
        counts = read_tsv(tmp_path / f"{split}.confusion.tsv")
        assert counts.sum() == len(true)
        assert np.array_equal(counts, confusion_counts(predicted, true))
        assert np.array_equal(counts.sum(axis=1), np.bincount(true, minlength=8))
        assert f"q8 {q8(counts):.2f}, q3 {q3(counts):.2f}" in line
        assert q3(counts) == pytest.approx(100 * np.mean(SS8_TO_SS3[predicted] == SS8_TO_SS3[true]))
        assert (tmp_path / f"{split}.confusion.png").read_bytes()[:4] == b"\x89PNG"
    # the batched predictions of the tool are the ones of one protein at a time
    predicted, true = split_predictions(*load_ss8_checkpoint(str(checkpoint), str(data)), "test_b", 512,
                                        progress=False)
    assert np.array_equal(confusion_counts(predicted, true), confusion_counts(*direct["test_b"]))
    assert run_main(ss8_confusion.main, [str(checkpoint), str(data), "--split", "test_zz", "--out",
                                         str(tmp_path)]) == 2
    assert "no split test_zz" in capsys.readouterr().err
