"""Binarization speed: FASTA -> text -> fairseq-preprocess (path a) against binarize_fasta (path b).

    python benchmarks/binarize_speed.py [--fasta FILE] [--repeats 3] [--workers N]

Everything is measured in this run, on this machine: path (a) as its two CLIs, path (b) as its
CLI and as the in-process function (no interpreter start or fairseq import), each with 1 and N
workers; the median of the repeats is reported as residues per second and as a ratio to
fairseq-preprocess. The outputs of both paths are compared byte for byte. Installs nothing.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
from fairseq.data import Dictionary

from fairseq_esm.data.binarize import binarize_fasta
from fairseq_esm.modules.alphabet import DICT_DIR

ROOT = Path(__file__).resolve().parents[1]
SRCDICT = str(DICT_DIR / "esm1b.txt")
BIN_DIR = Path(sys.executable).parent
STARTUP = "python -c 'import fairseq' (start-up every CLI pays)"
IN_PROCESS = "b: binarize_fasta() in-process, {n} worker(s)"


def machine() -> str:
    """CPU model, cores, load, and the versions that matter here."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{model}, {os.cpu_count()} cores visible, load average {load} (1/5/15 min); {platform.platform()}; "
            f"Python {platform.python_version()}, numpy {np.__version__}")


def timed(step: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of ``repeats`` runs of ``step``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cli(*cmd: str) -> Callable[[], None]:
    """A step that runs a command and fails loudly if it fails."""
    def run() -> None:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"benchmark step failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return run


def measure(fasta: str, work: Path, workers: int, repeats: int) -> tuple[dict[str, float], int]:
    """Median seconds of every step, and the number of residues written."""
    text = str(work / "train.txt")
    preprocess = [str(BIN_DIR / "fairseq-preprocess"), "--only-source", "--srcdict", SRCDICT, "--trainpref", text,
                  "--dataset-impl", "mmap"]
    dictionary = Dictionary.load(SRCDICT)
    report = binarize_fasta(fasta, work / "train", dictionary)
    steps = {STARTUP: cli(sys.executable, "-c", "import fairseq"),
             "a: fasta_to_text.py": cli(sys.executable, "preprocess/fasta_to_text.py", fasta, text)}
    for n in sorted({1, workers}):
        steps[f"a: fairseq-preprocess --workers {n}"] = cli(*preprocess, "--destdir", str(work / f"ref{n}"),
                                                             "--workers", str(n))
        steps[f"b: binarize_fasta.py --workers {n}"] = cli(
            sys.executable, "preprocess/binarize_fasta.py", "--trainpref", fasta,
            "--destdir", str(work / f"ours{n}"), "--workers", str(n))
        steps[IN_PROCESS.format(n=n)] = lambda n=n: binarize_fasta(
            fasta, work / f"fn{n}", dictionary, workers=n)
    return {name: timed(step, repeats) for name, step in steps.items()}, report.residues_written


def check_identical(work: Path, workers: int) -> bool:
    """Every path's .bin/.idx equal to fairseq-preprocess's with 1 worker."""
    ref = work / "ref1"
    others = [work / f"{kind}{n}" for kind in ("ref", "ours") for n in sorted({1, workers})]
    ours_fn = [(work / f"fn{n}.bin", work / f"fn{n}.idx") for n in sorted({1, workers})]
    same = all(filecmp.cmp(ref / f"train.{s}", d / f"train.{s}", shallow=False) for d in others for s in ("bin", "idx"))
    return same and all(filecmp.cmp(ref / "train.bin", b, shallow=False) and
                        filecmp.cmp(ref / "train.idx", i, shallow=False) for b, i in ours_fn)


def print_table(times: dict[str, float], residues: int, workers: int) -> None:
    """Seconds, residues/s and the ratio to fairseq-preprocess with the same number of workers."""
    print(f"{'step':58s} {'median s':>9s} {'M res/s':>9s} {'vs fairseq-preprocess':>22s}")
    for name, seconds in times.items():
        n = next((k for k in sorted({1, workers}) if name.endswith(f" {k}") or f", {k} worker" in name), None)
        base = times.get(f"a: fairseq-preprocess --workers {n}") if n else None
        ratio = f"{base / seconds:.1f}x faster" if base and not name.startswith("a: fairseq") else ""
        rate = "" if name == STARTUP else f"{residues / seconds / 1e6:.2f}"
        print(f"{name:58s} {seconds:9.3f} {rate:>9s} {ratio:>22s}")
    text, startup = times["a: fasta_to_text.py"], times[STARTUP]
    for n in sorted({1, workers}):
        preprocess, in_process = times[f"a: fairseq-preprocess --workers {n}"], times[IN_PROCESS.format(n=n)]
        path_a, ours_cli = text + preprocess, times[f"b: binarize_fasta.py --workers {n}"]
        print(f"path (a) total, {n} worker(s): {path_a:.3f} s; path (b) CLI {path_a / ours_cli:.1f}x faster, "
              f"in-process {path_a / in_process:.1f}x faster")
        work = preprocess - startup
        print(f"  without the start-up: fairseq-preprocess {work:.3f} s ({residues / work / 1e6:.2f} M res/s) vs "
              f"binarize_fasta() {work / in_process:.0f}x faster")


def main(argv: list[str] | None = None) -> int:
    """Run every step ``--repeats`` times and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fasta", default=str(ROOT / "examples" / "data" / "uniprot_sample.fasta.gz"),
                        help="FASTA to binarize, plain or gzip (default: the shipped sample)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per step; the median is reported")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="N for the multi-worker runs")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="binarize_speed_") as tmp:
        times, residues = measure(args.fasta, Path(tmp), args.workers, args.repeats)
        print(f"input: {args.fasta}, {residues:,} residues written; median of {args.repeats} runs\n")
        print_table(times, residues, args.workers)
        same = check_identical(Path(tmp), args.workers)
        print(f"\noutputs byte-identical across all paths and worker counts: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
