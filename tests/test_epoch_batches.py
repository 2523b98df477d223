"""UniRef-scale start-up without changing a single batch: the O(N) length order, the compact batches and epoch
iterator, the cluster grouping and the thin split reader give exactly what fairseq's own code (and the code they
replaced) gives, and a rank's private memory per protein stays bounded.

Reference implementations are fairseq's: ``data_utils_fast.batch_by_size_vec`` (cython), ``EpochBatchIterator``
(shuffle under ``numpy_seed``, ``ShardedIterator``), ``MMapIndexedDataset``, and the formulas the old code used
(``np.lexsort``, ``np.unique`` + a stable argsort).
"""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from fairseq.data import indexed_dataset
from fairseq.data.data_utils_fast import batch_by_size_vec
from fairseq.tasks import FairseqTask
from helpers.training import TRAIN_PROTEINS

from fairseq_esm.data.batch_cache import shared_batches
from fairseq_esm.data.cluster_sampling import group_by_cluster
from fairseq_esm.data.epoch_batches import Batches, CompactEpochBatchIterator, batch_bounds
from fairseq_esm.data.item_rng import item_rng
from fairseq_esm.data.sized import length_order, stable_argsort
from fairseq_esm.data.stored_records import StoredRecords
from fairseq_esm.errors import InputError
from fairseq_esm.tasks.protein_mlm import ProteinMLMConfig, ProteinMLMTask

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from scale_startup import make_data_bin  # noqa: E402


def test_batch_bounds_are_fairseqs_cython_batches():
    """Random length-sorted sizes, with and without max_sentences, every batch-size multiple: the same batches,
    the last partial one included (fairseq would drop it; ``EveryRecordBatched`` puts it back)."""
    rng = np.random.default_rng(0)
    for _ in range(3000):
        n = int(rng.integers(0, 300))
        largest = int(rng.integers(2, 200))
        sizes = np.sort(rng.integers(1, largest, n))
        max_tokens = int(rng.choice([-1, int(rng.integers(largest, 2000))]))
        max_sentences = int(rng.choice([-1, int(rng.integers(1, 40))]))
        if max_tokens < 0 and max_sentences < 0:
            max_sentences = 7
        multiple = int(rng.choice([1, 2, 3, 8, 16]))
        indices = rng.permutation(n).astype(np.int64)
        expected = batch_by_size_vec(indices, sizes.astype(np.int64), max_tokens, max_sentences, multiple)
        bounds = batch_bounds(sizes.astype(np.int32), max_tokens, max_sentences, multiple)
        got = [indices[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        assert len(got) == len(expected) and all(np.array_equal(x, y) for x, y in zip(got, expected))


def test_batch_bounds_over_many_chunks_and_the_max_tokens_assertion():
    rng = np.random.default_rng(1)
    sizes = np.sort(np.minimum(rng.lognormal(5.5, 0.8, 300_000).astype(np.int64) + 2, 1024))
    indices = np.arange(len(sizes), dtype=np.int64)
    expected = batch_by_size_vec(indices, sizes, 4096, -1, 8)
    bounds = batch_bounds(sizes, 4096, None, 8)
    assert np.array_equal(bounds, np.concatenate([[0], np.cumsum([len(b) for b in expected])]))
    with pytest.raises(AssertionError, match="should not exceed max_tokens=1000"):
        batch_bounds(sizes, 1000, None, 8)


def test_length_order_is_the_lexsort_it_replaced():
    rng = np.random.default_rng(2)
    for _ in range(200):
        n = int(rng.integers(0, 3000))
        sizes = rng.integers(0, int(rng.choice([2, 60, 1025, 70_000])), n).astype(rng.choice([np.int32, np.int64]))
        seed, epoch = int(rng.integers(1, 100)), int(rng.integers(1, 5))
        tie_break = item_rng(seed, epoch).permutation(n)
        assert np.array_equal(length_order(sizes, True, seed, epoch), np.lexsort([tie_break, sizes]))
        assert np.array_equal(length_order(sizes, False, seed, epoch, np.int32), np.argsort(sizes, kind="stable"))
        assert np.array_equal(stable_argsort(sizes), np.argsort(sizes, kind="stable"))


@pytest.mark.parametrize("ids", ["dense", "gaps", "sparse"])
def test_cluster_grouping_is_unique_plus_stable_argsort(ids):
    rng = np.random.default_rng(3)
    n = 50_000
    top = {"dense": n // 5, "gaps": 3 * n, "sparse": 10**12}[ids]
    clusters = rng.integers(0, top, n)
    _, dense = np.unique(clusters, return_inverse=True)
    order, counts = group_by_cluster(clusters)
    assert np.array_equal(order, np.argsort(dense, kind="stable")) and np.array_equal(counts, np.bincount(dense))
    assert order.dtype == np.int32


@pytest.fixture(scope="module")
def layouts(clean_data, tmp_path_factory) -> dict[str, ProteinMLMTask]:
    """protein_mlm tasks on the real 240-protein data-bin: plain and with 97 clusters (UR50/D sampling)."""
    import shutil

    clustered = tmp_path_factory.mktemp("clustered") / "data-bin"
    shutil.copytree(clean_data, clustered)
    np.save(clustered / "train.clusters.npy", np.arange(TRAIN_PROTEINS) % 97)

    def task(data: Path, **extra) -> ProteinMLMTask:
        cfg = ProteinMLMConfig(data=str(data), max_positions=64, seed=3, train_subset="train", **extra)
        return ProteinMLMTask.setup_task(cfg)

    return {"plain": task(clean_data), "cluster_sampling": task(clustered, cluster_sampling=True)}


def epoch_batches(itr, epoch: int, offset: int = 0) -> list[np.ndarray]:
    return [np.asarray(b, dtype=np.int64) for b in itr.ordered_batches(epoch, False, True)[offset:]]


@pytest.mark.parametrize("layout", ["plain", "cluster_sampling"])
def test_compact_iterator_reads_fairseqs_batches(layout, layouts):
    """Every shard of 1, 2 and 3, epochs 1-3, from the start and from a mid-epoch position: the batches fairseq's
    own get_batch_iterator (EpochBatchIterator over dataset.batch_by_size) gives, and the same samples."""
    task = layouts[layout]
    for epoch in (1, 2, 3):
        task.load_dataset("train", epoch=epoch)
        dataset = task.dataset("train")
        for shards in (1, 2, 3):
            for shard in range(shards):
                options = dict(max_tokens=1024, max_positions=64, ignore_invalid_inputs=True,
                               required_batch_size_multiple=8, seed=3, num_shards=shards, shard_id=shard, epoch=epoch,
                               disable_iterator_cache=True)
                ours = task.get_batch_iterator(dataset, **options)
                theirs = FairseqTask.get_batch_iterator(task, dataset, **options)
                assert isinstance(ours, CompactEpochBatchIterator) and len(ours) == len(theirs)
                for offset in (0, 3):
                    mine, reference = epoch_batches(ours, epoch, offset), epoch_batches(theirs, epoch, offset)
                    assert len(mine) == len(reference) and all(map(np.array_equal, mine, reference))
                first, expected = ours.first_batch, theirs.first_batch
                assert torch.equal(first["net_input"]["src_tokens"], expected["net_input"]["src_tokens"])
        samples = [b for b in ours.next_epoch_itr(shuffle=True)]
        reference = [b for b in theirs.next_epoch_itr(shuffle=True)]
        assert len(samples) == len(reference) and all(
            (not a and not b) or (torch.equal(a["id"], b["id"]) and torch.equal(a["target"], b["target"]))
            for a, b in zip(samples, reference))


def test_compact_iterator_resumes_mid_epoch_like_fairseqs(layouts):
    """A state dict 5 batches into epoch 2: the rest of the epoch, the next epoch and the final state."""
    task = layouts["plain"]
    task.load_dataset("train", epoch=2)
    dataset = task.dataset("train")
    options = dict(max_tokens=1024, max_positions=64, required_batch_size_multiple=8, seed=3, epoch=2,
                   disable_iterator_cache=True)

    def resumed(itr) -> tuple:
        itr.load_state_dict({"version": 2, "epoch": 2, "iterations_in_epoch": 5, "shuffle": True})
        rest = [b["id"].tolist() for b in itr.next_epoch_itr(shuffle=True)]
        following = [b["id"].tolist() for b in itr.next_epoch_itr(shuffle=True)]
        return rest, following, itr.state_dict()

    ours = resumed(task.get_batch_iterator(dataset, **options))
    assert ours == resumed(FairseqTask.get_batch_iterator(task, dataset, **options))
    assert len(ours[0]) == 15 - 5 and sorted(i for b in ours[1] for i in b) == list(range(TRAIN_PROTEINS))


@pytest.mark.parametrize("layout", ["plain", "cluster_sampling"])
def test_batches_shared_through_a_node_directory_are_each_ranks_own(layout, layouts, tmp_path, monkeypatch):
    """--batch-cache-dir: the first rank forms and stores an epoch's batches, a second rank (a fresh task) maps
    them without forming any, and both read exactly fairseq's batches; one entry per option set is kept."""
    reference = layouts[layout]
    cache = tmp_path / "node"
    ranks = [ProteinMLMTask.setup_task(ProteinMLMConfig(**{**vars(reference.cfg), "batch_cache_dir": str(cache)}))
             for _ in range(2)]
    build = Batches.build
    for epoch in (1, 2, 3):
        for rank, task in enumerate(ranks):
            if rank == 1:
                monkeypatch.setattr(Batches, "build", classmethod(lambda *a, **k: pytest.fail("formed twice")))
            task.load_dataset("train", epoch=epoch)
            options = dict(max_tokens=1024, max_positions=64, required_batch_size_multiple=8, seed=3, num_shards=2,
                           shard_id=rank, epoch=epoch, disable_iterator_cache=True)
            ours = task.get_batch_iterator(task.dataset("train"), **options)
            reference.load_dataset("train", epoch=epoch)
            theirs = FairseqTask.get_batch_iterator(reference, reference.dataset("train"), **options)
            mine, expected = epoch_batches(ours, epoch), epoch_batches(theirs, epoch)
            assert len(mine) == len(expected) and all(map(np.array_equal, mine, expected))
            assert isinstance(ours.frozen_batches.order, np.memmap)
            monkeypatch.setattr(Batches, "build", build)
        entries = sorted(p.name for p in cache.glob("*.npy"))
        assert len(entries) == 2, entries  # this epoch's order and bounds; an earlier epoch's are removed


def test_batch_cache_forms_once_for_concurrent_ranks_and_refuses_a_broken_entry(tmp_path, caplog):
    """Three processes at once: one forms the batches, all get them; a truncated entry is formed again."""
    import multiprocessing

    sizes = np.random.default_rng(0).integers(1, 500, 5000).astype(np.int32)
    cache, log = tmp_path / "node", tmp_path / "formed.txt"
    with multiprocessing.get_context("fork").Pool(3) as pool:
        results = pool.starmap(shared_rank, [(cache, sizes, log)] * 3)
    assert log.read_text() == "formed\n" and all(r == results[0] for r in results)
    bounds = next(cache.glob("*.bounds.npy"))
    bounds.write_bytes(bounds.read_bytes()[:100])
    assert shared_rank(cache, sizes, log) == results[0] and log.read_text() == "formed\n" * 2
    assert "ignoring the unreadable batch cache entry" in caplog.text
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="--batch-cache-dir .*file: not a directory"):
        shared_batches(tmp_path / "file", sizes, (True, 3, 1), {}, lambda: pytest.fail("formed"))


def shared_rank(cache: Path, sizes: np.ndarray, log: Path) -> list[list[int]]:
    """One rank asking the node directory for the batches of ``sizes``; forming them is slow and logged."""
    import time

    def form() -> Batches:
        with open(log, "a") as out:
            out.write("formed\n")
        time.sleep(0.5)
        return Batches.build(length_order(sizes, True, 3, 1, np.int32), sizes, 2048, None, 8, every_index=True)

    batches = shared_batches(cache, sizes, (True, 3, 1), {"max_tokens": 2048}, form)
    return [b.tolist() for b in batches]


def test_stored_records_read_what_fairseq_reads_without_reading_the_whole_bin(clean_data, monkeypatch):
    prefix = str(clean_data / "train")
    theirs = indexed_dataset.MMapIndexedDataset(prefix)

    def no_warmup(path):
        raise AssertionError(f"{path} read in full at load")

    monkeypatch.setattr(indexed_dataset, "_warmup_mmap_file", no_warmup)
    ours = StoredRecords(prefix)
    assert len(ours) == len(theirs) and np.array_equal(ours.sizes, theirs.sizes)
    assert all(torch.equal(ours[i], theirs[i]) and ours[i].dtype == torch.int64 for i in range(len(ours)))
    ProteinMLMTask.setup_task(ProteinMLMConfig(data=str(clean_data), max_positions=64, seed=3,
                                               train_subset="train")).load_dataset("train", combine=True)
    import pickle

    assert all(torch.equal(pickle.loads(pickle.dumps(ours))[i], theirs[i]) for i in (0, len(ours) - 1))
    assert len(pickle.dumps(ours)) < 500  # a spawned loader worker gets the path, not the data


@pytest.mark.parametrize("cluster_sampling", [False, True])
def test_private_memory_per_protein_at_scale(cluster_sampling, tmp_path):
    """200,000 synthetic short proteins: load, order and batch as fairseq-train's first get_train_iterator does;
    the peak of private (traced) memory stays under 40 bytes per protein plus 8 MB (the issue's goal: fairseq's
    path took 70-100)."""
    lengths = np.arange(20, 120)
    data = make_data_bin(tmp_path / "scale", 200_000, valid_records=10, lengths=lengths)
    task = ProteinMLMTask.setup_task(ProteinMLMConfig(data=str(data), max_positions=64, seed=1, train_subset="train",
                                                      cluster_sampling=cluster_sampling))
    tracemalloc.start()
    try:
        task.load_dataset("train", epoch=1, combine=True)
        dataset = task.dataset("train")
        itr = task.get_batch_iterator(dataset, max_tokens=1024, max_positions=64, required_batch_size_multiple=8,
                                      seed=1, epoch=1)
        next(itr.next_epoch_itr(shuffle=True))
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 40 * 200_000 + 8 * 2**20, peak / 200_000
    assert held <= 16 * 200_000 + 4 * 2**20, held / 200_000
