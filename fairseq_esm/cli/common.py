"""What every command-line tool shares: model/batching flags and one-line errors instead of tracebacks."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

from fairseq_esm.checkpoints.pt_files import CheckpointError
from fairseq_esm.errors import InputError
from fairseq_esm.io.fasta import FastaFormatError


class UsageError(InputError):
    """Input the user can fix (a bad mutation code, a missing column): printed as one ``error:`` line."""


def add_model_args(parser: argparse.ArgumentParser, toks_per_batch: int = 4096) -> None:
    """``checkpoint`` positional plus ``--device``, ``--toks-per-batch``, ``--allow-unsafe``."""
    parser.add_argument(
        "checkpoint",
        help="checkpoint of fairseq-train --user-dir fairseq_esm, an official fair-esm .pt, "
        "or a HuggingFace EsmForMaskedLM directory (needs transformers)",
    )
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--toks-per-batch", type=int, default=toks_per_batch,
                        help="padded tokens per forward pass (default %(default)s)")
    parser.add_argument("--allow-unsafe", action="store_true",
                        help="unpickle arbitrary objects in the checkpoint (only for files you trust)")


def run_main(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """Run a CLI's ``main``: user-fixable problems become one ``error:`` line on stderr and status 2."""
    try:
        return main(argv)
    except (FastaFormatError, CheckpointError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
    except FileNotFoundError as err:
        print(f"error: {err.filename or err}: no such file — check the path", file=sys.stderr)
    except OSError as err:
        print(f"error: {err.filename}: {err.strerror} — check the path and permissions", file=sys.stderr)
    return 2
