"""Cheap checks on binarized data before training on it: refuse what would crash late or train on garbage.

A fairseq mmap split is ``{split}.idx`` (magic, version, dtype code, record count, int32 sizes, int64 byte
offsets) plus ``{split}.bin`` (the tokens). Checked at load, in O(index) time and without reading the
``.bin`` (the index is memory-mapped and checked in chunks, so the checks hold no copy of it): the index parses
and is complete, the records lie back to back (each starts where the one before
ends, the first at byte 0) and the ``.bin`` ends where the last record does. ``dict.txt`` is read by one loader,
:func:`load_dictionary`, and must list exactly an ESM data dictionary's symbols; a missing or foreign one is one
``error:`` line naming the data directory. Token ids are checked twice: a bounded scan at
load (all of a ``.bin`` up to ``SCAN_TOKENS`` tokens, its head and tail beyond that) fails early, and
``CheckedRecords`` checks every record when it is read, so no out-of-range id ever reaches the model.
"""

from __future__ import annotations

import os
import re
import struct

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset, Dictionary, FairseqDataset

from fairseq_esm.errors import InputError
from fairseq_esm.modules.alphabet import DICT_DIR

MMAP_MAGIC = b"MMIDIDX\x00\x00"
HEADER = struct.Struct("<9sQBQ")  # magic, version, dtype code, record count
INTEGER_DTYPES = {
    1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 8: np.uint16, 9: np.uint32, 10: np.uint64
}
#: dictionaries data may be binarized with: the residues and gaps have the same ids in both
DATA_DICTIONARIES = ("esm1b.txt", "esm1.txt")
#: tokens read by the load-time scan: the whole .bin up to this, else half from each end
SCAN_TOKENS = 1 << 24
#: index records / tokens checked per vectorised step: bounds the checks' extra memory at UniRef scale
CHECK_CHUNK = 1 << 18
REBINARIZE = f"rebinarize with fairseq-esm-binarize or fairseq-preprocess --srcdict {DICT_DIR / 'esm1b.txt'}"


class DataIntegrityError(InputError):
    """Binarized data, index or dictionary that cannot be trained on as it is."""


class MissingDataFile(DataIntegrityError, FileNotFoundError):
    """A data directory, or its ``dict.txt``, that is not there (still caught as ``FileNotFoundError``)."""


def file_symbols(name: str) -> list[str]:
    """The symbols a ``dicts/`` file lists (what fairseq-preprocess ``--srcdict`` copies to ``dict.txt``)."""
    dictionary = Dictionary.load(str(DICT_DIR / name))
    return dictionary.symbols[dictionary.nspecial :]


def check_dictionary(stored: Dictionary, path: str, data_dir: str | None = None) -> None:
    """``dict.txt`` must list the symbols of ``dicts/esm1b.txt`` (or ``esm1.txt``: same residue ids) in order."""
    have = stored.symbols[stored.nspecial :]
    if any(have == file_symbols(name) for name in DATA_DICTIONARIES):
        return
    want = file_symbols(DATA_DICTIONARIES[0])
    line = next((i for i, (a, b) in enumerate(zip(have, want)) if a != b), min(len(have), len(want)))
    found = repr(have[line]) if line < len(have) else "end of file"
    needed = repr(want[line]) if line < len(want) else "end of file"
    raise DataIntegrityError(
        f"{path} lists {len(have)} symbols, the ESM data dictionary {DICT_DIR / DATA_DICTIONARIES[0]} {len(want)}; "
        f"line {line + 1} is {found}, expected {needed}: "
        f"{f'{data_dir} was binarized with another dictionary; ' if data_dir else ''}{REBINARIZE}"
    )


def unreadable_dictionary_line(path: str) -> str:
    """Why fairseq cannot read ``path`` as a dictionary: not UTF-8, or its first line that is not ``SYMBOL COUNT``."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "it is not UTF-8 text"
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.rstrip().removesuffix(" #fairseq:overwrite").rsplit(" ", 1)
        if len(fields) != 2 or not re.fullmatch(r"-?\d+", fields[1]):
            return f"line {number} is {line[:40]!r}"
    return "fairseq refuses it"


def load_dictionary(path: str | os.PathLike, data_dir: str | None = None) -> Dictionary:
    """The one loader of dictionary files (``dict.txt``, ``--srcdict``): fairseq's ``Dictionary``, refused with
    one error line unless it lists an ESM data dictionary's symbols; ``data_dir`` is named when given."""
    path = str(path)
    owner = f"{data_dir} is not an ESM data directory" if data_dir else "not an ESM data dictionary"
    if not os.path.exists(path):
        if data_dir:
            raise MissingDataFile(f"{data_dir} has no dict.txt: not a data directory of fairseq-preprocess or "
                                  f"fairseq-esm-binarize; check the path, or {REBINARIZE}")
        raise MissingDataFile(f"{path}: no such dictionary file — check the path")
    try:
        stored = Dictionary.load(path)
    except OSError:
        raise  # a directory, no permission: the OS names the file
    except Exception:  # fairseq: ValueError (not SYMBOL COUNT), a bare Exception (not UTF-8), RuntimeError (duplicate)
        raise DataIntegrityError(
            f"{path} is not a fairseq dictionary ({unreadable_dictionary_line(path)}): {owner}; {REBINARIZE}"
        ) from None
    check_dictionary(stored, path, data_dir)
    return stored


def load_data_dictionary(data_dir: str | os.PathLike) -> Dictionary:
    """``data_dir/dict.txt``, refused unless it lists an ESM data dictionary's symbols (``--srcdict``)."""
    data_dir = str(data_dir)
    if not os.path.isdir(data_dir):
        what = "is not a directory" if os.path.exists(data_dir) else "no such data directory"
        raise MissingDataFile(f"{data_dir}: {what} — check the path (a fairseq-preprocess'd data-bin)")
    return load_dictionary(os.path.join(data_dir, "dict.txt"), data_dir)


def read_index(prefix: str) -> tuple[np.dtype, np.ndarray, np.ndarray]:
    """Parse ``prefix.idx`` (fairseq's mmap index) → (token dtype, int64 sizes, int64 byte offsets), copied
    into memory (a snapshot: later writes to the file do not show); :func:`map_index` maps them instead."""
    dtype, sizes, offsets = map_index(prefix)
    return dtype, np.array(sizes, dtype=np.int64), np.array(offsets, dtype=np.int64)


def map_index(prefix: str) -> tuple[np.dtype, np.ndarray, np.ndarray]:
    """Parse ``prefix.idx`` → (token dtype, int32 sizes, int64 byte offsets), both read-only memory-mapped views
    of the file (nothing is copied: at UniRef scale the index is gigabytes, shared by a node's ranks)."""
    path = prefix + ".idx"
    with open(path, "rb") as f:
        head = f.read(HEADER.size)
    if len(head) < HEADER.size:
        raise DataIntegrityError(
            f"{path} has {len(head)} bytes, less than a fairseq index header: truncated; {REBINARIZE}"
        )
    magic, version, code, count = HEADER.unpack(head)
    if magic != MMAP_MAGIC or version != 1:
        raise DataIntegrityError(
            f"{path} is not a fairseq mmap index (magic {magic!r}, version {version}); protein_mlm reads "
            f"fairseq-preprocess --dataset-impl mmap (the default): {REBINARIZE}"
        )
    if code not in INTEGER_DTYPES:
        raise DataIntegrityError(f"{path}: dtype code {code} is not an integer token type; {REBINARIZE}")
    expected, actual = HEADER.size + 12 * count, os.path.getsize(path)
    if actual != expected:
        raise DataIntegrityError(
            f"{path} has {actual:,} bytes, its header announces {count:,} records ({expected:,} bytes): "
            f"{'truncated' if actual < expected else 'trailing data'}; {REBINARIZE}"
        )
    if count == 0:
        return np.dtype(INTEGER_DTYPES[code]), np.zeros(0, np.int32), np.zeros(0, np.int64)
    sizes = np.memmap(path, dtype="<i4", mode="r", offset=HEADER.size, shape=(count,))
    offsets = np.memmap(path, dtype="<i8", mode="r", offset=HEADER.size + 4 * count, shape=(count,))
    return np.dtype(INTEGER_DTYPES[code]), sizes, offsets


def check_split_files(prefix: str) -> tuple[np.dtype, np.ndarray, np.ndarray] | None:
    """Index parsed, records back to back, the last ending where the ``.bin`` does; ``None`` when neither
    file exists. O(records), vectorised over chunks of the memory-mapped index (bounded extra memory); the
    ``.bin`` is not read. Returns ``map_index``'s views."""
    idx, bin_path = prefix + ".idx", prefix + ".bin"
    if not os.path.exists(idx) and not os.path.exists(bin_path):
        return None
    if not (os.path.exists(idx) and os.path.exists(bin_path)):
        present, absent = (idx, bin_path) if os.path.exists(idx) else (bin_path, idx)
        raise DataIntegrityError(f"{present} exists but {absent} does not; {REBINARIZE}")
    dtype, sizes, offsets = map_index(prefix)
    if len(sizes) == 0:
        raise DataIntegrityError(f"{idx} holds no records; {REBINARIZE}")
    for start in range(0, len(sizes), CHECK_CHUNK):
        empty = np.flatnonzero(sizes[start : start + CHECK_CHUNK] < 1)
        if len(empty):
            first = start + int(empty[0])
            raise DataIntegrityError(f"{idx}: record {first} has size {sizes[first]}; {REBINARIZE}")
    # fairseq-preprocess writes records back to back: each starts where the one before ends, the first at byte 0
    end_before = 0  # where the record before the chunk ends
    for start in range(0, len(sizes), CHECK_CHUNK):
        chunk = slice(start, start + CHECK_CHUNK)
        ends = offsets[chunk] + sizes[chunk].astype(np.int64) * dtype.itemsize
        starts = np.concatenate(([end_before], ends[:-1]))
        moved = np.flatnonzero(offsets[chunk] != starts)
        if len(moved):
            first = start + int(moved[0])
            where = f", but record {first - 1} ends at byte {starts[moved[0]]:,}" if first else ", not at byte 0"
            raise DataIntegrityError(
                f"{idx}: record {first} starts at byte {offsets[first]:,}{where}: the index is corrupt; {REBINARIZE}"
            )
        end_before = int(ends[-1])
    data_bytes, needed = os.path.getsize(bin_path), end_before
    if data_bytes != needed:
        state = "truncated" if data_bytes < needed else "longer than its index: the two files come from different runs"
        raise DataIntegrityError(
            f"{bin_path} has {data_bytes:,} bytes, {idx} describes {len(sizes):,} records ending at byte "
            f"{needed:,}: {state}; {REBINARIZE}"
        )
    return dtype, sizes, offsets


def scan_token_range(prefix: str, dtype: np.dtype, offsets: np.ndarray, vocab_size: int) -> None:
    """Refuse token ids ``>= vocab_size`` in the whole ``.bin`` (up to ``SCAN_TOKENS``) or its head and tail,
    read in chunks of ``CHECK_CHUNK`` tokens."""
    tokens = np.memmap(prefix + ".bin", mode="r", dtype=dtype)
    half = SCAN_TOKENS // 2
    ranges = [(0, len(tokens))] if len(tokens) <= SCAN_TOKENS else [(0, half), (len(tokens) - half, len(tokens))]
    for first, last in ranges:
        for start in range(first, last, CHECK_CHUNK):
            chunk = tokens[start : min(start + CHECK_CHUNK, last)]
            if chunk.max() < vocab_size:
                continue
            bad = int(np.flatnonzero(chunk >= vocab_size)[0])
            position = start + bad
            record = int(np.searchsorted(offsets, position * dtype.itemsize, side="right")) - 1
            raise DataIntegrityError(
                f"{prefix}.bin record {record} holds token id {int(chunk[bad])}, but dict.txt defines "
                f"{vocab_size} ids: the data was binarized with another dictionary; {REBINARIZE}"
            )


class CheckedRecords(BaseWrapperDataset):
    """Stored records, each checked when read: residue ids in ``unk..len(dict)-1``, one trailing ``</s>``."""

    def __init__(self, dataset: FairseqDataset, dictionary: Dictionary, name: str) -> None:
        super().__init__(dataset)
        self.low, self.high, self.eos = dictionary.unk(), len(dictionary), dictionary.eos()
        self.name = name

    def __getitem__(self, index: int) -> torch.Tensor:
        record = self.dataset[index]
        body = record[:-1]
        ends_with_eos = len(record) > 0 and record[-1] == self.eos
        if not ends_with_eos or (len(body) > 0 and (body.min() < self.low or body.max() >= self.high)):
            raise DataIntegrityError(
                f"{self.name} record {index} is not residue ids {self.low}..{self.high - 1} followed by </s> "
                f"({self.eos}): {record[:12].tolist()}...; {REBINARIZE}"
            )
        return record
