"""The one kind of error a user can fix, and the one line every tool prints for it.

Every module raises a subclass of :class:`InputError` (a FASTA, checkpoint, structure or data-bin problem,
a bad flag) with a message that names the file and what to do. Our console scripts print it through
``fairseq_esm.cli.common.run_main``; fairseq's own console scripts (``fairseq-train``, ``fairseq-validate``)
through :func:`install_excepthook`, which the plugin installs once when fairseq imports it. Both use
:func:`error_lines`, so the same problem reads the same in every tool.
"""

from __future__ import annotations

import sys
from types import TracebackType

#: exit status of a tool stopped by bad input or usage (argparse's own usage status)
USAGE_STATUS = 2


class InputError(ValueError):
    """Input the user can fix: printed as one ``error:`` line, exit status 2, no traceback."""


def error_lines(error: BaseException) -> list[str] | None:
    """The ``error:`` lines for a problem the user can fix, or None for a bug (which keeps its traceback).

    fairseq re-raises a failed checkpoint load as a bare ``Exception``: then our reason and fairseq's line."""
    if isinstance(error, InputError):
        return [f"error: {error}"]
    if isinstance(error, FileNotFoundError):  # with a filename from the OS; without one, our message says it all
        return [f"error: {error.filename}: no such file — check the path" if error.filename else f"error: {error}"]
    if isinstance(error, OSError) and error.filename:
        return [f"error: {error.filename}: {error.strerror} — check the path and permissions"]
    if type(error) is Exception and isinstance(error.__context__, InputError):
        return [f"error: {error.__context__}", f"error: {error}"]
    return None


def _print_input_errors(kind: type, error: BaseException, tb: TracebackType | None) -> None:
    """``sys.excepthook`` for fairseq's CLIs: input errors as ``error:`` lines, anything else as Python would."""
    lines = error_lines(error)
    if lines is None:
        sys.__excepthook__(kind, error, tb)
    else:
        print("\n".join(lines), file=sys.stderr)


def install_excepthook() -> None:
    """Make ``fairseq-train`` / ``fairseq-validate`` print our input errors without a traceback (idempotent)."""
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _print_input_errors
