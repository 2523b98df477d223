"""``python -m fairseq_esm.cli.export_official CHECKPOINT OUT.pt``: hand a model to fair-esm users.

Kept for existing scripts: the same as ``fairseq-esm-convert CHECKPOINT --out OUT.pt --to official``, which writes
``OUT.pt`` plus ``OUT-contact-regression.pt`` (what ``esm.pretrained.load_model_and_alphabet_local`` loads)
and checks that the reloaded file gives the same logits.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from fairseq_esm.cli import convert
from fairseq_esm.cli.common import run_main


def build_parser() -> argparse.ArgumentParser:
    """CHECKPOINT and OUT.pt, as this alias always took them."""
    parser = argparse.ArgumentParser(prog="python -m fairseq_esm.cli.export_official",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="fairseq-train checkpoint, official fair-esm .pt or HuggingFace directory")
    parser.add_argument("out", help="output .pt path (fair-esm reads the name: avoid esm2*, *esm1v*, *esm_if*)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``fairseq-esm-convert CHECKPOINT --out OUT.pt --to official``."""
    args = build_parser().parse_args(argv)
    return convert.main([args.checkpoint, "--out", args.out, "--to", "official"])


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
