"""Structure-labels speed: the old per-chain path against the per-file path, same chains, in one run.

    python benchmarks/structure_labels_speed.py [--chains examples/data/probes/structure_chains.txt]
                                                [--shared-data ../shared/data] [--threads N] [--old-every K]

The chain list is the one ``make downstream`` labels (examples/downstream_small.sh, docs/results.md): every
protein chain of >= 20 residues in ../shared/data/structures, as FILE[:CHAIN]. The old path
(``structure_labels._collect_per_chain``) reads the file and runs mkdssp on the whole assembly once per
requested chain, in one process; the new one (``structure_labels.collect``) reads each file and runs mkdssp
once for all its chains, with 1 and with ``--threads`` worker processes. Each path writes its labels.fasta,
ss8.txt and contacts/*.npy (the timing includes writing), and every file and skipped line is compared byte
for byte with the old path's. ``--old-every K`` runs the old path on every K-th file only (with all its
chains) and says so; the ratio is then over that subset, and the old time for the whole list is extrapolated
and labelled as such.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
CHAINS = ROOT / "examples" / "data" / "probes" / "structure_chains.txt"


def read_specs(chains: Path, shared: Path) -> list[str]:
    """The FILE[:CHAIN] lines, ``../shared/data`` replaced by ``shared`` (as examples/downstream_small.sh does)."""
    lines = [line.strip() for line in chains.read_text().splitlines() if line.strip()]
    return [str(shared / line[len("../shared/data/"):]) if line.startswith("../shared/data/") else line
            for line in lines]


def every_kth_file(specs: list[str], k: int) -> list[str]:
    """The specs of every ``k``-th distinct file (all chains of a chosen file), in input order."""
    from fairseq_esm.io.structures import parse_spec

    files = list(dict.fromkeys(parse_spec(s)[0] for s in specs))
    chosen = set(files[::k])
    return [s for s in specs if parse_spec(s)[0] in chosen]


def counted(run: Callable[[], tuple[list, list[str]]]) -> tuple[tuple[list, list[str]], int]:
    """``run()`` with mkdssp calls counted (in this process: worker processes' calls are not)."""
    from fairseq_esm.io import dssp

    original, calls = dssp.run_mkdssp, [0]

    def run_mkdssp(pdb: Path) -> str:
        calls[0] += 1
        return original(pdb)

    dssp.run_mkdssp = run_mkdssp
    try:
        return run(), calls[0]
    finally:
        dssp.run_mkdssp = original


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (mkdssp, worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(name: str, run: Callable[[], tuple[list, list[str]]], out: Path) -> tuple[float, list[str], int]:
    """Wall seconds to label and write to ``out`` (CPU seconds printed too: the other load on the machine does
    not count in them), the skipped lines and the mkdssp runs counted here."""
    from fairseq_esm.cli.structure_labels import write

    start, cpu = time.perf_counter(), cpu_seconds()
    (chains, skipped), calls = counted(run)
    write(out, chains)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    runs = f", {calls} mkdssp runs" if calls else ""
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{name}: {seconds:.1f} s wall, {cpu:.1f} s CPU ({len(chains)} chains written, {len(skipped)} skipped"
          f"{runs}; load average now {load})", flush=True)
    return seconds, skipped, calls


def outputs(out: Path) -> dict[str, bytes]:
    """Every file the tool wrote, by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def same(a: Path, b: Path) -> str:
    """'identical' or what differs between two output directories."""
    left, right = outputs(a), outputs(b)
    if left.keys() != right.keys():
        return f"DIFFERENT file sets ({len(left)} vs {len(right)} files)"
    differ = [name for name in left if left[name] != right[name]]
    return f"identical ({len(left)} files)" if not differ else f"DIFFERENT: {len(differ)} files, e.g. {differ[0]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=Path, default=CHAINS, help="FILE[:CHAIN] per line (default: shipped list)")
    shared = Path(os.environ.get("SHARED_DATA", ROOT / ".." / "shared" / "data"))
    parser.add_argument("--shared-data", type=Path, default=shared,
                        help="what ../shared/data in the list stands for (default $SHARED_DATA or ../shared/data)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="worker processes of the second new-path run (default: every core)")
    parser.add_argument("--old-every", type=int, default=1, help="old path on every K-th file only (default 1: all)")
    args = parser.parse_args()

    import torch
    from extract_speed import machine

    from fairseq_esm.cli.structure_labels import _collect_per_chain, collect
    from fairseq_esm.io.structures import parse_spec

    specs = read_specs(args.chains, args.shared_data.resolve())
    files = len(dict.fromkeys(parse_spec(s)[0] for s in specs))
    print(f"machine: {machine(torch.device('cpu'))}")
    print(f"chain list: {args.chains} ({len(specs)} FILE[:CHAIN] in {files} files, under {args.shared_data})")
    old_specs = every_kth_file(specs, args.old_every) if args.old_every > 1 else specs
    with tempfile.TemporaryDirectory(prefix="structure_labels_speed_") as tmp:
        tmp = Path(tmp)
        if args.old_every > 1:
            old_files = len(dict.fromkeys(parse_spec(s)[0] for s in old_specs))
            print(f"subset for the old path: every {args.old_every}th file, {len(old_specs)} FILE[:CHAIN] in "
                  f"{old_files} files")
            new_subset, _, _ = timed("new, 1 worker, subset", lambda: collect(old_specs, 1), tmp / "new_subset")
        old, old_skipped, _ = timed("old per-chain path" + (", subset" if args.old_every > 1 else ""),
                                    lambda: _collect_per_chain(old_specs), tmp / "old")
        new1, skipped1, _ = timed("new per-file path, 1 worker", lambda: collect(specs, 1), tmp / "new1")
        new_n, skipped_n, _ = timed(f"new per-file path, {args.threads} workers",
                                    lambda: collect(specs, args.threads), tmp / "new_n")
        print(f"outputs, 1 vs {args.threads} workers: {same(tmp / 'new1', tmp / 'new_n')}; skipped lines "
              f"{'identical' if skipped1 == skipped_n else 'DIFFERENT'}")
        if args.old_every > 1:
            print(f"outputs, old vs new on the subset: {same(tmp / 'old', tmp / 'new_subset')}")
            print(f"speed-up on the subset, 1 worker: {old / new_subset:.1f}x")
            old = old * len(specs) / len(old_specs)
            print(f"old path on the whole list: {old:.0f} s EXTRAPOLATED from the subset by FILE[:CHAIN] count")
        else:
            print(f"outputs, old vs new: {same(tmp / 'old', tmp / 'new1')}; skipped lines "
                  f"{'identical' if old_skipped == skipped1 else 'DIFFERENT'}")
        print(f"speed-up: {old / new1:.1f}x with 1 worker, {old / new_n:.1f}x with {args.threads} workers "
              f"(old {old:.1f} s, new {new1:.1f} s / {new_n:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
