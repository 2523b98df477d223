"""Where extracted representations go: one fair-esm ``<name>.pt`` per protein, or ``.npz`` shards; both
with an ``index.tsv``. Every file appears whole (temp file + rename), so a killed run resumes cleanly.

Files are named by FASTA id when the id is a safe file name (only ``A-Z a-z 0-9 . _ | + = @ , -``, not
starting with ``.`` or ``-``, at most 200 bytes); other ids and the later copies of a duplicate id get
``<sanitised id>~<hash of id and copy number>``. The index records every name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

INDEX = "index.tsv"
SETTINGS = "extract.json"
SHARD_GLOB = "shard-*.npz"
MAX_NAME_BYTES = 200
SHARD_BYTES = 1 << 30  # a shard is written once its arrays reach this size, whatever --shard-size says
_SAFE = re.compile(r"[A-Za-z0-9_|+=@,][A-Za-z0-9._|+=@,-]*")
_UNSAFE_CHAR = re.compile(r"[^A-Za-z0-9._|+=@,-]")


def file_stem(record_id: str, copy: int = 1) -> str:
    """File name (no suffix) of a record: its id if safe, else a sanitised prefix + ``~`` + a hash of (id, copy)."""
    if copy == 1 and _SAFE.fullmatch(record_id) and len(record_id.encode()) <= MAX_NAME_BYTES:
        return record_id
    prefix = _UNSAFE_CHAR.sub("_", record_id)[:80].lstrip(".-") or "id"
    digest = hashlib.sha1(f"{record_id}\n{copy}".encode()).hexdigest()[:16]
    return f"{prefix}~{digest}"  # '~' never occurs in a safe id, so no id can claim this name


def copy_numbers(ids: Sequence[str]) -> list[int]:
    """1 for the first record with an id, 2 for the second record with the same id, ..."""
    seen: Counter = Counter()
    numbers = []
    for record_id in ids:
        seen[record_id] += 1
        numbers.append(seen[record_id])
    return numbers


def _atomic_write(path: Path, write) -> None:
    """``write(open file)`` into ``path.tmp``, then rename: readers never see a partial file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        write(handle)
    os.replace(tmp, path)


def check_settings(out_dir: Path, settings: dict) -> None:
    """Record the run's settings in OUTPUT_DIR; refuse to resume a directory written with other ones."""
    path = out_dir / SETTINGS
    settings = json.loads(json.dumps(settings))
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
    """``index.tsv`` with a header line, appended one flushed line per output; a torn last line is dropped."""

    def __init__(self, path: Path, header: Sequence[str]) -> None:
        self.path, self.header = path, list(header)
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        lines = text[: text.rfind("\n") + 1].splitlines()  # a line without its newline was torn by a kill
        if lines and lines[0].split("\t") != self.header:
            raise ValueError(f"{path} has columns {lines[0]!r}, expected {chr(9).join(self.header)!r}")
        self.rows = [line.split("\t") for line in lines[1:]]
        self.rewrite(self.rows)

    def rewrite(self, rows: list[list[str]]) -> None:
        """Replace the index with ``rows`` (atomically), then keep appending."""
        if getattr(self, "_handle", None):
            self._handle.close()
        text = "".join("\t".join(row) + "\n" for row in [self.header] + rows)
        _atomic_write(self.path, lambda f: f.write(text.encode("utf-8")))
        self.rows = rows
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (open for the whole run)

    def append(self, row: Sequence[object]) -> None:
        """Add one line and flush it, so a kill loses at most that line."""
        self._handle.write("\t".join(map(str, row)) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class PtWriter:
    """One ``<name>.pt`` per protein holding fair-esm's dict; ``index.tsv``: ``id  file``."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.index = _Index(out_dir / INDEX, ("id", "file"))
        present = [row for row in self.index.rows if (out_dir / row[1]).exists()]
        if len(present) < len(self.index.rows):  # deleted files: their proteins are redone
            self.index.rewrite(present)
        self.indexed = {tuple(row) for row in present}

    def resume(self, record_id: str, copy: int) -> bool:
        """True if this record's file exists (then make sure the index lists it)."""
        name = file_stem(record_id, copy) + ".pt"
        if not (self.out_dir / name).exists():
            return False
        self._note(record_id, name)
        return True

    def add(self, record_id: str, copy: int, length: int, result: dict) -> None:
        """Write one protein's result (``length`` residues) to its file and index it."""
        name = file_stem(record_id, copy) + ".pt"
        _atomic_write(self.out_dir / name, lambda f: torch.save(result, f))
        self._note(record_id, name)

    def _note(self, record_id: str, name: str) -> None:
        if (record_id, name) not in self.indexed:
            self.indexed.add((record_id, name))
            self.index.append((record_id, name))

    def close(self) -> None:
        self.index.close()


def _shard_arrays(buffer: list[tuple[str, int, int, dict]]) -> dict[str, np.ndarray]:
    """Rows of one shard as arrays: per-layer ``mean_L``/``bos_L`` (N, C), ``per_tok_L`` (sum of lengths, C)."""
    results = [result for *_, result in buffer]
    lengths = np.array([length for _, _, length, _ in buffer], dtype=np.int64)
    arrays = {"ids": np.array([rid for rid, *_ in buffer], dtype=str),
              "copies": np.array([copy for _, copy, *_ in buffer], dtype=np.int64), "lengths": lengths}
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


class ShardWriter:
    """``shard-NNNNN.npz`` files of ``shard_size`` proteins; ``index.tsv``: ``id  copy  shard  row  length``."""

    def __init__(self, out_dir: Path, shard_size: int) -> None:
        self.out_dir, self.shard_size = out_dir, shard_size
        self.index = _Index(out_dir / INDEX, ("id", "copy", "shard", "row", "length"))
        shards = sorted(out_dir.glob(SHARD_GLOB))
        present = {path.name for path in shards}
        if any(row[2] not in present for row in self.index.rows):  # a deleted shard: its proteins are redone
            self.index.rewrite([row for row in self.index.rows if row[2] in present])
        self.done = {(row[0], int(row[1])) for row in self.index.rows}
        self.next_shard = 1 + max((int(p.stem.split("-")[1]) for p in shards), default=-1)
        indexed = {(row[2], int(row[3])) for row in self.index.rows}
        for path in shards:  # written, but the run died before (fully) indexing it: index the rest now
            with np.load(path) as data:
                columns = data["ids"].tolist(), data["copies"].tolist(), data["lengths"].tolist()
            missing = [row for row in range(len(columns[0])) if (path.name, row) not in indexed]
            self._index_shard(path.name, *columns, rows=missing)
        self.buffer: list[tuple[str, int, int, dict]] = []
        self.buffered_bytes = 0

    def resume(self, record_id: str, copy: int) -> bool:
        """True if this record is in a shard on disk."""
        return (record_id, copy) in self.done

    def add(self, record_id: str, copy: int, length: int, result: dict) -> None:
        """Buffer one protein's result (``length`` residues); a full buffer becomes the next shard."""
        self.buffer.append((record_id, copy, length, result))
        self.buffered_bytes += _nbytes(result)
        if len(self.buffer) >= self.shard_size or self.buffered_bytes >= SHARD_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the buffered proteins as the next shard (atomically), then index them."""
        if not self.buffer:
            return
        arrays = _shard_arrays(self.buffer)
        name = f"shard-{self.next_shard:05d}.npz"
        _atomic_write(self.out_dir / name, lambda f: np.savez(f, **arrays))
        self._index_shard(name, arrays["ids"].tolist(), arrays["copies"].tolist(), arrays["lengths"].tolist())
        self.next_shard += 1
        self.buffer, self.buffered_bytes = [], 0

    def _index_shard(self, name: str, ids: list, copies: list, lengths: list, rows: Iterable[int] | None = None
                     ) -> None:
        """Index rows of a written shard (all of them by default) and mark their proteins done."""
        for row in range(len(ids)) if rows is None else rows:
            self.index.append((ids[row], copies[row], name, row, lengths[row]))
            self.done.add((ids[row], int(copies[row])))

    def close(self) -> None:
        self.flush()
        self.index.close()


def open_writer(fmt: str, out_dir: Path, shard_size: int = 1000) -> PtWriter | ShardWriter:
    """The writer of ``fmt`` (``pt`` or ``npz-shards``) on ``out_dir``, leftover temp files removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for pattern in ("*.pt.tmp", SHARD_GLOB + ".tmp", SETTINGS + ".tmp"):  # only what a killed run of ours left
        for tmp in out_dir.glob(pattern):
            tmp.unlink()
    return PtWriter(out_dir) if fmt == "pt" else ShardWriter(out_dir, shard_size)


def read_shards(out_dir: Path) -> Iterator[dict]:
    """Every protein of an ``npz-shards`` directory as the dict its ``.pt`` file would hold."""
    for path in sorted(Path(out_dir).glob(SHARD_GLOB)):
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
        layered = [(key.rsplit("_", 1), value) for key, value in arrays.items() if key[-1].isdigit()]
        for row, label in enumerate(arrays["ids"].tolist()):
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
