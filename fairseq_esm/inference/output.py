"""Where extracted representations go: one fair-esm ``<name>.pt`` per protein, or ``.npz`` shards; both
with an ``index.tsv``. Nothing computed is lost:

- every file appears whole (temp file + rename), so a killed run resumes cleanly;
- several runs may write into one directory at once: every change to the directory (a file and its index
  line, the index's rewrite, ``extract.json``) happens under an exclusive lock (``flock`` on ``index.lock``),
  and a run re-reads what the others appended before it changes anything, so the index lists every output;
- the index keys an output by (id, copy number) and records the SHA-1 of the sequence it was computed from,
  so a record whose sequence changed under the same id is recomputed and overwritten, not skipped.

``.pt`` files are named by :mod:`fairseq_esm.io.file_names` (the rule every per-protein tool follows), unique
in the directory ignoring case, also against names other runs took; the index records every name, and an
output already indexed keeps its name, so directories written with the older naming still resume.

Processes that split one FASTA between them (``--shard I/N``) each plan the names of *every* record in FASTA
order, computing only their own and reserving the others' names: a name depends only on the records before it,
so the shards together write the files and index one unsharded run writes, whatever their timing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from fairseq_esm.io.file_names import unique_stem

INDEX = "index.tsv"
LOCK = "index.lock"
SETTINGS = "extract.json"
SHARD_GLOB = "shard-*.npz"
SHARD_BYTES = 1 << 30  # a shard is written once its arrays reach this size, whatever --shard-size says
UNKNOWN = "-"  # seq_sha1 of an output indexed by an older version (no checksum recorded)
PT_COLUMNS = ("id", "file", "copy", "seq_sha1")
SHARD_COLUMNS = ("id", "copy", "shard", "row", "length", "seq_sha1")
SHARD_CHECKSUMS = "sequence_checksums"  # a shard's array of the SHA-1 of each row's sequence
_LAYERED = re.compile(r"(mean|bos|per_tok)_\d+")
_CHECKSUM = re.compile(r"[0-9a-f]{40}")
_TEMPS = ("*.pt.tmp", SHARD_GLOB + ".tmp", SETTINGS + ".tmp", INDEX + ".tmp")

Key = tuple[str, int]  # (record id, copy number)


def sequence_checksum(sequence: str) -> str:
    """SHA-1 (hex) of a cleaned sequence: what an output was computed from."""
    return hashlib.sha1(sequence.encode("ascii")).hexdigest()


@contextmanager
def locked(out_dir: Path) -> Iterator[None]:
    """Hold the directory's exclusive lock (released by the kernel if the process dies)."""
    fd = os.open(out_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _atomic_write(path: Path, write: Callable) -> None:
    """``write(open file)`` into ``path.tmp``, then rename: readers never see a partial file. Callers hold the
    directory's lock, so no two writers share the temp name."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        write(handle)
    os.replace(tmp, path)


def check_settings(out_dir: Path, settings: dict) -> None:
    """Record the run's settings in OUTPUT_DIR; refuse to resume a directory written with other ones."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / SETTINGS
    settings = json.loads(json.dumps(settings))
    with locked(out_dir):
        if path.exists():
            old = json.loads(path.read_text())
            changed = [f"{k}: {old.get(k)} -> {settings.get(k)}" for k in sorted(set(old) | set(settings))
                       if old.get(k) != settings.get(k)]
            if changed:
                raise ValueError(f"{out_dir} holds outputs of a run with other settings ({'; '.join(changed)}): "
                                 "use another output directory, or the same settings to resume")
            return
        _atomic_write(path, lambda f: f.write(json.dumps(settings, indent=1).encode()))


class _Index:
    """``index.tsv``: a header line, then one line per output, keyed by (id, copy); a later line for a key
    replaces an earlier one. Shared by every run writing into the directory, so it is only changed under the
    lock and right after :meth:`sync`: lines are appended whole (the file opened for each line, never kept open
    across a rewrite), and a rewrite replaces the file atomically. A line torn by a kill is ignored."""

    TAIL = 64  # bytes before the read position that must be unchanged for an incremental read

    def __init__(self, path: Path, columns: Sequence[str], key: Callable[[list[str]], Key],
                 valid: Callable[[list[str]], bool], legacy: tuple[Sequence[str], Callable] | None = None) -> None:
        self.path, self.columns, self.key, self.valid = path, list(columns), key, valid
        self.legacy = (list(legacy[0]), legacy[1]) if legacy else None
        self.rows: dict[Key, list[str]] = {}
        self.stale = False  # lines a rewrite would drop: repeated keys, torn or older-format lines
        self._inode: int | None = None
        self._offset, self._tail = 0, b""  # how far this run has read, and the bytes just before

    def sync(self) -> list[list[str]] | None:
        """Read what other runs appended since the last call (all of it after a rewrite). Returns the new rows,
        or None when the whole index was (re-)read."""
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            self.rows, self._inode, self._offset, self._tail = {}, None, 0, b""
            return None
        with handle:
            info = os.fstat(handle.fileno())
            data = b""
            whole = info.st_ino != self._inode or info.st_size < self._offset
            if not whole:  # the same file, unless what we read before changed (a rewrite that reused the inode)
                handle.seek(self._offset - len(self._tail))
                data = handle.read()
                whole = not data.startswith(self._tail)
            if whole:
                handle.seek(0)
                data, self._offset, self._tail = handle.read(), 0, b""
            else:
                data = data[len(self._tail):]
        data = data[: data.rfind(b"\n") + 1]  # a line without its newline is still being written, or torn
        self._advance(info.st_ino, data)
        lines = data.decode("utf-8", "replace").splitlines()
        if whole:
            self.rows = {}
            lines = self._header(lines)
        new = []
        for line in lines:
            row = line.split("\t")
            if len(row) != len(self.columns) or not self.valid(row):
                self.stale = True
                continue
            key = self.key(row)
            self.stale |= key in self.rows
            self.rows[key] = row
            new.append(row)
        return None if whole else new

    def _advance(self, inode: int, data: bytes) -> None:
        """Mark ``data`` (read or written at the current position) as read."""
        self._inode, self._offset = inode, self._offset + len(data)
        self._tail = (self._tail + data)[-self.TAIL :]

    def _header(self, lines: list[str]) -> list[str]:
        """The data lines after the header; an older version's index is converted (and marked for a rewrite)."""
        if not lines or lines[0].split("\t") == self.columns:
            return lines[1:]
        if self.legacy and lines[0].split("\t") == self.legacy[0]:
            self.stale = True
            return self.legacy[1]([line.split("\t") for line in lines[1:]])
        raise ValueError(f"{self.path} has columns {lines[0]!r}, expected {chr(9).join(self.columns)!r}")

    def append(self, row: Sequence[object]) -> None:
        """Add one line (under the lock, after :meth:`sync`): the file is opened for it, so the line always lands
        in the current index."""
        fields = [str(value) for value in row]
        data = ("\t".join(fields) + "\n").encode("utf-8")
        with open(self.path, "a+b") as handle:
            start = handle.tell()
            if start == 0:
                data = ("\t".join(self.columns) + "\n").encode("utf-8") + data
            else:
                handle.seek(start - 1)
                if handle.read(1) != b"\n":  # a line torn by a killed run: end it, so ours stays whole
                    data = b"\n" + data
            handle.write(data)
            inode = os.fstat(handle.fileno()).st_ino
        if start == self._offset and (inode == self._inode or start == 0):  # nobody wrote since our sync
            self._advance(inode, data)
        key = self.key(fields)
        self.stale |= key in self.rows
        self.rows[key] = fields

    def rewrite(self, rows: dict[Key, list[str]]) -> None:
        """Replace the index with ``rows``, atomically (under the lock)."""
        data = "".join("\t".join(row) + "\n" for row in [self.columns, *rows.values()]).encode("utf-8")
        _atomic_write(self.path, lambda f: f.write(data))
        self.rows, self.stale = dict(rows), False
        self._offset, self._tail = 0, b""
        self._advance(os.stat(self.path).st_ino, data)

    def compact(self) -> None:
        """Rewrite the index without repeated keys or torn lines, if it has any (under the lock)."""
        self.sync()
        if self.stale:
            self.rewrite(self.rows)


def _remove_temps(out_dir: Path) -> None:
    """Temp files a killed run of ours left (under the lock: no live run has one open)."""
    for pattern in _TEMPS:
        for tmp in out_dir.glob(pattern):
            tmp.unlink(missing_ok=True)


class _Writer(ABC):
    """What both formats share: the lock, the index, the resume plan and its counts."""

    def __init__(self, out_dir: Path, index: _Index) -> None:
        self.out_dir, self.index = out_dir, index
        self.skipped = self.changed = self.unverified = 0
        self.changed_examples: list[str] = []

    @abstractmethod
    def _present(self, row: list[str]) -> bool:
        """Whether the output an index row names is on disk (its file, or its shard)."""

    def _sync(self) -> None:
        self.index.sync()

    def _checksum(self, row: list[str]) -> str:
        return row[self.index.columns.index("seq_sha1")]

    def _with_checksum(self, row: list[str], digest: str) -> list[str]:
        row = list(row)
        row[self.index.columns.index("seq_sha1")] = digest
        return row

    def plan(self, records: Sequence[tuple[str, int, str | None]]) -> list[int]:
        """Positions of the ``(id, copy, sequence)`` records to compute: those not in the directory, and those
        whose sequence changed since their output was written (counted in ``changed``; they are overwritten).
        A record without a sequence (``None``) is another process's (``--shard``): never computed nor counted
        here, but :class:`PtWriter` reserves its name. Call it on consecutive groups of the FASTA, in order.

        An output indexed by an older version (no ``seq_sha1`` column) is taken as *matching* its current
        sequence (counted in ``unverified``), and that sequence's checksum is recorded, so later edits are
        caught. Why matching: such a directory was written before checksums existed, almost always from the
        FASTA being resumed, and recomputing all of it would cost a whole first run to catch a rarely edited
        sequence; the tool says how many outputs it could not check, and deleting a file recomputes it."""
        todo, adopted = [], []
        with locked(self.out_dir):
            self._sync()
            for position, (record_id, copy, sequence) in enumerate(records):
                if sequence is None:
                    continue
                row = self.index.rows.get((record_id, copy))
                if row is None or not self._present(row):
                    todo.append(position)
                    continue
                digest, old = sequence_checksum(sequence), self._checksum(row)
                if old == digest:
                    self.skipped += 1
                elif old == UNKNOWN:
                    self.skipped += 1
                    self.unverified += 1
                    adopted.append(self._with_checksum(row, digest))
                else:
                    self.changed += 1
                    if len(self.changed_examples) < 5:
                        self.changed_examples.append(record_id)
                    todo.append(position)
            for row in adopted:
                self.index.append(row)
        return todo

    def close(self) -> None:
        with locked(self.out_dir):
            self.index.compact()


def _legacy_pt_rows(rows: list[list[str]]) -> list[str]:
    """Lines of an older ``id  file`` index as ``id  file  copy  -``: the copy number is recovered from the
    older naming (``<id>.pt`` for the first copy, ``<prefix>~<sha1 of id and copy>`` for the others)."""
    by_id: dict[str, list[str]] = {}
    for row in rows:
        if len(row) == 2:
            by_id.setdefault(row[0], []).append(row[1])
    lines = []
    for record_id, names in by_id.items():
        used: set[int] = set()
        pending = []
        for name in names:
            copy = next((c for c in range(1, len(names) + 1) if name in _legacy_names(record_id, c)), None)
            if copy is None or copy in used:
                pending.append(name)
            else:
                used.add(copy)
                lines.append("\t".join([record_id, name, str(copy), UNKNOWN]))
        for name in pending:  # not an older name of any copy: the lowest free copy numbers
            copy = min(set(range(1, len(names) + 1)) - used)
            used.add(copy)
            lines.append("\t".join([record_id, name, str(copy), UNKNOWN]))
    return lines


def _legacy_names(record_id: str, copy: int) -> set[str]:
    """The file names the older rule gave a record."""
    prefix = re.sub(r"[^A-Za-z0-9._|+=@,-]", "_", record_id)[:80].lstrip(".-") or "id"
    digest = hashlib.sha1(f"{record_id}\n{copy}".encode()).hexdigest()[:16]
    hashed = f"{prefix}~{digest}.pt"
    return {f"{record_id}.pt", hashed} if copy == 1 else {hashed}


def _pt_row_valid(row: list[str]) -> bool:
    return row[2].isdigit() and (row[3] == UNKNOWN or bool(_CHECKSUM.fullmatch(row[3]))) and row[1].endswith(".pt")


class PtWriter(_Writer):
    """One ``<name>.pt`` per protein holding fair-esm's dict; ``index.tsv``: ``id  file  copy  seq_sha1``."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__(out_dir, _Index(out_dir / INDEX, PT_COLUMNS, lambda row: (row[0], int(row[2])),
                                         _pt_row_valid, legacy=(("id", "file"), _legacy_pt_rows)))
        self.planned: dict[Key, str] = {}  # names chosen in FASTA order for the outputs still to compute
        self.reserved: dict[Key, str] = {}  # the same for other processes' records (--shard), until indexed
        self.owner: dict[str, Key] = {}  # case-folded stem -> the output holding it (indexed or planned)
        with locked(out_dir):
            _remove_temps(out_dir)
            self._sync()
            present = {key: row for key, row in self.index.rows.items() if self._present(row)}
            if self.index.stale or len(present) < len(self.index.rows):  # deleted files: their proteins are redone
                self.index.rewrite(present)
                self._own(None)
            self.on_disk = {_stem(path.name) for path in out_dir.glob("*.pt")}  # ours or not: never overwritten

    def _present(self, row: list[str]) -> bool:
        return (self.out_dir / row[1]).exists()

    def _sync(self) -> None:
        self._own(self.index.sync())

    def _own(self, new: list[list[str]] | None) -> None:
        """Record who holds each name: the rows just read (all of them when ``new`` is None), then our plans."""
        if new is None:
            self.reserved = {key: name for key, name in self.reserved.items() if key not in self.index.rows}
            self.owner = {_stem(row[1]): key for key, row in self.index.rows.items()}
            for key, name in [*self.planned.items(), *self.reserved.items()]:
                self.owner.setdefault(_stem(name), key)
            return
        for row in new:
            key, stem = self.index.key(row), _stem(row[1])
            reserved = self.reserved.pop(key, None)  # its owner indexed it: the index holds its name now
            if reserved is not None and self.owner.get(_stem(reserved)) == key and _stem(reserved) != stem:
                del self.owner[_stem(reserved)]
            self.owner[stem] = key

    def _taken(self, mine: Key) -> _Taken:
        return _Taken(self.owner, self.on_disk, mine)

    def plan(self, records: Sequence[tuple[str, int, str | None]]) -> list[int]:
        """As :meth:`_Writer.plan`; then, in FASTA order, a name for every record not indexed yet: planned for
        ours to compute, reserved for other processes' (so a name never depends on which process is ahead)."""
        todo = super().plan(records)
        ours = set(todo)
        for position, (record_id, copy, sequence) in enumerate(records):
            key = (record_id, copy)
            if key in self.index.rows or (sequence is not None and position not in ours):
                continue
            name = unique_stem(record_id, self._taken(key)) + ".pt"
            (self.planned if sequence is not None else self.reserved)[key] = name
            self.owner[_stem(name)] = key
        return todo

    def add(self, record_id: str, copy: int, sequence: str, result: dict) -> None:
        """Write one protein's result to its file and index it (under the lock, after reading the others' lines)."""
        key, digest = (record_id, copy), sequence_checksum(sequence)
        with locked(self.out_dir):
            self._sync()
            row = self.index.rows.get(key)
            if row is not None:  # indexed (a changed sequence, or another run's): overwrite, then index
                _atomic_write(self.out_dir / row[1], lambda f: torch.save(result, f))
                if row[3] != digest:
                    self.index.append((record_id, row[1], copy, digest))
                return
            name = self.planned.pop(key, None)
            if name is None or self.owner.get(_stem(name)) != key or (self.out_dir / name).exists():
                name = unique_stem(record_id, self._taken(key)) + ".pt"  # another run took the planned name
            self.index.append((record_id, name, copy, digest))  # a kill before the file: the line is dropped
            self.owner[_stem(name)] = key
            _atomic_write(self.out_dir / name, lambda f: torch.save(result, f))
            self.on_disk.add(_stem(name))


def _stem(name: str) -> str:
    """Case-folded file name without ``.pt``: how file systems that ignore case compare names."""
    return name.removesuffix(".pt").casefold()


class _Taken:
    """The stems an output may not take: held by another output, or a file on disk that no output holds."""

    def __init__(self, owner: dict[str, Key], on_disk: set[str], mine: Key) -> None:
        self.owner, self.on_disk, self.mine = owner, on_disk, mine

    def __contains__(self, stem: object) -> bool:
        owner = self.owner.get(stem)  # type: ignore[call-overload]
        return owner != self.mine if owner is not None else stem in self.on_disk


def _shard_arrays(buffer: list[tuple[str, int, str, int, dict]]) -> dict[str, np.ndarray]:
    """Rows of one shard as arrays: per-layer ``mean_L``/``bos_L`` (N, C), ``per_tok_L`` (sum of lengths, C)."""
    results = [result for *_, result in buffer]
    lengths = np.array([length for _, _, _, length, _ in buffer], dtype=np.int64)
    arrays = {"ids": np.array([rid for rid, *_ in buffer], dtype=str),
              "copies": np.array([copy for _, copy, *_ in buffer], dtype=np.int64), "lengths": lengths,
              SHARD_CHECKSUMS: np.array([digest for _, _, digest, *_ in buffer], dtype=str)}
    for key, prefix in (("mean_representations", "mean"), ("bos_representations", "bos")):
        for layer in results[0].get(key, {}):
            arrays[f"{prefix}_{layer}"] = torch.stack([r[key][layer] for r in results]).numpy()
    for layer in results[0].get("representations", {}):
        arrays[f"per_tok_{layer}"] = torch.cat([r["representations"][layer] for r in results]).numpy()
        arrays["offsets"] = np.concatenate(([0], np.cumsum(lengths)))
    if "contacts" in results[0]:
        arrays["contacts"] = torch.cat([r["contacts"].reshape(-1) for r in results]).numpy()
        arrays["contact_offsets"] = np.concatenate(([0], np.cumsum(lengths**2)))
    return arrays


def _nbytes(result: dict) -> int:
    """Bytes of all tensors of a result."""
    tensors = [t for v in result.values() if isinstance(v, dict) for t in v.values()]
    tensors += [v for v in result.values() if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def _shard_rows(path: Path) -> list[tuple[str, int, int, str]]:
    """(id, copy, length, seq_sha1 or UNKNOWN) of every row of a shard, from the shard itself."""
    with np.load(path) as data:
        ids, copies, lengths = data["ids"].tolist(), data["copies"].tolist(), data["lengths"].tolist()
        digests = data[SHARD_CHECKSUMS].tolist() if SHARD_CHECKSUMS in data.files else [UNKNOWN] * len(ids)
    return list(zip(ids, map(int, copies), map(int, lengths), digests))


def _shard_number(path: Path) -> int:
    return int(path.name.split(".")[0].split("-")[1])


def _shard_row_valid(row: list[str]) -> bool:
    return (row[1].isdigit() and row[3].isdigit() and row[4].isdigit()
            and (row[5] == UNKNOWN or bool(_CHECKSUM.fullmatch(row[5]))))


class ShardWriter(_Writer):
    """``shard-NNNNN.npz`` files of ``shard_size`` proteins; ``index.tsv``:
    ``id  copy  shard  row  length  seq_sha1``. The shards are the truth: on opening, the index is rebuilt
    from them (a later shard's row for an (id, copy) replaces an earlier one's), so a run killed between
    writing a shard and indexing it, or a deleted shard, is reconciled."""

    def __init__(self, out_dir: Path, shard_size: int) -> None:
        legacy = (SHARD_COLUMNS[:-1], lambda rows: ["\t".join([*row, UNKNOWN]) for row in rows])
        super().__init__(out_dir, _Index(out_dir / INDEX, SHARD_COLUMNS, lambda row: (row[0], int(row[1])),
                                         _shard_row_valid, legacy=legacy))
        self.shard_size = shard_size
        self.buffer: list[tuple[str, int, str, int, dict]] = []
        self.buffered_bytes = 0
        with locked(out_dir):
            _remove_temps(out_dir)
            self.index.sync()
            known = {(row[2], int(row[3])): row[5] for row in self.index.rows.values()}  # checksums adopted
            rows: dict[Key, list[str]] = {}
            for path in sorted(out_dir.glob(SHARD_GLOB), key=_shard_number):
                for number, (record_id, copy, length, digest) in enumerate(_shard_rows(path)):
                    digest = digest if digest != UNKNOWN else known.get((path.name, number), UNKNOWN)
                    rows.pop((record_id, copy), None)  # keep the order of writing: the latest row last
                    rows[(record_id, copy)] = [record_id, str(copy), path.name, str(number), str(length), digest]
            if self.index.stale or rows != self.index.rows:
                self.index.rewrite(rows)

    def _present(self, row: list[str]) -> bool:
        return (self.out_dir / row[2]).exists()

    def add(self, record_id: str, copy: int, sequence: str, result: dict) -> None:
        """Buffer one protein's result; a full buffer becomes the next shard."""
        self.buffer.append((record_id, copy, sequence_checksum(sequence), len(sequence), result))
        self.buffered_bytes += _nbytes(result)
        if len(self.buffer) >= self.shard_size or self.buffered_bytes >= SHARD_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the buffered proteins as the next free shard (atomically), then index them, under the lock."""
        if not self.buffer:
            return
        arrays = _shard_arrays(self.buffer)
        with locked(self.out_dir):
            self.index.sync()
            number = 1 + max((_shard_number(p) for p in self.out_dir.glob(SHARD_GLOB)), default=-1)
            name = f"shard-{number:05d}.npz"
            _atomic_write(self.out_dir / name, lambda f: np.savez(f, **arrays))
            for row, (record_id, copy, digest, length, _) in enumerate(self.buffer):
                self.index.append((record_id, copy, name, row, length, digest))
        self.buffer, self.buffered_bytes = [], 0

    def close(self) -> None:
        self.flush()
        super().close()


def open_writer(fmt: str, out_dir: Path, shard_size: int = 1000) -> PtWriter | ShardWriter:
    """The writer of ``fmt`` (``pt`` or ``npz-shards``) on ``out_dir``, leftover temp files removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return PtWriter(out_dir) if fmt == "pt" else ShardWriter(out_dir, shard_size)


def read_shards(out_dir: Path) -> Iterator[dict]:
    """Every protein of an ``npz-shards`` directory as the dict its ``.pt`` file would hold (for an (id, copy)
    written more than once, after its sequence changed, the latest shard's)."""
    paths = sorted(Path(out_dir).glob(SHARD_GLOB), key=_shard_number)
    latest = {}
    for path in paths:
        for number, (record_id, copy, _, _) in enumerate(_shard_rows(path)):
            latest[(record_id, copy)] = (path.name, number)
    keep = set(latest.values())
    for path in paths:
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
        layered = [(key.rsplit("_", 1), value) for key, value in arrays.items() if _LAYERED.fullmatch(key)]
        for row, label in enumerate(arrays["ids"].tolist()):
            if (path.name, row) not in keep:
                continue
            result: dict = {"label": label}
            for (kind, layer), value in layered:
                if kind == "per_tok":
                    start, end = arrays["offsets"][row], arrays["offsets"][row + 1]
                    result.setdefault("representations", {})[int(layer)] = torch.from_numpy(value[start:end])
                else:
                    result.setdefault(f"{kind}_representations", {})[int(layer)] = torch.from_numpy(value[row])
            if "contacts" in arrays:
                start, end, n = *arrays["contact_offsets"][row : row + 2], arrays["lengths"][row]
                result["contacts"] = torch.from_numpy(arrays["contacts"][start:end].reshape(n, n))
            yield result
