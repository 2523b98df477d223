"""Per-residue structure labels for PDB/mmCIF chains: sequences, DSSP 8-state strings and 8 Å contact maps.

    fairseq-esm-structure-labels examples/data/structures/1A7G.cif.gz 1LCD.pdb.gz:A --out labels

Writes OUT/labels.fasta (one record per chain, named <file stem>_<chain>), OUT/ss8.txt (line i
labels record i, one character per residue: H G I E B T S, C for loop, ``.`` where masked) and
OUT/contacts/<name>.npy (int8 L×L: 1 contact, 0 none, -1 where either residue has no Cβ/Cα).
Chains that cannot be read or that DSSP cannot assign are skipped with their reason; the report
counts resolved and unresolved residues. Needs mkdssp (``bash preprocess/install_tools.sh dssp``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fairseq_esm.cli.common import UsageError, add_out, run_main
from fairseq_esm.io.dssp import MASKED, ChainLabels, chain_labels, mkdssp_path
from fairseq_esm.io.structures import StructureError, parse_spec


def contact_labels(labels: ChainLabels) -> np.ndarray:
    """(L, L) int8: 1 contact, 0 not, -1 where either residue is unresolved (never supervised)."""
    resolved = labels.chain.resolved
    target = labels.chain.contacts().astype(np.int8)
    target[~(resolved[:, None] & resolved[None, :])] = -1
    return target


def report_line(labels: ChainLabels) -> str:
    """One line: name, length, residues with coordinates and with DSSP states, and what is masked."""
    length, resolved = len(labels.chain.sequence), int(labels.chain.resolved.sum())
    states = int(labels.labelled.sum())
    line = (f"wrote {labels.chain.name}: {length} residues, {resolved} resolved (Cβ/Cα), {length - resolved} "
            f"unresolved; {states} with a DSSP state, {length - states} masked")
    return line + (f" ({labels.unassigned} observed but not assigned by DSSP)" if labels.unassigned else "")


def collect(specs: list[str]) -> tuple[list[ChainLabels], list[str]]:
    """Labels for each FILE[:CHAIN]; unreadable chains become 'skipped' lines instead."""
    mkdssp_path()  # missing tool: one error for the whole run, not one skip per file
    written, skipped, names = [], [], set()
    for spec in specs:
        path, chain_id = parse_spec(spec)
        try:
            labels = chain_labels(path, chain_id)
        except (StructureError, FileNotFoundError) as err:
            skipped.append(f"skipped {spec}: {err}")
            continue
        if labels.chain.name in names:
            skipped.append(f"skipped {spec}: {labels.chain.name} already written (same file and chain twice)")
            continue
        names.add(labels.chain.name)
        written.append(labels)
    return written, skipped


def write(out: Path, chains: list[ChainLabels]) -> None:
    """labels.fasta, ss8.txt and contacts/<name>.npy, in input order."""
    (out / "contacts").mkdir(parents=True, exist_ok=True)
    with (out / "labels.fasta").open("w") as fasta, (out / "ss8.txt").open("w") as ss8:
        for labels in chains:
            assert len(labels.ss8) == len(labels.chain.sequence)
            fasta.write(f">{labels.chain.name}\n{labels.chain.sequence}\n")
            ss8.write(labels.ss8 + "\n")
            np.save(out / "contacts" / f"{labels.chain.name}.npy", contact_labels(labels))


def build_parser() -> argparse.ArgumentParser:
    """The structure files (FILE[:CHAIN]) and the ``--out`` directory."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-structure-labels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("structures", nargs="+", help="PDB/mmCIF files (plain or .gz), FILE:CHAIN to pick a chain")
    add_out(parser, "output directory: writes labels.fasta, ss8.txt and contacts/ here", old=("--out-dir",))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Label every chain, write the three outputs, print the report."""
    args = build_parser().parse_args(argv)
    chains, skipped = collect(args.structures)
    for line in skipped:
        print(line, file=sys.stderr)
    if not chains:
        raise UsageError(f"no chain written: all {len(args.structures)} inputs skipped (see the lines above)")
    write(Path(args.out), chains)
    for labels in chains:
        print(report_line(labels))
    total = sum(len(c.ss8) for c in chains)
    masked = sum(c.ss8.count(MASKED) for c in chains)
    print(f"{len(chains)} chains written, {len(skipped)} skipped; {total} residues, {masked} masked in ss8.txt "
          f"-> {args.out}")
    return 0


def cli() -> None:
    sys.exit(run_main(main))
