"""Random crops of real proteins: reproducible per (seed, epoch, index), uniform offsets, wrapped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fairseq.data import ListDataset

from fairseq_esm.data.crop import CropDataset, crop_residues
from fairseq_esm.modules.alphabet import esm1_alphabet, esm1b_alphabet

STORED_EOS = 2  # fairseq-preprocess ends every record with the plain Dictionary's </s>



@pytest.fixture(scope="module")
def records(sample_proteins) -> ListDataset:
    """Real proteins as fairseq-preprocess stores them: residue ids + </s>."""
    alphabet = esm1b_alphabet()
    items = [torch.tensor(alphabet.encode_residues(seq) + [STORED_EOS]) for seq in sample_proteins[:300]]
    return ListDataset(items, np.array([len(t) for t in items]))


def crops(records, epoch: int, max_positions: int = 100, seed: int = 1, fixed=None, alphabet=None) -> CropDataset:
    ds = CropDataset(records, alphabet or esm1b_alphabet(), max_positions, STORED_EOS, seed, fixed_epoch=fixed)
    ds.set_epoch(epoch)
    return ds


def test_short_proteins_are_never_cropped(records):
    rng = np.random.RandomState(0)
    for record in records:
        residues = record[:-1].numpy()
        if len(residues) <= 98:
            assert np.array_equal(crop_residues(residues, 98, rng), residues)
    ds = crops(records, epoch=3)
    short = [i for i in range(len(records)) if len(records[i]) - 1 <= 98]
    assert short
    for i in short:
        assert ds[i][1:-1].tolist() == records[i][:-1].tolist()


def test_wrapped_with_specials_and_sizes_match(records):
    alphabet = esm1b_alphabet()
    ds = crops(records, epoch=1)
    for i in range(len(ds)):
        tokens = ds[i]
        assert tokens[0] == alphabet.cls_idx and tokens[-1] == alphabet.eos()
        assert len(tokens) == ds.sizes[i] == min(len(records[i]) - 1, 98) + 2
        window = tokens[1:-1].numpy()
        stored = records[i][:-1].numpy()
        assert any(np.array_equal(stored[o : o + len(window)], window) for o in range(len(stored) - len(window) + 1))


def test_esm1_gets_cls_only(records):
    alphabet = esm1_alphabet()
    ds = crops(records, epoch=1, alphabet=alphabet)
    for i in range(len(ds)):
        assert ds[i][0] == alphabet.cls_idx and ds[i][-1] != alphabet.eos()
        assert len(ds[i]) == min(len(records[i]) - 1, 99) + 1


def test_reproducible_and_redrawn_each_epoch(records):
    long = [i for i in range(len(records)) if len(records[i]) > 300]
    assert len(long) > 50
    first, again, later = crops(records, 2), crops(records, 2), crops(records, 3)
    assert all(torch.equal(first[i], again[i]) for i in long)
    assert sum(not torch.equal(first[i], later[i]) for i in long) > 0.9 * len(long)
    other_seed = crops(records, 2, seed=2)
    assert sum(not torch.equal(first[i], other_seed[i]) for i in long) > 0.9 * len(long)


def test_fixed_epoch_ignores_set_epoch(records):
    pinned, reference = crops(records, epoch=7, fixed=1), crops(records, epoch=1)
    assert all(torch.equal(pinned[i], reference[i]) for i in range(len(records)))


def test_offsets_cover_the_whole_range():
    residues = np.arange(4, 34)
    offsets = []
    for epoch in range(1, 400):
        ds = crops(ListDataset([torch.tensor(residues.tolist() + [STORED_EOS])], np.array([31])), epoch, max_positions=22)
        offsets.append(int(ds[0][1]) - 4)
    counts = np.bincount(offsets, minlength=11)
    assert len(counts) == 11 and (counts > 10).all()


def test_record_without_eos_is_rejected():
    ds = crops(ListDataset([torch.tensor([4, 5, 6])], np.array([3])), epoch=1)
    with pytest.raises(ValueError, match="does not end with"):
        ds[0]
