"""The one error formatter every tool uses: a user-fixable problem is one line naming the file; a bug keeps
its traceback."""

import errno

from fairseq_esm.errors import InputError, error_lines


def test_error_lines_name_the_file_once():
    assert error_lines(FileNotFoundError(errno.ENOENT, "No such file", "a.pt")) == [
        "error: a.pt: no such file — check the path"]
    assert error_lines(FileNotFoundError("no dictionary at d/dict.txt; run fairseq-preprocess first")) == [
        "error: no dictionary at d/dict.txt; run fairseq-preprocess first"]
    assert error_lines(InputError("x.fasta:3: bad — fix it")) == ["error: x.fasta:3: bad — fix it"]
    assert error_lines(KeyError("a bug")) is None
