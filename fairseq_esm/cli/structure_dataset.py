"""Build a fairseq data dir for the supervised structure heads (tasks protein_ss8 / protein_contacts).

    fairseq-esm-structure-dataset labels_a labels_b --test-set cb513=CB513_HHblits.csv \\
        --test-set ts115=TS115_HHblits.csv --out data-ss

Inputs are directories written by ``fairseq-esm-structure-labels`` (labels.fasta, ss8.txt, contacts/).
Chains named twice (same file and chain in two dirs) are kept once; chains longer than ``--max-length`` are
dropped. Each ``--test-set NAME=FILE`` (NetSurfP-2.0 CSV: ``input, dssp3, dssp8, disorder``, optional ``*_mask``
and ``id`` columns, one space-separated value per residue) becomes the split ``test_NAME`` (SS8 only: it has no
structures), its proteins kept whatever their length and named by the ``id`` column, else ``NAME_N``; ``test`` holds
all test sets together. Training chains with an MMseqs2 hit of >= ``--identity`` (25%) sequence identity to a
protein of any test set are dropped and counted, as Netsurf held its training set out from CB513. The remaining
chains are clustered with MMseqs2 at ``--cluster-identity`` and a seeded ``--valid-fraction`` of the clusters
becomes ``valid``; the rest is ``train``. Writes OUT/dict.txt and per split the files
``fairseq_esm/data/structure_labels_dataset.py`` describes.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from fairseq_esm.cli.common import UsageError, add_out, run_main
from fairseq_esm.io.clusters import run_mmseqs
from fairseq_esm.io.dssp import SS8, to_ss3
from fairseq_esm.io.fasta import FastaReport, read_fasta

#: the per-residue columns a NetSurfP-2.0 CSV must have
NETSURFP_COLUMNS = ("input", "dssp3", "dssp8", "disorder")
#: columns that name the records, first found wins
ID_COLUMNS = ("id", "name")
#: states that are not one of DSSP's classic 8 but are loops: DSSP's blank and DSSP 4's PPII
LOOP_STATES = {"-": "C", "P": "C"}


@dataclass
class Chain:
    """One labelled protein: name, sequence, SS8 string (``.`` = masked), contact map file (None for CB513)."""

    name: str
    sequence: str
    ss8: str
    contacts: Optional[Path]


def read_labels_fasta(path: Path) -> list[tuple[str, str]]:
    """(name, sequence) records of a labels.fasta, through the shared FASTA reader. ss8.txt has a line per
    record, so a record the reader would skip (empty, invalid characters) is an error, not a shifted label."""
    report = FastaReport()
    records = list(read_fasta(str(path), report=report))
    if report.skipped:
        reason, examples = sorted(report.skipped_examples.items())[0]
        raise UsageError(f"{path}: {sum(report.skipped.values())} of its records cannot be read ({reason}, e.g. "
                         f"{examples[0]}); rerun fairseq-esm-structure-labels")
    return records


def read_label_dir(directory: Path) -> list[Chain]:
    """The chains of one structure_labels.py output dir, refused unless fasta, ss8.txt and contacts agree."""
    fasta, ss8_path = directory / "labels.fasta", directory / "ss8.txt"
    for path in (fasta, ss8_path):
        if not path.is_file():
            raise UsageError(f"{path} not found: {directory} is not a fairseq-esm-structure-labels output dir")
    records, states = read_labels_fasta(fasta), ss8_path.read_text().splitlines()
    if len(records) != len(states):
        raise UsageError(f"{ss8_path} has {len(states)} lines but {fasta} has {len(records)} records; "
                         "rerun fairseq-esm-structure-labels")
    chains = []
    for line, ((name, sequence), ss8) in enumerate(zip(records, states), start=1):
        if len(ss8) != len(sequence):
            raise UsageError(f"{ss8_path} line {line} ({name}): {len(ss8)} states for {len(sequence)} residues; "
                             "rerun fairseq-esm-structure-labels")
        contacts = directory / "contacts" / f"{name}.npy"
        if not contacts.is_file():
            raise UsageError(f"{contacts} not found ({name} of {fasta})")
        chains.append(Chain(name, sequence, ss8, contacts))
    return chains


@dataclass
class TestSet:
    """One NetSurfP-format test set: its name (split ``test_NAME``), file, proteins and how they were read."""

    name: str
    path: Path
    chains: list[Chain]
    note: str

    @property
    def split(self) -> str:
        return f"test_{self.name}"


def parse_test_set(spec: str) -> tuple[str, Path]:
    """``NAME=FILE`` -> (lowercased name, path); the name must make a plain split name."""
    name, sep, path = spec.partition("=")
    name = name.strip().lower()
    if not sep or not path:
        raise UsageError(f"--test-set {spec}: give NAME=FILE, e.g. --test-set cb513=CB513_HHblits.csv")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        raise UsageError(f"--test-set {spec}: the name {name!r} must be letters, digits, _ or - (it names the split "
                         "test_NAME)")
    return name, Path(path)


def read_csv_rows(path: Path) -> list[list[str]]:
    """The rows of a CSV file, refused in one line when it is missing or not text."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: a byte-order mark is not a column name
            return list(csv.reader(handle))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise UsageError(f"{path}: not a NetSurfP-format CSV text file ({err})") from None


def netsurfp_header(path: Path, rows: list[list[str]]) -> dict[str, int]:
    """Column name (stripped, lowercase) -> index; one error line naming the columns a NetSurfP CSV lacks."""
    header = [column.strip().lower() for column in rows[0]] if rows else []
    missing = [column for column in NETSURFP_COLUMNS if column not in header]
    if missing:
        shown = ", ".join(header)[:80] if header else "empty file"
        raise UsageError(f"{path}: not a NetSurfP-format CSV: no column {', '.join(missing)} (its first line: "
                         f"{shown}); expected the columns {', '.join(NETSURFP_COLUMNS)} (+ optional *_mask, id), "
                         "one space-separated value per residue")
    return {column: index for index, column in reversed(list(enumerate(header)))}


def flags(path: Path, line: int, column: str, values: list[str]) -> list[bool]:
    """A 0/1 per-residue column (``1.0`` / ``0.0``) -> True where 1."""
    try:
        return [float(value) == 1.0 for value in values]
    except ValueError:
        raise UsageError(f"{path} line {line}: column {column} holds {values[0] if values else ''!r}..., "
                         "expected 0/1 per residue") from None


def netsurfp_record(path: Path, line: int, row: list[str], columns: dict[str, int],
                    masks: list[str]) -> tuple[str, str, int]:
    """One CSV row -> (sequence, SS8 string with ``.`` where not scored, scored residues whose dssp3 is not the
    8->3 reduction of their dssp8)."""
    sequence, dssp3, dssp8, disorder, *masked = (row[columns[c]].split() for c in (*NETSURFP_COLUMNS, *masks))
    lengths = [len(values) for values in (sequence, dssp3, dssp8, disorder, *masked)]
    if not sequence or len(set(lengths)) > 1:
        counts = ", ".join(f"{column} {n}" for column, n in zip((*NETSURFP_COLUMNS, *masks), lengths))
        raise UsageError(f"{path} line {line}: per-residue columns of different lengths (or none): {counts}")
    states = [LOOP_STATES.get(state, state) for state in dssp8]
    wrong = sorted({state for state in states if state not in SS8})
    if wrong or any(len(residue) != 1 for residue in sequence):
        what = f"dssp8 states {', '.join(wrong)}" if wrong else "input entries longer than one letter"
        raise UsageError(f"{path} line {line}: {what}; expected one residue letter and one of {' '.join(SS8)} "
                         "per residue")
    keep = [all(values) for values in zip(flags(path, line, "disorder", disorder),
                                          *(flags(path, line, c, v) for c, v in zip(masks, masked)))]
    scored = "".join(state if kept else "." for state, kept in zip(states, keep))
    differs = sum(kept and to_ss3(state) != three for state, three, kept in zip(states, dssp3, keep))
    return "".join(sequence).upper(), scored, differs


def read_netsurfp(path: Path, name: str) -> TestSet:
    """A NetSurfP-2.0 CSV test set: ``dssp8`` states (``C`` = loop) kept where ``disorder`` and every ``*_mask``
    column (CB513's ``cb513_mask``) are 1 (resolved and part of the evaluated chain), ``.`` elsewhere; records
    named by the ``id`` (or ``name``) column, else ``NAME_N`` (N = record number, from 1)."""
    rows = read_csv_rows(path)
    columns = netsurfp_header(path, rows)
    masks = [column for column in columns if column.endswith("mask")]
    id_column = next((column for column in ID_COLUMNS if column in columns), None)
    chains, lines, differs = [], {}, 0
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(rows[0]):
            raise UsageError(f"{path} line {line}: {len(row)} columns, the header has {len(rows[0])}")
        sequence, scored, wrong3 = netsurfp_record(path, line, row, columns, masks)
        record = row[columns[id_column]].strip() if id_column else f"{name}_{len(chains) + 1}"
        if not record or record in lines:
            problem = f"the {id_column} {record!r} of line {lines.get(record)} again" if record else f"no {id_column}"
            raise UsageError(f"{path} line {line}: {problem}; records need unique names")
        lines[record], differs = line, differs + wrong3
        chains.append(Chain(record, sequence, scored, None))
    if not chains:
        raise UsageError(f"{path}: no records below the header")
    scored = sum(len(c.ss8) - c.ss8.count(".") for c in chains)
    named = f"names from its {id_column} column" if id_column else f"named {name}_N (no id column)"
    agrees = (f"dssp3 differs from the 8->3 reduction of dssp8 on {differs} of {scored} scored residues (q3 uses "
              "the reduction)" if differs else "dssp3 = the 8->3 reduction of dssp8 on every scored residue")
    masked_by = " and ".join(["disorder", *masks])
    return TestSet(name, path, chains, f"{name}: {path}, {len(chains)} proteins, {named}; scored where {masked_by} "
                   f"= 1; {agrees}")


def read_cb513(path: Path) -> list[Chain]:
    """CB513 in NetSurfP-2.0 CSV (``cb513_N`` records): what ``--test-set cb513=FILE`` reads."""
    return read_netsurfp(path, "cb513").chains


def search_pairs(queries: list[Chain], targets: list[Chain], identity: float, evalue: float) -> set[tuple[int, int]]:
    """(query, target) index pairs of MMseqs2 easy-search hits of >= ``identity``."""
    from fairseq_esm.io.msa_search import easy_search

    rows = easy_search([(str(i), c.sequence) for i, c in enumerate(queries)],
                       [(str(i), c.sequence) for i, c in enumerate(targets)], "query,target,fident",
                       options=("--min-seq-id", str(identity), "-e", str(evalue)))
    return {(int(query), int(target)) for query, target, fident in rows if float(fident) >= identity}


def search_hits(queries: list[Chain], targets: list[Chain], identity: float, evalue: float) -> set[int]:
    """Indices of ``queries`` with an MMseqs2 easy-search hit of >= ``identity`` to any of ``targets``."""
    return {query for query, _ in search_pairs(queries, targets, identity, evalue)}


def hold_out(chains: list[Chain], test_sets: list[TestSet], identity: float, evalue: float) -> tuple[list, str]:
    """Chains without a hit to any protein of any test set (searched against their union), and the report line."""
    union = [chain for test in test_sets for chain in test.chains]
    owner = [test.name for test in test_sets for _ in test.chains]
    pairs = search_pairs(chains, union, identity, evalue) if chains else set()
    dropped = {query for query, _ in pairs}
    per_set = ", ".join(f"{t.name} {len({q for q, target in pairs if owner[target] == t.name})}" for t in test_sets)
    return ([c for i, c in enumerate(chains) if i not in dropped],
            f"dropped {len(dropped)} chains with >= {identity:.0%} identity (E <= {evalue}) to a protein of the test "
            f"sets (mmseqs easy-search against all {len(union)}; chains hitting each set: {per_set})")


def split_by_cluster(chains: list[Chain], fraction: float, identity: float, seed: int) -> tuple[list, list]:
    """(train, valid): whole MMseqs2 clusters in a seeded order go to valid while they fit in ``fraction`` of the
    chains (a cluster that would overshoot is skipped, so one big family cannot swallow valid); at least one."""
    membership = run_mmseqs([c.sequence for c in chains], identity, coverage=0.5, mode="cluster")
    want, valid = max(1, round(fraction * len(chains))), set()
    order = np.random.RandomState(seed).permutation(membership.n_clusters)
    for cluster in order:
        members = np.flatnonzero(membership.cluster == cluster).tolist()
        if len(valid) + len(members) <= want:
            valid.update(members)
    valid = valid or set(np.flatnonzero(membership.cluster == order[0]).tolist())
    return ([c for i, c in enumerate(chains) if i not in valid], [c for i, c in enumerate(chains) if i in valid])


def write_split(out: Path, split: str, chains: list[Chain]) -> str:
    """Write one split; returns its report line (chains, residues, scored and masked SS8 residues)."""
    from fairseq_esm.data.structure_labels_dataset import IGNORE, SplitWriter, ss8_to_targets
    from fairseq_esm.modules.alphabet import esm1b_alphabet

    alphabet = esm1b_alphabet()
    with_contacts = all(c.contacts is not None for c in chains)
    writer = SplitWriter(str(out / split), with_contacts)
    for chain in chains:
        contacts = np.load(chain.contacts) if with_contacts else None
        if contacts is not None and contacts.shape != (len(chain.sequence),) * 2:
            raise UsageError(f"{chain.contacts}: shape {contacts.shape} for {len(chain.sequence)} residues")
        writer.add(chain.name, alphabet.encode_residues(chain.sequence), alphabet.eos(), ss8_to_targets(chain.ss8),
                   contacts)
    writer.finalize()
    residues = sum(len(c.sequence) for c in chains)
    targets = np.concatenate([ss8_to_targets(c.ss8) for c in chains])
    masked = int((targets == IGNORE).sum())
    kind = "SS8 + contacts" if with_contacts else "SS8 only"
    counts = f"{len(chains)} chains, {residues} residues, {residues - masked} scored, {masked} masked ({kind})"
    return f"{split}: {counts}; states {state_shares(targets)}"


def state_shares(targets: np.ndarray) -> str:
    """Share of each SS8 state among the scored residues (``H 31.0% G 3.1% ...``): class balance at a glance."""
    from fairseq_esm.data.structure_labels_dataset import IGNORE, SS8_STATES

    counts = np.bincount(targets[targets != IGNORE], minlength=len(SS8_STATES))
    total = max(int(counts.sum()), 1)
    return " ".join(f"{state} {100 * n / total:.1f}%" for state, n in zip(SS8_STATES, counts))


def gather(directories: list[str], max_length: int) -> tuple[list[Chain], list[str]]:
    """Chains of all label dirs, first occurrence of each name, at most ``max_length`` residues; report lines."""
    chains, seen, duplicates, too_long = [], set(), 0, 0
    for directory in directories:
        for chain in read_label_dir(Path(directory)):
            if chain.name in seen:
                duplicates += 1
            elif len(chain.sequence) > max_length:
                too_long += 1
            else:
                seen.add(chain.name)
                chains.append(chain)
    return chains, [f"read {len(chains) + duplicates + too_long} chains: {duplicates} duplicate names dropped, "
                    f"{too_long} longer than {max_length} residues dropped"]


def build_parser() -> argparse.ArgumentParser:
    """Label dirs, ``--out`` data dir, the test sets (and their hold-out) and the valid split settings."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-structure-dataset", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("label_dirs", nargs="+", help="output dirs of fairseq-esm-structure-labels")
    add_out(parser, "output directory: the fairseq data dir to write", old=("--out-dir",))
    parser.add_argument("--test-set", action="append", default=[], metavar="NAME=FILE",
                        help="a NetSurfP-2.0 CSV test set (CB513, TS115, CASP12: input, dssp3, dssp8, disorder, "
                        "optional *_mask / id columns) -> split test_NAME and identity hold-out; repeatable")
    parser.add_argument("--cb513", help=argparse.SUPPRESS)  # the old spelling of --test-set cb513=FILE
    parser.add_argument("--identity", type=float, default=0.25,
                        help="hold out training chains with this identity to any test protein (default 0.25)")
    parser.add_argument("--evalue", type=float, default=0.1, help="E-value of a hold-out hit (default 0.1)")
    parser.add_argument("--valid-fraction", type=float, default=0.1, help="chains to valid (default 0.1)")
    parser.add_argument("--cluster-identity", type=float, default=0.3, help="valid split by clusters at this identity")
    parser.add_argument("--max-length", type=int, default=1022, help="drop longer chains (default 1022)")
    parser.add_argument("--seed", type=int, default=1)
    return parser


def read_test_sets(specs: list[str], cb513: Optional[str]) -> list[TestSet]:
    """``--test-set NAME=FILE`` (and the old ``--cb513 FILE``) in order, names unique."""
    parsed = [parse_test_set(spec) for spec in specs] + ([("cb513", Path(cb513))] if cb513 else [])
    names = [name for name, _ in parsed]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UsageError(f"two test sets named {twice[0]} (--test-set / --cb513): give each its own name")
    return [read_netsurfp(path, name) for name, path in parsed]


def main(argv: list[str] | None = None) -> int:
    """Gather, hold out from the test sets, split by cluster, write, report."""
    args = build_parser().parse_args(argv)
    test_sets = read_test_sets(args.test_set, args.cb513)
    chains, report = gather(args.label_dirs, args.max_length)
    report += [test.note for test in test_sets]
    if test_sets:
        chains, line = hold_out(chains, test_sets, args.identity, args.evalue)
        report.append(line)
    if len(chains) < 2:
        raise UsageError(f"{len(chains)} training chains left: need at least 2 for train and valid")
    train, valid = split_by_cluster(chains, args.valid_fraction, args.cluster_identity, args.seed)
    from fairseq_esm.data.binarize import write_data_dictionary

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_data_dictionary(out)
    splits = [("train", train), ("valid", valid)] + [(test.split, test.chains) for test in test_sets]
    if test_sets:
        splits.append(("test", [chain for test in test_sets for chain in test.chains]))
        report.append(f"test = {' + '.join(test.split for test in test_sets)} (one split for scripts that read test)")
    for split, members in splits:
        report.append(write_split(out, split, members))
    print("\n".join(report + [f"-> {out}"]))
    return 0


def cli() -> None:
    sys.exit(run_main(main))
