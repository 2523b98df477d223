"""The paper's MSA "cov" pair features in the contact ResNet: stored by fairseq-esm-msa-split-features --cov-k,
recomputed per protein by the dataset (--pair-feature-k), concatenated before the ResNet's first 1×1 conv."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import test_structure_tasks as structure
import torch
from helpers.training import environment, run

from fairseq_esm.checkpoints import load_model
from fairseq_esm.data.integrity import DataIntegrityError
from fairseq_esm.data.structure_labels_dataset import SplitWriter, StructureLabelsDataset
from fairseq_esm.inference.msa_features import embed_rows, msa_covariance, pca_projection, sequence_weights
from fairseq_esm.io.a3m import read_a3m
from fairseq_esm.models.contact_resnet import ContactResNetConfig, ContactResNetModel
from fairseq_esm.modules.alphabet import esm1b_alphabet
from fairseq_esm.tasks.protein_contacts import ContactPredictionTask
from fairseq_esm.tasks.protein_ss8 import SecondaryStructureTask, StructureTaskConfig

ROOT, msa_split_features = structure.ROOT, structure.msa_split_features
labels, built, backbone = structure.labels, structure.built, structure.backbone  # the shared fixtures

A3M = ROOT / "examples" / "data" / "msa" / "UniRef50_E9K9Y4.a3m"
K = 4



def cov_task(cls, data: Path, k: int = K):
    return cls.setup_task(StructureTaskConfig(data=str(data), pair_feature_k=k, seed=1, train_subset="train"))


@pytest.fixture(scope="module")
def cov_data(built, backbone, tmp_path_factory) -> Path:
    """The built data dir with --cov-k 4 members for train and valid; the db holds an exact copy of each protein."""
    data = tmp_path_factory.mktemp("cov") / "data"
    shutil.copytree(built[0], data)
    records = [r for split in ("train", "valid") for r in msa_split_features.split_records(data, split)]
    db = data.parent / "db.fasta"
    db.write_text("".join(f">copy_{name}\n{seq}\n" for name, seq in records))
    assert msa_split_features.main([str(data), str(backbone), "--db", str(db), "--splits", "train", "valid",
                                    "--cov-k", str(K), "--no-progress"]) == 0
    return data


def test_stored_members_give_the_covariance_of_the_query(cov_data, backbone):
    """An MSA of the query and its copy aligned end to end (or the query alone): cov[k1*K+k2, i, j] = p_i,k1 *
    p_j,k2 for the query's own embedding projected on pca.npy. Checks the PCA, record order, offsets, float16."""
    pca = np.load(cov_data / "pca.npy")
    assert pca.shape == (K, 32)
    model, alphabet = load_model(backbone)
    task = cov_task(ContactPredictionTask, cov_data)
    task.load_dataset("train")
    dataset = task.dataset("train")
    checked = 0
    for index, (_, sequence) in enumerate(msa_split_features.split_records(cov_data, "train")):
        rows = slice(dataset.members.row_start[index], dataset.members.row_start[index + 1])
        if not dataset.members.present[rows].all():  # 1A8O: MMseqs2 leaves the copy's last residue unaligned
            continue
        with torch.no_grad():
            own = model(alphabet.tokenize(sequence)[None], repr_layers=[2])["representations"][2][0, 1:-1].numpy()
        p = own @ pca.T
        expected = np.einsum("ik,jl->klij", p, p).reshape(K * K, len(sequence), len(sequence))
        got = dataset[index]["pair_features"].numpy()
        assert np.allclose(got, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())
        checked += 1
    assert checked >= len(dataset) - 1
    task.load_dataset("valid")  # projected on the train PCA: consistent with the valid split
    assert task.dataset("valid")[0]["pair_features"].shape[0] == K * K


def one_protein_split(directory: Path, query: str, arrays: dict[str, np.ndarray]) -> str:
    """A one-protein split of ``query`` (labels all unscored) with the given ``msa_*`` arrays."""
    prefix, alphabet = str(directory / "train"), esm1b_alphabet()
    writer = SplitWriter(prefix, with_contacts=True)
    n = len(query)
    writer.add("query", alphabet.encode_residues(query), alphabet.eos(), np.full(n, -1), np.full((n, n), -1))
    writer.finalize()
    for key, values in arrays.items():
        np.save(f"{prefix}.msa_{key}.npy", values)
    return prefix


def test_on_the_fly_covariance_equals_msa_covariance(backbone, tmp_path):
    """A real HHblits MSA (gaps, unequal weights): stored as the tool stores it, the dataset's pair features
    are msa_covariance of the same MSA; files that disagree with the split or K are one clear error."""
    model, alphabet = load_model(backbone)
    rows = read_a3m(A3M, max_rows=12)
    embeddings = embed_rows(model, alphabet, rows)
    weights = sequence_weights([row.aligned() for row in rows if row.sequence])
    assert len(set(weights.tolist())) > 1 and not embeddings.present.all()
    pca = pca_projection(embeddings.values[embeddings.present], K)
    arrays = msa_split_features.member_arrays(embeddings, weights, pca)
    prefix = one_protein_split(tmp_path, rows[0].sequence, arrays)
    got = StructureLabelsDataset(prefix, alphabet, "contacts", pair_feature_k=K)[0]["pair_features"].numpy()
    expected = msa_covariance(embeddings, weights, pca)
    assert got.shape == expected.shape == (K * K, 98, 98)
    assert np.allclose(got, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())
    with pytest.raises(DataIntegrityError, match=r"projections of shape \(\d+, 4\), expected \(\d+, 3\)"):
        StructureLabelsDataset(prefix, alphabet, "contacts", pair_feature_k=3)
    np.save(prefix + ".msa_members.npy", arrays["members"] + 1)
    with pytest.raises(DataIntegrityError, match="rerun msa_split_features.py --cov-k 4"):
        StructureLabelsDataset(prefix, alphabet, "contacts", pair_feature_k=K)


def test_first_conv_reads_the_pair_features(cov_data, backbone):
    """d = 2·d2 outer-concatenation maps + K² cov maps enter the 1×1 conv, and the logits depend on the latter."""
    task = cov_task(ContactPredictionTask, cov_data)
    model = ContactResNetModel.build_model(ContactResNetConfig(pretrained_checkpoint=str(backbone)), task).eval()
    assert model.head.pair_in.in_channels == 2 * 32 + K * K
    task.load_dataset("train")
    dataset = task.dataset("train")
    sample = dataset.collater([dataset[i] for i in range(len(dataset))])
    pair = sample["net_input"]["pair_features"]
    assert pair.shape == (len(dataset), K * K, *sample["target"].shape[1:])
    with torch.no_grad():
        logits = model(**sample["net_input"])
        without = model(**{**sample["net_input"], "pair_features": torch.zeros_like(pair)})
    assert logits.shape == sample["target"].shape and torch.isfinite(logits).all()
    assert not torch.allclose(logits, without)


@pytest.mark.slow  # a fairseq-train + validate run; the pair features are checked above without one (make test-all)
def test_fairseq_train_with_pair_features(cov_data, backbone, tmp_path):
    """A few real updates with --pair-feature-k, then fairseq-validate scores valid with the saved model."""
    args = [str(cov_data), "--user-dir", "fairseq_esm", "--task", "protein_contacts", "--pair-feature-k", str(K)]
    train = ["fairseq-train", *args, "--arch", "contact_resnet", "--criterion", "protein_contacts",
             "--pretrained-checkpoint", str(backbone), "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "2048",
             "--max-update", "3", "--num-workers", "0", "--seed", "1", "--save-dir", str(tmp_path / "ck"),
             "--no-epoch-checkpoints", "--log-format", "json", "--log-interval", "1", "--disable-validation"]
    log = run(train)
    assert '"num_updates": "3"' in log
    out = run(["fairseq-validate", *args, "--path", str(tmp_path / "ck" / "checkpoint_last.pt"),
               "--valid-subset", "valid", "--max-tokens", "4096", "--num-workers", "0"])
    assert re.search(r"valid on 'valid' subset \| loss [\d.]+ .*p_at_l_long [\d.]+", out)
    wrong = [*train[:6], "--pair-feature-k", "3", *train[8:], "--save-dir", str(tmp_path / "k3")]  # stored: K = 4
    proc = subprocess.run(wrong, cwd=ROOT, env=environment(), capture_output=True, text=True)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and len(errors) == 1 and "Traceback" not in proc.stderr
    assert "expected" in errors[0] and "--pair-feature-k" in errors[0]


def test_pair_features_are_for_contacts_only(cov_data):
    with pytest.raises(ValueError, match="--pair-feature-k is for pair targets"):
        cov_task(SecondaryStructureTask, cov_data)


def test_splits_without_train_reuse_its_pca(built, cov_data, backbone, tmp_path, capsys):
    """--cov-k without the train split reads DIR/pca.npy: missing or fitted for another K is one error line."""
    db = tmp_path / "db.fasta"
    db.write_text(">x\nMKV\n")
    for data, k, message in ((built[0], K, "pca.npy not found"), (cov_data, 3, "shape (4, 32), need (3, 32)")):
        argv = [str(data), str(backbone), "--db", str(db), "--splits", "valid", "--cov-k", str(k), "--no-progress"]
        assert structure.run_main(msa_split_features.main, argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
