"""``fairseq-esm-msa-features CHECKPOINT A3M... --out DIR``: the paper's MSA embedding features per protein.

For each A3M (query first): ``<id>.avg.npy`` (L, d) float32, the weighted average of the members' embeddings
in each query column ("avg"); with ``--cov-k K`` also ``<id>.cov.npy`` (K*K, L, L) float16, the uncentered
covariance of PCA-projected embeddings ("cov", K = 16 in the paper). The PCA directions are fitted on the
query embeddings of this run and written to ``pca.npy``; pass ``--pca`` to reuse a training set's directions
for a test set. ``features.tsv`` lists id, length, rows used, effective rows (sum of weights), empty rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from fairseq_esm.cli.common import (
    UsageError,
    add_alias,
    add_model_args,
    add_out,
    add_progress,
    apply_threads,
    load_inference_model,
    run_main,
)
from fairseq_esm.io.a3m import AlignedRow, read_a3m
from fairseq_esm.io.file_names import file_stems

if TYPE_CHECKING:
    from fairseq_esm.modules.alphabet import Alphabet
    from fairseq_esm.modules.esm1 import ESM1


def build_parser() -> argparse.ArgumentParser:
    """The checkpoint, the alignments, the feature settings and the output directory."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-msa-features", description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("a3m", nargs="+", type=Path, help="A3M files, query first (HHblits, MMseqs2 result2msa)")
    add_out(parser, "directory the features, pca.npy and features.tsv go to (created)", type=Path, old=("--out-dir",))
    parser.add_argument("--max-rows", type=int, default=128, help="query + first members used (default %(default)s)")
    parser.add_argument("--repr-layers", type=int, default=-1, help="representation layer (default: final)")
    add_alias(parser, "--repr-layers", "--layer")
    parser.add_argument("--cov-k", type=int, default=0, help="also write the covariance features with K PCA dims")
    parser.add_argument("--pca", type=Path, help="(K, d) directions from an earlier run's pca.npy")
    add_progress(parser)
    return parser


def query_pca(model: ESM1, alphabet: Alphabet, msas: list[list[AlignedRow]], args: argparse.Namespace) -> np.ndarray:
    """PCA directions of all query residues' representations in this run."""
    from fairseq_esm.inference.msa_features import fit_pca

    try:
        queries = [rows[0].sequence for rows in msas]
        return fit_pca(model, alphabet, queries, args.repr_layers, args.cov_k, args.max_tokens)
    except ValueError as err:
        raise UsageError(str(err)) from None


def write_features(model: ESM1, alphabet: Alphabet, msas: list[list[AlignedRow]], projection: np.ndarray | None,
                   args: argparse.Namespace) -> list[str]:
    """Each protein's ``.avg.npy`` (and ``.cov.npy``) in --out; returns its features.tsv lines."""
    from tqdm import tqdm

    from fairseq_esm.inference.msa_features import embed_rows, msa_average, msa_covariance, sequence_weights

    index = ["id\tlength\trows\teffective_rows\tempty_rows_skipped"]
    stems = file_stems([rows[0].name for rows in msas])
    for rows, stem in tqdm(list(zip(msas, stems)), desc="MSAs", unit="msa", disable=args.no_progress):
        embeddings = embed_rows(model, alphabet, rows, args.repr_layers, args.max_tokens)
        kept = [row for row in rows if row.sequence]
        weights = sequence_weights([row.aligned() for row in kept])
        np.save(args.out / f"{stem}.avg.npy", msa_average(embeddings, weights).astype(np.float32))
        if projection is not None:
            cov = msa_covariance(embeddings, weights, projection)
            np.save(args.out / f"{stem}.cov.npy", cov.astype(np.float16))
        index.append(f"{rows[0].name}\t{len(rows[0].sequence)}\t{len(kept)}\t{weights.sum():.2f}\t"
                     f"{embeddings.skipped_empty}")
    return index


def main(argv: Sequence[str] | None = None) -> int:
    """Embed every alignment's members and write the per-protein features, the PCA and the index."""
    args = build_parser().parse_args(argv)
    apply_threads(args)
    if args.max_rows < 1 or args.cov_k < 0:
        raise UsageError("--max-rows must be >= 1 and --cov-k >= 0")
    msas = [read_a3m(path, args.max_rows) for path in args.a3m]

    model, alphabet = load_inference_model(args)
    projection = None
    if args.cov_k:
        projection = np.load(args.pca) if args.pca else query_pca(model, alphabet, msas, args)
        if projection.shape != (args.cov_k, model.cfg.encoder_embed_dim):
            raise UsageError(f"--pca {args.pca}: shape {projection.shape}, need ({args.cov_k}, "
                             f"{model.cfg.encoder_embed_dim}) for this model and --cov-k")
    args.out.mkdir(parents=True, exist_ok=True)
    if projection is not None:
        np.save(args.out / "pca.npy", projection)
    index = write_features(model, alphabet, msas, projection, args)
    (args.out / "features.tsv").write_text("\n".join(index) + "\n")
    print(f"{len(msas)} proteins -> {args.out} (avg{' + cov' if projection is not None else ''})")
    return 0


def cli() -> None:
    raise SystemExit(run_main(main))


if __name__ == "__main__":
    cli()
