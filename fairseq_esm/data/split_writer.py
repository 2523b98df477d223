"""A binarized split written a chunk of records at a time: ``prefix.{bin,idx,ids}`` as ``binarize_fasta`` writes them.

:func:`data.binarize.binarize_fasta` reads one FASTA file into one split; tools that route the records of one
pass over their input into many splits (``fairseq-esm-make-uniref-splits --shards``) keep one
:class:`SplitWriter` per split and hand each the records it gets. Same encoding (``binarize.encode``), same
index (``binarize.write_index``), same ``.tmp`` files moved into place only when the split is complete, so a
split written here is byte-identical to ``binarize_fasta`` (and ``fairseq-preprocess``) on the same records.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fairseq.data import Dictionary

from fairseq_esm.data.binarize import _replace_all, encode, token_table, write_index
from fairseq_esm.io.fasta import CleanChunk

SUFFIXES = (".bin", ".idx", ".ids")


class SplitWriter:
    """``prefix.{bin,idx,ids}``, appended to with :meth:`write`, completed by :meth:`close`."""

    def __init__(self, prefix: str | Path, dictionary: Dictionary) -> None:
        self.prefix, self.table, self.eos = str(prefix), token_table(dictionary), dictionary.eos()
        self.sizes: list[np.ndarray] = []
        self.records = self.residues = 0
        self.bin = open(f"{self.prefix}.bin.tmp", "wb")
        self.ids = open(f"{self.prefix}.ids.tmp", "w", encoding="utf-8")

    def write(self, part: CleanChunk) -> None:
        """Append the records of a chunk (residues already through the residue policy)."""
        if not len(part.ids):
            return
        tokens, sizes, ids, _ = encode(part, self.table, self.eos)
        self.bin.write(tokens.tobytes(order="C"))
        self.ids.write("".join(f"{rid}\n" for rid in ids))
        self.sizes.append(sizes.astype(np.int32))
        self.records += len(ids)
        self.residues += int(part.lengths.sum())

    def close(self, ok: bool = True) -> None:
        """Write the index and move the files into place (``ok``), or delete them."""
        self.bin.close()
        self.ids.close()
        try:
            if ok:
                sizes = np.concatenate(self.sizes) if self.sizes else np.zeros(0, np.int32)
                write_index(f"{self.prefix}.idx.tmp", sizes, self.table.dtype.type)
        except BaseException:
            ok = False
            raise
        finally:
            _replace_all(self.prefix, SUFFIXES, ok)
