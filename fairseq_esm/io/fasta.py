"""Streaming FASTA reading and the one residue policy every tool in this package applies.

Both binarization paths (``fairseq-esm-fasta-to-text`` + ``fairseq-preprocess`` and
``fairseq-esm-binarize``) and any later extraction/scoring tool read proteins through
:func:`clean_fasta`, so a FASTA file always becomes the same residues. Nothing is dropped
without being counted in the :class:`FastaReport`.

=====================================  ==============================  =========================
input                                  becomes                         counted as
=====================================  ==============================  =========================
gzip (by magic bytes), UTF-8 BOM, CRLF read transparently              --
lowercase letter                       uppercase                       ``lowercase_to_upper``
space/tab/digit inside a sequence line removed                         ``whitespace_removed``,
                                                                       ``digit_removed``
``*`` at the end of a record           removed                         ``terminal_stop_removed``
``*`` anywhere else                    ``X``                           ``internal_stop_to_X``
gap ``-`` ``.``                        removed (``--keep-gaps``: kept) ``gap_removed``/``gap_kept``
``B Z U O X``                          kept, their own tokens          ``ambiguous_kept``
other letter (``J``)                   ``X``                           ``unknown_letter_to_X``
any other character (``é``, ``;``,     record skipped (file:line)      ``invalid_character``
``>`` inside a line, control chars)
header but no residues                 record skipped                  ``empty``
more than ``--max-length`` residues    record skipped                  ``too_long``
header with no id / not UTF-8          record skipped                  ``missing_id``,
                                                                       ``undecodable_header``
id seen before in the file             kept (``--duplicates skip``:    ``duplicate_ids``
                                       skipped; ``error``: stop)       (``duplicate_id``)
=====================================  ==============================  =========================

A source is opened exactly once (:func:`open_fasta`): a file, ``-`` (standard input), ``/dev/stdin``, a named
FIFO or a process substitution (``<(zcat x.gz)``), plain or gzip alike; gzip is sniffed from the first bytes
of that one stream. The id is the first whitespace-delimited token of the header. Whole-file problems (empty file,
sequence data before any ``>`` header, FASTQ, GenBank, bzip2/xz/zstd/zip or other binary data
(a start that is not UTF-8 text), CR-only line endings, truncated gzip) raise
:class:`FastaFormatError`, one line naming the file and line. Duplicate detection keeps one set
of ids per file in memory; everything else streams in chunks cut at record boundaries.
"""

from __future__ import annotations

import argparse
import codecs
import gzip
import io
import os
import stat
import sys
import time
import zlib
from collections import Counter, deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import Pool
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np

from fairseq_esm.errors import InputError
from fairseq_esm.io.residues import GAP_SYMBOLS, RESIDUE_LETTERS

STDIN = "-"  # the FASTA path that means standard input
CHUNK_BYTES = 1 << 20  # fits in cache: faster than bigger chunks, and bounds memory
MAX_EXAMPLES = 5
AMBIGUOUS = "BZUOX"
_COMPRESSED = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd", b"PK\x03\x04": "zip"}
_WHITESPACE = {" ": "space", "\t": "tab", "\v": "vtab", "\f": "formfeed"}
# byte classes: the keepable ones first, so ``cls <= _GAP`` selects residues
_PLAIN, _MAPPED, _STAR, _GAP, _REMOVED, _LINE_END, _INVALID = range(7)


class FastaFormatError(InputError):
    """A problem with a whole file (or a fatal one at a line), printed as one line by the CLIs."""

    def __init__(self, path: str, line: int | None, what: str, todo: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {what} — {todo}")


@dataclass(frozen=True)
class ResiduePolicy:
    """The user's choices within the residue policy (everything else is fixed, see module doc)."""

    keep_gaps: bool = False
    max_length: int | None = None
    duplicates: str = "keep"  # keep | skip | error


@dataclass
class FastaReport:
    """What happened to every record and every residue that was not copied as-is."""

    sources: list[str] = field(default_factory=list)
    records_read: int = 0
    records_written: int = 0
    residues_written: int = 0
    mapped: dict[str, Counter] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)
    duplicate_ids: int = 0
    duplicate_examples: list[str] = field(default_factory=list)

    def count(self, kind: str, key: str, n: int) -> None:
        """Add ``n`` residues of ``key`` to the ``kind`` of change (lowercase, gap, ...)."""
        if n:
            self.mapped.setdefault(kind, Counter())[key] += int(n)

    def skip(self, reason: str, example: str) -> None:
        """Count one skipped record and keep the first few as ``file:line id``."""
        self.skipped[reason] += 1
        examples = self.skipped_examples.setdefault(reason, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(example)

    def merge(self, other: FastaReport) -> FastaReport:
        """Add another worker's (or file's) report into this one; returns self."""
        self.sources += [s for s in other.sources if s not in self.sources]
        self.records_read += other.records_read
        self.records_written += other.records_written
        self.residues_written += other.residues_written
        for kind, counts in other.mapped.items():
            self.mapped.setdefault(kind, Counter()).update(counts)
        self.skipped.update(other.skipped)
        for reason, examples in other.skipped_examples.items():
            mine = self.skipped_examples.setdefault(reason, [])
            mine += examples[: MAX_EXAMPLES - len(mine)]
        self.duplicate_ids += other.duplicate_ids
        self.duplicate_examples += other.duplicate_examples[: MAX_EXAMPLES - len(self.duplicate_examples)]
        return self

    def to_dict(self) -> dict:
        """Plain JSON-ready dict."""
        return {
            "sources": list(self.sources),
            "records_read": self.records_read,
            "records_written": self.records_written,
            "residues_written": self.residues_written,
            "mapped": {kind: dict(sorted(c.items())) for kind, c in sorted(self.mapped.items())},
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_examples": {k: list(v) for k, v in sorted(self.skipped_examples.items())},
            "duplicate_ids": self.duplicate_ids,
            "duplicate_examples": list(self.duplicate_examples),
        }

    def format(self) -> str:
        """Human-readable summary, one fact per line."""
        lines = [
            f"input: {', '.join(self.sources)}",
            f"records read {self.records_read:,}, written {self.records_written:,}, "
            f"skipped {sum(self.skipped.values()):,}; residues written {self.residues_written:,}",
        ]
        for kind, counts in sorted(self.mapped.items()):
            detail = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))
            lines.append(f"  {kind}: {sum(counts.values()):,} ({detail})")
        for reason, n in sorted(self.skipped.items()):
            lines.append(f"  skipped {reason}: {n:,}, e.g. {'; '.join(self.skipped_examples.get(reason, []))}")
        if self.duplicate_ids:
            lines.append(f"  duplicate ids: {self.duplicate_ids:,}, e.g. {'; '.join(self.duplicate_examples)}")
        return "\n".join(lines)


@dataclass
class Chunk:
    """Whole records cut from a FASTA file; header positions and ids found by the reader."""

    data: bytes
    source: str
    first_line: int
    starts: np.ndarray  # offset of each record's '>'
    header_ends: np.ndarray  # offset of the newline ending each header
    ids: list[str]
    duplicates: list[int]  # records whose id appeared earlier in the file
    bad_ids: dict[int, str]  # records whose header gives no usable id -> skip reason


@dataclass
class CleanChunk:
    """The residues of a chunk's written records, after the policy, concatenated."""

    residues: np.ndarray  # uint8 ASCII letters (and gaps with keep_gaps)
    lengths: np.ndarray  # int64 residues per written record
    ids: list[str]
    report: FastaReport


def _byte_tables(keep_gaps: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-byte class and cleaned byte (lowercase -> upper, unknown letters and ``*`` -> X)."""
    cls = np.full(256, _INVALID, np.uint8)
    clean = np.arange(256, dtype=np.uint8)
    for ch in map(chr, range(ord("A"), ord("Z") + 1)):
        known = ch in RESIDUE_LETTERS
        cls[ord(ch)] = _PLAIN if known and ch not in AMBIGUOUS else _MAPPED
        cls[ord(ch.lower())] = _MAPPED
        clean[ord(ch)] = clean[ord(ch.lower())] = ord(ch if known else "X")
    cls[ord("*")], clean[ord("*")] = _STAR, ord("X")
    for ch in GAP_SYMBOLS:
        cls[ord(ch)] = _GAP if keep_gaps else _REMOVED
    for ch in list(_WHITESPACE) + [str(d) for d in range(10)]:
        cls[ord(ch)] = _REMOVED
    cls[ord("\n")] = cls[ord("\r")] = _LINE_END
    return cls, clean


def _count_changes(report: FastaReport, hist: np.ndarray, keep_gaps: bool) -> None:
    """Turn a histogram of the non-plain bytes of written records into report counts."""
    for byte in np.flatnonzero(hist):
        ch, n = chr(byte), int(hist[byte])
        up = ch.upper()
        if ch.isascii() and ch.isalpha():
            if ch.islower():
                report.count("lowercase_to_upper", up, n)
            if up in AMBIGUOUS:
                report.count("ambiguous_kept", up, n)
            elif up not in RESIDUE_LETTERS:
                report.count("unknown_letter_to_X", up, n)
        elif ch in GAP_SYMBOLS:
            report.count("gap_kept" if keep_gaps else "gap_removed", ch, n)
        elif ch in _WHITESPACE:
            report.count("whitespace_removed", _WHITESPACE[ch], n)
        elif ch.isdigit():
            report.count("digit_removed", ch, n)


def record_starts(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Offsets of every record's ``>`` and of the newline ending its header (data ends in newline)."""
    buf = np.frombuffer(data, np.uint8)
    newlines = np.flatnonzero(buf == ord("\n"))
    after = newlines[:-1] + 1
    starts = np.concatenate(([0], after[buf[after] == ord(">")])) if len(buf) else np.zeros(0, np.int64)
    return starts, newlines[np.searchsorted(newlines, starts)]


def _line_of(chunk: Chunk, offset: int) -> int:
    """1-based line number of a byte of the chunk in its file."""
    return chunk.first_line + chunk.data.count(b"\n", 0, offset)


def _example(chunk: Chunk, record: int) -> str:
    """``file:line id`` of a record's header, for the report."""
    return f"{chunk.source}:{_line_of(chunk, int(chunk.starts[record]))} {chunk.ids[record]}"


def _invalid_records(chunk: Chunk, bad: np.ndarray) -> dict[int, str]:
    """First offending character of every record that has one, as a report example."""
    positions = np.flatnonzero(bad)
    records = np.searchsorted(chunk.starts, positions, side="right") - 1
    first = np.unique(records, return_index=True)
    out = {}
    for rec, idx in zip(*first):
        pos = int(positions[idx])
        ch = chunk.data[pos : pos + 4].decode("utf-8", "replace")[0]
        out[int(rec)] = f"{chunk.source}:{_line_of(chunk, pos)} {chunk.ids[rec]} ({ch!r}, U+{ord(ch):04X})"
    return out


def _sequence_mask(chunk: Chunk, n_bytes: int) -> np.ndarray:
    """True for every byte outside the header lines."""
    runs = np.empty(2 * len(chunk.starts), np.int64)
    runs[0::2] = chunk.header_ends - chunk.starts
    runs[1::2] = np.append(chunk.starts[1:], n_bytes) - chunk.header_ends
    return np.repeat(np.tile(np.array([False, True]), len(chunk.starts)), runs)


def _skip_reasons(chunk: Chunk, policy: ResiduePolicy, invalid: np.ndarray, n_res: np.ndarray) -> dict:
    """Record index -> (reason, example) for every record the policy skips; the first reason wins."""
    reasons = {i: ("invalid_character", ex) for i, ex in _invalid_records(chunk, invalid).items()}
    dups = chunk.duplicates if policy.duplicates == "skip" else []
    too_long = np.flatnonzero(n_res > policy.max_length) if policy.max_length is not None else []
    for records, reason in [(list(chunk.bad_ids), None), (np.flatnonzero(n_res == 0), "empty"),
                            (too_long, "too_long"), (dups, "duplicate_id")]:
        for i in map(int, records):
            reasons.setdefault(i, (reason or chunk.bad_ids[i], _example(chunk, i)))
    return reasons


def clean_chunk(chunk: Chunk, policy: ResiduePolicy) -> CleanChunk:
    """Apply the residue policy to a chunk: vectorised over all its bytes, no per-residue Python."""
    cls_table, clean_table = _byte_tables(policy.keep_gaps)
    buf = np.frombuffer(chunk.data, np.uint8)
    n_rec = len(chunk.starts)
    seq = _sequence_mask(chunk, len(buf))
    cls = cls_table[buf]
    keep = (cls <= _GAP) & seq
    raw = buf[keep]
    lengths = np.add.reduceat(keep, chunk.starts, dtype=np.int64) if n_rec else np.zeros(0, np.int64)
    ends = np.cumsum(lengths)
    terminal = (lengths > 0) & (raw[np.maximum(ends - 1, 0)] == ord("*")) if len(raw) else lengths > 0
    n_res = lengths - terminal

    report = FastaReport(sources=[chunk.source], records_read=n_rec, duplicate_ids=len(chunk.duplicates),
                         duplicate_examples=[_example(chunk, i) for i in chunk.duplicates[:MAX_EXAMPLES]])
    special = (cls >= _MAPPED) & (cls != _LINE_END) & seq
    ok = np.ones(n_rec, bool)
    for i, (reason, example) in sorted(_skip_reasons(chunk, policy, (cls == _INVALID) & seq, n_res).items()):
        ok[i] = False
        report.skip(reason, example)
        special[chunk.starts[i] : (chunk.starts[i + 1] if i + 1 < n_rec else len(buf))] = False
    hist = np.bincount(buf[special], minlength=256)
    n_terminal = int((terminal & ok).sum())
    hist[ord("*")] -= n_terminal
    report.count("terminal_stop_removed", "*", n_terminal)
    report.count("internal_stop_to_X", "*", int(hist[ord("*")]))
    _count_changes(report, hist, policy.keep_gaps)

    if not ok.all() or terminal.any():
        mask = np.repeat(ok, lengths)
        mask[ends[terminal] - 1] = False
        raw = raw[mask]
    if hist[clean_table != np.arange(256)].any():
        raw = clean_table[raw]
    ids = chunk.ids if ok.all() else [chunk.ids[i] for i in np.flatnonzero(ok)]
    report.records_written, report.residues_written = len(ids), len(raw)
    return CleanChunk(residues=raw, lengths=n_res[ok], ids=ids, report=report)


class _Prefixed(io.RawIOBase):
    """A byte stream whose first bytes were already read (to sniff the format): those bytes, then the rest."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        super().__init__()
        self._head, self._rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n], self._head = self._head[:n], self._head[n:]
            return n
        return self._rest.readinto(buffer)


def source_name(path: str) -> str:
    """How a FASTA source is named in reports and errors (``-`` is standard input)."""
    return "<stdin>" if str(path) == STDIN else str(path)


def _read_once_key(path: str) -> tuple | None:
    """An identity for a source that can be read only once (standard input, a pipe or FIFO), else None."""
    if path == STDIN:
        return (STDIN,)
    try:
        info = os.stat(path)
    except OSError:
        return None  # open() says what is wrong
    if stat.S_ISFIFO(info.st_mode) or stat.S_ISSOCK(info.st_mode):  # (its times change as it is written)
        return (os.path.realpath(path), info.st_dev, info.st_ino)
    return None


def reads_once(path: str) -> bool:
    """Whether ``path`` is standard input, a pipe or a FIFO: a second open would not see the data again."""
    return _read_once_key(str(path)) is not None


_READ_SOURCES: set[tuple] = set()  # pipes and FIFOs this process has opened: a second open may find them drained


def _read_again(path: str) -> FastaFormatError:
    return FastaFormatError(source_name(path), None, "a pipe, FIFO or standard input can be read only once, and "
                            "this step reads its input again", "save the FASTA to a file and pass that")


def _open_seen_fifo(path: str, wait: float = 1.0) -> BinaryIO:
    """A FIFO this process read before, opened without blocking: if no writer appears within ``wait`` seconds
    it is the drained input read again (an error, not a wait for a writer that is gone); data or a writer
    means a new FIFO on a reused inode, read as usual."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                first = os.read(fd, 1)
            except BlockingIOError:  # a writer holds it open and has not written yet
                first = None
            if first != b"" or time.monotonic() > deadline:
                break
            time.sleep(0.02)  # no writer yet: one that was waiting for a reader is waking up
    except BaseException:
        os.close(fd)
        raise
    if first == b"":
        os.close(fd)
        raise _read_again(path)
    os.set_blocking(fd, True)
    raw = os.fdopen(fd, "rb")
    return io.BufferedReader(_Prefixed(first, raw)) if first else raw


@contextmanager
def open_fasta(path: str) -> Iterator[BinaryIO]:
    """The bytes of a FASTA source, plain or gzip (recognised by its magic bytes, not its name), opened once:
    a file, ``-`` (standard input), ``/dev/stdin``, a named FIFO or a process substitution (``<(zcat x.gz)``).

    The first two bytes are read from the one open stream and put back in front of the rest, so nothing is
    read twice. A pipe or FIFO this process opened before that now yields nothing (a tool that reads its input
    twice) is an error that says to save the data to a file, instead of an 'empty file' or a wait for a writer
    that is gone. One that yields data again is read: a new FIFO at the same path can reuse the old one's inode.
    """
    path = str(path)
    key = _read_once_key(path)
    seen = key is not None and key in _READ_SOURCES
    if path == STDIN:
        source = open(0, "rb", closefd=False)
    else:
        source = _open_seen_fifo(path) if seen else open(path, "rb")
    with source as raw:
        head = raw.read(2)  # a buffered read: up to 2 bytes even from a pipe that delivers them one at a time
        if seen and not head:
            raise _read_again(path)
        if key is not None:
            _READ_SOURCES.add(key)
        stream = io.BufferedReader(_Prefixed(head, raw))
        if head == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:  # reads forward only: fine on a pipe
                yield unzipped
        else:
            yield stream


def _binary_kind(head: bytes) -> str | None:
    """Why the start of a file is not text (other compressors by magic, NUL bytes, mostly non-UTF-8), or None."""
    for magic, name in _COMPRESSED.items():
        if head.startswith(magic):
            return f"{name}-compressed data (only gzip is read)"
    undecodable = codecs.getincrementaldecoder("utf-8")("replace").decode(head).count("\ufffd")
    return "binary data" if b"\x00" in head or undecodable > max(8, len(head) // 100) else None


def _check_start(path: str, data: bytes) -> tuple[bytes, int]:
    """Reject files that are not FASTA; return the data from its first header and that line number."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    body = data.lstrip()
    line = 1 + data[: len(data) - len(body)].count(b"\n")
    binary = _binary_kind(data[: 1 << 16])
    if binary:
        raise FastaFormatError(path, None, f"{binary}, not FASTA text", "pass a FASTA file (plain or gzip)")
    if not body:
        raise FastaFormatError(path, None, "empty file, no records", "check the path or the step that wrote it")
    if b"\r" in data[: 1 << 16] and b"\n" not in data[: 1 << 16]:
        raise FastaFormatError(path, None, "classic Mac (CR-only) line endings", "convert them: tr '\\r' '\\n'")
    if not body.startswith(b">"):
        kind = "looks like FASTQ" if body[:1] == b"@" else "looks like GenBank" if body[:5] == b"LOCUS" else None
        what = f"{kind}, not FASTA" if kind else "sequence data before any '>' header"
        raise FastaFormatError(path, line, what, "convert it to FASTA: every record starts with a '>id' line")
    return body, line


def read_chunks(path: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[bytes, int]]:
    """Stream whole records in ~chunk_bytes pieces (each starts at '>' and ends in a newline), with line numbers."""
    name = source_name(path)
    try:
        with open_fasta(path) as stream:
            data, line = _check_start(name, stream.read(chunk_bytes))
            while True:
                block = stream.read(chunk_bytes)
                data += block
                cut = data.rfind(b"\n>") + 1 if block else len(data)
                if cut > 0:
                    chunk, data = data[:cut], data[cut:]
                    yield (chunk if chunk.endswith(b"\n") else chunk + b"\n"), line
                    line += chunk.count(b"\n")
                if not block:
                    return
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise FastaFormatError(name, None, f"truncated or corrupt gzip ({err})",
                               "re-download or re-compress it") from None


def _header_ids(data: bytes, starts: np.ndarray, ends: np.ndarray) -> tuple[list[str], dict[int, str]]:
    """First whitespace-delimited token of every header; records without a usable id get a skip reason."""
    tokens = [(data[s + 1 : e].split(None, 1) or [b""])[0] for s, e in zip(starts.tolist(), ends.tolist())]
    bad = {} if all(tokens) else {i: "missing_id" for i, t in enumerate(tokens) if not t}
    try:
        return (b"\n".join(tokens).decode("utf-8").split("\n") if tokens else []), bad
    except UnicodeDecodeError:
        ids = [t.decode("utf-8", "replace") for t in tokens]
        bad.update({i: "undecodable_header" for i, t in enumerate(tokens) if ids[i].encode("utf-8") != t})
        return ids, bad


def _duplicates(ids: list[str], bad: dict[int, str], seen: set[str]) -> list[int]:
    """Records whose (usable) id was seen earlier in the file or earlier in this chunk."""
    out, here = [], set()
    for i, rid in enumerate(ids):
        if (rid in seen or rid in here) and i not in bad:
            out.append(i)
        here.add(rid)
    return out


def checked_chunk(chunk: Chunk, policy: ResiduePolicy) -> Chunk:
    """``chunk``, unless it repeats an id and the policy is ``--duplicates error``: then one error line."""
    if chunk.duplicates and policy.duplicates == "error":
        first = chunk.duplicates[0]
        raise FastaFormatError(chunk.source, _line_of(chunk, int(chunk.starts[first])),
                               f"duplicate id {chunk.ids[first]!r}", "make ids unique or pass --duplicates keep|skip")
    return chunk


def iter_chunks(path: str, policy: ResiduePolicy, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Chunk]:
    """Chunks of a file with their ids and duplicate ids found (in file order, so workers need no state)."""
    seen: set[str] = set()
    for data, line in read_chunks(str(path), chunk_bytes):
        starts, ends = record_starts(data)
        ids, bad = _header_ids(data, starts, ends)
        unique = set(ids)
        duplicates = [] if len(unique) == len(ids) and seen.isdisjoint(unique) else _duplicates(ids, bad, seen)
        seen |= unique
        yield checked_chunk(Chunk(data, source_name(path), line, starts, ends, ids, duplicates, bad), policy)


def _clean_then(chunk: Chunk, policy: ResiduePolicy, then: Callable[[CleanChunk], Any] | None) -> Any:
    """Worker body: the policy, then the caller's per-chunk step."""
    part = clean_chunk(chunk, policy)
    return then(part) if then else part


def clean_fasta(path: str, policy: ResiduePolicy = ResiduePolicy(), workers: int = 1,
                chunk_bytes: int = CHUNK_BYTES, then: Callable[[CleanChunk], Any] | None = None) -> Iterator[Any]:
    """The policy applied to a whole file, chunk by chunk in file order, in ``workers`` processes.

    Yields a :class:`CleanChunk` per chunk, or ``then(chunk)`` computed in the worker (picklable
    ``then``: encoding there keeps the main process free to read). At most 2 x workers chunks are
    in flight, so memory stays bounded.
    """
    yield from clean_chunks(iter_chunks(path, policy, chunk_bytes), policy, workers, then)


def clean_chunks(chunks: Iterator[Chunk], policy: ResiduePolicy, workers: int = 1,
                 then: Callable[[CleanChunk], Any] | None = None) -> Iterator[Any]:
    """:func:`clean_fasta` over chunks the caller read: in order, ``workers`` processes, 2 x workers in flight."""
    if workers <= 1:
        yield from (_clean_then(chunk, policy, then) for chunk in chunks)
        return
    with Pool(workers) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.apply_async(_clean_then, (chunk, policy, then)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def read_fasta(path: str, policy: ResiduePolicy = ResiduePolicy(), report: FastaReport | None = None,
               workers: int = 1) -> Iterator[tuple[str, str]]:
    """``(id, cleaned sequence)`` for every written record; counts go into ``report`` if given."""
    for part in clean_fasta(path, policy, workers):
        if report is not None:
            report.merge(part.report)
        text = part.residues.tobytes().decode("ascii")
        offsets = np.concatenate(([0], np.cumsum(part.lengths))).tolist()
        yield from ((rid, text[a:b]) for rid, a, b in zip(part.ids, offsets, offsets[1:]))


def add_policy_args(parser: argparse.ArgumentParser) -> None:
    """The policy flags shared by every FASTA-reading CLI."""
    group = parser.add_argument_group("residue policy (table in fairseq_esm/data/fasta.py)")
    group.add_argument("--keep-gaps", action="store_true", help="keep '-' and '.' as tokens (default: remove)")
    group.add_argument("--max-length", type=int, help="skip records with more residues than this (counted)")
    group.add_argument("--duplicates", choices=["keep", "skip", "error"], default="keep",
                       help="a record whose id appeared before: keep it (default, reported), skip it, or stop")


def policy_from_args(args: argparse.Namespace) -> ResiduePolicy:
    """The :class:`ResiduePolicy` the policy flags describe."""
    return ResiduePolicy(keep_gaps=args.keep_gaps, max_length=args.max_length, duplicates=args.duplicates)


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a CLI's main; input problems become one ``error:`` line on stderr and exit status 2."""
    try:
        return main(argv)
    except FastaFormatError as err:
        print(f"error: {err}", file=sys.stderr)
    except OSError as err:
        print(f"error: {err.filename}: {err.strerror} — check the path and permissions", file=sys.stderr)
    return 2
