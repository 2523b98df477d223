"""Proteins with per-residue SS8 labels and contact maps, stored for fairseq and batched for the supervised heads.

A split ``DIR/{split}`` is fairseq mmap datasets side by side (``fairseq-esm-structure-dataset`` writes them):

- ``{split}.bin/.idx``: residue ids then ``</s>``, as ``fairseq-preprocess --srcdict dicts/esm1b.txt`` writes;
- ``{split}.ss8.bin/.idx``: int8 per residue, 0..7 for ``H G I E B T S C``, ``-1`` = not scored (3-state
  targets are not stored: ``SS8_TO_SS3`` reduces these, H,G,I -> H; E,B -> E; T,S,C -> C);
- ``{split}.contacts.bin/.idx`` (optional): int8 L×L row-major, 1 contact, 0 none, ``-1`` unresolved;
- ``{split}.names.txt``: one record name per line;
- ``{split}.features.npy`` (optional): float32 (residues of the split, D), extra per-residue features
  (e.g. MSA-averaged representations) in record order, read memory-mapped;
- ``{split}.msa_{proj,present,weights,members}.npy`` (optional, ``fairseq-esm-msa-split-features --cov-k K``):
  each protein's MSA members projected on K principal directions, from which the paper's "cov" pair features
  (K*K, L, L) are computed per item (``weighted_covariance``), read memory-mapped.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np
import torch
from fairseq.data import FairseqDataset, data_utils
from fairseq.data.indexed_dataset import MMapIndexedDataset, MMapIndexedDatasetBuilder

from fairseq_esm.data.integrity import DataIntegrityError
from fairseq_esm.data.sized import EveryRecordBatched, LengthOrdered, StoredSizes
from fairseq_esm.io.dssp import SS8, to_ss3
from fairseq_esm.modules.alphabet import Alphabet
from fairseq_esm.modules.msa_covariance import weighted_covariance

SS8_STATES = SS8  # target i is state SS8_STATES[i]
#: target value of residues that are never scored (masked, unresolved, padding)
IGNORE = -1
SS8_INDEX = {state: i for i, state in enumerate(SS8_STATES)}
SS3_STATES = "HEC"
#: SS8 target -> SS3 target, DSSP's standard reduction (H,G,I -> H; E,B -> E; T,S,C -> C)
SS8_TO_SS3 = np.array([SS3_STATES.index(to_ss3(state)) for state in SS8_STATES], dtype=np.int64)


def ss8_to_targets(ss8: str) -> np.ndarray:
    """``HGIEBTSC`` / ``.`` string -> int8 targets (``.`` and anything else -> ``IGNORE``)."""
    return np.array([SS8_INDEX.get(state, IGNORE) for state in ss8], dtype=np.int8)


class SplitWriter:
    """Writes one split record by record: tokens, SS8 targets, optional contact maps, names."""

    def __init__(self, prefix: str, with_contacts: bool) -> None:
        self.prefix = prefix
        self.tokens = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
        self.ss8 = MMapIndexedDatasetBuilder(prefix + ".ss8.bin", dtype=np.int8)
        self.contacts = MMapIndexedDatasetBuilder(prefix + ".contacts.bin", dtype=np.int8) if with_contacts else None
        self.names: list[str] = []

    def add(self, name: str, residue_ids: list[int], eos: int, ss8: np.ndarray,
            contacts: Optional[np.ndarray]) -> None:
        """One record; ``contacts`` (L, L) is required when the split has contact maps."""
        self.tokens.add_item(torch.tensor(residue_ids + [eos], dtype=torch.int64))
        self.ss8.add_item(torch.from_numpy(ss8.astype(np.int64)))
        if self.contacts is not None:
            self.contacts.add_item(torch.from_numpy(contacts.astype(np.int64).reshape(-1)))
        self.names.append(name)

    def finalize(self) -> None:
        self.tokens.finalize(self.prefix + ".idx")
        self.ss8.finalize(self.prefix + ".ss8.idx")
        if self.contacts is not None:
            self.contacts.finalize(self.prefix + ".contacts.idx")
        with open(self.prefix + ".names.txt", "w") as out:
            out.writelines(name + "\n" for name in self.names)


def _open(prefix: str, what: str) -> MMapIndexedDataset:
    if not MMapIndexedDataset.exists(prefix):
        raise FileNotFoundError(f"{prefix}.idx/.bin ({what}) not found; build the data with "
                                "fairseq-esm-structure-dataset")
    return MMapIndexedDataset(prefix)


class MsaMembers:
    """A split's stored MSA members (``{prefix}.msa_*.npy``), checked against the split and ``k`` at load."""

    def __init__(self, prefix: str, residues: np.ndarray, k: int) -> None:
        arrays = {}
        for key in ("proj", "present", "weights", "members"):
            path = f"{prefix}.msa_{key}.npy"
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path} not found (--pair-feature-k {k} needs "
                                        f"fairseq-esm-msa-split-features --cov-k {k})")
            arrays[key] = np.load(path, mmap_mode="r")
        self.proj, self.present, self.weights = arrays["proj"], arrays["present"], arrays["weights"]
        counts = np.asarray(arrays["members"], dtype=np.int64)
        problem = self._mismatch(counts, residues, k)
        if problem:
            raise DataIntegrityError(f"{prefix}.msa_*.npy: {problem}; rerun msa_split_features.py --cov-k {k}")
        rows = counts * residues
        self.residues, self.counts = residues, counts
        self.row_start = np.concatenate([[0], np.cumsum(rows)])
        self.member_start = np.concatenate([[0], np.cumsum(counts)])

    def _mismatch(self, counts: np.ndarray, residues: np.ndarray, k: int) -> str:
        """What disagrees between the stored arrays, the split and ``k`` ("" when all agree)."""
        if len(counts) != len(residues):
            return f"{len(counts)} member counts for {len(residues)} proteins"
        rows, members = int((counts * residues).sum()), int(counts.sum())
        if self.proj.shape != (rows, k):
            return f"projections of shape {self.proj.shape}, expected ({rows}, {k}) (MSA rows, --pair-feature-k)"
        if self.present.shape != (rows,) or self.weights.shape != (members,):
            return f"{len(self.present)} presence flags for {rows} rows or {len(self.weights)} weights for {members}"
        return ""

    def covariance(self, index: int) -> torch.Tensor:
        """(K*K, L, L) float32 cov features of protein ``index``."""

        members, length = int(self.counts[index]), int(self.residues[index])
        rows = slice(self.row_start[index], self.row_start[index + 1])
        proj = torch.from_numpy(np.array(self.proj[rows], dtype=np.float32)).view(members, length, -1)
        present = torch.from_numpy(np.array(self.present[rows])).view(members, length)
        weights = torch.from_numpy(np.array(self.weights[self.member_start[index]: self.member_start[index + 1]]))
        return weighted_covariance(proj, present, weights)


class StructureLabelsDataset(EveryRecordBatched, LengthOrdered, StoredSizes, FairseqDataset):
    """One protein per item: ``residues`` (L,), ``ss8`` (L,), ``contacts`` (L, L), ``features`` (L, D) and
    ``pair_features`` (K*K, L, L) as loaded."""

    def __init__(self, prefix: str, alphabet: Alphabet, target: str, feature_dim: int = 0,
                 shuffle: bool = False, seed: int = 1, pair_feature_k: int = 0) -> None:
        super().__init__()
        self.prefix, self.alphabet, self.target = prefix, alphabet, target
        self.tokens = _open(prefix, "sequences")
        self.ss8 = _open(prefix + ".ss8", "SS8 targets")
        self.contacts = None
        if target == "contacts":  # CB513's test split has none: it comes without structures
            self.contacts = _open(prefix + ".contacts", "contact maps: only splits built from structures have them")
        self.residues = self.tokens.sizes.astype(np.int64) - 1  # stored with a trailing </s>
        if not np.array_equal(self.ss8.sizes, self.residues):
            raise DataIntegrityError(f"{prefix}: SS8 targets and sequences differ in length; rebuild the split")
        if self.contacts is not None and not np.array_equal(self.contacts.sizes, self.residues ** 2):
            raise DataIntegrityError(f"{prefix}: contact maps are not L×L for the sequences; rebuild the split")
        self.features = self._load_features(feature_dim)
        self.members = MsaMembers(prefix, self.residues, pair_feature_k) if pair_feature_k else None
        self._sizes = self.residues + alphabet.num_specials_added
        self.shuffle, self.seed, self.epoch = shuffle, seed, 1

    def _load_features(self, feature_dim: int) -> Optional[np.ndarray]:
        """``{prefix}.features.npy`` memory-mapped, refused unless (residues, feature_dim); None when dim is 0."""
        if feature_dim == 0:
            return None
        path = self.prefix + ".features.npy"
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found (--feature-dim {feature_dim} needs per-residue features)")
        features = np.load(path, mmap_mode="r")
        want = (int(self.residues.sum()), feature_dim)
        if features.shape != want:
            raise DataIntegrityError(f"{path}: shape {features.shape}, expected {want} (residues, --feature-dim)")
        self._offsets = np.concatenate([[0], np.cumsum(self.residues)])
        return features

    def __len__(self) -> int:
        return len(self._sizes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batch_by_size(self, indices, max_tokens=None, max_sentences=None, required_batch_size_multiple=1):
        """fairseq's batches, except that a protein of more than ``max_tokens`` tokens is a batch of its own (held-out
        proteins are never dropped; fairseq-train drops longer training proteins before batching)."""
        indices = np.asarray(indices, dtype=np.int64)
        over = self._sizes[indices] > max_tokens if max_tokens else np.zeros(len(indices), dtype=bool)
        batches = []
        if not over.all():
            batches = list(super().batch_by_size(indices[~over], max_tokens, max_sentences,
                                                 required_batch_size_multiple))
        return batches + [indices[i : i + 1] for i in np.flatnonzero(over)]

    def __getitem__(self, index: int) -> dict[str, Any]:
        length = int(self.residues[index])
        item = {"id": index, "residues": self.tokens[index][:length], "ss8": self.ss8[index]}
        if self.contacts is not None:
            item["contacts"] = self.contacts[index].view(length, length)
        if self.features is not None:
            start = self._offsets[index]
            item["features"] = torch.from_numpy(np.array(self.features[start : start + length], dtype=np.float32))
        if self.members is not None:
            item["pair_features"] = self.members.covariance(index)
        return item

    def collater(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """``net_input``: wrapped tokens (<cls> ... <eos>, padded), residue counts, features; ``target``:
        (B, L) SS8 or (B, L, L) contacts, ``IGNORE`` where not scored or padded."""
        if not samples:
            return {}
        lengths = torch.tensor([len(s["residues"]) for s in samples], dtype=torch.long)
        tokens = [torch.tensor(self.alphabet.wrap(s["residues"].tolist()), dtype=torch.long) for s in samples]
        net_input = {
            "src_tokens": data_utils.collate_tokens(tokens, self.alphabet.padding_idx, left_pad=False),
            "src_lengths": lengths,
        }
        width = int(lengths.max())
        if self.features is not None:
            features = torch.zeros(len(samples), width, samples[0]["features"].size(1))
            for row, s in enumerate(samples):
                features[row, : len(s["features"])] = s["features"]
            net_input["features"] = features
        if self.members is not None:
            pair = torch.zeros(len(samples), samples[0]["pair_features"].size(0), width, width)
            for row, s in enumerate(samples):
                n = len(s["residues"])
                pair[row, :, :n, :n] = s["pair_features"]
            net_input["pair_features"] = pair
        if self.target == "contacts":
            target = torch.full((len(samples), width, width), IGNORE, dtype=torch.long)
            for row, s in enumerate(samples):
                n = len(s["residues"])
                target[row, :n, :n] = s["contacts"]
        else:
            target = data_utils.collate_tokens([s["ss8"] for s in samples], IGNORE, left_pad=False)
        return {
            "id": torch.tensor([s["id"] for s in samples], dtype=torch.long),
            "nsentences": len(samples),
            "ntokens": int(lengths.sum()),
            "net_input": net_input,
            "target": target,
        }
