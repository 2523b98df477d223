"""An epoch's batches formed once per node and shared by its ranks (``--batch-cache-dir``).

Every rank of a fairseq-train run forms the same batches of the whole split, then reads every N-th. With a
node-local directory (``/dev/shm/...``, or a local disk), the first rank of a node to need an epoch's batches
forms them and writes them there as two ``.npy`` files (``epoch_batches.Batches``: the order and the bounds);
the node's other ranks wait for it on a file lock, then memory-map the files: one copy of the batches per node,
in the page cache, and no batching work on the other ranks.

Files are named by digests of what the batches depend on: the batching options with this module's format
version, then the samples' sizes (their bytes) with the length order's tie-break (shuffle, seed, epoch). A file
can therefore only be read back for the batches it holds; anything unreadable is logged and formed again. Writes
go to a temporary name, renamed into place. When a new entry is stored, older entries with the same options (an
earlier epoch's batches under ``--cluster-sampling``, or a previous shard) are removed; a rank that still maps
one keeps its pages until it lets go.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

from fairseq_esm.data.epoch_batches import Batches
from fairseq_esm.errors import InputError

logger = logging.getLogger(__name__)

#: bump when the batching or the file layout changes: old entries are then never read
FORMAT = 1
#: bytes of the sizes hashed per step (bounds the temporary a non-contiguous array would need)
HASH_CHUNK = 1 << 24


def content_digest(sizes: np.ndarray, tie_break: tuple) -> str:
    """A digest of the sizes' dtype and values and of the length order's tie-break (shuffle, seed, epoch)."""
    sizes = np.asarray(sizes)
    digest = hashlib.sha1(f"{tuple(tie_break)}:{sizes.dtype.str}:{len(sizes)}".encode())
    step = max(HASH_CHUNK // max(sizes.itemsize, 1), 1)
    for start in range(0, len(sizes), step):
        digest.update(np.ascontiguousarray(sizes[start : start + step]).data)
    return digest.hexdigest()[:24]


def options_digest(options: dict) -> str:
    """A digest of the batching options (JSON-able values) and :data:`FORMAT`."""
    text = json.dumps({"format": FORMAT, **options}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def shared_batches(directory: str | os.PathLike, sizes: np.ndarray, tie_break: tuple, options: dict,
                   build: Callable[[], Batches]) -> Batches:
    """``build()``'s batches, formed by whichever rank of the node gets here first and memory-mapped by all.

    The batches depend on ``sizes``, the length order's ``tie_break`` (which follows the epoch when batches are
    formed per epoch) and the batching ``options``. Ranks that share ``directory`` wait for each other on a lock
    per ``options``; a rank that finds the entry stored maps it without calling ``build``. Storing an entry
    removes the others with the same ``options``.
    """
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--batch-cache-dir {folder}: not a directory; give a node-local directory (it is created)")
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f"batches-{options_digest(options)}"
    stem = folder / f"{prefix}-{content_digest(sizes, tie_break)}"
    with open(folder / f"{prefix}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            stored = load_batches(stem)
            if stored is not None:
                logger.info(f"batches mapped from {stem}.{{order,bounds}}.npy ({len(stored):,} batches)")
                return stored
            batches = build()
            store_batches(stem, batches)
            remove_others(folder, prefix, stem)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    stored = load_batches(stem)
    logger.info(f"batches stored in {stem}.{{order,bounds}}.npy for the other ranks of this node")
    return batches if stored is None else stored  # the mapped copy: this rank's own is freed


def load_batches(stem: Path) -> Batches | None:
    """The entry at ``stem``, memory-mapped; None if it is absent, or unreadable (logged)."""
    order_path, bounds_path = Path(f"{stem}.order.npy"), Path(f"{stem}.bounds.npy")
    if not bounds_path.exists():  # written last: without it the entry is absent or was never finished
        return None
    try:
        order = np.load(order_path, mmap_mode="r")
        bounds = np.load(bounds_path, mmap_mode="r")
        if (order.ndim != 1 or bounds.ndim != 1 or not len(bounds) or order.dtype.kind not in "iu"
                or bounds.dtype.kind not in "iu" or int(bounds[0]) != 0 or int(bounds[-1]) != len(order)):
            raise ValueError("order and bounds do not fit together")
    except (OSError, ValueError) as error:
        logger.warning(f"ignoring the unreadable batch cache entry {stem}.{{order,bounds}}.npy ({error}); "
                       f"forming the batches again")
        return None
    return Batches(order, bounds)


def store_batches(stem: Path, batches: Batches) -> None:
    """Write ``batches`` at ``stem``: each file under a temporary name, renamed; the bounds last."""
    for name, array in (("order", batches.order), ("bounds", batches.bounds)):
        final = Path(f"{stem}.{name}.npy")
        temporary = final.with_name(f"{final.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as out:
                np.save(out, np.asarray(array))
            os.replace(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)


def remove_others(folder: Path, prefix: str, keep: Path) -> None:
    """Remove the entries (and stray temporaries) with ``prefix`` other than ``keep``."""
    for path in folder.glob(f"{prefix}-*"):
        if not path.name.startswith(f"{keep.name}."):
            path.unlink(missing_ok=True)
