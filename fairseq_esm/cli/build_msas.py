"""Build one A3M MSA per query protein with MMseqs2 against a FASTA sequence database.

    fairseq-esm-build-msas labels/labels.fasta \\
        --db ../shared/data/pretrain_uniprot/mmseqs2_examples_DB.fasta.gz --out msas [--iterations 2]

Writes OUT/<id>.a3m (query first, then hits; file-safe ids as in fairseq-esm-contacts) and
OUT/msas.tsv (id, file, rows). Queries go through the package's residue policy (report printed).
Feed the A3M files to ``fairseq-esm-msa-features`` for the paper's "avg"/"cov" MSA embedding features.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fairseq_esm.cli.common import UsageError, add_out, run_main, thread_count
from fairseq_esm.io.fasta import FastaReport, add_policy_args, policy_from_args, read_fasta
from fairseq_esm.io.file_names import file_stems
from fairseq_esm.io.msa_search import search_msas


def build_parser() -> argparse.ArgumentParser:
    """Queries, database, ``--out`` directory, the MMseqs2 search settings and the residue policy."""
    parser = argparse.ArgumentParser(prog="fairseq-esm-build-msas", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("queries", help="FASTA of the proteins that need an MSA")
    parser.add_argument("--db", required=True, help="FASTA (plain or .gz) to search: UniRef, or the shipped sample")
    add_out(parser, "output directory: writes <id>.a3m and msas.tsv here", type=Path, old=("--out-dir",))
    parser.add_argument("--iterations", type=int, default=2, help="profile search iterations (default %(default)s)")
    parser.add_argument("-e", "--evalue", type=float, default=1e-3, help="inclusion E-value (default %(default)s)")
    parser.add_argument("--max-seqs", type=int, default=300, help="hits kept per query (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="MMseqs2 threads (default %(default)s)")
    add_policy_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Search, write the A3M files and the index, print depths."""
    args = build_parser().parse_args(argv)
    threads = thread_count(args)
    if not Path(args.db).is_file():
        raise UsageError(f"{args.db}: no such database file")
    report = FastaReport()
    queries = list(read_fasta(args.queries, policy_from_args(args), report))
    print(report.format(), file=sys.stderr)
    if not queries:
        raise UsageError(f"{args.queries}: no query left to search")
    started = time.perf_counter()
    texts = search_msas(queries, args.db, args.iterations, args.evalue, args.max_seqs, threads)

    args.out.mkdir(parents=True, exist_ok=True)
    index = ["id\tfile\trows"]
    for (name, _), stem, text in zip(queries, file_stems([name for name, _ in queries]), texts):
        (args.out / f"{stem}.a3m").write_text(text)
        index.append(f"{name}\t{stem}.a3m\t{text.count('>')}")
    (args.out / "msas.tsv").write_text("\n".join(index) + "\n")
    depths = sorted(int(line.rsplit("\t", 1)[1]) for line in index[1:])
    print(f"{len(queries)} MSAs -> {args.out} in {time.perf_counter() - started:.0f} s; rows per MSA: "
          f"median {depths[len(depths) // 2]}, min {depths[0]}, max {depths[-1]}, "
          f"{sum(d == 1 for d in depths)} with no hit")
    return 0


def cli() -> None:
    sys.exit(run_main(main))
