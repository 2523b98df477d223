"""UR50/D-style sampling: one member of every 50%-identity cluster per epoch, drawn evenly across clusters.

The paper's UR50/D keeps all UniRef100 members of each UniRef50 cluster and, each epoch, trains on
one member per cluster, so a large family weighs as much as a small one. :class:`ClusterSampledDataset`
is a dataset over *clusters*: item ``i`` is a member of cluster ``i`` drawn uniformly with a generator
seeded from ``(seed, epoch)`` at position ``i``, so the draw is reproducible and changes every epoch.
``sizes`` follow the drawn members, so the crop and batching layers above refresh their sizes and
fairseq rebuilds its batches every epoch (``data/sized.py``).
"""

from __future__ import annotations

import os

import numpy as np
from fairseq.data import BaseWrapperDataset, FairseqDataset

from fairseq_esm.data.integrity import DataIntegrityError
from fairseq_esm.data.sized import StoredSizes

#: extra seed component that keeps the member draws independent of the crop and mask draws
SAMPLE_STREAM = 2


def load_cluster_index(split_path: str, n_records: int) -> np.ndarray:
    """``split_path.clusters.npy``: the cluster of every record of the split, checked against its length."""
    path = f"{split_path}.clusters.npy"
    if not os.path.exists(path):
        raise DataIntegrityError(
            f"--cluster-sampling needs {path} (the 50% cluster of every record); "
            "make it with fairseq-esm-make-uniref-splits or drop --cluster-sampling"
        )
    try:
        clusters = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise DataIntegrityError(f"{path} is not a .npy array ({err}); rewrite it with np.save") from None
    if clusters.ndim != 1 or not np.issubdtype(clusters.dtype, np.integer) or (clusters < 0).any():
        raise DataIntegrityError(f"{path} must be a 1-D array of non-negative integer cluster ids")
    if len(clusters) != n_records:
        raise DataIntegrityError(
            f"{path} lists {len(clusters):,} records, the split has {n_records:,}: "
            "rebinarize the split and its cluster index together"
        )
    return clusters.astype(np.int64)


class ClusterSampledDataset(StoredSizes, BaseWrapperDataset):
    """Records → one drawn member per cluster; ``set_epoch`` redraws."""

    redraws_each_epoch = True

    def __init__(self, dataset: FairseqDataset, clusters: np.ndarray, seed: int, epoch: int = 1) -> None:
        super().__init__(dataset)
        if len(clusters) != len(dataset):
            raise ValueError(f"{len(clusters)} cluster ids for {len(dataset)} records")
        _, dense = np.unique(clusters, return_inverse=True)  # cluster ids need not be contiguous
        self.order = np.argsort(dense, kind="stable").astype(np.int64)  # record indices grouped by cluster
        self.counts = np.bincount(dense).astype(np.int64)
        self.starts = np.concatenate(([0], np.cumsum(self.counts)[:-1])).astype(np.int64)
        self.record_sizes = np.asarray(dataset.sizes, dtype=np.int64)
        self.seed = seed
        self.set_epoch(epoch)

    def draw(self, epoch: int) -> np.ndarray:
        """The record drawn for every cluster in ``epoch``: uniform over its members."""
        uniform = np.random.default_rng([self.seed, epoch, SAMPLE_STREAM]).random(len(self.counts))
        pick = np.minimum((uniform * self.counts).astype(np.int64), self.counts - 1)
        return self.order[self.starts + pick]

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.epoch = epoch
        self.members = self.draw(epoch)
        self._sizes = self.record_sizes[self.members]

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

