"""Peak memory and time of ``fairseq-esm-make-uniref-splits`` on synthetic UniRef100-style proteins.

    python benchmarks/uniref_splits_scale.py --n 100000 [--tables] [--shards K] [--threads N] \\
        [--work /tmp/uniref-scale] [--tree DIR]

The input comes from :func:`scale_data.synthetic_fasta` (cached in ``--work``). The tool runs in a fresh
interpreter that reports its own peak resident memory (``getrusage(RUSAGE_SELF)``, the Python process alone)
and that of its children (``RUSAGE_CHILDREN``: the largest child, MMseqs2 or a forked helper, which counts
its parent's memory at the fork), and the wall time; ``clustered_peak_mib`` is the peak when the tool reports
its 100% clusters (reading and clustering done, before the write pass imports torch and fairseq). ``--tables``
passes the generator's UniRef50 / UniRef100 membership tables (no MMseqs2 run). ``--tree`` runs another
checkout of the package (e.g. ``git archive HEAD fairseq_esm | tar -x -C DIR``) for before/after figures.
Per protein: (peak - fixed overhead) / (N - overhead N), the overhead being the peak of the same run on
``--overhead-n`` proteins (without ``--shards``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_data import ROOT, synthetic_fasta  # noqa: E402

RUNNER = """
import json, resource, sys, time
sys.path.insert(0, sys.argv.pop(1))  # the checkout to run, ahead of the working directory
start = time.time()
from fairseq_esm.cli.make_uniref_splits import main
from fairseq_esm.cli.common import run_main
import fairseq_esm.cli.make_uniref_splits as tool
mib = lambda who: resource.getrusage(who).ru_maxrss / 1024
stages, say = {}, tool.progress
def progress(message):  # the peak so far at each stage the tool reports (reading, ur50, ur100, writing)
    stages.setdefault(message.split(":")[0].split(" ")[0], mib(resource.RUSAGE_SELF))
    say(message)
tool.progress = progress
rc = run_main(main, sys.argv[1:])
print(json.dumps({"rc": rc, "seconds": time.time() - start, "peak_mib": mib(resource.RUSAGE_SELF),
                  "clustered_peak_mib": stages.get("ur100"), "children_peak_mib": mib(resource.RUSAGE_CHILDREN),
                  "module": tool.__file__}))
"""


def data(work: Path, n: int, seed: int) -> tuple[Path, Path, Path]:
    """The synthetic FASTA and its two tables for ``n`` proteins (made once)."""
    fasta, t50, t100 = work / f"syn{n}.fasta", work / f"syn{n}_ur50.tsv", work / f"syn{n}_ur100.tsv"
    if not (fasta.exists() and t50.exists() and t100.exists()):
        synthetic_fasta(fasta, n, seed, ur50_table=t50, ur100_table=t100)
    return fasta, t50, t100


def run(n: int, args: argparse.Namespace, shards: int | None = None) -> dict:
    """One run of the tool on ``n`` proteins; its report line."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    fasta, t50, t100 = data(work, n, args.seed)
    argv = [str(fasta), "--out", tempfile.mkdtemp(dir=work, prefix="out"), "--threads", str(args.threads),
            "--seed", "1"]
    if args.tables:
        argv += ["--ur50-clusters", str(t50), "--ur100-clusters", str(t100)]
    if shards:
        argv += ["--shards", str(shards)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    tree = str(Path(args.tree).resolve()) if args.tree else str(ROOT)
    proc = subprocess.run([sys.executable, "-c", RUNNER, tree, *argv], capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise SystemExit(f"run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if not args.keep:
        subprocess.run(["rm", "-rf", argv[2]])
    return {"n": n, **report}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[100_000])
    parser.add_argument("--overhead-n", type=int, default=2000)
    parser.add_argument("--tables", action="store_true")
    parser.add_argument("--shards", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", default="/tmp/uniref-scale")
    parser.add_argument("--tree")
    parser.add_argument("--keep", action="store_true", help="keep the output directories")
    args = parser.parse_args(argv)
    base = run(args.overhead_n, args)  # (unsharded: a few thousand proteins are too few for many shards)
    print(json.dumps(base), flush=True)
    for n in args.n:
        report = run(n, args, args.shards)
        for key in ("peak_mib", "clustered_peak_mib"):
            if report.get(key) and base.get(key):
                extra = (report[key] - base[key]) * (1 << 20) / (n - args.overhead_n)
                report[key.replace("peak_mib", "bytes_per_protein")] = round(extra, 1)
        report["ms_per_protein"] = round(1000 * report["seconds"] / n, 4)
        print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
