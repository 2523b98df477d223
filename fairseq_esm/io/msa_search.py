"""MSAs for query proteins by an MMseqs2 profile search against a sequence database, written as A3M.

The paper built its MSAs with HHblits on Uniclust30 (and Netsurf's features with MMseqs2 on Uniclust90);
neither database can be had here, so any FASTA database works (the shipped UniProt sample, or UniRef).
``mmseqs search`` (iterative profile search) then ``result2msa --msa-format-mode 6`` (A3M, query first).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

from fairseq_esm.errors import InputError
from fairseq_esm.io.clusters import INSTALL_HINT

_STANDARD = frozenset("ACDEFGHIKLMNPQRSTVWY")


class MsaSearchError(InputError):
    """MMseqs2 missing or failing; the message says which step and why."""


def _run(command: list[str]) -> None:
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise MsaSearchError(f"{' '.join(command[:2])} failed (exit {proc.returncode}): {tail[0]}")


def mmseqs_program() -> str:
    """The ``mmseqs`` executable, or an error that says how to install it."""
    program = shutil.which("mmseqs")
    if program is None:
        raise MsaSearchError(f"mmseqs (MMseqs2) is not on PATH: {INSTALL_HINT}")
    return program


def easy_search(queries: Sequence[tuple[str, str]], targets: Sequence[tuple[str, str]] | Path, fields: str,
                threads: int = 1, options: Sequence[str] = ()) -> list[list[str]]:
    """Rows (``fields``, tab-split) of ``mmseqs easy-search`` of ``(name, sequence)`` queries against target
    records or a target FASTA file; ``options`` go to MMseqs2 as given (``--min-seq-id``, ``-e``)."""
    program = mmseqs_program()
    with tempfile.TemporaryDirectory(prefix="fairseq-esm-search-") as tmp:
        work = Path(tmp)
        (work / "q.fasta").write_text("".join(f">{name}\n{seq}\n" for name, seq in queries))
        if not isinstance(targets, Path):
            (work / "t.fasta").write_text("".join(f">{name}\n{seq}\n" for name, seq in targets))
            targets = work / "t.fasta"
        out = work / "hits.m8"
        _run([program, "easy-search", str(work / "q.fasta"), str(targets), str(out), str(work / "tmp"),
              "--format-output", fields, *options, "--threads", str(threads), "-v", "1"])
        return [line.split("\t") for line in out.read_text().splitlines() if line]


def search_msas(queries: Sequence[tuple[str, str]], database: str | Path, iterations: int = 2,
                evalue: float = 1e-3, max_seqs: int = 300, threads: int = 1) -> list[str]:
    """One A3M text per query, in query order (the query is its first row; a query without hits is alone)."""
    program = mmseqs_program()
    with tempfile.TemporaryDirectory(prefix="fairseq-esm-msa-") as tmp:
        work = Path(tmp)
        fasta = work / "queries.fasta"
        # our own record numbers as headers, so MMseqs2's id rewriting never matters
        fasta.write_text("".join(f">q{i}\n{seq}\n" for i, (_, seq) in enumerate(queries)))
        quiet = ["-v", "1"]
        _run([program, "createdb", str(fasta), str(work / "qdb"), *quiet])
        _run([program, "createdb", str(database), str(work / "tdb"), *quiet])
        _run([program, "search", str(work / "qdb"), str(work / "tdb"), str(work / "res"), str(work / "tmp"),
              "--num-iterations", str(iterations), "-e", str(evalue), "--max-seqs", str(max_seqs),
              "--threads", str(threads), *quiet])
        _run([program, "result2msa", str(work / "qdb"), str(work / "tdb"), str(work / "res"), str(work / "msa"),
              "--msa-format-mode", "6", "--threads", str(threads), *quiet])
        _run([program, "unpackdb", str(work / "msa"), str(work / "out"), "--unpack-name-mode", "0", *quiet])
        key_of = _query_keys(work / "qdb.lookup")
        return [_a3m_text(work / "out" / key_of[f"q{i}"], name, seq) for i, (name, seq) in enumerate(queries)]


def _query_keys(lookup: Path) -> dict[str, str]:
    """Our query header (``q<i>``) -> MMseqs2's database key: createdb shuffles, keys are not input order."""
    keys = {}
    for line in lookup.read_text().splitlines():
        key, name = line.split("\t")[:2]
        keys[name] = key
    return keys


def _a3m_text(path: Path, name: str, sequence: str) -> str:
    """The unpacked A3M with the query row renamed to its real id; the bare query when MMseqs2 wrote nothing."""
    text = path.read_text().replace("\x00", "") if path.exists() else ""
    lines = text.splitlines()
    if not lines or not lines[0].startswith(">"):
        return f">{name}\n{sequence}\n"
    if len(lines) < 2 or not _same_query(lines[1].strip(), sequence):
        raise MsaSearchError(f"MMseqs2 MSA {path.name} does not start with query {name}; refusing a mismatched MSA")
    lines[0], lines[1] = f">{name}", sequence  # MMseqs2 rewrites U/O/B/Z/J (e.g. Z as E): keep the query as given
    return "\n".join(lines) + "\n"


def _same_query(written: str, sequence: str) -> bool:
    """MMseqs2's query row is ours: same length, same letter wherever ours is one of the 20 standard residues
    (it rewrites the others in its own way: U as X, Z as E, ...)."""
    return len(written) == len(sequence) and all(a == b for a, b in zip(written.upper(), sequence.upper())
                                                 if b in _STANDARD)
