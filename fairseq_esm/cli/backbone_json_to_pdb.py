"""Backbone-only structure sets (GVP's ``ts50.json``/CATH JSON: name, seq, N/CA/C/O coords) to PDB files.

    fairseq-esm-backbone-json-to-pdb ../shared/data/structures/gvp_ts50.json --out ts50_pdb

One PDB per chain (chain A, SEQRES from ``seq``) with a virtual Cβ for non-glycines placed from N, CA, C with
ideal geometry (the trRosetta constants), so ``fairseq-esm-structure-labels`` gives DSSP states (backbone is all DSSP
needs) and Cβ contact maps as for a full file. A residue with a missing (null/NaN) coordinate is left out of
the ATOM records, so it becomes unresolved (masked), never a wrong label.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fairseq_esm.cli.common import UsageError, add_out, run_main

THREE = dict(A="ALA", R="ARG", N="ASN", D="ASP", C="CYS", Q="GLN", E="GLU", G="GLY", H="HIS", I="ILE", L="LEU",
             K="LYS", M="MET", F="PHE", P="PRO", S="SER", T="THR", W="TRP", Y="TYR", V="VAL")


def virtual_cb(n: np.ndarray, ca: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Ideal Cβ position from the backbone (Yang et al. 2020, trRosetta)."""
    b, cc = ca - n, c - ca
    return -0.58273431 * np.cross(b, cc) + 0.56802827 * b - 0.54067466 * cc + ca


def pdb_text(name: str, sequence: str, coords: np.ndarray) -> str:
    """PDB records of one chain: HEADER, SEQRES, ATOM (N CA C O [CB]) for residues with all four atoms."""
    names = [THREE.get(letter, "UNK") for letter in sequence]
    lines = [f"HEADER    BACKBONE {name:<40}"]
    lines += [f"SEQRES {k // 13 + 1:>3} A {len(names):>4}  " + " ".join(names[k:k + 13])
              for k in range(0, len(names), 13)]
    serial = 1
    for number, (residue, xyz) in enumerate(zip(names, coords), start=1):
        if not np.isfinite(xyz).all():
            continue
        atoms = list(zip(("N", "CA", "C", "O"), xyz))
        if residue != "GLY":
            atoms.append(("CB", virtual_cb(*xyz[:3])))
        for atom, (x, y, z) in atoms:
            lines.append(f"ATOM  {serial:>5} {atom:<4} {residue} A{number:>4}    {x:>8.3f}{y:>8.3f}{z:>8.3f}"
                         f"  1.00  0.00           {atom[0]}")
            serial += 1
    return "\n".join(lines + ["TER", "END"]) + "\n"


def read_entries(path: Path) -> list[dict]:
    """The JSON list, checked: every entry has name, seq and one (4, 3) coordinate block per residue."""
    entries = json.loads(path.read_text())
    if not isinstance(entries, list):
        raise UsageError(f"{path}: expected a JSON list of {{name, seq, coords}} entries")
    for i, entry in enumerate(entries):
        coords = np.array(entry.get("coords", []), dtype=float) if isinstance(entry, dict) else np.zeros(0)
        if not isinstance(entry, dict) or not entry.get("name") or coords.shape != (len(entry.get("seq", "")), 4, 3):
            raise UsageError(f"{path}: entry {i} needs name, seq and coords of shape (len(seq), 4, 3)")
    return entries


def build_parser() -> argparse.ArgumentParser:
    """The JSON input and the ``--out`` directory."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-backbone-json-to-pdb", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path, help="JSON list of {name, seq, coords: [[N, CA, C, O] x L]}")
    add_out(parser, "output directory: writes <name>.pdb here", type=Path, old=("--out-dir",))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Write one PDB per entry and say how many residues lack backbone atoms."""
    args = build_parser().parse_args(argv)
    entries = read_entries(args.json)
    args.out.mkdir(parents=True, exist_ok=True)
    missing = 0
    for entry in entries:
        coords = np.array(entry["coords"], dtype=float)
        missing += int((~np.isfinite(coords).all(axis=(1, 2))).sum())
        (args.out / f"{entry['name']}.pdb").write_text(pdb_text(entry["name"], entry["seq"], coords))
    print(f"{len(entries)} chains -> {args.out}; {missing} residues without all backbone atoms left unresolved")
    return 0


def cli() -> None:
    sys.exit(run_main(main))
