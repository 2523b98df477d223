"""Random held-out split of a FASTA file into OUT/train.fasta and OUT/valid.fasta.

    fairseq-esm-split-fasta sample.fasta.gz --out split --valid-count 500 --seed 1

Records are copied verbatim (header and sequence lines as they are; the residue policy is applied
later, when binarizing), both outputs keep the input order, and the same seed gives the same
split. A split of sequences, not of clusters: near-identical proteins can land on both sides.

The held-out records are drawn from the record count, so the records are read twice: count, then
write. A file is simply read twice; standard input (``-``), a FIFO or ``<(zcat x.gz)`` can be read only
once, so it is read once into a plain spool file in the output directory (removed afterwards), which the
second pass reads. Either way the outputs are the same bytes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO

import numpy as np

from fairseq_esm.cli.common import add_out, run_main
from fairseq_esm.io.fasta import FastaFormatError, read_chunks, reads_once, record_starts


def count_records(fasta: str, spool: BinaryIO | None = None) -> int:
    """Number of records (``>`` lines) in the file; with ``spool``, its records are also copied there
    (decompressed, from the first header), so a source that can be read only once is read once."""
    n_records = 0
    for data, _ in read_chunks(fasta):
        n_records += len(record_starts(data)[0])
        if spool is not None:
            spool.write(data)
    return n_records


def choose_valid(n_records: int, args: argparse.Namespace) -> np.ndarray:
    """Boolean mask of held-out records, drawn with the seed."""
    n_valid = args.valid_count if args.valid_count is not None else round(args.valid_fraction * n_records)
    if not 0 < n_valid < n_records:
        raise FastaFormatError(args.fasta, None, f"cannot hold out {n_valid} of {n_records} records",
                               "ask for at least 1 and fewer than all")
    mask = np.zeros(n_records, bool)
    mask[np.random.default_rng(args.seed).choice(n_records, n_valid, replace=False)] = True
    return mask


def write_split(fasta: str, valid: np.ndarray, train_out: Path, valid_out: Path) -> None:
    """Second pass: every record to the file its mask entry picks."""
    index = 0
    with train_out.open("wb") as train_file, valid_out.open("wb") as valid_file:
        for data, _ in read_chunks(fasta):
            starts = record_starts(data)[0].tolist() + [len(data)]
            for a, b in zip(starts, starts[1:]):
                (valid_file if valid[index] else train_file).write(data[a:b])
                index += 1


def split_via_spool(args: argparse.Namespace, out: Path) -> np.ndarray:
    """Read a once-only source into a spool file in ``out`` while counting, then split the spool; the
    output directory is removed again if this made it and the input fails."""
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".split-fasta-spool-", suffix=".fasta") as spool:
            valid = choose_valid(count_records(args.fasta, spool), args)
            spool.flush()
            write_split(spool.name, valid, out / "train.fasta", out / "valid.fasta")
    except BaseException:
        if made:
            with suppress(OSError):
                out.rmdir()  # only if empty: nothing written yet
        raise
    return valid


def build_parser() -> argparse.ArgumentParser:
    """The FASTA input, ``--out`` directory, how many records to hold out, the seed."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-split-fasta", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fasta", help="FASTA input, plain or gzip")
    add_out(parser, "output directory: writes train.fasta and valid.fasta here", old=("--out-dir",))
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--valid-count", type=int, help="number of records to hold out")
    size.add_argument("--valid-fraction", type=float, help="fraction of records to hold out")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Split, write, and print the counts."""
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if reads_once(args.fasta):
        valid = split_via_spool(args, out)
    else:
        valid = choose_valid(count_records(args.fasta), args)
        out.mkdir(parents=True, exist_ok=True)
        write_split(args.fasta, valid, out / "train.fasta", out / "valid.fasta")
    print(f"{args.fasta}: {len(valid):,} records -> {out / 'train.fasta'} {int((~valid).sum()):,}, "
          f"{out / 'valid.fasta'} {int(valid.sum()):,} (seed {args.seed})")
    return 0


def cli() -> None:
    sys.exit(run_main(main))
