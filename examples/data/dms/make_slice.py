"""Rebuild this folder's slice of the TEM-1 beta-lactamase deep mutational scan (Stiffler et al. 2015).

Usage: ``python examples/data/dms/make_slice.py PATH/BLAT_ECOLX_Stiffler_2015.csv`` (ProteinGym format).
Writes ``BLAT_ECOLX_Stiffler_2015_slice.csv`` (every 16th row: mutant, DMS_score) and ``BLAT_ECOLX.fasta``
(the wild type, rebuilt from the first single mutant's ``mutated_sequence``) next to this script.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

EVERY = 16
HERE = Path(__file__).resolve().parent


def wild_type(mutant: str, mutated_sequence: str) -> str:
    """Undo one single substitution (``H24C``, 1-based) to get the wild-type sequence back."""
    wt, position = mutant[0], int(mutant[1:-1])
    assert mutated_sequence[position - 1] == mutant[-1], f"{mutant} does not match its sequence"
    return mutated_sequence[: position - 1] + wt + mutated_sequence[position:]


def main(source: str) -> None:
    with open(source, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    sequence = wild_type(rows[0]["mutant"], rows[0]["mutated_sequence"])
    with open(HERE / "BLAT_ECOLX_Stiffler_2015_slice.csv", "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["mutant", "DMS_score"])
        writer.writerows([row["mutant"], row["DMS_score"]] for row in rows[::EVERY])
    lines = [sequence[i : i + 60] for i in range(0, len(sequence), 60)]
    header = ">BLAT_ECOLX TEM-1 beta-lactamase (UniProt P62593)"
    (HERE / "BLAT_ECOLX.fasta").write_text("\n".join([header] + lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
