"""``fairseq-esm-convert SRC --out DST --to {fairseq,official,hf}``: one model, three layouts, logits checked.

SRC is any model this package loads: a checkpoint of ``fairseq-train --user-dir fairseq_esm``, an official
fair-esm ``.pt`` (with its ``-contact-regression.pt`` sibling if present) or a HuggingFace ``EsmForMaskedLM``
directory. DST (``--out``; the old positional DST still works) is written, reloaded the way its users load it
(``load_model`` for ``.pt`` files, transformers' ``EsmForMaskedLM.from_pretrained`` for ``hf``) and its logits
compared with SRC's on three real proteins (padded batch, one ``<mask>``): the max abs difference is printed,
exit status 1 above 1e-4.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from fairseq_esm.cli.common import (
    UsageError,
    add_out,
    add_positional_out,
    add_threads,
    apply_threads,
    out_or_positional,
    run_main,
)

if TYPE_CHECKING:
    import torch

    from fairseq_esm.modules.alphabet import Alphabet
    from fairseq_esm.modules.esm1 import ESM1

TOLERANCE = 1e-4
#: Swiss-Prot entries of the shipped sample (examples/data/uniprot_sample.fasta.gz; UniProt, CC BY 4.0)
CHECK_PROTEINS = {
    "P53508": "MKKTIGLILILASFGSHARTEIATKNFPVSTTISKSFFAPEPQIQPSFGKNVGKEGGLLFSVSLTVPENVSQVTVYPVYD"
              "EDYGLGRLVNTADDSQSIIYQIVDDKGRKMLKDHGAEVTPNQQITFRALNYTSGDKEIPPGIYNDQVMVGYYVN",
    "Q6ANB6": "MDISKLMQQAKDMQGKMAAIQEDLAKKIITGSAGGGMVEVQVNGQGEILAIKIEDALINTDEKEMLQDLVTAATNDGLRR"
              "AKDLSKQEMGQLTGGMNLPDLTNFLS",
    "Q058B8": "MPKICQITKKKSMLGQNRSHAMNATKKKFSLNIQYHTFWLPEKKKKIRIRITKKGIRMINKFGISKIYKKYII",
}
#: position (after <cls>) that gets <mask> in the first protein, so token dropout is part of the check
MASKED_POSITION = 5
Logits = Callable[["torch.Tensor"], "torch.Tensor"]


def build_parser() -> argparse.ArgumentParser:
    """SRC, --out DST, the layout to write and what fairseq's layout stores."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-convert", description=__doc__.splitlines()[0])
    parser.add_argument("src", help="checkpoint of fairseq-train --user-dir fairseq_esm, official fair-esm .pt, "
                        "or HuggingFace EsmForMaskedLM directory")
    add_positional_out(parser, "dst")
    add_out(parser, required=False, metavar="DST",
            help="where to write: a .pt file for --to fairseq / official, a directory for --to hf")
    parser.add_argument("--to", required=True, choices=("fairseq", "official", "hf"),
                        help="fairseq: checkpoint for fairseq-validate / --finetune-from-model; official: fair-esm "
                        ".pt + -contact-regression.pt; hf: EsmForMaskedLM directory with tokenizer (ESM-1b and ESM-2)")
    parser.add_argument("--data", help="--to fairseq: data-bin directory stored as the task's data "
                        "(default: unset; fairseq-validate DATA supplies it)")
    parser.add_argument("--allow-unsafe", action="store_true",
                        help="unpickle arbitrary objects in SRC (only for files you trust)")
    add_threads(parser)
    return parser


def check_destination(src: Path, dst: Path, kind: str) -> None:
    """Refuse a DST that would overwrite SRC or does not suit ``kind``, before anything is loaded."""
    if dst.resolve() == src.resolve():
        raise UsageError(f"{dst} is SRC itself; choose another destination")
    if kind == "hf" and (dst.suffix == ".pt" or dst.is_file()):
        raise UsageError(f"--to hf writes a directory; {dst} is a file name")
    if kind != "hf" and dst.suffix != ".pt":
        raise UsageError(f"--to {kind} writes a .pt file; {dst} does not end in .pt")


def check_batch(alphabet: Alphabet, max_positions: int) -> torch.Tensor:
    """CHECK_PROTEINS cropped to the model's context, padded (B, T), one ``<mask>`` in the first row."""
    from fairseq_esm.modules.batching import pad_tokens, residue_budget

    budget = residue_budget(max_positions, alphabet)
    tokens = pad_tokens([alphabet.tokenize(seq[:budget]) for seq in CHECK_PROTEINS.values()], alphabet.padding_idx)
    tokens[0, 1 + min(MASKED_POSITION, budget - 1)] = alphabet.mask_idx
    return tokens


def write(model: ESM1, dst: Path, kind: str, data: Optional[str]) -> list[Path]:
    """DST in the chosen layout; the paths written."""
    if kind == "hf":
        from fairseq_esm.checkpoints.huggingface import (
            save_hf_model,  # transformers is optional: import only when needed
        )

        return [save_hf_model(model, dst)]
    if kind == "official":
        from fairseq_esm.checkpoints.pt_files import export_official

        try:
            return list(export_official(model, dst))
        except ValueError as err:  # fair-esm reads the file name: refused names
            raise UsageError(str(err)) from err
    from fairseq_esm.tasks.fairseq_checkpoint import save_fairseq_checkpoint

    return [save_fairseq_checkpoint(model, dst, data)]


def reloaded_logits(dst: Path, kind: str, pad: int) -> Logits:
    """tokens (B, T) -> logits (B, T, V) of DST as its users load it."""
    if kind == "hf":
        from fairseq_esm.checkpoints.huggingface import import_transformers

        hf_model = import_transformers().EsmForMaskedLM.from_pretrained(str(dst)).eval()
        return lambda tokens: hf_model(input_ids=tokens, attention_mask=tokens.ne(pad).long()).logits
    from fairseq_esm.checkpoints import load_model

    model = load_model(dst)[0]
    return lambda tokens: model(tokens)["logits"]


def max_difference(model: ESM1, other: Logits, tokens: torch.Tensor, pad: int) -> float:
    """Max abs logits difference over the non-padding positions of ``tokens``."""
    import torch

    keep = tokens.ne(pad)  # (B, T)
    with torch.no_grad():
        return (model(tokens)["logits"] - other(tokens))[keep].abs().max().item()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Write DST, reload it as its users do and compare its logits with SRC's (exit 1 if they differ)."""
    args = build_parser().parse_args(argv)
    apply_threads(args)
    src, dst = Path(args.src), Path(out_or_positional(args, "dst", "destination"))
    check_destination(src, dst, args.to)
    from fairseq_esm.checkpoints import is_hf_directory, load_model

    if args.to == "hf" or is_hf_directory(src):
        from fairseq_esm.checkpoints.huggingface import import_transformers

        import_transformers().utils.logging.disable_progress_bar()  # one line per file read or written
    model, alphabet = load_model(src, "cpu", args.allow_unsafe)
    written = write(model, dst, args.to, args.data)
    print("wrote " + " and ".join(str(p) for p in written))
    tokens = check_batch(alphabet, model.max_positions())
    diff = max_difference(model, reloaded_logits(dst, args.to, alphabet.padding_idx), tokens, alphabet.padding_idx)
    print(f"max |logits difference| SRC vs reloaded DST on {len(tokens)} proteins "
          f"({int(tokens.ne(alphabet.padding_idx).sum())} tokens, one <mask>): {diff:.2e}")
    if diff > TOLERANCE:
        print(f"error: {dst} does not reproduce {src}: logits differ by {diff:.2e} > {TOLERANCE:g}", file=sys.stderr)
        return 1
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
