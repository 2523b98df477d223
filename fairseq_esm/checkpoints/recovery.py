"""Resuming a training run from the newest intact checkpoint of its save directory.

fairseq writes each checkpoint atomically (``.tmp``, then rename), then *copies* it to the other names
of that save (``checkpoint_best.pt``, ``checkpoint_last.pt``, in that order). A kill during a copy leaves
a truncated file, and if that file is ``checkpoint_last.pt`` the same command would stop with torch's
"failed finding central directory" although an intact copy of the same state sits beside it.
:func:`recover_last_checkpoint` runs before fairseq reads ``checkpoint_last.pt``: when that file is
truncated, or a complete save was interrupted before reaching it, the newest intact checkpoint takes
its place and the file it replaces is kept beside it as ``checkpoint_last.pt.skipped``.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path
from typing import Optional

from fairseq_esm.checkpoints.pt_files import CheckpointError

#: torch.save's zip format starts with a local file header
ZIP_MAGIC = b"PK\x03\x04"
SKIPPED_SUFFIX = ".skipped"


def is_truncated(path: Path) -> bool:
    """An empty file, or a torch zip file whose central directory is missing (cut off while written)."""
    with open(path, "rb") as handle:
        head = handle.read(len(ZIP_MAGIC))
    if not head:
        return True
    if head != ZIP_MAGIC:
        return False  # torch's legacy format: not ours to judge, fairseq reads or refuses it
    try:
        with zipfile.ZipFile(path):
            return False
    except (zipfile.BadZipFile, OSError):
        return True


def saved_checkpoints(save_dir: Path, suffix: str = "") -> list[Path]:
    """The checkpoint files fairseq-train writes in ``save_dir``, newest (last modified) first."""
    files = [p for p in save_dir.glob(f"checkpoint*{suffix}.pt") if p.is_file()]
    return sorted(files, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def newest_intact(save_dir: Path, suffix: str = "") -> Optional[Path]:
    """The most recently written checkpoint of ``save_dir`` that is not truncated."""
    return next((p for p in saved_checkpoints(save_dir, suffix) if not is_truncated(p)), None)


def recover_last_checkpoint(save_dir: str | Path, suffix: str = "") -> Optional[str]:
    """Put the newest intact checkpoint in ``checkpoint_last{suffix}.pt`` if it is not there; returns the note.

    Nothing happens on a first launch, or when ``checkpoint_last`` is intact and no checkpoint was written
    after it (a save always writes it last). Ties in modification time keep ``checkpoint_last``.
    """
    save_dir = Path(save_dir)
    last = save_dir / f"checkpoint_last{suffix}.pt"
    if not last.is_file():
        return None
    truncated = is_truncated(last)
    newest = newest_intact(save_dir, suffix)
    if not truncated and (newest is None or newest.stat().st_mtime_ns <= last.stat().st_mtime_ns):
        return None
    if newest is None or newest == last:
        raise CheckpointError(
            f"{last} is truncated and {save_dir} holds no intact checkpoint to resume from; "
            "start again with another --save-dir, or pass --restore-file with a checkpoint you trust"
        )
    skipped = last.with_name(last.name + SKIPPED_SUFFIX)
    os.replace(last, skipped)
    partial = last.with_name(last.name + ".tmp")
    shutil.copyfile(newest, partial)
    os.replace(partial, last)
    state = "truncated (killed while fairseq copied it)" if truncated else "older than the newest checkpoint"
    return f"{last.name} was {state}; resuming from {newest.name}, the newest intact checkpoint " \
           f"(the skipped file is kept as {skipped.name})"
