"""FASTA → one protein per line, residues space-separated (``M K T A ...``), for fairseq-preprocess.

    python preprocess/fasta_to_text.py train.fasta.gz train.txt
    fairseq-preprocess --only-source --srcdict fairseq_esm/dicts/esm1b.txt \\
        --trainpref train.txt --destdir data-bin --dataset-impl mmap --workers 4

Also writes the ids, one per line in the same order, next to TEXT (train.txt -> train.ids), and
prints the residue-policy report (the table in fairseq_esm/data/fasta.py). binarize_fasta.py
writes the same .bin/.idx directly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from fairseq_esm.cli.common import run_main
from fairseq_esm.io.fasta import CleanChunk, FastaReport, add_policy_args, clean_fasta, policy_from_args


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


def main(argv: list[str] | None = None) -> int:
    """Write TEXT and its ids sidecar, print the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fasta", help="FASTA input, plain or gzip")
    parser.add_argument("text", help="output text file, one protein per line")
    parser.add_argument("--ids", help="ids sidecar (default: TEXT with suffix .ids)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--report-json", help="also write the report to this JSON file")
    add_policy_args(parser)
    args = parser.parse_args(argv)
    text = Path(args.text)
    report = write_text(args.fasta, text, Path(args.ids) if args.ids else text.with_suffix(".ids"), args)
    print(report.format(), flush=True)
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if report.records_written == 0:
        print(f"error: {args.fasta}: no record survived the residue policy — see the report above", file=sys.stderr)
        return 2
    return 0



def cli() -> None:
    sys.exit(run_main(main))
