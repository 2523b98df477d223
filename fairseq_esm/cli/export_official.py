"""``python -m fairseq_esm.cli.export_official CHECKPOINT OUT.pt``: hand a model to fair-esm users.

Reads a fairseq checkpoint trained with this plugin (or an official file) and writes fair-esm's
layout, ``OUT.pt`` plus ``OUT-contact-regression.pt``, which ``esm.pretrained.load_model_and_alphabet_local``
loads with the same logits.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ..pretrained import CheckpointError, export_official, load_model


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="checkpoint_best.pt of fairseq-train, or an official fair-esm .pt")
    parser.add_argument("out", help="output .pt path (fair-esm reads the name: avoid esm2*, *esm1v*, *esm_if*)")
    args = parser.parse_args(argv)
    try:
        model, _ = load_model(args.checkpoint)
        written = export_official(model, args.out)
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("wrote " + " and ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
