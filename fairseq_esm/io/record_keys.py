"""Compact keys of ids and sequences, and sorted-array lookups on them: joins without a dict keyed by every id.

A string's key is 96 bits of its BLAKE2b digest, kept as a uint64 array (``hi``, sorted and searched) and a
uint32 array (``lo``, compared): 12 bytes per key whatever the id's length, and a chance of two different ids
sharing a key of about n² / 2⁹⁷ (10⁻¹³ for 4·10⁸ ids, all of UniRef100). A sequence's hash is 64-bit
(8 bytes); it only finds *identical* sequences, where a collision (about n² / 2⁶⁵) would at worst remove one
more training record or pick another representative, never put an evaluation sequence in training.

:class:`KeyIndex` holds keys sorted once (16 bytes a key with its value); :class:`KeySet` grows by sorted
levels merged geometrically (duplicate ids seen so far, cluster names seen so far); :class:`ArraySpool` keeps
per-record arrays on disk while a file is streamed, so they are read back with no second copy in memory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import numpy as np

KEY_BYTES = 16


def string_keys(strings: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(hi, lo)``: the uint64 and uint32 parts of every string's 96-bit key."""
    digests = b"".join(hashlib.blake2b(s.encode("utf-8", "surrogateescape"), digest_size=KEY_BYTES).digest()
                       for s in strings)
    both = np.frombuffer(digests, "<u8").reshape(-1, 2)
    return both[:, 0].copy(), both[:, 1].astype(np.uint32)


def sequence_hashes(residues: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """64-bit hash of each record's residues (``residues`` concatenated, ``lengths`` per record)."""
    data = residues.tobytes()
    ends = np.cumsum(lengths).tolist()
    starts = [0] + ends[:-1]
    digests = b"".join(hashlib.blake2b(data[a:b], digest_size=8).digest() for a, b in zip(starts, ends))
    return np.frombuffer(digests, "<u8").copy()


def text_hash(text: str) -> int:
    """:func:`sequence_hashes` of one sequence given as text."""
    return int(np.frombuffer(hashlib.blake2b(text.encode(), digest_size=8).digest(), "<u8")[0])


def index_dtype(n: int) -> type:
    """The smallest signed integer type that numbers ``n`` records (and -1)."""
    return np.int32 if n < np.iinfo(np.int32).max else np.int64


def expand_ranges(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ranges ``[left[i], right[i])``: the range number and the position of every element, in order."""
    counts = right - left
    which = np.repeat(np.arange(len(left)), counts)
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return which, left[which] + offsets


class KeyIndex:
    """Keys sorted by ``hi`` (stable: equal keys keep their value order) with one integer value each."""

    def __init__(self, hi: np.ndarray, lo: np.ndarray, values: np.ndarray | None = None) -> None:
        order = np.argsort(hi, kind="stable")
        self.hi, self.lo = hi[order], lo[order]
        self.values = (order if values is None else values[order]).astype(index_dtype(len(hi) + 1))

    def __len__(self) -> int:
        return len(self.hi)

    def lookup(self, hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every match: ``(query number, value)`` pairs, queries in order, a query's values in stored order."""
        which, pos = expand_ranges(np.searchsorted(self.hi, hi, "left"), np.searchsorted(self.hi, hi, "right"))
        same = self.lo[pos] == lo[which]
        return which[same], self.values[pos[same]]

    @staticmethod
    def merged(first: KeyIndex, second: KeyIndex) -> KeyIndex:
        """One index of both (``first``'s entries before ``second``'s among equal keys), without re-sorting."""
        merged = KeyIndex.__new__(KeyIndex)
        at = np.searchsorted(first.hi, second.hi, "right")
        merged.hi = np.insert(first.hi, at, second.hi)
        merged.lo = np.insert(first.lo, at, second.lo)
        merged.values = np.insert(first.values, at, second.values)
        return merged


class KeySet:
    """A growing set of keys with one value each (the first added wins): sorted levels, the newest smallest,
    two merged whenever the newer is at least half the older (so a key is in one of ~log₂ n levels)."""

    def __init__(self) -> None:
        self.levels: list[KeyIndex] = []

    def __len__(self) -> int:
        return sum(map(len, self.levels))

    def get(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """The value of every key, -1 where absent."""
        out = np.full(len(hi), -1, np.int64)
        for level in reversed(self.levels):  # oldest last: its value wins
            which, values = level.lookup(hi, lo)
            first = np.flatnonzero(np.diff(which, prepend=-1))  # a key stored twice: its first value
            out[which[first]] = values[first]
        return out

    def add(self, hi: np.ndarray, lo: np.ndarray, values: np.ndarray | None = None) -> None:
        """Add keys (values default to 0); a key already present keeps its first value."""
        if not len(hi):
            return
        self.levels.append(KeyIndex(hi, lo, np.zeros(len(hi), np.int64) if values is None else values))
        while len(self.levels) > 1 and 2 * len(self.levels[-1]) >= len(self.levels[-2]):
            newer = self.levels.pop()
            self.levels[-1] = KeyIndex.merged(self.levels[-1], newer)


class ArraySpool:
    """Per-record arrays appended chunk by chunk to files, read back whole (one copy in memory)."""

    def __init__(self, folder: str | Path, dtypes: dict[str, type]) -> None:
        self.dtypes = {name: np.dtype(dtype) for name, dtype in dtypes.items()}
        self.paths = {name: Path(folder) / f"{name}.spool" for name in dtypes}
        self.files = {name: path.open("wb") for name, path in self.paths.items()}

    def append(self, **arrays: np.ndarray) -> None:
        for name, array in arrays.items():
            self.files[name].write(np.ascontiguousarray(array, self.dtypes[name]).tobytes())

    def read(self, name: str) -> np.ndarray:
        """The whole array ``name``; its file is removed."""
        self.files[name].close()
        array = np.fromfile(self.paths[name], self.dtypes[name])
        self.paths[name].unlink()
        return array
