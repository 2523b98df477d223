"""Build a fairseq data dir for the supervised structure heads (tasks protein_ss8 / protein_contacts).

    fairseq-esm-structure-dataset labels_a labels_b --cb513 CB513_HHblits.csv --out data-ss

Inputs are directories written by ``fairseq-esm-structure-labels`` (labels.fasta, ss8.txt, contacts/).
Chains named twice (same file and chain in two dirs) are kept once; chains longer than ``--max-length`` are
dropped. With ``--cb513``, training chains with an MMseqs2 hit of >= ``--identity`` (25%) sequence identity to a
CB513 protein are dropped and counted, as Netsurf held its training set out from CB513, and CB513 becomes the
``test`` split (SS8 only: it has no structures). The remaining chains are clustered with MMseqs2 at
``--cluster-identity`` and a seeded ``--valid-fraction`` of the clusters becomes ``valid``; the rest is ``train``.
Writes OUT/dict.txt and per split the files ``fairseq_esm/data/structure_labels_dataset.py`` describes.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from fairseq_esm.cli.common import UsageError, add_out, run_main
from fairseq_esm.io.clusters import run_mmseqs
from fairseq_esm.io.fasta import FastaReport, read_fasta


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


def read_cb513(path: Path) -> list[Chain]:
    """CB513 in NetSurfP-2.0 CSV: ``dssp8`` states (``C`` = loop) kept where ``disorder`` and ``cb513_mask``
    are both 1 (resolved and part of the original CB513 chain), ``.`` elsewhere."""
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header = [column.strip() for column in rows[0]] if rows else []
    if header[:5] != ["input", "dssp3", "dssp8", "disorder", "cb513_mask"]:
        raise UsageError(f"{path}: header {header}, expected input, dssp3, dssp8, disorder, cb513_mask")
    chains = []
    for number, row in enumerate(rows[1:], start=2):
        sequence, ss8, disorder, mask = (row[i].split() for i in (0, 2, 3, 4))
        if not len(sequence) == len(ss8) == len(disorder) == len(mask):
            raise UsageError(f"{path} line {number}: columns of different lengths")
        scored = "".join(s if d == "1.0" and m == "1.0" else "." for s, d, m in zip(ss8, disorder, mask))
        chains.append(Chain(f"cb513_{number - 1}", "".join(sequence), scored, None))
    return chains


def search_hits(queries: list[Chain], targets: list[Chain], identity: float, evalue: float) -> set[int]:
    """Indices of ``queries`` with an MMseqs2 easy-search hit of >= ``identity`` to any of ``targets``."""
    from fairseq_esm.io.msa_search import easy_search

    rows = easy_search([(str(i), c.sequence) for i, c in enumerate(queries)],
                       [(str(i), c.sequence) for i, c in enumerate(targets)], "query,target,fident",
                       options=("--min-seq-id", str(identity), "-e", str(evalue)))
    return {int(query) for query, _, fident in rows if float(fident) >= identity}


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
    """Label dirs, ``--out`` data dir, the CB513 hold-out and the valid split settings."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-structure-dataset", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("label_dirs", nargs="+", help="output dirs of fairseq-esm-structure-labels")
    add_out(parser, "output directory: the fairseq data dir to write", old=("--out-dir",))
    parser.add_argument("--cb513", help="CB513_HHblits.csv (NetSurfP-2.0 format): test split + identity hold-out")
    parser.add_argument("--identity", type=float, default=0.25, help="hold-out identity to CB513 (default 0.25)")
    parser.add_argument("--evalue", type=float, default=0.1, help="E-value of a hold-out hit (default 0.1)")
    parser.add_argument("--valid-fraction", type=float, default=0.1, help="chains to valid (default 0.1)")
    parser.add_argument("--cluster-identity", type=float, default=0.3, help="valid split by clusters at this identity")
    parser.add_argument("--max-length", type=int, default=1022, help="drop longer chains (default 1022)")
    parser.add_argument("--seed", type=int, default=1)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Gather, hold out from CB513, split by cluster, write, report."""
    args = build_parser().parse_args(argv)
    chains, report = gather(args.label_dirs, args.max_length)
    test = read_cb513(Path(args.cb513)) if args.cb513 else []
    if test:
        hits = search_hits(chains, test, args.identity, args.evalue)
        chains = [c for i, c in enumerate(chains) if i not in hits]
        report.append(f"dropped {len(hits)} chains with >= {args.identity:.0%} identity (E <= {args.evalue}) "
                      f"to CB513 (mmseqs easy-search)")
    if len(chains) < 2:
        raise UsageError(f"{len(chains)} training chains left: need at least 2 for train and valid")
    train, valid = split_by_cluster(chains, args.valid_fraction, args.cluster_identity, args.seed)
    from fairseq_esm.data.binarize import write_data_dictionary

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_data_dictionary(out)
    for split, members in (("train", train), ("valid", valid), ("test", test)):
        if members:
            report.append(write_split(out, split, members))
    print("\n".join(report + [f"-> {out}"]))
    return 0


def cli() -> None:
    sys.exit(run_main(main))
