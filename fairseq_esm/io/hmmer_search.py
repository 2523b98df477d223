"""All-vs-all HMMER search (phmmer, or jackhmmer's iterated profile HMMs) as a similarity matrix.

The remote-homology baseline of the ESM-1b paper's Table 2 is an alignment method (HHblits) run on the same
queries. Here every sequence queries the same set with Debian's HMMER 3: ``phmmer`` (one sequence against
each target, with a position-independent substitution model) or ``jackhmmer -N 3`` (re-searching with a
profile HMM built from the previous round's hits, the closest HMMER has to HHblits). Searches use
``-Z n`` so E-values are those of a database of the evaluated size, and a permissive reporting threshold
(``-E 1000``) so every pair that passes HMMER's filters is reported. jackhmmer keeps HMMER's default
inclusion threshold (``--incE 0.001``): what enters the next round's profile must stay trustworthy.

``similarity[i, j]`` is query i's full-sequence bit score against target j; pairs HMMER did not report are
``-inf``, below every reported pair (and tied among themselves). Queries run in chunks so a long search
shows progress.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from fairseq_esm.errors import InputError

TOOLS = ("phmmer", "jackhmmer")
INSTALL_HINT = "bash preprocess/install_tools.sh hmmer"
REPORT_EVALUE = 1000.0  # report (almost) every pair HMMER's filters let through
JACKHMMER_ROUNDS = 3
CHUNK = 250  # queries per HMMER call: progress granularity


class HmmerError(InputError):
    """HMMER is missing or one of its runs failed (one line, with what to do)."""


@dataclass
class HmmerResult:
    """An all-vs-all search: scores, the tool's name and version, how long it took, and how."""

    similarity: np.ndarray  # (n, n) float32 bit scores, query rows; -inf where not reported
    tool: str
    version: str
    seconds: float
    command: str

    @property
    def label(self) -> str:
        return f"{self.tool} (HMMER {self.version})"

    @property
    def reported_pairs(self) -> int:
        """Off-diagonal (query, target) pairs HMMER reported."""
        finite = np.isfinite(self.similarity)
        return int(finite.sum() - np.diag(finite).sum())


def hmmer_program(tool: str) -> str:
    """Path of ``phmmer``/``jackhmmer``, or a one-line error saying how to install HMMER."""
    if tool not in TOOLS:
        raise HmmerError(f"unknown HMMER search {tool!r}: use one of {', '.join(TOOLS)}")
    found = shutil.which(tool)
    if found is None:
        raise HmmerError(f"{tool} not found on PATH — install HMMER with `{INSTALL_HINT}` (Debian package hmmer)")
    return found


def hmmer_version(program: str) -> str:
    """The version ``-h`` prints (``# HMMER 3.3.2 (Nov 2020); http://hmmer.org/`` → ``3.3.2``)."""
    text = subprocess.run([program, "-h"], capture_output=True, text=True).stdout
    for line in text.splitlines():
        if line.startswith("# HMMER "):
            return line.split()[2]
    raise HmmerError(f"{program} -h printed no '# HMMER <version>' line: is it HMMER 3?")


def search_args(tool: str, n: int, threads: int) -> list[str]:
    """Options of one all-vs-all call (without program, query and target files)."""
    args = ["--noali", "-E", str(REPORT_EVALUE), "-Z", str(n), "--cpu", str(threads)]
    if tool == "phmmer":
        return args + ["--incE", str(REPORT_EVALUE)]
    return args + ["-N", str(JACKHMMER_ROUNDS)]


def parse_tblout(path: str | Path) -> list[tuple[str, str, float, float]]:
    """(query, target, E-value, bit score) per hit line of a ``--tblout`` file (full-sequence columns)."""
    hits = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.startswith("#") or not line.strip():
                continue
            fields = line.split(None, 6)
            if len(fields) < 7:
                raise HmmerError(f"{path}:{number}: not a HMMER --tblout line: {line[:60]!r}")
            hits.append((fields[2], fields[0], float(fields[4]), float(fields[5])))
    return hits


def fill_similarity(similarity: np.ndarray, hits: Sequence[tuple[str, str, float, float]]) -> None:
    """Write the bit scores of ``hits`` (records named ``s<index>``) into ``similarity`` (query row, target column)."""
    for query, target, _, score in hits:
        similarity[int(query[1:]), int(target[1:])] = score


def write_fasta(path: Path, sequences: Sequence[str], indices: Sequence[int]) -> None:
    """``>s<index>`` records: our own names, so HMMER's output maps back to positions."""
    with path.open("w") as out:
        for i in indices:
            out.write(f">s{i}\n{sequences[i]}\n")


def all_vs_all(sequences: Sequence[str], tool: str = "phmmer", threads: int = 1, chunk: int = CHUNK,
               progress: bool = True) -> HmmerResult:
    """Every sequence searched against all of them with ``tool``: the (n, n) bit-score matrix."""
    program = hmmer_program(tool)
    n = len(sequences)
    similarity = np.full((n, n), -np.inf, np.float32)
    options = search_args(tool, n, threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fairseq-esm-hmmer-") as work:
        database, queries, table = Path(work) / "db.fasta", Path(work) / "queries.fasta", Path(work) / "hits.tbl"
        write_fasta(database, sequences, range(n))
        with tqdm(total=n, desc=tool, unit="query", disable=not progress) as bar:
            for start in range(0, n, chunk):
                block = range(start, min(start + chunk, n))
                write_fasta(queries, sequences, block)
                command = [program, "-o", os.devnull, "--tblout", str(table), *options, str(queries), str(database)]
                proc = subprocess.run(command, capture_output=True, text=True)
                if proc.returncode != 0:
                    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                    raise HmmerError(f"{tool} failed (exit {proc.returncode}) on queries {start}-{block[-1]}: "
                                     f"{tail[0]}")
                fill_similarity(similarity, parse_tblout(table))
                bar.update(len(block))
    shown = " ".join([tool, *options, "--tblout", "HITS", "QUERIES", "ALL"])
    return HmmerResult(similarity, tool, hmmer_version(program), time.perf_counter() - started, shown)
