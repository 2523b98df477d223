"""Start-up cost: CPU seconds of ``--help`` for every console script of fairseq-esm, against two anchors.

    .venv/bin/python benchmarks/startup.py [--repeats 3] [--json PATH]

A user who types ``fairseq-esm-extract --help`` waits for the interpreter to start and for everything the
tool imports before argparse prints a line, so that wait is this tool's start-up cost. The goal: every tool
within 0.5 s CPU of ``python -c pass``, and ``fairseq-esm-extract`` ahead of fair-esm's ``esm-extract``.

The tools are the ``console_scripts`` entry points of the installed ``fairseq-esm`` distribution (new tools
are covered without editing this file), each run as its script in this interpreter's scripts directory
(what the user runs), or as ``python -c "from module import attr; ..."`` where that script is missing.
Both anchors are measured in the same run: ``python -c pass`` (the floor) and ``esm-extract --help``
(fair-esm, a test extra; the 2.0.0 wheel lacks the script, so then the imports the upstream script makes
before parsing are timed instead; "not installed" without fair-esm). Every command runs ``--repeats`` times,
interleaved, with ``OMP_NUM_THREADS=1``; reported is the median CPU time (user + sys of the child,
from ``getrusage(RUSAGE_CHILDREN)`` deltas, so a busy machine's waits do not count) and the median
wall time. Exit status 1 only when a command cannot be run or its ``--help`` exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

GOAL_S = 0.5
TIMEOUT_S = 300
PROJECT = "fairseq-esm"
ANCHOR = ("fair-esm", "esm-extract")
OURS_VS_ANCHOR = "fairseq-esm-extract"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@dataclass
class Command:
    """One command line to time, with its measurements."""

    name: str
    argv: list[str]
    kind: str = "tool"
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    error: str = ""


def machine() -> str:
    """CPU model, cores, load and the versions that matter here."""
    cpuinfo = Path("/proc/cpuinfo")
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")), "") if cpuinfo.exists() else platform.processor()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    versions = ", ".join(f"{name} {version(name)}" for name in (PROJECT, ANCHOR[0]))
    return f"{cpu}, {os.cpu_count()} cores visible, load average {load}; Python {platform.python_version()}, {versions}"


def version(dist: str) -> str:
    """Installed version of ``dist``, or "not installed"."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def console_scripts(dist: str) -> list[metadata.EntryPoint]:
    """The console_scripts entry points of the installed distribution ``dist``, by name."""
    return sorted(metadata.distribution(dist).entry_points.select(group="console_scripts"), key=lambda ep: ep.name)


def help_argv(ep: metadata.EntryPoint) -> list[str]:
    """``NAME --help`` as the user runs it: the installed script, else ``python -c`` calling the entry point."""
    script = Path(sysconfig.get_path("scripts")) / ep.name
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script), "--help"]
    head = ep.attr.split(".")[0]
    code = f"import sys; from {ep.module} import {head}; sys.argv=[{ep.name!r},'--help']; sys.exit({ep.attr}())"
    return [sys.executable, "-c", code]


#: what upstream fair-esm's ``esm/scripts/extract.py`` imports before it parses ``--help``; the PyPI wheel
#: (fair-esm 2.0.0) ships the package but not that script, so its start-up is timed as these imports
ESM_EXTRACT_IMPORTS = ("import argparse, pathlib, torch; "
                       "from esm import Alphabet, FastaBatchedDataset, ProteinBertModel, pretrained, MSATransformer")


def anchor() -> Command | None:
    """fair-esm's ``esm-extract --help`` (or, without the script, its imports); None without fair-esm."""
    dist, name = ANCHOR
    try:
        ep = next((ep for ep in console_scripts(dist) if ep.name == name), None)
    except metadata.PackageNotFoundError:
        return None
    if ep is None:
        return Command(f"{name} ({dist}, its imports)", [sys.executable, "-c", ESM_EXTRACT_IMPORTS], kind="anchor")
    return Command(f"{name} ({dist})", help_argv(ep), kind="anchor")


def run_once(command: Command) -> None:
    """Run ``command`` once; append its CPU and wall seconds, or record why it failed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        done = subprocess.run(command.argv, env=ENV, capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        command.error = str(err)
        return
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        command.error = f"exit status {done.returncode}: " + " | ".join(tail)
        return
    command.cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    command.wall.append(wall)


def row(command: Command, floor: float, reference: float | None) -> dict:
    """Medians, CPU above the floor, ratio to esm-extract and the goal verdict of one command."""
    cpu, wall = statistics.median(command.cpu), statistics.median(command.wall)
    goal = ("OK" if cpu - floor <= GOAL_S else "SLOW") if command.kind == "tool" else command.kind
    return {"name": command.name, "kind": command.kind, "argv": command.argv, "cpu_s": cpu, "wall_s": wall,
            "cpu_over_floor_s": cpu - floor, "ratio_to_esm_extract": cpu / reference if reference else None,
            "goal": goal, "cpu_runs": command.cpu, "wall_runs": command.wall}


def print_row(r: dict) -> None:
    """One aligned line of the table."""
    ratio = f"{r['ratio_to_esm_extract']:.2f}x" if r["ratio_to_esm_extract"] is not None else "-"
    print(f"{r['name']:34s} {r['cpu_s']:7.3f} {r['wall_s']:7.3f} {r['cpu_over_floor_s']:+9.3f} {ratio:>12s}  "
          f"{r['goal']}")


def verdict(rows: dict[str, dict], reference: float | None) -> str:
    """Whether fairseq-esm-extract starts faster than esm-extract (CPU)."""
    if OURS_VS_ANCHOR not in rows:
        return f"{OURS_VS_ANCHOR} was not measured"
    if reference is None:
        return f"{ANCHOR[1]} not installed: no comparison"
    ratio = rows[OURS_VS_ANCHOR]["ratio_to_esm_extract"]
    return f"{OURS_VS_ANCHOR} {'faster' if ratio < 1 else 'NOT faster'} than {ANCHOR[1]} ({ratio:.2f}x its CPU)"


def main(argv: list[str] | None = None) -> int:
    """Time every command ``--repeats`` times, interleaved; print the table and the two goals."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs per command; the median is reported")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    floor_cmd = Command("python -c pass", [sys.executable, "-c", "pass"], kind="floor")
    esm_extract = anchor()
    tools = [Command(ep.name, help_argv(ep)) for ep in console_scripts(PROJECT)]
    commands = [floor_cmd, *([esm_extract] if esm_extract else []), *tools]
    print(f"machine: {machine()}")
    print(f"{len(tools)} {PROJECT} console scripts from {sysconfig.get_path('scripts')}, each `--help`; "
          f"OMP_NUM_THREADS=1; median of {args.repeats} interleaved runs; CPU = user + sys of the child")
    for _ in range(args.repeats):
        for command in commands:
            if not command.error:
                run_once(command)
    failed = [c for c in commands if c.error]
    for command in failed:
        print(f"FAILED {command.name}: {command.error}")
    if floor_cmd.error:
        return 1
    floor = statistics.median(floor_cmd.cpu)
    reference = statistics.median(esm_extract.cpu) if esm_extract and not esm_extract.error else None
    rows = {c.name: row(c, floor, reference) for c in commands if not c.error}
    print(f"{'command':34s} {'CPU s':>7s} {'wall s':>7s} {'CPU-floor':>9s} {'/esm-extract':>12s}  goal "
          f"(within {GOAL_S} s CPU of python -c pass)")
    for r in rows.values():
        print_row(r)
    if esm_extract is None:
        print(f"{ANCHOR[1]} ({ANCHOR[0]}): not installed")
    slow = [r["name"] for r in rows.values() if r["goal"] == "SLOW"]
    print(f"goal met by {sum(r['goal'] == 'OK' for r in rows.values())} of {len(tools)} tools"
          + (f"; SLOW: {', '.join(slow)}" if slow else ""))
    print(verdict(rows, reference))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "repeats": args.repeats, "goal_s": GOAL_S,
                                         "floor_cpu_s": floor, "esm_extract_cpu_s": reference,
                                         "results": list(rows.values()),
                                         "failed": {c.name: c.error for c in failed}}, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
