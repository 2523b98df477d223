"""Precomputed per-residue features and contact maps, one protein per sample, for the bilinear contact probe.

A data dir holds one ``{split}.npz`` per split: ``features`` (all residues' rows, proteins concatenated),
``lengths`` (residues per protein) and ``contacts`` (each protein's L×L map flattened, concatenated; 1 contact,
0 none, ``IGNORE`` where a residue is unresolved).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from fairseq.data import FairseqDataset
from torch.nn.utils.rnn import pad_sequence

from fairseq_esm.data.sized import EveryRecordBatched, StoredSizes, length_order
from fairseq_esm.data.structure_labels_dataset import IGNORE


def write_data_dir(directory: str | Path, splits: dict[str, tuple[Sequence[np.ndarray], Sequence[np.ndarray]]]
                   ) -> Path:
    """Write one ``{split}.npz`` per ``split: (features, contacts)``; returns the dir."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for split, (features, contacts) in splits.items():
        np.savez(directory / f"{split}.npz", features=np.concatenate(features).astype(np.float32),
                 lengths=np.array([len(f) for f in features], dtype=np.int64),
                 contacts=np.concatenate([np.asarray(c, dtype=np.int8).reshape(-1) for c in contacts]))
    return directory


def read_split(path: str | Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each protein's (L, C) features and (L, L) contact map from one ``{split}.npz``."""
    with np.load(path) as stored:
        features, lengths, flat = stored["features"], stored["lengths"], stored["contacts"]
    rows, pairs = np.cumsum([0, *lengths]), np.cumsum([0, *(lengths**2)])
    return ([features[a:b] for a, b in zip(rows[:-1], rows[1:])],
            [flat[a:b].reshape(n, n) for a, b, n in zip(pairs[:-1], pairs[1:], lengths)])


def feature_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (+1e-6) of every feature over the residues of one ``{split}.npz``."""
    with np.load(path) as stored:
        features = stored["features"]
    return features.mean(0), features.std(0) + 1e-6


class ContactProbeDataset(EveryRecordBatched, StoredSizes, FairseqDataset):
    """One protein per sample: its features and its contact map."""

    def __init__(self, features: Sequence[np.ndarray], contacts: Sequence[np.ndarray]) -> None:
        super().__init__()
        self.features = [torch.from_numpy(np.ascontiguousarray(f)) for f in features]
        self.contacts = [torch.from_numpy(c.astype(np.int64)) for c in contacts]
        self._sizes = np.array([len(f) for f in features], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.features)

    def ordered_indices(self) -> np.ndarray:
        """By length; fairseq's iterator shuffles the batches of a training epoch."""
        return length_order(self._sizes, False, 0, 1)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"id": index, "features": self.features[index], "contacts": self.contacts[index]}

    def collater(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """``net_input``: (B, W, C) zero-padded features and lengths; ``target`` (B, W, W), ``IGNORE`` in padding."""
        if not samples:
            return {}
        lengths = torch.tensor([len(s["features"]) for s in samples], dtype=torch.long)
        width = int(lengths.max())
        target = torch.full((len(samples), width, width), IGNORE, dtype=torch.long)
        for b, s in enumerate(samples):
            target[b, : len(s["contacts"]), : len(s["contacts"])] = s["contacts"]
        features = pad_sequence([s["features"] for s in samples], batch_first=True)
        return {"id": torch.tensor([s["id"] for s in samples], dtype=torch.long), "nsentences": len(samples),
                "ntokens": int(lengths.sum()), "net_input": {"features": features, "src_lengths": lengths},
                "target": target}
