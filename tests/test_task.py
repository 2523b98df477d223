"""The protein_mlm task on a real fairseq-preprocess'd slice of the UniProt sample."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.tasks import TASK_REGISTRY

from fairseq_esm.modules.alphabet import DICT_DIR, esm1b_alphabet
from fairseq_esm.tasks.protein_mlm import ProteinMLMConfig, ProteinMLMTask

MAX_POSITIONS = 128



@pytest.fixture(scope="module")
def proteins(sample_proteins) -> list[str]:
    return sample_proteins[:360]


@pytest.fixture(scope="module")
def data_bin(fairseq_preprocess, proteins) -> Path:
    """fairseq-preprocess --only-source --srcdict esm1b.txt on 300 train / 60 valid proteins."""
    return fairseq_preprocess(proteins[:300], proteins[300:])


def make_task(data: Path, **overrides) -> ProteinMLMTask:
    cfg = ProteinMLMConfig(data=str(data), max_positions=MAX_POSITIONS, seed=1, train_subset="train", **overrides)
    return ProteinMLMTask.setup_task(cfg)


def batches(task: ProteinMLMTask, split: str, max_tokens: int, epoch: int = 1) -> list[dict]:
    """Batches as fairseq-train / fairseq-validate build them (``--required-batch-size-multiple 8``)."""
    task.load_dataset(split, epoch=epoch)
    itr = task.get_batch_iterator(
        task.dataset(split), max_tokens=max_tokens, max_positions=task.max_positions(), seed=1, epoch=epoch,
        required_batch_size_multiple=8,
    )
    return list(itr.next_epoch_itr(shuffle=split == "train"))


def unmasked(sample: dict, row: int) -> np.ndarray:
    """A sample row with its targets put back: the wrapped protein window before masking."""
    src, tgt = sample["net_input"]["src_tokens"][row].clone(), sample["target"][row]
    chosen = tgt.ne(esm1b_alphabet().padding_idx)
    src[chosen] = tgt[chosen]
    return src.numpy()


def test_registered():
    assert TASK_REGISTRY["protein_mlm"] is ProteinMLMTask


def test_fairseq_command_line_fills_the_config(data_bin):
    """Flags as fairseq-train parses them; seed and train subset come from the common/dataset groups."""
    args = options.parse_args_and_arch(
        options.get_training_parser(),
        [str(data_bin), "--task", "protein_mlm", "--arch", "roberta_base", "--max-positions", "256", "--seed", "3",
         "--mask-strategy", "all_mask", "--alphabet", "esm1", "--train-subset", "train"],
    )
    task = tasks.setup_task(convert_namespace_to_omegaconf(args).task)
    assert (task.cfg.seed, task.cfg.train_subset, task.cfg.max_positions) == (3, "train", 256)
    assert task.scheme.strategy == "all_mask" and task.source_dictionary.name == "esm1"


def test_batches_respect_max_tokens_and_hold_whole_single_proteins(data_bin, proteins):
    alphabet = esm1b_alphabet()
    task = make_task(data_bin)
    seen = set()
    for sample in batches(task, "train", max_tokens=1024):
        src = sample["net_input"]["src_tokens"]
        assert src.numel() <= 1024 and src.size(1) <= MAX_POSITIONS
        assert sample["target"].shape == src.shape and sample["nsentences"] == src.size(0)
        assert sample["ntokens"] == int(src.ne(alphabet.padding_idx).sum())
        for row, index in enumerate(sample["id"].tolist()):
            tokens = unmasked(sample, row)
            length = int((tokens != alphabet.padding_idx).sum())
            assert tokens[0] == alphabet.cls_idx and tokens[length - 1] == alphabet.eos()
            window = "".join(alphabet[t] for t in tokens[1 : length - 1])
            assert window in proteins[index]
            assert len(window) == min(len(proteins[index]), MAX_POSITIONS - 2)
            seen.add(index)
    assert seen == set(range(300))


@pytest.mark.parametrize("max_tokens", [700, 1024, 3000])
def test_every_protein_batched_once_despite_batch_size_multiple(data_bin, max_tokens):
    """fairseq drops a final batch that is not a multiple of 8; ours keeps it, within the budget."""
    task = make_task(data_bin)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    order = dataset.ordered_indices()
    chunks = dataset.batch_by_size(order, max_tokens=max_tokens, required_batch_size_multiple=8)
    assert np.array_equal(np.concatenate(chunks), order)
    assert all(len(chunk) * dataset.sizes[chunk].max() <= max_tokens for chunk in chunks)
    assert any(len(chunk) % 8 for chunk in chunks)


def test_order_is_sorted_by_length(data_bin):
    task = make_task(data_bin)
    task.load_dataset("train")
    dataset = task.dataset("train")
    order = dataset.ordered_indices()
    assert sorted(order.tolist()) == list(range(len(dataset)))
    assert (np.diff(dataset.sizes[order]) >= 0).all()


def test_train_redraws_each_epoch_valid_does_not(data_bin):
    task = make_task(data_bin)
    task.load_dataset("train")
    task.load_dataset("valid")
    train, valid = task.dataset("train"), task.dataset("valid")
    before = [train[i]["target"] for i in range(50)], [valid[i]["target"] for i in range(50)]
    train.set_epoch(2)
    valid.set_epoch(2)
    assert sum(not torch.equal(a, train[i]["target"]) for i, a in enumerate(before[0])) > 40
    assert all(torch.equal(a, valid[i]["target"]) for i, a in enumerate(before[1]))
    fresh = make_task(data_bin)
    fresh.load_dataset("valid")
    assert all(torch.equal(a, fresh.dataset("valid")[i]["target"]) for i, a in enumerate(before[1]))


def test_esm1_alphabet_samples(data_bin):
    task = make_task(data_bin, alphabet="esm1")
    alphabet = task.source_dictionary
    assert alphabet.name == "esm1"
    for sample in batches(task, "valid", max_tokens=2048):
        src = sample["net_input"]["src_tokens"]
        assert (src[:, 0] == alphabet.cls_idx).all()
        assert not (src == alphabet.eos()).any()
        assert src.size(1) <= MAX_POSITIONS


def test_dict_mismatch_is_refused(data_bin, tmp_path):
    symbols = (DICT_DIR / "esm1b.txt").read_text().splitlines()
    (tmp_path / "dict.txt").write_text("\n".join([symbols[1], symbols[0], *symbols[2:]]) + "\n")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "dict.txt"))):
        make_task(tmp_path)


def test_missing_dict_and_split_are_clear_errors(data_bin, tmp_path):
    with pytest.raises(FileNotFoundError, match="dict.txt"):
        make_task(tmp_path)
    with pytest.raises(FileNotFoundError, match="'test'"):
        make_task(data_bin).load_dataset("test")


def test_one_int32_size_array_per_rank_and_fairseq_filter_results(data_bin):
    """The crop layer's sizes are the batched dataset's (no int64 copies down the chain), and the fast path of
    the size filter returns what fairseq's filter returns."""
    task = make_task(data_bin)
    task.load_dataset("train")
    dataset = task.dataset("train")
    cropped = dataset.dataset.dataset  # ProteinMLMDataset -> MaskedProteinDataset -> CropDataset
    assert dataset.sizes is cropped.sizes and dataset.sizes.dtype == np.int32
    order = dataset.ordered_indices()
    assert order.dtype == np.int64 and dataset.length_sorted_indices(np.int32).tolist() == order.tolist()
    kept, ignored = dataset.filter_indices_by_size(order, MAX_POSITIONS)
    assert kept is order and ignored == []
    kept, ignored = dataset.filter_indices_by_size(order, 100)
    assert (dataset.sizes[kept] <= 100).all() and sorted(ignored) == np.flatnonzero(dataset.sizes > 100).tolist()
