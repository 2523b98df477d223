"""Per-residue structure labels for PDB/mmCIF chains: sequences, DSSP 8-state strings and 8 Å contact maps.

    fairseq-esm-structure-labels examples/data/structures/1A7G.cif.gz 1LCD.pdb.gz:A --out labels [--threads N]

Writes OUT/labels.fasta (one record per chain, named <file stem>_<chain>), OUT/ss8.txt (line i
labels record i, one character per residue: H G I E B T S, C for loop, ``.`` where masked) and
OUT/contacts/<name>.npy (int8 L×L: 1 contact, 0 none, -1 where either residue has no Cβ/Cα).
Each file is read and run through mkdssp once for all its chains, --threads files at a time (the output
is the same for any number). Chains that cannot be read or that DSSP cannot assign (a file mkdssp rejects:
each of its chains) are skipped with their reason, the others are still written; the report counts
resolved and unresolved residues. Needs mkdssp (``bash preprocess/install_tools.sh dssp``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from fairseq_esm.cli.common import UsageError, add_alias, add_out, add_threads, run_main, thread_count
from fairseq_esm.io.dssp import MASKED, ChainLabels, _chain_labels_per_chain, file_labels, mkdssp_path
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


def _label_file(job: tuple[str, list[str | None]]) -> list[ChainLabels | Exception]:
    """One file's requested chains (a worker's job): labels, or the error that skips a chain."""
    path, chain_ids = job
    try:
        return file_labels(path, chain_ids)
    except (FileNotFoundError, IsADirectoryError) as err:  # not a file: skip its chains
        return [err] * len(chain_ids)


def _size(path: str) -> int:
    """File size for scheduling (largest first), 0 when it cannot be read."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def label_files(jobs: list[tuple[str, list[str | None]]], workers: int) -> list[list[ChainLabels | Exception]]:
    """:func:`_label_file` for every job, in job order; ``workers`` > 1 runs files in that many processes
    (largest first, so the last one to finish is a small one)."""
    workers = min(workers, len(jobs))
    if workers <= 1:
        return [_label_file(job) for job in jobs]
    order = sorted(range(len(jobs)), key=lambda i: -_size(jobs[i][0]))
    context = multiprocessing.get_context("fork")  # the tool imports neither torch nor threads before this
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {i: pool.submit(_label_file, jobs[i]) for i in order}
        return [futures[i].result() for i in range(len(jobs))]


def _report(specs: list[str], results: list[ChainLabels | Exception]) -> tuple[list[ChainLabels], list[str]]:
    """Labels to write and 'skipped' lines, in input order; a chain given twice is written once."""
    written, skipped, names = [], [], set()
    for spec, labels in zip(specs, results):
        if isinstance(labels, Exception):
            skipped.append(f"skipped {spec}: {labels}")
        elif labels.chain.name in names:
            skipped.append(f"skipped {spec}: {labels.chain.name} already written (same file and chain twice)")
        else:
            names.add(labels.chain.name)
            written.append(labels)
    return written, skipped


def collect(specs: list[str], workers: int = 1) -> tuple[list[ChainLabels], list[str]]:
    """Labels for each FILE[:CHAIN], each file read and run through mkdssp once for all its chains (in
    ``workers`` processes); unreadable chains become 'skipped' lines instead."""
    mkdssp_path()  # missing tool: one error for the whole run, not one skip per file
    requests = [parse_spec(spec) for spec in specs]
    by_file: dict[str, list[int]] = {}
    for index, (path, _) in enumerate(requests):
        by_file.setdefault(path, []).append(index)
    jobs = [(path, [requests[i][1] for i in indices]) for path, indices in by_file.items()]
    results: list = [None] * len(specs)
    for indices, labels in zip(by_file.values(), label_files(jobs, workers)):
        for index, result in zip(indices, labels):
            results[index] = result
    return _report(specs, results)


def _collect_per_chain(specs: list[str]) -> tuple[list[ChainLabels], list[str]]:
    """Reference for tests and benchmarks/structure_labels_speed.py: the file read and mkdssp run once per
    requested chain, one process (the tool before ``collect`` grouped chains by file)."""
    mkdssp_path()
    results: list = []
    for spec in specs:
        try:
            results.append(_chain_labels_per_chain(*parse_spec(spec)))
        except (StructureError, FileNotFoundError) as err:
            results.append(err)
    return _report(specs, results)


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
    add_threads(parser, "processes running mkdssp, one structure file each (default: every core); the output "
                "is the same for any number")
    add_alias(parser, "--threads", "--workers")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Label every chain, write the three outputs, print the report."""
    args = build_parser().parse_args(argv)
    chains, skipped = collect(args.structures, thread_count(args))
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
