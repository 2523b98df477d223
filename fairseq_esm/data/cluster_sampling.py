"""UR50/D-style sampling: one member of every 50%-identity cluster per epoch, drawn evenly across clusters.

The paper's UR50/D keeps all UniRef100 members of each UniRef50 cluster and, each epoch, trains on
one member per cluster, so a large family weighs as much as a small one. :class:`ClusterSampledDataset`
is a dataset over *clusters*: item ``i`` is a member of cluster ``i`` drawn uniformly with a generator
seeded from ``(seed, epoch)`` at position ``i``, so the draw is reproducible and changes every epoch.
``sizes`` follow the drawn members, so the crop and batching layers above refresh their sizes and
fairseq rebuilds its batches every epoch (``data/sized.py``).

At UniRef scale (60M records, 12M clusters) the grouping by cluster is O(records) (a count and a radix sort,
not ``np.unique``'s sort), kept as int32 record indices, and an epoch's draw is O(clusters), vectorised.
"""

from __future__ import annotations

import os

import numpy as np
from fairseq.data import BaseWrapperDataset, FairseqDataset

from fairseq_esm.data.integrity import DataIntegrityError
from fairseq_esm.data.sized import StoredSizes, index_dtype, stable_argsort

#: extra seed component that keeps the member draws independent of the crop and mask draws
SAMPLE_STREAM = 2


def load_cluster_index(split_path: str, n_records: int) -> np.ndarray:
    """``split_path.clusters.npy``: the cluster of every record of the split, checked against its length.
    Memory-mapped, not copied (8 bytes per record at UniRef scale); the checks read it once."""
    path = f"{split_path}.clusters.npy"
    if not os.path.exists(path):
        raise DataIntegrityError(
            f"--cluster-sampling needs {path} (the 50% cluster of every record); "
            "make it with fairseq-esm-make-uniref-splits or drop --cluster-sampling"
        )
    try:
        clusters = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise DataIntegrityError(f"{path} is not a .npy array ({err}); rewrite it with np.save") from None
    if clusters.ndim != 1 or not np.issubdtype(clusters.dtype, np.integer) or (len(clusters) and clusters.min() < 0):
        raise DataIntegrityError(f"{path} must be a 1-D array of non-negative integer cluster ids")
    if len(clusters) != n_records:
        raise DataIntegrityError(
            f"{path} lists {len(clusters):,} records, the split has {n_records:,}: "
            "rebinarize the split and its cluster index together"
        )
    return clusters


def group_by_cluster(clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(record indices grouped by cluster, members per cluster): clusters in increasing id order (empty ids
    skipped), each cluster's records in record order; what ``np.unique`` + a stable argsort give, in O(N).

    Dense ids (below twice the record count, as fairseq-esm-make-uniref-splits writes them) are counted with
    ``np.bincount`` and grouped by a radix sort; sparse ids (hashes, taxon-scale numbers) fall back to
    ``np.unique``.
    """
    clusters = np.asarray(clusters)
    n = len(clusters)
    if n == 0:
        return np.zeros(0, index_dtype(0)), np.zeros(0, np.int64)
    top = int(clusters.max())
    if top < 2 * n + 1024:
        counts = np.bincount(clusters, minlength=top + 1)
        present = counts > 0
        if present.all():
            dense = clusters
        else:  # renumber the ids in use 0, 1, 2, ... (what np.unique's inverse gives)
            dense = (np.cumsum(present) - 1)[clusters]
            counts = counts[present]
    else:
        _, dense = np.unique(clusters, return_inverse=True)
        counts = np.bincount(dense)
    return stable_argsort(dense, index_dtype(n)), counts.astype(np.int64, copy=False)
class ClusterSampledDataset(StoredSizes, BaseWrapperDataset):
    """Records → one drawn member per cluster; ``set_epoch`` redraws."""

    redraws_each_epoch = True

    def __init__(self, dataset: FairseqDataset, clusters: np.ndarray, seed: int, epoch: int = 1) -> None:
        super().__init__(dataset)
        if len(clusters) != len(dataset):
            raise ValueError(f"{len(clusters)} cluster ids for {len(dataset)} records")
        self.order, self.counts = group_by_cluster(clusters)  # record indices grouped by cluster, cluster sizes
        self.starts = np.cumsum(self.counts) - self.counts
        self.record_sizes = np.asarray(dataset.sizes)  # the stored sizes as they are (memory-mapped int32), no copy
        self.seed = seed
        self.epoch = None
        self.set_epoch(epoch)

    def draw(self, epoch: int) -> np.ndarray:
        """The record drawn for every cluster in ``epoch``: uniform over its members."""
        uniform = np.random.default_rng([self.seed, epoch, SAMPLE_STREAM]).random(len(self.counts))
        pick = np.minimum((uniform * self.counts).astype(np.int64), self.counts - 1)
        return self.order[self.starts + pick]

    def set_epoch(self, epoch: int) -> None:
        """Draw the epoch's members (O(clusters), vectorised); again for the same epoch is a no-op."""
        super().set_epoch(epoch)
        if epoch == self.epoch:
            return
        self.epoch = epoch
        self.members = self.draw(epoch)
        self._sizes = np.asarray(self.record_sizes[self.members])

    @property
    def can_reuse_epoch_itr_across_epochs(self) -> bool:
        return False

    def __len__(self) -> int:
        return len(self.counts)

    def ordered_indices(self) -> np.ndarray:
        """Cluster indices by drawn size (the wrapped records' order would index records, not clusters)."""
        return np.argsort(self._sizes, kind="stable")

    @property
    def supports_prefetch(self) -> bool:
        return False  # prefetching would pass cluster indices to the records

    def __getitem__(self, index: int):
        return self.dataset[int(self.members[index])]

