"""FASTA → one protein per line, residues space-separated (``M K T A ...``), for fairseq-preprocess.

    fairseq-esm-fasta-to-text train.fasta.gz --out train.txt
    fairseq-preprocess --only-source --srcdict fairseq_esm/dicts/esm1b.txt \\
        --trainpref train.txt --destdir data-bin --dataset-impl mmap --workers 4

Also writes the ids, one per line in the same order, next to OUT (train.txt -> train.ids), and
prints the residue-policy report (the table in fairseq_esm/io/fasta.py). fairseq-esm-binarize
writes the same .bin/.idx directly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from fairseq_esm.cli.common import add_out, add_positional_out, out_or_positional, run_main
from fairseq_esm.io.fasta import (
    CleanChunk,
    FastaFormatError,
    FastaReport,
    add_policy_args,
    clean_fasta,
    policy_from_args,
)


def as_text(part: CleanChunk) -> bytes:
    """Records as lines of space-separated residues: each residue byte then a space, the last a newline."""
    out = np.full(2 * len(part.residues), ord(" "), np.uint8)
    out[0::2] = part.residues
    out[2 * np.cumsum(part.lengths) - 1] = ord("\n")
    return out.tobytes()


def write_text(fasta: str, text: Path, ids: Path, args: argparse.Namespace) -> FastaReport:
    """Stream the cleaned records into TEXT and IDS (``.tmp`` files renamed only on success)."""
    report, done = FastaReport(sources=[fasta]), False
    try:
        with open(f"{text}.tmp", "wb") as text_out, open(f"{ids}.tmp", "w", encoding="utf-8") as ids_out:
            for part in clean_fasta(fasta, policy_from_args(args), args.workers):
                text_out.write(as_text(part))
                ids_out.write("".join(f"{rid}\n" for rid in part.ids))
                report.merge(part.report)
        done = True
    finally:
        for path in (text, ids):
            if done:
                os.replace(f"{path}.tmp", path)
            else:
                Path(f"{path}.tmp").unlink(missing_ok=True)
    return report


def build_parser() -> argparse.ArgumentParser:
    """The FASTA input, ``--out`` for the text, the worker count and the residue policy."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-fasta-to-text", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fasta", help="FASTA input, plain or gzip")
    add_positional_out(parser, "text")
    add_out(parser, "output text file, one protein per line", required=False)
    parser.add_argument("--ids", help="ids sidecar (default: OUT with suffix .ids)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (output identical for any number)")
    parser.add_argument("--report-json", help="also write the report to this JSON file")
    add_policy_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Write OUT and its ids sidecar, print the report."""
    args = build_parser().parse_args(argv)
    text = Path(out_or_positional(args, "text", "output text file"))
    report = write_text(args.fasta, text, Path(args.ids) if args.ids else text.with_suffix(".ids"), args)
    print(report.format(), flush=True)
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if report.records_written == 0:
        raise FastaFormatError(args.fasta, None, "no record survived the residue policy", "see the report above")
    return 0


def cli() -> None:
    sys.exit(run_main(main))
