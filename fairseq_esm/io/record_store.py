"""One streaming pass over a FASTA source into an on-disk record store and compact per-record arrays.

For tools that need every record twice (cluster, then write sets) without holding them: the source (a file,
gzip, or a pipe read once) goes through the residue policy chunk by chunk (``io/fasta.py``, the same report)
and every kept record ``i`` is written to ``store.fasta`` as ``>r{i}`` plus one line of its cleaned residues
(MMseqs2 reads it as is, and its output names records by number) and its id to ``ids.txt``. In memory only
arrays remain: the length (4 bytes) and sequence hash (8 bytes) of every record and, when asked, keys of its
id (``io/clusters.id_keys``: 24 bytes, for joining cluster tables). Duplicate ids are found with a
:class:`KeySet` of keys (16 bytes an id) instead of a set of id strings; the policy's counts, examples and
choices are those of ``fasta.iter_chunks``.
"""

from __future__ import annotations

import itertools
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from fairseq_esm.io.fasta import (
    CHUNK_BYTES,
    Chunk,
    CleanChunk,
    FastaReport,
    ResiduePolicy,
    _duplicates,
    _header_ids,
    checked_chunk,
    clean_chunks,
    read_chunks,
    record_starts,
    source_name,
)
from fairseq_esm.io.record_keys import ArraySpool, KeySet, sequence_hashes, string_keys

GAPS = b"-."
KeysOf = Callable[[list[str]], tuple[np.ndarray, ...]]


@dataclass
class RecordScan:
    """What :func:`scan_fasta` keeps of every record the policy wrote, in input order."""

    n: int
    lengths: np.ndarray  # int32 residues
    seq_hashes: np.ndarray  # uint64, of the cleaned residues
    id_keys: tuple[np.ndarray, ...] | None  # the arrays ``keys(ids)`` gives (see scan_fasta), if asked
    report: FastaReport
    store: Path  # >r{i} / residues, one line each
    ids: Path  # one id per line
    mmseqs_fasta: Path  # the store without gap symbols (the store itself unless --keep-gaps)

    def take_id_keys(self) -> list[np.ndarray]:
        """The id key arrays, handed over (this scan keeps no reference)."""
        keys, self.id_keys = list(self.id_keys or ()), None
        return keys

    def ids_of(self, records: list[int]) -> list[str]:
        """The ids of a few records (one read of the id file)."""
        wanted = {r: None for r in sorted(records)}
        with self.ids.open(encoding="utf-8") as lines:
            for number, line in enumerate(itertools.islice(lines, max(wanted, default=-1) + 1)):
                if number in wanted:
                    wanted[number] = line.rstrip("\n")
        return [wanted[r] for r in records]


@dataclass
class StoreChunk:
    """Consecutive records read back from the store: records ``first`` .. ``first + len(ids) - 1``."""

    first: int
    residues: np.ndarray  # uint8, concatenated
    lengths: np.ndarray  # int64
    ids: list[str]

    def part(self, chosen: np.ndarray) -> CleanChunk:
        """The records at positions ``chosen`` (sorted) of this chunk, as the policy's output chunk."""
        keep = np.zeros(len(self.lengths), bool)
        keep[chosen] = True
        return CleanChunk(residues=self.residues[np.repeat(keep, self.lengths)], lengths=self.lengths[chosen],
                          ids=[self.ids[i] for i in chosen.tolist()], report=FastaReport())


def _compact_chunks(path: str, policy: ResiduePolicy, chunk_bytes: int) -> Iterator[Chunk]:
    """:func:`fasta.iter_chunks` with the ids seen so far kept as keys, not strings."""
    seen = KeySet()
    for data, line in read_chunks(str(path), chunk_bytes):
        starts, ends = record_starts(data)
        ids, bad = _header_ids(data, starts, ends)
        hi, lo = string_keys(ids)
        before = {ids[i] for i in np.flatnonzero(seen.get(hi, lo) >= 0).tolist()}
        duplicates = _duplicates(ids, bad, before)
        seen.add(hi, lo)
        yield checked_chunk(Chunk(data, source_name(path), line, starts, ends, ids, duplicates, bad), policy)


def _hashed(part: CleanChunk, keys: KeysOf | None) -> tuple:
    """Worker step after the policy: the sequence hashes (and id keys) of the written records."""
    return part, sequence_hashes(part.residues, part.lengths), keys(part.ids) if keys else ()


def _cleaned(path: str, policy: ResiduePolicy, workers: int, keys: KeysOf | None) -> Iterator[tuple]:
    """The policy and :func:`_hashed` for every chunk, in file order, in ``workers`` processes."""
    return clean_chunks(_compact_chunks(path, policy, CHUNK_BYTES), policy, workers, partial(_hashed, keys=keys))


def _fasta_lines(first: int, text: bytes, lengths: np.ndarray, drop: bytes = b"") -> bytes:
    """``>r{i}`` and sequence lines of consecutive records numbered from ``first``."""
    ends = np.cumsum(lengths).tolist()
    out = []
    for number, (a, b) in enumerate(zip([0] + ends[:-1], ends), start=first):
        seq = text[a:b]
        out.append(b">r%d\n%s\n" % (number, seq.translate(None, drop) if drop else seq))
    return b"".join(out)


def scan_fasta(path: str, policy: ResiduePolicy, workers: int, folder: str | Path,
               keys: KeysOf | None = None, key_dtypes: tuple[type, ...] = ()) -> RecordScan:
    """Read ``path`` once through the policy into ``folder`` (store, ids, arrays); see module doc.

    ``keys`` (a module-level function, run in the workers) turns a chunk's ids into arrays of ``key_dtypes``
    kept per record (``RecordScan.id_keys``)."""
    folder = Path(folder)
    store, ids, mmseqs = folder / "store.fasta", folder / "ids.txt", folder / "mmseqs.fasta"
    key_arrays = {f"key{k}": dtype for k, dtype in enumerate(key_dtypes if keys else ())}
    spool = ArraySpool(folder, {"lengths": np.int32, "hashes": np.uint64, **key_arrays})
    report, n = FastaReport(), 0
    with ExitStack() as files:
        store_out, ids_out = files.enter_context(store.open("wb")), files.enter_context(ids.open("w", encoding="utf-8"))
        mmseqs_out = files.enter_context(mmseqs.open("wb")) if policy.keep_gaps else None
        for part, hashes, id_keys in _cleaned(path, policy, workers, keys):
            report.merge(part.report)
            text = part.residues.tobytes()
            store_out.write(_fasta_lines(n, text, part.lengths))
            if mmseqs_out is not None:
                mmseqs_out.write(_fasta_lines(n, text, part.lengths, GAPS))
            ids_out.write("".join(f"{rid}\n" for rid in part.ids))
            spool.append(lengths=part.lengths, hashes=hashes, **dict(zip(key_arrays, id_keys)))
            n += len(part.ids)
    return RecordScan(n=n, lengths=spool.read("lengths"), seq_hashes=spool.read("hashes"),
                      id_keys=tuple(map(spool.read, key_arrays)) if key_arrays else None, report=report, store=store,
                      ids=ids, mmseqs_fasta=mmseqs if policy.keep_gaps else store)


def read_store(scan: RecordScan, chunk_bytes: int = CHUNK_BYTES) -> Iterator[StoreChunk]:
    """The store's records back in order, about ``chunk_bytes`` of residues at a time, with their ids."""
    first, rest = 0, b""
    with scan.store.open("rb") as store, scan.ids.open(encoding="utf-8") as ids:
        while True:
            block = store.read(chunk_bytes)
            data = rest + block
            cut = data.rfind(b"\n>") + 1 if block else len(data)
            data, rest = data[:cut], data[cut:]
            seqs = data.split(b"\n")[1::2]
            if seqs:
                names = [line.rstrip("\n") for line in itertools.islice(ids, len(seqs))]
                lengths = np.fromiter(map(len, seqs), np.int64, len(seqs))
                yield StoreChunk(first, np.frombuffer(b"".join(seqs), np.uint8), lengths, names)
                first += len(seqs)
            if not block:
                return
