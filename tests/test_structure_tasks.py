"""Supervised structure heads: the dataset builder, the protein_ss8 / protein_contacts tasks, their models and
criterions, and the fairseq-train -> fairseq-validate round trip, on the shipped structures and CB513 slice."""

from __future__ import annotations

import contextlib
import csv
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from fairseq import metrics

from fairseq_esm.checkpoints import load_model
from fairseq_esm.checkpoints.pt_files import CheckpointError
from fairseq_esm.cli.common import run_main
from fairseq_esm.criterions.protein_contacts import ContactCriterion
from fairseq_esm.criterions.protein_ss8 import SecondaryStructureCriterion
from fairseq_esm.data.structure_labels_dataset import IGNORE, SS8_STATES
from fairseq_esm.models.contact_resnet import ContactResNetConfig, ContactResNetModel
from fairseq_esm.models.netsurf_ss8 import NetsurfConfig, NetsurfSS8Model
from fairseq_esm.modules.contact_metrics import contact_precisions
from fairseq_esm.tasks.protein_contacts import ContactPredictionTask
from fairseq_esm.tasks.protein_ss8 import SecondaryStructureTask, StructureTaskConfig

ROOT = Path(__file__).resolve().parents[1]
from helpers.training import environment, losses, run  # noqa: E402

from fairseq_esm.cli import msa_split_features, structure_dataset, structure_labels

STRUCTURES = ROOT / "examples" / "data" / "structures"
CB513 = ROOT / "examples" / "data" / "cb513" / "CB513_HHblits_first20.csv"
SIZES = dict(layers=2, dim=32, ffn=64, heads=4)  # max_positions 128: 6WQA (391 residues) is windowed



@pytest.fixture(scope="module")
def labels(tmp_path_factory) -> Path:
    """structure_labels.py on every shipped structure (7 chains)."""
    for tool in ("mkdssp", "mmseqs"):  # fail, not skip: make env installs both (preprocess/install_tools.sh)
        assert shutil.which(tool), f"{tool} missing: run make env"
    out = tmp_path_factory.mktemp("labels")
    assert structure_labels.main([str(p) for p in sorted(STRUCTURES.glob("*.gz"))] + ["--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def built(labels, tmp_path_factory) -> tuple[Path, str]:
    """(data dir, builder report) from the labels and the CB513 slice."""
    out, report = tmp_path_factory.mktemp("data"), io.StringIO()
    with contextlib.redirect_stdout(report):
        assert structure_dataset.main([str(labels), "--cb513", str(CB513), "--out", str(out)]) == 0
    return out, report.getvalue()


@pytest.fixture(scope="module")
def backbone(official_checkpoint) -> Path:
    return official_checkpoint("esm1b", **SIZES)


def make_task(cls, data: Path):
    return cls.setup_task(StructureTaskConfig(data=str(data), seed=1, train_subset="train"))


def one_batch(task, split: str) -> dict:
    task.load_dataset(split)
    dataset = task.dataset(split)
    return dataset.collater([dataset[i] for i in range(len(dataset))])


def cb513_scored() -> list[str]:
    """Hand count: per protein, the dssp8 states of residues with disorder 1 and cb513_mask 1."""
    with CB513.open() as handle:
        rows = list(csv.reader(handle))[1:]
    return ["".join(s for s, d, m in zip(r[2].split(), r[3].split(), r[4].split()) if d == m == "1.0") for r in rows]


def test_builder_counts_and_masking(built, labels):
    data, report = built
    scored = sum(len(s) for s in cb513_scored())
    assert "dropped 0 chains with >= 25% identity" in report
    assert re.search(rf"test: 20 chains, 6236 residues, {scored} scored, {6236 - scored} masked \(SS8 only\)", report)
    # --cb513 FILE is --test-set cb513=FILE: split test_cb513, records cb513_N (the file has no id column)
    assert (data / "test_cb513.names.txt").read_text().split() == [f"cb513_{n}" for n in range(1, 21)]
    assert "test = test_cb513 (" in report and "cb513: " in report and "named cb513_N (no id column)" in report
    train = re.search(r"train: (\d+) chains, (\d+) residues, (\d+) scored, (\d+) masked", report).groups()
    valid = re.search(r"valid: (\d+) chains, (\d+) residues, (\d+) scored, (\d+) masked", report).groups()
    assert int(train[0]) + int(valid[0]) == 7 and int(train[3]) + int(valid[3]) == 23  # as structure_labels wrote
    task = make_task(ContactPredictionTask, data)
    task.load_dataset("train")
    names = (data / "train.names.txt").read_text().split()
    ss8 = dict(zip(structure_dataset.read_labels_fasta(labels / "labels.fasta"),
                   (labels / "ss8.txt").read_text().split()))
    states = {name: s for (name, _), s in ss8.items()}
    for index, name in enumerate(names):
        item = task.dataset("train")[index]
        want = [SS8_STATES.index(c) if c != "." else IGNORE for c in states[name]]
        assert item["ss8"].tolist() == want
        assert np.array_equal(item["contacts"].numpy(), np.load(labels / "contacts" / f"{name}.npy"))
    test = make_task(SecondaryStructureTask, data)
    sample = one_batch(test, "test")
    assert int(sample["target"].ne(IGNORE).sum()) == scored


def test_identity_filter_finds_cb513_homologs():
    """A CB513 protein searched against CB513 is a hit; the builder drops such training chains."""
    cb513 = structure_dataset.read_cb513(CB513)
    assert structure_dataset.search_hits(cb513[:3], cb513[3:] + cb513[:1], 0.25, 0.1) >= {0}


def test_q8_equals_hand_count(built, backbone):
    data, _ = built
    task = make_task(SecondaryStructureTask, data)
    model = NetsurfSS8Model.build_model(NetsurfConfig(pretrained_checkpoint=str(backbone)), task).eval()
    sample = one_batch(task, "test")
    with torch.no_grad():
        _, size, log = SecondaryStructureCriterion(task)(model, sample)
        predicted = model(**sample["net_input"]).argmax(-1)
    correct = correct3 = total = 0
    three = dict(zip("HGIEBTSC", "HHHEECCC"))  # DSSP's 8 -> 3 reduction
    for row, states in enumerate(cb513_scored()):
        target = sample["target"][row]
        for position in range(len(target)):
            if target[position] != IGNORE:
                total += 1
                correct += int(predicted[row, position] == target[position])
                true, guess = SS8_STATES[int(target[position])], SS8_STATES[int(predicted[row, position])]
                correct3 += int(three[true] == three[guess])
    assert size == total == sum(len(s) for s in cb513_scored())
    assert log["n_correct"] == correct and log["n_correct3"] == correct3
    with metrics.aggregate() as agg:
        SecondaryStructureCriterion.reduce_metrics([log])
    values = agg.get_smoothed_values()
    assert values["q8"] == pytest.approx(100 * correct / total, abs=0.01)
    assert values["q3"] == pytest.approx(100 * correct3 / total, abs=0.01) and values["residues"] == total


def test_contact_precision_matches_contact_metrics(built, backbone):
    data, _ = built
    task = make_task(ContactPredictionTask, data)
    model = ContactResNetModel.build_model(ContactResNetConfig(pretrained_checkpoint=str(backbone)), task).eval()
    sample = one_batch(task, "train")
    with torch.no_grad():
        _, _, log = ContactCriterion(task)(model, sample)
        probs = torch.sigmoid(model(**sample["net_input"]))
    values = []
    for row, n in enumerate(sample["net_input"]["src_lengths"].tolist()):
        contacts = sample["target"][row, :n, :n].numpy()
        resolved = np.array([(contacts[i] != IGNORE).any() for i in range(n)])
        values.append(contact_precisions(probs[row, :n, :n].numpy(), contacts, resolved)["long_P@L"])
    finite = [v for v in values if np.isfinite(v)]
    assert log["p_at_l_long_n"] == len(finite) > 0
    assert log["p_at_l_long_sum"] == pytest.approx(sum(finite))


def train_args(data: Path, backbone: Path, save: Path, *extra: str) -> list[str]:
    return [
        str(data), "--user-dir", "fairseq_esm", "--task", "protein_ss8", "--arch", "netsurf_ss8", "--criterion",
        "protein_ss8", "--pretrained-checkpoint", str(backbone), "--optimizer", "adam", "--lr", "3e-3",
        "--max-tokens", "4096", "--num-workers", "0", "--seed", "1", "--save-dir", str(save), "--no-epoch-checkpoints",
        "--log-format", "json", "--log-interval", "1", "--disable-validation", *extra,
    ]


@pytest.fixture(scope="module")
def trained(built, backbone, tmp_path_factory) -> tuple[Path, Path, str]:
    """(checkpoint, the --pretrained-checkpoint copy it was built from, training log): 40 fine-tuning updates."""
    data, _ = built
    work = tmp_path_factory.mktemp("trained")
    pretrained = work / "backbone.pt"
    shutil.copy(backbone, pretrained)
    log = run(["fairseq-train", *train_args(data, pretrained, work / "ck", "--max-update", "40",
                                            "--finetune-backbone", "--dropout", "0.0")])
    return work / "ck" / "checkpoint_last.pt", pretrained, log


def test_the_net_learns(trained, built):
    """The training loss falls well below the entropy of the train split's SS8 class frequencies (what a head
    that ignores the sequence reaches)."""
    task = make_task(SecondaryStructureTask, built[0])
    targets = one_batch(task, "train")["target"]
    frequencies = np.bincount(targets[targets.ne(IGNORE)].numpy()) / int(targets.ne(IGNORE).sum())
    prior_bits = -sum(p * np.log2(p) for p in frequencies if p > 0)
    curve = [float(loss) for _, loss in sorted(losses(trained[2]).items())]
    assert len(curve) == 40 and curve[0] > prior_bits
    assert np.mean(curve[-3:]) < prior_bits - 0.3


def test_validate_evaluates_the_saved_backbone(trained, built, official_checkpoint):
    """fairseq-validate rebuilds the model from the saved cfg: the --pretrained-checkpoint file only gives the
    shape. Replace it by other weights of the same shape: the result must be the trained model's."""
    checkpoint, pretrained, _ = trained
    data, _ = built
    task = make_task(SecondaryStructureTask, data)
    model = NetsurfSS8Model.build_model(NetsurfConfig(pretrained_checkpoint=str(pretrained), dropout=0.0), task)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
    assert not torch.equal(saved["backbone.model.embed_tokens.weight"], model.state_dict()[
        "backbone.model.embed_tokens.weight"]), "fine-tuning changed the backbone"
    model.load_state_dict(saved)
    sample = one_batch(task, "test")
    with torch.no_grad():
        loss, size, _ = SecondaryStructureCriterion(task)(model.eval(), sample)
    shutil.copy(official_checkpoint("esm1b", seed=5, **SIZES), pretrained)
    out = run(["fairseq-validate", str(data), "--user-dir", "fairseq_esm", "--task", "protein_ss8", "--path",
               str(checkpoint), "--valid-subset", "test_cb513", "--max-tokens", "4096", "--num-workers", "0"])
    printed = float(re.search(r"valid on 'test_cb513' subset \| loss ([\d.]+)", out).group(1))
    assert printed == pytest.approx(float(loss) / size / np.log(2), abs=2e-4)


def test_missing_or_mismatched_backbone_is_one_error(built, official_checkpoint, tmp_path):
    data, _ = built
    for backbone, message in ((tmp_path / "nope.pt", f"{tmp_path / 'nope.pt'}: no such file"),
                              (official_checkpoint("esm1", **SIZES), "is an esm1 model")):
        proc = subprocess.run(["fairseq-train", *train_args(data, backbone, tmp_path / "ck", "--max-update", "1")],
                              cwd=ROOT, env=environment(), capture_output=True, text=True)
        assert proc.returncode != 0
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in proc.stderr


def test_backbone_layer_out_of_range(built, backbone):
    task = make_task(SecondaryStructureTask, built[0])
    with pytest.raises(CheckpointError, match="layers 0..2"):
        NetsurfSS8Model.build_model(NetsurfConfig(pretrained_checkpoint=str(backbone), representation_layer=3), task)


def test_labels_dir_that_disagrees_is_refused(labels, tmp_path, capsys):
    broken = tmp_path / "labels"
    shutil.copytree(labels, broken)
    lines = (broken / "ss8.txt").read_text().splitlines()
    (broken / "ss8.txt").write_text("\n".join(lines[:-1]) + "\n")
    assert run_main(structure_dataset.main, [str(broken), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has 6 lines but" in err[0] and "7 records" in err[0]
    (broken / "ss8.txt").write_text("\n".join([lines[0][:-1]] + lines[1:]) + "\n")
    assert run_main(structure_dataset.main, [str(broken), "--out", str(tmp_path / "out")]) == 2
    assert "line 1" in capsys.readouterr().err


def test_labels_fasta_goes_through_the_shared_reader(labels, tmp_path, capsys):
    """labels.fasta is read by io/fasta (one residue policy); a record it would skip is refused, not shifted."""
    records = structure_dataset.read_labels_fasta(labels / "labels.fasta")
    assert len(records) == 7 and all(seq.isupper() and seq.isalpha() for _, seq in records)
    broken = tmp_path / "labels"
    shutil.copytree(labels, broken)
    text = (broken / "labels.fasta").read_text()
    first_sequence = text.split("\n")[1]
    (broken / "labels.fasta").write_text(text.replace(first_sequence, first_sequence[:5] + "%" + first_sequence[6:], 1))
    assert run_main(structure_dataset.main, [str(broken), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "labels.fasta: 1 of its records cannot be read (invalid_character" in err[0], err


def test_features_are_concatenated(built, backbone, tmp_path):
    """--feature-dim D: {split}.features.npy rows reach the head beside the backbone representation."""
    data = tmp_path / "data"
    shutil.copytree(built[0], data)
    task = make_task(SecondaryStructureTask, data)
    task.load_dataset("valid")
    residues = int(task.dataset("valid").residues.sum())
    np.save(data / "valid.features.npy", np.arange(residues * 3, dtype=np.float32).reshape(residues, 3))
    task = SecondaryStructureTask.setup_task(StructureTaskConfig(data=str(data), feature_dim=3, seed=1,
                                                                 train_subset="train"))
    sample = one_batch(task, "valid")
    assert sample["net_input"]["features"][0, 1].tolist() == [3.0, 4.0, 5.0]
    model = NetsurfSS8Model.build_model(NetsurfConfig(pretrained_checkpoint=str(backbone)), task)
    assert model.head.norm.normalized_shape == (32 + 3,)
    assert model(**sample["net_input"]).shape == (*sample["target"].shape, 8)
    np.save(data / "valid.features.npy", np.zeros((residues, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="expected"):
        task.load_dataset("valid")


def test_contacts_need_a_split_from_structures(built):
    task = make_task(ContactPredictionTask, built[0])
    with pytest.raises(FileNotFoundError, match="only splits built from structures"):
        task.load_dataset("test")


@pytest.mark.parametrize("arch, field, paper, flag", [
    ("netsurf_ss8_paper", "lstm_hidden", 1024, "--lstm-hidden"),
    ("contact_resnet_paper", "blocks", 32, "--blocks"),
])
def test_paper_archs_set_sizes_flags_win(built, arch, field, paper, flag):
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    task = "protein_ss8" if arch.startswith("netsurf") else "protein_contacts"
    base = [str(built[0]), "--user-dir", str(ROOT / "fairseq_esm"), "--task", task, "--arch", arch,
            "--pretrained-checkpoint", "x.pt"]
    for extra, want in (([], paper), ([flag, "7"], 7)):
        args = options.parse_args_and_arch(options.get_training_parser(), base + extra)
        assert getattr(convert_namespace_to_omegaconf(args).model, field) == want


@pytest.mark.parametrize("task_cls, model_cls, cfg_cls", [
    (SecondaryStructureTask, NetsurfSS8Model, NetsurfConfig),
    (ContactPredictionTask, ContactResNetModel, ContactResNetConfig),
])
def test_predictions_do_not_depend_on_the_batch(built, backbone, task_cls, model_cls, cfg_cls):
    """Padding to a longer protein (and windowing it, 6WQA) leaves a short protein's outputs unchanged."""
    task = make_task(task_cls, built[0])
    model = model_cls.build_model(cfg_cls(pretrained_checkpoint=str(backbone)), task).eval()
    task.load_dataset("train")
    task.load_dataset("valid")
    short, long = task.dataset("train")[0], task.dataset("valid")[0]
    alone = task.dataset("train").collater([short])
    together = task.dataset("train").collater([short, {**long, "id": 1}])
    n = len(short["residues"])
    with torch.no_grad():
        first, second = model(**alone["net_input"])[0], model(**together["net_input"])[0]
    index = (slice(0, n),) if task_cls is SecondaryStructureTask else (slice(0, n), slice(0, n))
    assert torch.allclose(first[index], second[index], atol=1e-5)


def test_msa_average_features_fill_a_split(built, backbone, tmp_path):
    """fairseq-esm-msa-split-features: one MSA per protein, its weighted average in record order."""
    data = tmp_path / "data"
    shutil.copytree(built[0], data)
    records = msa_split_features.split_records(data, "train")
    db = tmp_path / "db.fasta"  # every protein finds at least an exact copy of itself
    db.write_text("".join(f">copy_{name}\n{seq}\n" for name, seq in records))
    assert msa_split_features.main([str(data), str(backbone), "--db", str(db), "--splits", "train",
                                    "--no-progress"]) == 0
    features = np.load(data / "train.features.npy")
    assert features.shape == (sum(len(seq) for _, seq in records), 32)
    depths = [int(line.split("\t")[1]) for line in (data / "train.msa_depth.txt").read_text().splitlines()]
    # every protein finds its copy, except the 10-residue peptide 2n0n_M1 (below MMseqs2's k-mer prefilter)
    assert len(depths) == len(records) and [n for (n, _), d in zip(records, depths) if d < 2] == ["2n0n_M1_A"]
    # an MSA of the query alone averages to the query's own embedding: checks placement and record order
    model, alphabet = load_model(backbone)
    offsets = np.cumsum([0] + [len(seq) for _, seq in records])
    alone = depths.index(1)
    with torch.no_grad():
        tokens = alphabet.tokenize(records[alone][1])[None]
        own = model(tokens, repr_layers=[2])["representations"][2][0, 1:-1].numpy()
    assert np.allclose(features[offsets[alone]: offsets[alone + 1]], own, atol=1e-5)
    others = np.delete(features, np.arange(offsets[alone], offsets[alone + 1]), axis=0)
    assert np.isfinite(others).all() and np.abs(others).sum(axis=1).min() > 0  # every residue has a feature
    task = SecondaryStructureTask.setup_task(StructureTaskConfig(data=str(data), feature_dim=32, seed=1,
                                                                 train_subset="train"))
    task.load_dataset("train")  # the shape check of the dataset accepts what the tool wrote


def test_msa_features_of_a_missing_data_dir_is_one_error(backbone, tmp_path, capsys):
    db = tmp_path / "db.fasta"
    db.write_text(">a\nACDEFGHIK\n")
    argv = [str(tmp_path / "nowhere"), str(backbone), "--db", str(db)]
    assert run_main(msa_split_features.main, argv) == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'nowhere'}: none of the splits train, valid, test "
                                                "found; build the data dir with fairseq-esm-structure-dataset")
