"""Unigram baseline: exact on a hand-counted example, below the uniform-20 ECE on real data."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from fairseq_esm.cli.unigram_ece import main
from fairseq_esm.evaluation.unigram import ece, heldout_targets, residue_counts, unigram_log_probs
from fairseq_esm.io.residues import RESIDUE_LETTERS
from fairseq_esm.modules.alphabet import esm1b_alphabet
from fairseq_esm.tasks.protein_mlm import ProteinMLMConfig, ProteinMLMTask


@pytest.fixture(scope="module")
def proteins(sample_proteins) -> list[str]:
    return sample_proteins[:300]


@pytest.fixture(scope="module")
def data_bin(fairseq_preprocess, proteins) -> Path:
    """fairseq-preprocess --only-source --srcdict esm1b.txt on 250 train / 50 valid proteins."""
    return fairseq_preprocess(proteins[:250], proteins[250:])


def test_hand_counted_example():
    alphabet = esm1b_alphabet()
    records = [torch.tensor(alphabet.encode_residues("AAL") + [2]), torch.tensor(alphabet.encode_residues("A") + [2])]
    log_probs = unigram_log_probs(residue_counts(records, alphabet), alphabet)
    total = 3 + 1 + len(RESIDUE_LETTERS)  # counts A=3, L=1, plus one for each of the 25 letters
    assert math.exp(log_probs[alphabet.index("A")]) == pytest.approx(4 / total)
    assert math.exp(log_probs[alphabet.index("W")]) == pytest.approx(1 / total)
    assert np.isneginf(log_probs[alphabet.eos()]) and np.isneginf(log_probs[alphabet.mask_idx])
    targets = np.array([alphabet.index("A"), alphabet.index("L"), alphabet.index("W")])
    expected = math.exp(-(math.log(4 / total) + math.log(2 / total) + math.log(1 / total)) / 3)
    assert ece(log_probs, targets) == pytest.approx(expected)


def test_cli_on_real_data_matches_direct_count(data_bin, proteins, tmp_path, capsys):
    out = tmp_path / "unigram.json"
    assert main([str(data_bin), "--train-split", "train", "--valid-split", "valid", "--seed", "3",
                 "--max-positions", "200", "--json", str(out)]) == 0
    assert "unigram ECE" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert 1.0 < report["unigram_ece"] < 20.0 and report["uniform_ece"] == 20.0

    alphabet = esm1b_alphabet()
    counts = Counter("".join(proteins[:250]))
    total = sum(counts.values()) + len(RESIDUE_LETTERS)
    task = ProteinMLMTask.setup_task(
        ProteinMLMConfig(data=str(data_bin), max_positions=200, seed=3, train_subset="train")
    )
    heldout = task.build_dataset("valid")
    targets = heldout_targets((heldout[i] for i in range(len(heldout))), alphabet.padding_idx)
    assert report["n_targets"] == len(targets) > 500
    nats = -np.mean([math.log((counts[alphabet[t]] + 1) / total) for t in targets])
    assert report["unigram_ece"] == pytest.approx(math.exp(nats), rel=1e-9)


def test_same_targets_as_the_task_validation_batches(data_bin):
    task = ProteinMLMTask.setup_task(
        ProteinMLMConfig(data=str(data_bin), max_positions=200, seed=3, train_subset="train")
    )
    task.load_dataset("valid")
    itr = task.get_batch_iterator(  # fairseq-validate's defaults include --required-batch-size-multiple 8
        task.dataset("valid"), max_tokens=1000, max_positions=200, seed=3, required_batch_size_multiple=8
    )
    heldout = task.build_dataset("valid")
    seen = 0
    for sample in itr.next_epoch_itr(shuffle=False):
        for row, index in enumerate(sample["id"].tolist()):
            target = sample["target"][row][: heldout.size(index)]
            assert torch.equal(target, heldout[index]["target"])
            seen += 1
    assert seen == len(heldout)
