"""UniRef-scale harness: wall time and peak memory of every data and training stage against the number of proteins
N, a least-squares fit (fixed + per protein) and its extrapolation to UniRef50 (60M) and UniRef100 (300M).

    .venv/bin/python benchmarks/scale.py [--sizes 100000,1000000] [--stages binarize,splits-mmseqs,...]
                                         [--threads 2] [--work DIR] [--json PATH] [--keep]

For each N, ``benchmarks/scale_data.py``'s :func:`synthetic_fasta` writes N synthetic UniRef100-style proteins
drawn from real ones (families of 1-5 % substituted members, so both 50 % and 100 % clusters have several
members) and their true UniRef50 / UniRef100 membership tables (setup, not timed). Then every stage runs the
package's command-line tool in a subprocess of its own, started from this process, and is measured from process
start: wall seconds and the peak resident memory of the largest process of the stage (``os.wait4``'s
``ru_maxrss``: the tool, or a worker or MMseqs2 process it waited for, whichever peaked highest).

==================  ==========================================================================================
stage               command, and when its clock stops
==================  ==========================================================================================
``binarize``        ``fairseq-esm-binarize --trainpref syn.fasta --validpref valid.fasta --workers T``: the end
``splits-mmseqs``   ``fairseq-esm-make-uniref-splits syn.fasta --threads T --fractions ''`` (clusters by
                    MMseqs2 easy-linclust, 50 % and 100 %): the end
``splits-tables``   the same with ``--ur50-clusters`` / ``--ur100-clusters`` (the true tables): the end
``train``           ``fairseq-train`` on binarize's data-bin (N proteins), ``--arch esm1b_t4_1M --max-update 1
                    --cpu --num-workers 0 --log-interval 1``: its first ``train_inner`` line (the first update
                    done), then the process is stopped
``train-cluster``   the same on splits-tables' ``ur50d/data-bin`` with ``--cluster-sampling`` (one member per
                    50 % cluster per epoch)
``validate``        ``fairseq-validate`` on binarize's data-bin, ``--valid-subset train`` (all N proteins) with a
                    random esm1b_t4_1M in fair-esm's release layout: its first progress line (fairseq logs from
                    the second batch on; ``--log-interval 1``), then stopped
``extract``         (not run by default) ``fairseq-esm-extract`` of all N with the same model, ``--format
                    npz-shards --include mean``: the end
==================  ==========================================================================================

The harness only calls the command-line tools, so it measures whatever they do today. Output: per stage and N,
seconds and peak RSS, and both divided by N; then per stage the fit ``value = fixed + per_protein x N`` (least
squares over the sizes; needs two) and the values that line gives at 60M and 300M proteins, labelled as an
extrapolation: a straight line through small runs, blind to anything that grows faster than N (sorting,
MMseqs2's clustering) or to a machine's memory running out. Default ``--sizes 100000,1000000`` takes about
15 minutes on two cores (most of it MMseqs2 at 1M); ``make bench-scale`` runs ``--sizes 20000,100000`` (minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from scale_data import synthetic_fasta  # noqa: E402

STAGES = ("binarize", "splits-mmseqs", "splits-tables", "train", "train-cluster", "validate", "extract")
DEFAULT_STAGES = STAGES[:-1]
TARGETS = {"UniRef50": 60_000_000, "UniRef100": 300_000_000}
ARCH, ARCH_SHAPE = "esm1b_t4_1M", (4, 128, 512, 8)  # layers, dim, ffn, heads (modules/generations.py)
MAX_POSITIONS, MAX_TOKENS = 1024, 4096
VALID_PROTEINS = 500
TASK = ["--user-dir", str(ROOT / "fairseq_esm"), "--task", "protein_mlm", "--criterion", "esm_masked_lm",
        "--max-positions", str(MAX_POSITIONS), "--max-tokens", str(MAX_TOKENS), "--seed", "1", "--cpu",
        "--num-workers", "0", "--log-format", "simple", "--log-interval", "1"]
TRAIN_LINE = ("train_inner", re.compile(r"\|\s*train_inner\s*\|"))
VALID_LINE = ("'valid on' progress", re.compile(r"valid on '[^']+' subset"))
TIME = "/usr/bin/time" if Path("/usr/bin/time").exists() else None


@dataclass
class Stage:
    """One measured run."""

    stage: str
    n: int
    seconds: float
    peak_rss_mb: float
    exit: str  # "ok", "stopped at <marker>", or why it failed


def tool(name: str) -> str:
    """A console script of this environment (next to this Python), else on PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def measure(stage: str, n: int, argv: Sequence[str], log: Path, until: tuple[str, re.Pattern] | None = None,
            timeout: float = 6 * 3600) -> Stage:
    """Run ``argv`` under ``/usr/bin/time`` (its output to ``log``); stop it at the first line matching ``until``.
    Seconds from start to that line (or to the end); peak RSS of the largest process it waited for.

    Why ``/usr/bin/time``: Linux keeps the high-water RSS of the process that forks across ``exec``, so a tool
    started straight from this (numpy-holding) process could report this process's RSS as its floor."""
    stats = log.with_suffix(".time")
    timed = [TIME, "-f", "%M %e", "-o", str(stats), *argv] if TIME else list(argv)
    start = time.perf_counter()
    proc = subprocess.Popen(timed, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True, cwd=log.parent)
    exit_note, seconds = None, None
    with open(log, "w") as out:
        out.write(" ".join(argv) + "\n")
        for line in proc.stdout:
            out.write(line)
            if until is not None and until[1].search(line):
                seconds = time.perf_counter() - start
                exit_note = f"stopped at its first {until[0]} line"
                _stop(proc.pid, signal.SIGKILL)
                break
            if time.perf_counter() - start > timeout:
                _stop(proc.pid, signal.SIGKILL)
                exit_note = f"timed out after {timeout:.0f} s"
                break
        proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    seconds = seconds if seconds is not None else time.perf_counter() - start
    peak_kb = usage.ru_maxrss
    if TIME and stats.exists():  # its last line is the format's; one before it may say how the tool ended
        peak_kb = int(stats.read_text().split()[-2])
    if exit_note is None:
        exit_note = "ok" if code == 0 else f"exit {code} (see {log.name})"
        if until is not None and code == 0:
            exit_note = f"ended without a {until[0]} line (see {log.name})"
    return Stage(stage, n, round(seconds, 2), round(peak_kb / 1024, 1), exit_note)


def _stop(pid: int, sig: int) -> None:
    """Stop the tool this harness started: ``/usr/bin/time``'s child (then ``time`` reports its peak), or the
    process itself when it runs without ``time``."""
    target = pid
    if TIME:
        children = Path(f"/proc/{pid}/task/{pid}/children")
        found = children.read_text().split() if children.exists() else []
        target = int(found[0]) if found else pid
    try:
        os.kill(target, sig)
    except ProcessLookupError:  # it ended on its own meanwhile
        pass


def official_model(path: Path) -> Path:
    """A randomly initialised esm1b_t4_1M in fair-esm's release layout (setup: the validate and extract input)."""
    import torch

    from fairseq_esm.checkpoints.pt_files import export_official
    from fairseq_esm.models.esm import Esm1bConfig, Esm1bModel
    from fairseq_esm.modules.alphabet import esm1b_alphabet

    torch.manual_seed(0)
    layers, dim, ffn, heads = ARCH_SHAPE
    config = Esm1bConfig(encoder_layers=layers, encoder_embed_dim=dim, encoder_ffn_embed_dim=ffn,
                         encoder_attention_heads=heads, max_positions=MAX_POSITIONS)
    export_official(Esm1bModel(config, esm1b_alphabet()), path)
    return path


def commands(work: Path, threads: int, model: Path) -> dict[str, tuple[list[str], tuple[str, re.Pattern] | None]]:
    """Each stage's command line in ``work`` (one N), and the line that stops its clock (None: the end)."""
    fasta, bin_dir = work / "syn.fasta", work / "data-bin"
    splits = ["fairseq-esm-make-uniref-splits", str(fasta), "--threads", str(threads), "--fractions", ""]
    clustered = work / "splits-tables" / "ur50d" / "data-bin"
    train = [tool("fairseq-train"), *TASK, "--arch", ARCH, "--max-update", "1", "--optimizer", "adam", "--lr",
             "1e-4", "--no-save", "--disable-validation"]
    return {
        "binarize": ([tool("fairseq-esm-binarize"), "--trainpref", str(fasta), "--validpref", str(work / "valid.fasta"),
                      "--destdir", str(bin_dir), "--workers", str(threads)], None),
        "splits-mmseqs": ([tool(splits[0]), *splits[1:], "--out", str(work / "splits-mmseqs")], None),
        "splits-tables": ([tool(splits[0]), *splits[1:], "--out", str(work / "splits-tables"), "--ur50-clusters",
                           str(work / "ur50.tsv"), "--ur100-clusters", str(work / "ur100.tsv")], None),
        "train": ([train[0], str(bin_dir), *train[1:], "--save-dir", str(work / "ckpt")], TRAIN_LINE),
        "train-cluster": ([train[0], str(clustered), *train[1:], "--save-dir", str(work / "ckpt-cluster"),
                           "--cluster-sampling"], TRAIN_LINE),
        "validate": ([tool("fairseq-validate"), str(bin_dir), *TASK, "--path", str(model), "--valid-subset", "train"],
                     VALID_LINE),
        "extract": ([tool("fairseq-esm-extract"), str(model), str(fasta), "--out", str(work / "extract"),
                     "--format", "npz-shards", "--include", "mean", "--device", "cpu", "--threads", str(threads),
                     "--no-progress"], None),
    }


def run_size(n: int, stages: Sequence[str], root: Path, threads: int, model: Path,
             say: Callable[[str], None]) -> list[Stage]:
    """Generate N proteins and their tables, then measure every stage on them (in order)."""
    work = root / f"n{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    start = time.perf_counter()
    counts = synthetic_fasta(work / "syn.fasta", n, 1, ur50_table=work / "ur50.tsv", ur100_table=work / "ur100.tsv")
    synthetic_fasta(work / "valid.fasta", VALID_PROTEINS, 2)
    say(f"N={n:,}: generated {counts['residues']:,} residues, {counts['families']:,} families in "
        f"{time.perf_counter() - start:.0f} s (setup, not timed)")
    table = commands(work, threads, model)
    results = []
    for stage in stages:
        argv, until = table[stage]
        result = measure(stage, n, argv, work / f"{stage}.log", until)
        say(f"  {stage:<14} {result.seconds:>9.1f} s  {result.peak_rss_mb:>9.1f} MB  {result.exit}")
        results.append(result)
    return results


def fit(ns: Sequence[int], values: Sequence[float]) -> tuple[float, float] | None:
    """Least-squares ``value = fixed + per_protein x N``; None with fewer than two sizes."""
    if len(set(ns)) < 2:
        return None
    slope, intercept = np.polyfit(np.asarray(ns, float), np.asarray(values, float), 1)
    return float(intercept), float(slope)


def human_seconds(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def human_mb(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if abs(mb) >= 1024 else f"{mb:.0f} MB"


def report(results: list[Stage], say: Callable[[str], None]) -> dict:
    """The measured table, then the fit and its extrapolation per stage (markdown, so results.md can hold it)."""
    say("\n| stage | N | seconds | peak RSS MB | µs / protein | RSS KB / protein | note |")
    say("|---|---:|---:|---:|---:|---:|---|")
    for r in results:
        say(f"| {r.stage} | {r.n:,} | {r.seconds:.1f} | {r.peak_rss_mb:.0f} | {1e6 * r.seconds / r.n:.1f} | "
            f"{1024 * r.peak_rss_mb / r.n:.2f} | {r.exit} |")
    names = list(dict.fromkeys(target for target in TARGETS))
    say("\nLeast-squares fit over the sizes (value = fixed + per protein × N) and **EXTRAPOLATION** of that line to "
        f"{' and '.join(f'{k} ({v / 1e6:.0f}M)' for k, v in TARGETS.items())}, not a measurement:\n")
    say("| stage | time: fixed | time: per protein | RSS: fixed | RSS: per protein | "
        + " | ".join(f"{k} time (extrap.) | {k} RSS (extrap.)" for k in names) + " |")
    say("|---|---:|---:|---:|---:|" + "---:|---:|" * len(names))
    fits = {}
    for stage in dict.fromkeys(r.stage for r in results):
        rows = [r for r in results if r.stage == stage and not r.exit.startswith(("exit", "timed out", "ended"))]
        time_fit = fit([r.n for r in rows], [r.seconds for r in rows])
        rss_fit = fit([r.n for r in rows], [r.peak_rss_mb for r in rows])
        if time_fit is None or rss_fit is None:
            say(f"| {stage} | (fewer than two successful sizes: no fit) |")
            continue
        fits[stage] = {"seconds": time_fit, "peak_rss_mb": rss_fit}
        cells = [f"{time_fit[0]:.1f} s", f"{1e6 * time_fit[1]:.2f} µs", human_mb(rss_fit[0]),
                 f"{1024 * 1024 * rss_fit[1]:.0f} B"]
        for n in TARGETS.values():  # a negative slope is noise between sizes: no growth to extrapolate
            cells += [human_seconds(time_fit[0] + time_fit[1] * n) if time_fit[1] > 0 else "no growth measured",
                      human_mb(rss_fit[0] + rss_fit[1] * n) if rss_fit[1] > 0 else "no growth measured"]
        say(f"| {stage} | " + " | ".join(cells) + " |")
    return fits


def machine() -> str:
    """Cores, memory, CPU model (``nproc``, ``lscpu``), Python and the tools' versions."""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lscpu if line.startswith("Model name")), "?")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    mmseqs = subprocess.run(["mmseqs", "version"], capture_output=True, text=True, check=False).stdout.strip() \
        if shutil.which("mmseqs") else "absent"
    return (f"{len(os.sched_getaffinity(0))} cores usable (nproc), {memory:.0f} GiB memory, {model}; "
            f"Python {platform.python_version()}, MMseqs2 {mmseqs}; load average "
            f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated protein counts")
    parser.add_argument("--stages", default=",".join(DEFAULT_STAGES),
                        help=f"comma-separated, in this order: {', '.join(STAGES)} (default: all but extract)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="--workers / --threads of the tools (default: every core)")
    parser.add_argument("--work", type=Path, help="work directory (default: a temporary one, deleted)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (FASTA, data-bins, logs)")
    parser.add_argument("--json", type=Path, help="also write every measurement and fit to this file")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s]
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown or not sizes:
        parser.error(f"unknown stage(s) {unknown}" if unknown else "no --sizes")
    stages = [s for s in STAGES if s in stages]
    root = args.work or Path(tempfile.mkdtemp(prefix="scale-bench-"))
    root.mkdir(parents=True, exist_ok=True)

    def say(text: str) -> None:
        print(text, flush=True)

    say(f"machine: {machine()}")
    say(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}; work directory {root}")
    results: list[Stage] = []
    try:
        model = official_model(root / "esm1b_t4_1M_random.pt") if {"validate", "extract"} & set(stages) else None
        for n in sizes:
            results += run_size(n, stages, root, args.threads, model, say)
            if not args.keep:  # the logs stay; the data go (a 1M-protein size holds a few GB)
                for path in (root / f"n{n}").iterdir():
                    if path.suffix != ".log":
                        shutil.rmtree(path) if path.is_dir() else path.unlink()
    finally:
        fits = report(results, say) if results else {}
        if args.json:
            args.json.write_text(json.dumps({"machine": machine(), "sizes": sizes, "fits": fits,
                                             "results": [asdict(r) for r in results],
                                             "extrapolation_targets": TARGETS}, indent=1))
        if args.work is None and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
