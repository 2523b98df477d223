"""The one kind of error a user can fix, and the one line every tool prints for it.

Every module raises a subclass of :class:`InputError` (a FASTA, checkpoint, structure or data-bin problem,
a bad flag) with a message that names the file and what to do. Our console scripts print it through
``fairseq_esm.cli.common.run_main``; fairseq's own console scripts (``fairseq-train``, ``fairseq-validate``)
through :func:`install_excepthook`, which the plugin installs once when fairseq imports it. Both use
:func:`error_lines`, so the same problem reads the same in every tool. A write error (a full disk) names its
file too, although write, flush and close raise it without one: :func:`written_file` finds the file object.
"""

from __future__ import annotations

import errno
import io
import sys
from types import TracebackType

#: exit status of a tool stopped by bad input or usage (argparse's own usage status)
USAGE_STATUS = 2
#: errors of writing (not of finding or opening a file): the OS raises them from write, flush and close,
#: which name no file
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})


class InputError(ValueError):
    """Input the user can fix: printed as one ``error:`` line, exit status 2, no traceback."""


def error_lines(error: BaseException) -> list[str] | None:
    """The ``error:`` lines for a problem the user can fix, or None for a bug (which keeps its traceback).

    fairseq re-raises a failed checkpoint load as a bare ``Exception``: then our reason and fairseq's line."""
    if isinstance(error, InputError):
        return [f"error: {error}"]
    if isinstance(error, FileNotFoundError):  # with a filename from the OS; without one, our message says it all
        return [f"error: {error.filename}: no such file — check the path" if error.filename else f"error: {error}"]
    if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:  # a full disk: the file it happened on
        name = error.filename or written_file(error)
        if name or error.errno != errno.EIO:  # an unattributed EIO may be a read
            where = {None: "output", "<stdout>": "standard output", "<stderr>": "standard error"}.get(name, name)
            full = error.errno in (errno.ENOSPC, errno.EDQUOT)
            return [f"error: writing {where}: {error.strerror} — {'free space or ' if full else ''}write elsewhere"]
    if isinstance(error, OSError) and error.filename:
        return [f"error: {error.filename}: {error.strerror} — check the path and permissions"]
    if type(error) is Exception and isinstance(error.__context__, InputError):
        return [f"error: {error.__context__}", f"error: {error}"]
    return None


def _writable_file_name(value: object) -> str | None:
    """The name of ``value`` if it is a file object open for writing (or a bound method of one, such as the
    ``close`` an ``ExitStack`` calls), else None."""
    try:
        value = getattr(value, "__self__", value)
        if not isinstance(value, io.IOBase):
            return None
        try:
            writable = value.writable()
        except ValueError:  # closed by the close that failed
            mode = getattr(value, "mode", None)
            writable = isinstance(mode, str) and any(c in mode for c in "wax+")
        name = getattr(value, "name", None)
        return name if writable and isinstance(name, str) else None
    except Exception:
        return None


def written_file(error: BaseException) -> str | None:
    """The file a write, flush or close failed on, which the OS does not name: the one file open for writing
    among the locals of the innermost frame of the traceback that holds any (None if none, or several)."""
    frames, tb = [], error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        names = {name for value in frame.f_locals.values() if (name := _writable_file_name(value))}
        if names:
            return names.pop() if len(names) == 1 else None
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
