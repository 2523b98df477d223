"""FASTA straight to fairseq's mmap dataset (``.bin``/``.idx``) plus an ``.ids`` sidecar.

Writes, byte for byte, what ``fairseq-esm-fasta-to-text`` followed by ``fairseq-preprocess
--only-source --srcdict fairseq_esm/dicts/esm1b.txt --dataset-impl mmap`` writes: each record's
residue indices then ``</s>`` (2), as ``best_fitting_int_dtype(len(dict))`` (uint16 for ESM's 33
symbols); the index is fairseq's ``MMapIndexedDataset.Index`` (magic, version 1, dtype code,
count, int32 sizes, int64 byte pointers). The residues come from :func:`fasta.clean_fasta`, so
the policy and its report are the same as the text path's. Vectorised (one byte->token lookup per
chunk), streaming, and optionally spread over worker processes with the output order preserved.
"""

from __future__ import annotations

import os
import struct
from functools import partial
from pathlib import Path

import numpy as np
from fairseq.data import Dictionary
from fairseq.data.indexed_dataset import MMapIndexedDataset, best_fitting_int_dtype

from fairseq_esm.data.integrity import (  # load_dictionary: the one dictionary loader, --srcdict included
    MissingDataFile,
    check_split_files,
    load_data_dictionary,
    load_dictionary,
)
from fairseq_esm.io.fasta import CHUNK_BYTES, CleanChunk, FastaReport, ResiduePolicy, clean_fasta
from fairseq_esm.modules.alphabet import DICT_DIR

MMAP_MAGIC = b"MMIDIDX\x00\x00"
# fairseq.data.indexed_dataset._code_to_dtype, for the dtypes best_fitting_int_dtype returns
DTYPE_CODES = {np.uint16: 8, np.uint32: 9, np.int64: 5}


def token_table(dictionary: Dictionary) -> np.ndarray:
    """256-entry table from a cleaned residue byte to its index (``<unk>`` for non-symbols)."""
    dtype = best_fitting_int_dtype(len(dictionary))
    table = np.full(256, dictionary.unk(), dtype=dtype)
    for index in range(dictionary.nspecial, len(dictionary)):
        symbol = dictionary[index]
        if len(symbol) == 1 and symbol.isascii():
            table[ord(symbol)] = index
    return table


def encode(part: CleanChunk, table: np.ndarray, eos: int) -> tuple[np.ndarray, np.ndarray, list[str], FastaReport]:
    """A chunk's records as one token array, each followed by ``eos``; sizes, ids and report passed on."""
    tokens = np.insert(table[part.residues], np.cumsum(part.lengths), np.array(eos, table.dtype))
    return tokens, part.lengths + 1, part.ids, part.report


def write_index(path: str, sizes: np.ndarray, dtype: type) -> None:
    """fairseq's mmap index for records of ``sizes`` tokens of ``dtype``."""
    pointers = np.zeros(len(sizes), np.int64)
    np.cumsum(sizes[:-1] * np.dtype(dtype).itemsize, out=pointers[1:])
    with open(path, "wb") as out:
        out.write(MMAP_MAGIC + struct.pack("<Q", 1) + struct.pack("<B", DTYPE_CODES[dtype]))
        out.write(struct.pack("<Q", len(sizes)))
        out.write(sizes.astype(np.int32).tobytes(order="C"))
        out.write(pointers.tobytes(order="C"))


def _replace_all(prefix: str, suffixes: tuple[str, ...], ok: bool) -> None:
    """Move the finished ``.tmp`` files into place, or delete them after a failure."""
    for suffix in suffixes:
        tmp = f"{prefix}{suffix}.tmp"
        if ok:
            os.replace(tmp, f"{prefix}{suffix}")
        elif os.path.exists(tmp):
            os.remove(tmp)


def binarize_fasta(
    fasta: str | Path,
    out_prefix: str | Path,
    dictionary: Dictionary,
    policy: ResiduePolicy = ResiduePolicy(),
    workers: int = 1,
    chunk_bytes: int = CHUNK_BYTES,
) -> FastaReport:
    """Write ``out_prefix.{bin,idx,ids}`` from a FASTA file and return its report.

    Outputs appear only when the whole file was read: a truncated gzip leaves nothing behind.
    """
    prefix, table, eos = str(out_prefix), token_table(dictionary), dictionary.eos()
    report, sizes, ok = FastaReport(sources=[str(fasta)]), [], False
    try:
        with open(f"{prefix}.bin.tmp", "wb") as bin_out, open(f"{prefix}.ids.tmp", "w", encoding="utf-8") as ids_out:
            encoded = clean_fasta(str(fasta), policy, workers, chunk_bytes, partial(encode, table=table, eos=eos))
            for tokens, part_sizes, ids, part_report in encoded:
                bin_out.write(tokens.tobytes(order="C"))
                ids_out.write("".join(f"{rid}\n" for rid in ids))
                sizes.append(part_sizes)
                report.merge(part_report)
        all_sizes = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
        write_index(f"{prefix}.idx.tmp", all_sizes, table.dtype.type)
        ok = True
    finally:
        _replace_all(prefix, (".bin", ".idx", ".ids"), ok)
    return report


def write_data_dictionary(out_dir: str | Path) -> Path:
    """Write ``out_dir/dict.txt``: the ESM-1b data dictionary, as ``fairseq-preprocess --srcdict`` copies it."""
    path = Path(out_dir) / "dict.txt"
    load_dictionary(DICT_DIR / "esm1b.txt").save(str(path))
    return path


def stored_sequences(data_dir: str | Path, split: str) -> list[str]:
    """The residue strings of a binarized split, in record order (``<eos>`` dropped); dictionary and index checked."""
    dictionary = load_data_dictionary(data_dir)
    prefix = str(Path(data_dir) / split)
    if check_split_files(prefix) is None:
        raise MissingDataFile(f"{data_dir} has no split {split!r} ({prefix}.bin / .idx)")
    tokens = MMapIndexedDataset(prefix)
    return ["".join(dictionary[int(t)] for t in tokens[i][:-1]) for i in range(len(tokens))]
