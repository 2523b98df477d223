"""The one error formatter every tool uses: a user-fixable problem is one line naming the file; a bug keeps
its traceback."""

import errno
from pathlib import Path

import pytest

from fairseq_esm.errors import InputError, error_lines


def test_error_lines_name_the_file_once():
    assert error_lines(FileNotFoundError(errno.ENOENT, "No such file", "a.pt")) == [
        "error: a.pt: no such file — check the path"]
    assert error_lines(FileNotFoundError("no dictionary at d/dict.txt; run fairseq-preprocess first")) == [
        "error: no dictionary at d/dict.txt; run fairseq-preprocess first"]
    assert error_lines(InputError("x.fasta:3: bad — fix it")) == ["error: x.fasta:3: bad — fix it"]
    assert error_lines(KeyError("a bug")) is None


def write_and_fail(path, error: OSError) -> None:
    """A writer whose flush fails as the OS fails it: an OSError that names no file."""
    handle = open(path, "w")  # noqa: SIM115 (the failing writer holds its file, as tools do)
    try:
        raise error
    finally:
        handle.close()


def test_write_errors_name_the_file_the_os_does_not(tmp_path):
    out = tmp_path / "scores.tsv"
    with pytest.raises(OSError) as err:
        write_and_fail(out, OSError(errno.ENOSPC, "No space left on device"))
    full = "No space left on device — free space or write elsewhere"
    assert error_lines(err.value) == [f"error: writing {out}: {full}"]
    with pytest.raises(OSError) as err:
        raise OSError(errno.ENOSPC, "No space left on device")
    assert error_lines(err.value) == [f"error: writing output: {full}"]
    with pytest.raises(OSError) as err:  # an input/output error with no file to blame may be a read: a bug report
        raise OSError(errno.EIO, "Input/output error")
    assert error_lines(err.value) is None


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_real_full_device_is_named():
    with pytest.raises(OSError) as err:
        with open("/dev/full", "w") as handle:
            handle.write("x" * 100)
    assert err.value.filename is None  # what Python gives: the file is found by the formatter
    assert error_lines(err.value) == [
        "error: writing /dev/full: No space left on device — free space or write elsewhere"]
