"""Real proteins for tests: the shipped UniProt sample read through the package's own FASTA reader, and the
one FASTA writer every test uses."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence

from fairseq_esm.io.fasta import read_fasta

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "data" / "uniprot_sample.fasta.gz"


def read_records(n: int, path: Path = SAMPLE) -> list[tuple[str, str]]:
    """The first n ``(id, sequence)`` records of a FASTA file (all for n < 0), cleaned by the residue policy
    every tool applies."""
    return list(itertools.islice(read_fasta(str(path)), n if n >= 0 else None))


def read_proteins(n: int, path: Path = SAMPLE) -> list[str]:
    """The first n sequences of the shipped UniProt sample (or of ``path``)."""
    return [sequence for _, sequence in read_records(n, path)]


def write_fasta(path: Path, records: Sequence[tuple[str, str]] | Sequence[str], prefix: str = "p",
                description: str = "") -> Path:
    """Write ``(id, sequence)`` records, or bare sequences named ``{prefix}0``, ``{prefix}1``, ...; an optional
    description follows each id, as in real headers."""
    named = [(f"{prefix}{i}", r) if isinstance(r, str) else r for i, r in enumerate(records)]
    suffix = f" {description}" if description else ""
    path.write_text("".join(f">{rid}{suffix}\n{sequence}\n" for rid, sequence in named))
    return path
