"""Synthetic UniRef100-style proteins at any scale, drawn from real sequences, for scale benchmarks.

    python benchmarks/scale_data.py OUT.fasta N [--seed 1] [--ur50-table T50.tsv] [--ur100-table T100.tsv]

:func:`synthetic_fasta` writes ``N`` records ``>UniRef100_SYN00000000 ...`` in a random order. Every record
belongs to a *family*: the root of family ``f`` is a real protein of the pool (the shipped sample
``examples/data/uniprot_sample.fasta.gz`` and ``/work/shared/data/pretrain_uniprot``, ~40k proteins), used
as-is for the first pass over the pool and with 45 % of its residues substituted for later passes (so two
families from one protein are ~30 % identical: different 50 % clusters). A member is its family's root with
1-5 % point substitutions, or (10 %) an exact copy of the root, so both 50 % and 100 % clusters have several
members. Family sizes are geometric (mean ~3). Everything is a function of ``(n, seed)``; the file is written
as it is generated (one family root at a time in memory, the family of each record as one int array).

``ur50_table`` / ``ur100_table`` write the ground-truth membership in the layouts
``fairseq-esm-make-uniref-splits --ur50-clusters/--ur100-clusters`` read: UniProt's UniRef50 TSV (one row per
family, members as accessions) and a two-column ``cluster<TAB>member`` table of the identical-sequence groups.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
POOL_FILES = (ROOT / "examples" / "data" / "uniprot_sample.fasta.gz",
              Path("/work/shared/data/pretrain_uniprot/mmseqs2_examples_DB.fasta.gz"),
              Path("/work/shared/data/pretrain_uniprot/mmseqs2_examples_QUERY.fasta.gz"),
              Path("/work/shared/data/pretrain_uniprot/opal_uniprot_sprot12071.fasta.gz"))
AMINO = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY", np.uint8)
FAMILY_DIVERGENCE = 0.45  # substitutions of a root made from an already used pool protein
MEMBER_RATE = (0.01, 0.05)  # substitutions of a member, drawn uniformly per member
ROOT_COPY = 0.1  # members that are their family's root exactly (100 % clusters)
MEAN_FAMILY = 3.0


@lru_cache(maxsize=1)
def pool() -> tuple[np.ndarray, ...]:
    """The real proteins every family starts from (residue policy applied, uint8 letters)."""
    from fairseq_esm.io.fasta import read_fasta

    out = [np.frombuffer(seq.encode(), np.uint8) for path in POOL_FILES if path.exists()
           for _, seq in read_fasta(str(path))]
    if not out:
        raise SystemExit("error: no pool protein found (examples/data/uniprot_sample.fasta.gz)")
    return tuple(out)


def family_root(family: int, seed: int) -> np.ndarray:
    """Family ``family``'s root: a pool protein, substituted at FAMILY_DIVERGENCE after the first pass."""
    proteins = pool()
    root = proteins[family % len(proteins)]
    if family < len(proteins):
        return root
    return substitute(root, FAMILY_DIVERGENCE, np.random.default_rng([seed, family]))


def substitute(seq: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """``seq`` with at least one, and about ``rate`` of its residues, replaced by a different amino acid."""
    out = seq.copy()
    where = np.flatnonzero(rng.random(len(seq)) < rate)
    if not len(where):
        where = rng.integers(len(seq), size=1)
    shift = rng.integers(1, len(AMINO), size=len(where))
    index = np.searchsorted(AMINO, out[where])
    out[where] = AMINO[(np.minimum(index, len(AMINO) - 1) + shift) % len(AMINO)]
    return out


def families(n: int, rng: np.random.Generator) -> np.ndarray:
    """The family of each of ``n`` records, in file order (geometric family sizes, families shuffled)."""
    sizes = rng.geometric(1 / MEAN_FAMILY, size=n // int(MEAN_FAMILY) + 16)
    while sizes.sum() < n:
        sizes = np.concatenate([sizes, rng.geometric(1 / MEAN_FAMILY, size=16)])
    return rng.permutation(np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)[:n])


def accession(i: int) -> str:
    return f"SYN{i:08d}"


def synthetic_fasta(path: str | Path, n: int, seed: int, *, ur50_table: str | Path | None = None,
                    ur100_table: str | Path | None = None) -> dict:
    """Write ``n`` synthetic UniRef100-style records to ``path`` (gzip if it ends in ``.gz``); see module doc.

    Returns counts: records, residues, families, root copies.
    """
    rng = np.random.default_rng([seed, n])
    family = families(n, rng)
    copy = rng.random(n) < ROOT_COPY
    rates = rng.uniform(*MEMBER_RATE, size=n)
    residues, opener = 0, gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt") as out:
        batch = []
        for i in range(n):
            f = int(family[i])
            root = family_root(f, seed)
            seq = root if copy[i] else substitute(root, float(rates[i]), rng)
            residues += len(seq)
            batch.append(f">UniRef100_{accession(i)} n=1 Tax=synthetic family {f}\n{seq.tobytes().decode()}\n")
            if len(batch) >= 4096:
                out.write("".join(batch))
                batch.clear()
        out.write("".join(batch))
    if ur50_table:
        write_ur50_table(ur50_table, family)
    if ur100_table:
        write_ur100_table(ur100_table, family, copy)
    return {"records": n, "residues": residues, "families": len(np.unique(family)), "root_copies": int(copy.sum())}


def groups(keys: np.ndarray) -> list[np.ndarray]:
    """Record numbers grouped by key, groups ordered by their first record, records in file order."""
    order = np.argsort(keys, kind="stable")
    bounds = np.flatnonzero(np.diff(keys[order])) + 1
    out = np.split(order, bounds)
    return sorted(out, key=lambda g: int(g[0]))


def write_ur50_table(path: str | Path, family: np.ndarray) -> None:
    """UniProt's UniRef50 TSV layout: one row per family, named after its first member."""
    with open(path, "w") as out:
        out.write("Cluster ID\tCluster Name\tSize\tCluster members\n")
        for members in groups(family):
            names = [accession(int(i)) for i in members]
            out.write(f"UniRef50_{names[0]}\tCluster: family\t{len(names)}\t{'; '.join(names)}\n")


def write_ur100_table(path: str | Path, family: np.ndarray, copy: np.ndarray) -> None:
    """``cluster<TAB>member`` of identical-sequence groups (a family's root copies; every other record alone)."""
    key = np.where(copy, family, -1 - np.arange(len(family)))
    with open(path, "w") as out:
        for members in groups(key):
            rep = f"UniRef100_{accession(int(members[0]))}"
            out.write("".join(f"{rep}\tUniRef100_{accession(int(i))}\n" for i in members))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("n", type=int)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ur50-table")
    parser.add_argument("--ur100-table")
    args = parser.parse_args(argv)
    counts = synthetic_fasta(args.out, args.n, args.seed, ur50_table=args.ur50_table, ur100_table=args.ur100_table)
    print(counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
