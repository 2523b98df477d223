"""Add MSA-averaged representations ("avg", paper supplement 12–13) to a structure-heads data dir.

    fairseq-esm-msa-split-features data-ss CHECKPOINT \\
        --db ../shared/data/pretrain_uniprot/mmseqs2_examples_DB.fasta.gz [--splits train valid test]

For every protein of each split (``fairseq-esm-structure-dataset`` output) an MSA is built with MMseqs2
against ``--db`` (``fairseq_esm.io.msa_search``), every member is embedded with CHECKPOINT, and the
sequence-weighted average per query column is written, in record order, to ``DIR/{split}.features.npy``
(residues × d float32): train the heads with ``--feature-dim d``. ``DIR/{split}.msa_depth.txt`` lists each
protein's MSA rows, so a user sees which proteins had no homolog (their avg is their own embedding).

With ``--cov-k K`` it also stores what the "cov" pair features (K*K, L, L) are computed from on the fly
(``--pair-feature-k K`` of ``protein_contacts``; a K²×L² map per protein is too big to store): the members'
embeddings projected on K principal directions in query columns, ``{split}.msa_proj.npy`` (M·L rows × K
float16, zeros at gaps, proteins in record order, members in MSA order), ``{split}.msa_present.npy`` (M·L
bool), ``{split}.msa_weights.npy`` (M float32 sequence weights) and ``{split}.msa_members.npy`` (M per
protein). The directions are fitted on the train split's query residues and saved as ``DIR/pca.npy``; splits
processed without train reuse it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from fairseq_esm.cli.common import (
    UsageError,
    add_alias,
    add_model_args,
    add_progress,
    apply_threads,
    load_inference_model,
    run_main,
)
from fairseq_esm.io.a3m import read_a3m
from fairseq_esm.io.msa_search import search_msas

if TYPE_CHECKING:
    from fairseq_esm.inference.msa_features import AlignedEmbeddings
    from fairseq_esm.modules.alphabet import Alphabet
    from fairseq_esm.modules.esm1 import ESM1


def split_records(data: Path, split: str) -> list[tuple[str, str]]:
    """(name, sequence) of a split in record order, decoded from its token dataset and names file."""
    from fairseq_esm.data.binarize import stored_sequences

    names = (data / f"{split}.names.txt").read_text().splitlines()
    sequences = stored_sequences(data, split)
    if len(names) != len(sequences):
        raise UsageError(f"{data}/{split}: {len(names)} names for {len(sequences)} sequences; rebuild the split")
    return list(zip(names, sequences))


def member_arrays(embeddings: AlignedEmbeddings, weights: np.ndarray, projection: np.ndarray) -> dict[str, np.ndarray]:
    """One protein's stored cov inputs: projected members (M·L, K) float16, presence (M·L,), weights (M,)."""
    from fairseq_esm.inference.msa_features import project_members

    projected = project_members(embeddings, projection).reshape(-1, projection.shape[0])
    return {"proj": projected.astype(np.float16), "present": embeddings.present.reshape(-1),
            "weights": weights.astype(np.float32), "members": np.array([len(weights)], np.int64)}


def split_features(model: ESM1, alphabet: Alphabet, records: list[tuple[str, str]], db: str, args: argparse.Namespace,
                   work: Path, projection: Optional[np.ndarray]) -> tuple[np.ndarray, list[int], dict]:
    """(residues × d) averaged representations in record order, each protein's MSA depth and, with a
    ``projection``, the ``msa_*`` arrays of the cov features (``member_arrays`` concatenated)."""
    from tqdm import tqdm

    from fairseq_esm.inference.msa_features import embed_rows, msa_average, sequence_weights

    texts = search_msas(records, db, args.iterations, args.evalue, args.max_seqs, mmseqs_threads(args))
    blocks, depths, members = [], [], []
    for i, text in enumerate(tqdm(texts, desc="MSA features", unit="protein", disable=args.no_progress)):
        path = work / f"{i}.a3m"
        path.write_text(text)
        rows = read_a3m(path, args.max_rows)
        if rows[0].sequence != records[i][1]:
            raise UsageError(f"the MSA searched for {records[i][0]} has another query ({rows[0].name}, "
                             f"{len(rows[0].sequence)} residues): MSAs out of record order")
        embeddings = embed_rows(model, alphabet, rows, args.repr_layers, args.max_tokens)
        weights = sequence_weights([row.aligned() for row in rows if row.sequence])
        blocks.append(msa_average(embeddings, weights).astype(np.float32))
        depths.append(len(rows))
        if projection is not None:
            members.append(member_arrays(embeddings, weights, projection))
    stored = {key: np.concatenate([m[key] for m in members]) for key in (members[0] if members else {})}
    return np.concatenate(blocks), depths, stored


def train_projection(model: ESM1, alphabet: Alphabet, args: argparse.Namespace) -> Optional[np.ndarray]:
    """(K, d) PCA directions for ``--cov-k``: fitted on the train split's query residues when it is processed
    (and saved as ``pca.npy``), else read from ``pca.npy``; None without ``--cov-k``."""
    if not args.cov_k:
        return None
    from fairseq_esm.inference.msa_features import fit_pca

    path, want = args.data / "pca.npy", (args.cov_k, model.cfg.encoder_embed_dim)
    if "train" in args.splits and (args.data / "train.names.txt").exists():
        queries = [sequence for _, sequence in split_records(args.data, "train")]
        projection = fit_pca(model, alphabet, queries, args.repr_layers, args.cov_k, args.max_tokens)
        np.save(path, projection.astype(np.float32))
        return projection
    if not path.exists():
        raise UsageError(f"{path} not found: --cov-k without the train split reuses its PCA; add --splits train")
    projection = np.load(path)
    if projection.shape != want:
        raise UsageError(f"{path}: shape {projection.shape}, need {want} for --cov-k and this model")
    return projection


def build_parser() -> argparse.ArgumentParser:
    """Data dir, the model flags, the MMseqs2 search settings and ``--cov-k``."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-msa-split-features", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="data dir of fairseq-esm-structure-dataset")
    add_model_args(parser, threads_help="CPU threads: torch intra-op threads and MMseqs2 threads "
                   "(default: torch's own choice; 1 for MMseqs2)")
    parser.add_argument("--db", required=True, help="FASTA database to search (plain or .gz)")
    parser.add_argument("--splits", nargs="+", default=["train", "valid", "test"])
    parser.add_argument("--max-rows", type=int, default=64, help="query + members averaged (default %(default)s)")
    parser.add_argument("--repr-layers", type=int, default=-1,
                        help="the one layer whose representations are averaged (default %(default)s: the last)")
    add_alias(parser, "--repr-layers", "--layer")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("-e", "--evalue", type=float, default=1e-3)
    parser.add_argument("--max-seqs", type=int, default=300)
    parser.add_argument("--cov-k", type=int, default=0,
                        help="also store projected members for K*K cov pair features (paper: 16; default off)")
    add_progress(parser)
    return parser


def mmseqs_threads(args: argparse.Namespace) -> int:
    """MMseqs2 threads: ``--threads`` when given, else 1 (the tool's default, so the MSAs stay as they were)."""
    return args.threads if args.threads is not None else 1


def main(argv: list[str] | None = None) -> int:
    """Check the data dir, load the model, then per split: search, embed, average, save."""
    args = build_parser().parse_args(argv)
    apply_threads(args)
    if args.cov_k < 0:
        raise UsageError(f"--cov-k must be >= 0, got {args.cov_k}")
    if not Path(args.db).is_file():
        raise UsageError(f"{args.db}: no such database file")
    present = [split for split in args.splits if (args.data / f"{split}.names.txt").exists()]
    if not present:
        raise UsageError(f"{args.data}: none of the splits {', '.join(args.splits)} found; build the data dir with "
                         "fairseq-esm-structure-dataset")

    model, alphabet = load_inference_model(args)
    projection = train_projection(model, alphabet, args)
    for split in args.splits:
        if not (args.data / f"{split}.names.txt").exists():
            print(f"{split}: not in {args.data}, skipped", file=sys.stderr)
            continue
        started = time.perf_counter()
        records = split_records(args.data, split)
        with tempfile.TemporaryDirectory(prefix="fairseq-esm-msa-") as work:
            features, depths, members = split_features(model, alphabet, records, args.db, args, Path(work), projection)
        np.save(args.data / f"{split}.features.npy", features)
        for key, values in members.items():
            np.save(args.data / f"{split}.msa_{key}.npy", values)
        depth_lines = "".join(f"{name}\t{depth}\n" for (name, _), depth in zip(records, depths))
        (args.data / f"{split}.msa_depth.txt").write_text(depth_lines)
        print(f"{split}: {len(records)} proteins, {features.shape[0]} residues × {features.shape[1]} -> "
              f"{split}.features.npy; MSA rows median {int(np.median(depths))}, {sum(d == 1 for d in depths)} "
              f"without a homolog; {time.perf_counter() - started:.0f} s")
    return 0


def cli() -> None:
    sys.exit(run_main(main))
