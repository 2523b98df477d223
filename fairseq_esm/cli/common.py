"""What every console script shares: one spelling per flag, thread and progress settings, one error wrapper.

The flags (one spelling across every tool; docs/cli.md lists them per tool):

==================  ===========================================================================
``--out``           where the tool writes its result: a file or a directory, said per tool
``--max-tokens``    padded tokens per forward pass (fairseq's name for the token budget)
``--repr-layers``   which layers' representations to use (0 = embeddings, -1 = last)
``--device``        torch device (default: cuda if available, else cpu)
``--threads``       CPU threads the tool may use: torch intra-op threads and those of any program it runs
``--no-progress``   no progress bar on stderr
``--bf16``          bfloat16 matrix multiplies (``--fp16``: float16 on a GPU; ``--int8``: int8 linear layers on a CPU)
==================  ===========================================================================

Old spellings stay as hidden aliases that print a one-line deprecation note. Heavy libraries (torch, fairseq)
are imported by the tools after their arguments are parsed, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Optional, Sequence

from fairseq_esm.errors import USAGE_STATUS, InputError, error_lines


class UsageError(InputError):
    """Input the user can fix (a bad mutation code, a missing column): printed as one ``error:`` line."""


class _Deprecated(argparse.Action):
    """A hidden old spelling: stores into the new flag's destination and says which flag to use instead."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str, inner: argparse.Action, **kwargs: Any):
        super().__init__(option_strings, dest, nargs=inner.nargs, const=inner.const, help=argparse.SUPPRESS,
                         type=inner.type, choices=inner.choices, default=argparse.SUPPRESS)
        self.new, self.inner = new, inner

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"note: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        self.inner(parser, namespace, values, self.new)


def add_alias(parser: argparse.ArgumentParser, new: str, *old: str) -> None:
    """Accept ``old`` spellings of the already defined flag ``new`` (hidden, with a deprecation note)."""
    inner = next(a for a in parser._actions if new in a.option_strings)
    parser.add_argument(*old, dest=inner.dest, action=_Deprecated, new=new, inner=inner)


def add_out(parser: argparse.ArgumentParser, help: str, required: bool = True, old: Sequence[str] = (),
            **kwargs: Any) -> None:
    """``--out``: where the tool writes its result (``help`` says whether a file or a directory); ``old``
    spellings stay accepted (hidden), and a required ``--out`` is satisfied by either."""
    if not old:
        parser.add_argument("--out", required=required, help=help, **kwargs)
        return
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--out", help=help, **kwargs)
    add_alias(group, "--out", *old)


def add_positional_out(parser: argparse.ArgumentParser, dest: str) -> None:
    """Accept an old positional spelling of ``--out`` (hidden; resolved by :func:`out_or_positional`)."""
    parser.add_argument(dest, nargs="?", help=argparse.SUPPRESS)


def out_or_positional(args: argparse.Namespace, dest: str, what: str = "output") -> str:
    """``--out`` or the deprecated positional ``dest`` (with a note): exactly one of them must be given."""
    old = getattr(args, dest)
    if args.out is None and old is None:
        raise UsageError(f"no {what} given — pass --out")
    if args.out is not None and old is not None:
        raise UsageError(f"two {what}s, --out {args.out} and {old} — give only --out")
    if old is not None:
        print(f"note: the positional {dest.upper()} is deprecated; use --out", file=sys.stderr)
    return str(args.out if args.out is not None else old)


def add_max_tokens(parser: argparse.ArgumentParser, default: int = 4096) -> None:
    """``--max-tokens``: the padded tokens of one forward pass (``--toks-per-batch`` and fair-esm's spelling too)."""
    parser.add_argument("--max-tokens", type=int, default=default,
                        help="padded tokens per forward pass (default %(default)s)")
    add_alias(parser, "--max-tokens", "--toks-per-batch", "--toks_per_batch")


def add_threads(parser: argparse.ArgumentParser, help: Optional[str] = None) -> None:
    """``--threads``: how many CPU threads the tool (and any program it runs) may use (``help`` for a tool whose
    external program keeps another default)."""
    parser.add_argument("--threads", type=int, default=None,
                        help=help or "CPU threads to use: torch intra-op threads and those of any program the tool "
                        "runs (default: every core)")


def add_progress(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bar (for logs and batch jobs)."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def add_checkpoint_args(parser: argparse.ArgumentParser, device: Optional[str] = None,
                        threads_help: Optional[str] = None, several: Optional[str] = None) -> None:
    """``checkpoint`` plus ``--device`` (default ``device``, else cuda if available), ``--threads`` and
    ``--allow-unsafe``: what loading a model needs. With ``several`` (the help's sentence on what the tool does
    with more than one), ``checkpoint`` takes one or more paths and is always a list."""
    what = ("checkpoint of fairseq-train --user-dir fairseq_esm, an official fair-esm .pt, "
            "or a HuggingFace EsmForMaskedLM directory (needs transformers)")
    if several:
        parser.add_argument("checkpoint", nargs="+", help=f"one or more: {what}; {several}")
    else:
        parser.add_argument("checkpoint", help=what)
    parser.add_argument("--device", default=device,
                        help=f"torch device (default: {device or 'cuda if available, else cpu'})")
    add_threads(parser, threads_help)
    parser.add_argument("--allow-unsafe", action="store_true",
                        help="unpickle arbitrary objects in the checkpoint (only for files you trust)")


def add_model_args(parser: argparse.ArgumentParser, max_tokens: int = 4096, device: Optional[str] = None,
                   threads_help: Optional[str] = None, several: Optional[str] = None, precision: bool = True) -> None:
    """:func:`add_checkpoint_args` plus ``--max-tokens`` and (unless the tool trains the model) the precision
    flags: what running a model on proteins needs."""
    add_checkpoint_args(parser, device, threads_help, several)
    add_max_tokens(parser, max_tokens)
    if precision:
        add_precision(parser)


def add_precision(parser: argparse.ArgumentParser) -> None:
    """``--bf16`` / ``--fp16`` / ``--int8``: the precision of the model's matrix multiplies (default float32)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--bf16", action="store_true",
                       help="bfloat16 matrix multiplies, LayerNorms and residual stream in float32 (CPUs with "
                       "avx512_bf16/amx_bf16, and GPUs)")
    group.add_argument("--fp16", action="store_true", help="float16 matrix multiplies (GPU only)")
    group.add_argument("--int8", action="store_true",
                       help="dynamically quantised int8 linear layers (CPU only; the fast choice on CPUs without "
                       "bfloat16 instructions)")


def precision_of(args: argparse.Namespace) -> str:
    """``fp32``, ``bf16``, ``fp16`` or ``int8`` from the precision flags."""
    return next((name for name in ("bf16", "fp16", "int8") if getattr(args, name, False)), "fp32")


def apply_precision(model: Any, args: argparse.Namespace) -> Any:
    """``model`` prepared for inference in the precision the flags ask for (``set_precision``); a precision its
    device cannot run is a usage error."""
    from fairseq_esm.modules.precision import set_precision

    try:
        return set_precision(model, precision_of(args))
    except ValueError as err:
        raise UsageError(str(err)) from None


def load_inference_model(args: argparse.Namespace, path: Optional[str] = None, device: Optional[Any] = None,
                         quiet: bool = False) -> tuple[Any, Any]:
    """(model, alphabet) of ``path`` (default ``args.checkpoint``) on ``--device`` (or ``device``) in the
    precision the flags ask for; a precision the device cannot run is a usage error, and ``--bf16`` on a CPU
    without bfloat16 instructions gets a note (unless ``quiet``: said once already)."""
    from fairseq_esm.checkpoints import load_model, pick_device
    from fairseq_esm.modules.precision import check_precision, cpu_has_bf16

    device = pick_device(args.device) if device is None else device
    precision = precision_of(args)
    try:  # before a model of gigabytes is read
        check_precision(precision, device)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16() and not quiet:
        print("note: this CPU lists no bfloat16 instructions (avx512_bf16, amx_bf16): --bf16 is emulated and "
              "slower than float32 here; --int8 is the fast option", file=sys.stderr)
    model, alphabet = load_model(args.checkpoint if path is None else path, device, args.allow_unsafe)
    return apply_precision(model, args), alphabet


def thread_count(args: argparse.Namespace) -> int:
    """The ``--threads`` value, or every core this process may run on."""
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        raise UsageError(f"--threads {threads}: give at least 1")
    return threads or len(os.sched_getaffinity(0))


def apply_threads(args: argparse.Namespace) -> int:
    """Give torch ``--threads`` intra-op threads (when set); returns the thread count for external programs."""
    threads = thread_count(args)
    if getattr(args, "threads", None) is not None:
        import torch

        torch.set_num_threads(threads)
    return threads


def run_main(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """Run a tool's ``main``: a problem the user can fix becomes ``error:`` lines on stderr and status 2."""
    try:
        return main(argv)
    except Exception as err:
        lines = error_lines(err)
        if lines is None:
            raise
        print("\n".join(lines), file=sys.stderr)
    return USAGE_STATUS
