"""FASTA → fairseq mmap dataset directly: byte-identical to fairseq-esm-fasta-to-text + fairseq-preprocess, faster.

    fairseq-esm-binarize --trainpref train.fasta --validpref valid.fasta --destdir data-bin --workers 4

Writes DESTDIR/{train,valid,test}.{bin,idx,ids} (like fairseq-preprocess, a comma-separated
--validpref/--testpref gives valid, valid1, ...) and DESTDIR/dict.txt, and prints what was read,
written, changed and skipped. Inputs are FASTA, plain or gzip; the residue policy is the table in
fairseq_esm/io/fasta.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from fairseq_esm.cli.common import UsageError, run_main
from fairseq_esm.io.fasta import CHUNK_BYTES, FastaFormatError, add_policy_args, policy_from_args


def build_parser() -> argparse.ArgumentParser:
    """Flags of fairseq-preprocess (--trainpref ... --destdir, --srcdict, --workers), plus the residue policy."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-binarize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for split in ("train", "valid", "test"):
        parser.add_argument(f"--{split}pref", help=f"FASTA file(s) for the {split} split (comma-separated)")
    parser.add_argument("--destdir", default="data-bin", help="output directory (default: data-bin)")
    parser.add_argument("--srcdict", help="symbol file (default: ESM-1b's, fairseq_esm/dicts/esm1b.txt)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (output identical for any number)")
    parser.add_argument("--chunk-mb", type=float, default=CHUNK_BYTES / (1 << 20),
                        help="MiB of FASTA per chunk; bounds memory (default: %(default)s)")
    parser.add_argument("--report-json", help="also write every split's report to this JSON file")
    add_policy_args(parser)
    return parser


def splits(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``(output name, FASTA path)`` pairs, named as fairseq-preprocess names them."""
    out = [("train", args.trainpref)] if args.trainpref else []
    for split in ("valid", "test"):
        paths = getattr(args, f"{split}pref")
        out += [(f"{split}{k or ''}", p) for k, p in enumerate(paths.split(","))] if paths else []
    return out


def main(argv: list[str] | None = None) -> int:
    """Binarize every given split; a split with no written record is an error."""
    args = build_parser().parse_args(argv)
    if not splits(args):
        raise UsageError("give at least one of --trainpref, --validpref, --testpref")
    from fairseq_esm.data.binarize import binarize_fasta, load_dictionary
    from fairseq_esm.modules.alphabet import DICT_DIR

    srcdict = args.srcdict or str(DICT_DIR / "esm1b.txt")
    dest = Path(args.destdir)
    dest.mkdir(parents=True, exist_ok=True)
    dictionary = load_dictionary(srcdict)
    shutil.copyfile(srcdict, dest / "dict.txt")
    reports = {}
    for name, fasta in splits(args):
        report = binarize_fasta(fasta, dest / name, dictionary, policy_from_args(args), args.workers,
                                int(args.chunk_mb * (1 << 20)))
        print(f"== {name}: {fasta} -> {dest / name}.{{bin,idx,ids}}\n{report.format()}", flush=True)
        if report.records_written == 0:
            raise FastaFormatError(fasta, None, "no record survived the residue policy", "see the report above")
        reports[name] = report.to_dict()
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(reports, indent=2) + "\n")
    return 0


def cli() -> None:
    sys.exit(run_main(main))
