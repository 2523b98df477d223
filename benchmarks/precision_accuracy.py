"""Accuracy of ``--bf16`` and ``--int8`` against float32, measured through the public console scripts.

    .venv/bin/python benchmarks/precision_accuracy.py [--checkpoint CKPT] [--data-bin DIR] [--heldout-fasta FA]
        [--proteins 200] [--max-variants 0] [--work DIR] [--threads N] [--json FILE]

One checkpoint (default: the small ESM-1b of ``make table1``), three precisions (fp32 the reference, bf16, int8),
four numbers, each with the bound the precision issue set:

1. per-residue cosine of the last layer's representations against float32, min and mean over every residue of
   the first ``--proteins`` held-out proteins (``fairseq-esm-extract --include per_tok --repr-layers -1``);
   bound: min >= 0.999.
2. held-out masked-LM ECE (``fairseq-esm-lm-table --subset heldout``, same masks in every run); bound: within 1%
   of float32's.
3. zero-shot Spearman rho of masked-marginal scores with the measured fitness of TEM-1 beta-lactamase's deep
   mutational scans (``fairseq-esm-variants``, ProteinGym's CSVs in ../shared/data/dms), BLOSUM62's rho beside
   it; bound: |delta rho| <= 0.01 on every scan.
4. mean contact precision P@L, P@L/2, P@L/5 at short, medium and long range (``fairseq-esm-contacts evaluate``)
   with a regression fitted once in float32 (``fairseq-esm-contacts fit``) on the shipped fitting set (1A7G,
   4CUP), tested on every other structure the tool reads (the shipped ones and ../shared/data/structures; files
   it refuses are dropped and listed, chains it skips are listed, duplicate chains counted once); the random
   baseline beside it; bound: every precision within 0.01 of float32's.

Prints markdown tables (numbers, delta against fp32, bound, met / NOT MET) and the exact commands run; ``--json``
writes all of it. A tool that fails under a precision is reported with its error text, not fatal.
"""

from __future__ import annotations

import argparse
import copy
import csv
import gzip
import itertools
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PRECISIONS = ("fp32", "bf16", "int8")
FLAGS = {"fp32": [], "bf16": ["--bf16"], "int8": ["--int8"]}
DMS_TABLES = ("BLAT_ECOLX_Stiffler_2015.csv", "BLAT_ECOLX_Deng_2012.csv", "BLAT_ECOLX_Firnberg_2014.csv",
              "BLAT_ECOLX_Jacquier_2013.csv")
FIT_SET = ("1A7G.cif.gz", "4CUP.cif.gz")
RANGES = ("short", "medium", "long")
TOPS = ("P@L", "P@L/2", "P@L/5")
STRUCTURE_GLOBS = ("theseus_examples/*.pdb.gz", "theseus_examples/*/*.pdb.gz", "tcoffee_examples/*.pdb.gz",
                   "mustang_testdata/*.pdb", "biopython_pdb/*.pdb", "biopython_pdb/*.pdb.gz", "biopython_pdb/*.cif",
                   "biopython_pdb/*.cif.gz", "esm_*.pdb", "esm_*.cif")
BOUNDS = {"cosine": "min ≥ 0.999", "ece": "within 1% of fp32", "spearman": "abs(Δρ) ≤ 0.01 on every scan",
          "contacts": "abs(ΔP) ≤ 0.01 at every range and cutoff"}


class ToolFailed(RuntimeError):
    """A console script exited non-zero; the message is its command and last stderr lines."""

    def __init__(self, message: str, stderr: str = "") -> None:
        """``message`` for the report, the whole ``stderr`` for whoever wants to read it."""
        super().__init__(message)
        self.stderr = stderr


def rel(path: Path | str) -> str:
    """``path`` relative to the working directory where it lies below it, else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=rel(ROOT / "runs/table1/checkpoints/esm_small_ur50s/checkpoint_best.pt"),
                   help="model to measure (default: make table1's small ESM-1b on UR50/S)")
    p.add_argument("--data-bin", default=rel(ROOT / "runs/table1/splits/ur50s/data-bin"),
                   help="data-bin with the heldout split, for the ECE")
    p.add_argument("--heldout-fasta", default=rel(ROOT / "runs/table1/splits/heldout.fasta"),
                   help="held-out proteins, for the representation cosine")
    p.add_argument("--proteins", type=int, default=200, help="first N held-out proteins extracted (default 200)")
    p.add_argument("--dms-table", action="append", default=None,
                   help="deep mutational scan (repeatable; default: the four ProteinGym BLAT_ECOLX CSVs in "
                   "../shared/data/dms)")
    p.add_argument("--dms-fasta", default=rel(ROOT / "examples/data/dms/BLAT_ECOLX.fasta"), help="their wild type")
    p.add_argument("--score-col", default="DMS_score", help="measured column of the scans (default DMS_score)")
    p.add_argument("--mutation-col", default="mutant", help="mutation column of the scans (default mutant)")
    p.add_argument("--max-variants", type=int, default=0,
                   help="seeded subsample of each scan (default 0: every row; the cost is one masked copy per "
                   "mutated position, at most 263 here, whatever the row count)")
    p.add_argument("--fit-structures", nargs="+", default=[rel(ROOT / "examples/data/structures" / f) for f in FIT_SET],
                   help="structures the float32 contact regression is fitted on (default: 1A7G, 4CUP)")
    p.add_argument("--structures", nargs="+", default=None,
                   help="test structures (default: every other shipped one and ../shared/data/structures)")
    p.add_argument("--device", default="cpu", help="torch device of every tool (default cpu: --int8 is CPU-only)")
    p.add_argument("--threads", type=int, default=None, help="--threads of every tool (default: theirs)")
    p.add_argument("--work", default=None, help="directory for the tools' outputs (default: a temporary one)")
    p.add_argument("--depth-check", metavar="ARCH",
                   help="only: cosine of bf16/int8 vs fp32 for a random model of this named arch (e.g. "
                   "esm1b_t33_650M_UR50S), on the first --depth-proteins proteins of the shipped UniProt sample")
    p.add_argument("--depth-proteins", type=int, default=8, help="proteins of --depth-check (default 8)")
    p.add_argument("--json", default=None, help="write settings, commands, results and verdicts here")
    return p.parse_args(argv)


class Runner:
    """Runs console scripts (the venv's bin first on PATH), keeping each command line and its run time."""

    def __init__(self, threads: Optional[int], device: str) -> None:
        """Every run gets ``--threads`` (when set) and ``--device``."""
        self.common = ["--device", device] + ([] if threads is None else ["--threads", str(threads)])
        self.env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        self.commands: list[dict[str, Any]] = []

    def __call__(self, argv: list[str], what: str, shown: Optional[list[str]] = None) -> subprocess.CompletedProcess:
        """Run ``argv`` plus the common flags (``shown``: how to print it, e.g. with a long file list named by a
        variable); raise :class:`ToolFailed` on a non-zero exit."""
        line = shlex.join((shown or argv) + self.common).replace("'\"${TEST[@]}\"'", '"${TEST[@]}"')
        argv = argv + self.common
        print(f"== {what}: {line}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True)
        self.commands.append({"what": what, "command": line, "rc": proc.returncode,
                              "seconds": round(time.perf_counter() - start, 1)})
        if proc.returncode != 0:
            tail = [ln for ln in proc.stderr.splitlines() if ln.strip()][-6:]
            raise ToolFailed(f"`{line}` exited {proc.returncode}: " + " | ".join(tail), proc.stderr)
        return proc


def read_fasta(path: Path) -> Iterator[tuple[str, str]]:
    """(header, sequence) records of a plain or gzipped FASTA."""
    opener = gzip.open if str(path).endswith(".gz") else open
    header, seq = None, []
    with opener(path, "rt") as handle:
        for line in handle:
            if line.startswith(">"):
                if header is not None:
                    yield header, "".join(seq)
                header, seq = line[1:].rstrip("\n"), []
            else:
                seq.append(line.strip())
    if header is not None:
        yield header, "".join(seq)


def first_proteins(fasta: Path, n: int, out: Path) -> int:
    """Write the first ``n`` records of ``fasta`` to ``out``; returns how many there were."""
    count = 0
    with open(out, "w") as handle:
        for header, seq in read_fasta(fasta):
            if count == n:
                break
            handle.write(f">{header}\n{seq}\n")
            count += 1
    return count


def load_reps(out_dir: Path) -> dict[str, Any]:
    """id -> (L, d) float64 last-layer representations of an extract --include per_tok output directory."""
    import torch

    reps = {}
    with open(out_dir / "index.tsv") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            data = torch.load(out_dir / row["file"], map_location="cpu", weights_only=True)
            (layer,) = data["representations"].values()
            reps[row["id"]] = layer.double()
    return reps


def cosine_stats(ref: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Per-residue cosine of ``other`` against ``ref``: min, mean, residues, proteins and the worst protein."""
    import torch

    if set(ref) != set(other):
        raise ToolFailed(f"different proteins: {len(set(ref) ^ set(other))} in one output only")
    cos = {pid: torch.nn.functional.cosine_similarity(ref[pid], other[pid], dim=-1) for pid in ref}
    everything = torch.cat(list(cos.values()))
    worst = min(cos, key=lambda pid: float(cos[pid].min()))
    max_abs = max(float((ref[pid] - other[pid]).abs().max()) for pid in ref)
    return {"min": float(everything.min()), "mean": float(everything.mean()), "residues": everything.numel(),
            "proteins": len(cos), "worst_protein": worst, "max_abs_diff": max_abs}


def measure_cosine(args: argparse.Namespace, run: Runner, work: Path) -> dict[str, Any]:
    """Section 1: extract the held-out proteins in each precision, cosine of bf16 / int8 against fp32."""
    fasta = work / "heldout_subset.fasta"
    n = first_proteins(Path(args.heldout_fasta), args.proteins, fasta)
    result: dict[str, Any] = {"proteins": n, "fasta": str(fasta), "by_precision": {}}
    reps = {}
    for precision in PRECISIONS:
        out = work / f"extract_{precision}"
        shutil.rmtree(out, ignore_errors=True)
        try:
            run(["fairseq-esm-extract", args.checkpoint, str(fasta), "--out", str(out), "--include", "per_tok",
                 "--repr-layers", "-1", "--no-progress", *FLAGS[precision]], f"representations {precision}")
            reps[precision] = load_reps(out)
            if precision != "fp32":
                result["by_precision"][precision] = cosine_stats(reps["fp32"], reps[precision])
        except (ToolFailed, KeyError) as err:
            result["by_precision"][precision] = {"error": str(err)}
    return result


def measure_ece(args: argparse.Namespace, run: Runner, work: Path) -> dict[str, Any]:
    """Section 2: held-out masked-LM ECE of the checkpoint in each precision (lm-table, same masks)."""
    result: dict[str, Any] = {}
    for precision in PRECISIONS:
        out = work / f"lm_table_{precision}.json"
        try:
            run(["fairseq-esm-lm-table", args.data_bin, "--subset", "heldout", "--model",
                 f"{precision}={args.checkpoint}", "--no-progress", "--json", str(out), *FLAGS[precision]],
                f"ECE {precision}")
            (row,) = json.loads(out.read_text())["rows"]
            result[precision] = {k: row[k] for k in ("ECE", "accuracy", "targets", "parameters") if k in row}
        except (ToolFailed, ValueError) as err:
            result[precision] = {"error": str(err)}
    return result


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def printed_rho(text: str, name: str) -> Optional[float]:
    """The ``Spearman rho NAME vs ...: R`` value the variants tool printed, if any."""
    for line in text.splitlines():
        if line.startswith(f"Spearman rho {name} vs"):
            return float(line.split(":", 1)[1].split()[0])
    return None


def score_scan(args: argparse.Namespace, run: Runner, table: str, precision: str, out: Path) -> dict[str, Any]:
    """One scan in one precision: Spearman of masked_marginal with the measured column over ok rows."""
    argv = ["fairseq-esm-variants", args.checkpoint, "--fasta", args.dms_fasta, "--table", table, "--out", str(out),
            "--mutation-col", args.mutation_col, "--score-col", args.score_col, "--no-progress", *FLAGS[precision]]
    if args.max_variants:
        argv += ["--max-variants", str(args.max_variants)]
    proc = run(argv, f"variants {Path(table).stem} {precision}")
    scores, measured = {}, {}
    with open(out, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["status"] == "ok" and row[args.score_col].strip():
                scores[row[args.mutation_col]] = float(row["masked_marginal"])
                measured[row[args.mutation_col]] = float(row[args.score_col])
    keys = sorted(scores)
    text = proc.stdout + proc.stderr
    return {"rho": spearman([scores[k] for k in keys], [measured[k] for k in keys]), "n": len(keys),
            "printed_rho": printed_rho(text, "masked-marginal"), "blosum62_rho": printed_rho(text, "BLOSUM62"),
            "scores": scores}


def measure_spearman(args: argparse.Namespace, run: Runner, work: Path) -> dict[str, Any]:
    """Section 3: zero-shot Spearman of every scan in each precision, with fp32 score agreement."""
    tables = args.dms_table or [rel(SHARED / "dms" / t) for t in DMS_TABLES if (SHARED / "dms" / t).exists()]
    result: dict[str, Any] = {}
    for table in tables:
        per: dict[str, Any] = {}
        for precision in PRECISIONS:
            try:
                per[precision] = score_scan(args, run, table, precision, work / f"{Path(table).stem}_{precision}.csv")
            except (ToolFailed, KeyError, ValueError) as err:
                per[precision] = {"error": str(err)}
        for precision in PRECISIONS[1:]:
            if "rho" in per[precision] and "rho" in per["fp32"]:
                ref, got = per["fp32"]["scores"], per[precision]["scores"]
                common = sorted(set(ref) & set(got))
                per[precision]["rho_vs_fp32_scores"] = spearman([ref[k] for k in common], [got[k] for k in common])
                per[precision]["max_abs_score_diff"] = max(abs(ref[k] - got[k]) for k in common)
        for value in per.values():
            value.pop("scores", None)
        result[Path(table).stem] = per
    return result


def entry_key(path: str) -> str:
    """A structure file's entry name: the base name upper-cased, less .gz and the format suffix."""
    name = Path(path).name.upper()
    for suffix in (".GZ", ".PDB", ".CIF", ".ENT"):
        name = name.removesuffix(suffix)
    return name


def candidate_structures(args: argparse.Namespace) -> list[str]:
    """The test structures: given, or shipped + shared, less the fitting set's entries, one file per entry."""
    if args.structures:
        return args.structures
    files = sorted(str(p) for p in (ROOT / "examples/data/structures").glob("*.gz"))
    for pattern in STRUCTURE_GLOBS:
        files += sorted(str(p) for p in SHARED.joinpath("structures").glob(pattern))
    fit = {entry_key(f) for f in args.fit_structures}
    seen, keep = set(fit), []
    for f in files:
        if entry_key(f) not in seen:
            seen.add(entry_key(f))
            keep.append(rel(f))
    return keep


def refused_file(stderr: str, files: list[str]) -> Optional[tuple[str, str]]:
    """(file, error line) of the structure the contacts tool refused, if its error names one of ``files``."""
    for line in stderr.splitlines():
        for f in files:
            if line.startswith(f"error: {f}:"):
                return f, line
    return None


def evaluate_contacts(args: argparse.Namespace, run: Runner, files: list[str], reg: Path, out: Path,
                      precision: str) -> subprocess.CompletedProcess:
    """One ``fairseq-esm-contacts evaluate`` run."""
    tail = ["--regression", str(reg), "--out", str(out), *FLAGS[precision]]
    return run(["fairseq-esm-contacts", "evaluate", args.checkpoint, *files, *tail],
               f"contacts evaluate {precision} ({len(files)} files)",
               ["fairseq-esm-contacts", "evaluate", args.checkpoint, '"${TEST[@]}"', *tail])


def screen_and_evaluate(args: argparse.Namespace, run: Runner, files: list[str], reg: Path,
                        out: Path) -> tuple[list[str], list[str], subprocess.CompletedProcess]:
    """The float32 evaluation, dropping each file the tool refuses and rerunning: (kept, refusals, process)."""
    refused = []
    while True:
        try:
            return files, refused, evaluate_contacts(args, run, files, reg, out, "fp32")
        except ToolFailed as err:
            hit = refused_file(err.stderr, files)
            if hit is None:
                raise
            refused.append(hit[1])
            files = [f for f in files if f != hit[0]]
            run.commands[-1]["refused"] = hit[0]


def contact_means(tsv: Path) -> dict[str, Any]:
    """Mean of every range's P@L, P@L/2, P@L/5 and random column over distinct structures (first of a label)."""
    rows: dict[str, dict[str, str]] = {}
    with open(tsv) as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if row["structure"] and not row["structure"].startswith("mean") and row["structure"] not in rows:
                rows[row["structure"]] = row
    means: dict[str, Any] = {"structures": len(rows)}
    for rng in RANGES:
        for col in (*TOPS, "random"):
            values = [float(r[f"{rng}_{col}"]) for r in rows.values() if r[f"{rng}_{col}"] not in ("", "nan")]
            means[f"{rng}_{col}"] = sum(values) / len(values) if values else math.nan
    return means


def measure_contacts(args: argparse.Namespace, run: Runner, work: Path) -> dict[str, Any]:
    """Section 4: fit the regression once in float32, then evaluate the test structures in each precision."""
    reg = work / "contact_regression.pt"
    run(["fairseq-esm-contacts", "fit", args.checkpoint, *args.fit_structures, "--out", str(reg)],
        "contacts fit fp32")
    files, refused, proc = screen_and_evaluate(args, run, candidate_structures(args), reg, work / "contacts_fp32.tsv")
    skipped = sorted({ln for ln in proc.stderr.splitlines() if ln.startswith("skipped ")})
    result: dict[str, Any] = {"fit": args.fit_structures, "files": len(files), "test_files": files,
                              "refused": refused, "skipped": skipped,
                              "by_precision": {"fp32": contact_means(work / "contacts_fp32.tsv")}}
    for precision in PRECISIONS[1:]:
        out = work / f"contacts_{precision}.tsv"
        try:
            evaluate_contacts(args, run, files, reg, out, precision)
            result["by_precision"][precision] = contact_means(out)
        except ToolFailed as err:
            result["by_precision"][precision] = {"error": str(err)}
    return result


def verdicts(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per precision (bf16, int8) and column: the delta against fp32 and whether the bound is met."""
    out: dict[str, dict[str, Any]] = {}
    for p in PRECISIONS[1:]:
        v: dict[str, Any] = {}
        cos = results["cosine"]["by_precision"].get(p, {})
        v["cosine"] = {"value": cos.get("min"), "met": cos["min"] >= 0.999 if "min" in cos else False}
        ece = results["ece"]
        if "ECE" in ece.get(p, {}) and "ECE" in ece.get("fp32", {}):
            delta = ece[p]["ECE"] / ece["fp32"]["ECE"] - 1
            v["ece"] = {"delta": delta, "met": abs(delta) <= 0.01}
        else:
            v["ece"] = {"delta": None, "met": False}
        deltas = [scan[p]["rho"] - scan["fp32"]["rho"] for scan in results["spearman"].values()
                  if "rho" in scan[p] and "rho" in scan["fp32"]]
        ok = deltas and len(deltas) == len(results["spearman"])
        v["spearman"] = {"max_abs_delta": max(map(abs, deltas)) if deltas else None,
                         "met": bool(ok) and max(map(abs, deltas)) <= 0.01}
        con, ref = results["contacts"]["by_precision"].get(p, {}), results["contacts"]["by_precision"]["fp32"]
        cols = [f"{r}_{t}" for r in RANGES for t in TOPS]
        cdeltas = [con[c] - ref[c] for c in cols if c in con and not math.isnan(ref[c])]
        v["contacts"] = {"max_abs_delta": max(map(abs, cdeltas)) if cdeltas else None,
                         "met": bool(cdeltas) and max(map(abs, cdeltas)) <= 0.01}
        out[p] = v
    return out


def fmt(x: Optional[float], digits: int = 4, sign: bool = False) -> str:
    """A number for a table cell (``failed`` for None)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "failed"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def met(flag: bool) -> str:
    """The verdict word."""
    return "met" if flag else "**NOT MET**"


def summary_table(results: dict[str, Any], v: dict[str, Any]) -> list[str]:
    """The main table: one row per precision, one column group per measure, the bounds as the last row."""
    lines = ["| precision | repr cos min | repr cos mean | ECE | ECE Δ (rel.) | mean ρ | max \\|Δρ\\| | "
             "long P@L | max \\|ΔP\\| (9 cols) | all met |", "|---|---|---|---|---|---|---|---|---|---|"]
    ece, cos, con = results["ece"], results["cosine"]["by_precision"], results["contacts"]["by_precision"]
    for p in PRECISIONS:
        rhos = [scan[p]["rho"] for scan in results["spearman"].values() if "rho" in scan[p]]
        mean_rho = sum(rhos) / len(rhos) if rhos and len(rhos) == len(results["spearman"]) else None
        if p == "fp32":
            cells = ["1 (ref.)", "1 (ref.)", fmt(ece[p].get("ECE"), 3), "ref.", fmt(mean_rho), "ref.",
                     fmt(con[p].get("long_P@L"), 3), "ref.", ""]
        else:
            w = v[p]
            cells = [f"{fmt(cos[p].get('min'), 5)} {met(w['cosine']['met'])}", fmt(cos[p].get("mean"), 6),
                     fmt(ece[p].get("ECE"), 3), f"{fmt(w['ece']['delta'] and 100 * w['ece']['delta'], 3, True)}% "
                     f"{met(w['ece']['met'])}", fmt(mean_rho), f"{fmt(w['spearman']['max_abs_delta'])} "
                     f"{met(w['spearman']['met'])}", fmt(con[p].get("long_P@L"), 3),
                     f"{fmt(w['contacts']['max_abs_delta'], 3)} {met(w['contacts']['met'])}",
                     "yes" if all(x["met"] for x in w.values()) else "**no**"]
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    lines.append(f"| bound | {BOUNDS['cosine']} | | | {BOUNDS['ece']} | | {BOUNDS['spearman']} | | "
                 f"{BOUNDS['contacts']} | |")
    return lines


def spearman_table(results: dict[str, Any]) -> list[str]:
    """Per scan: rows scored, BLOSUM62's rho, fp32's rho and each precision's rho with its delta."""
    lines = ["| scan | rows | BLOSUM62 ρ | fp32 ρ | bf16 ρ (Δ) | int8 ρ (Δ) | bf16 / int8 score ρ vs fp32 |",
             "|---|---|---|---|---|---|---|"]
    for name, scan in results["spearman"].items():
        ref = scan["fp32"]
        cells = [name, str(ref.get("n", "")), fmt(ref.get("blosum62_rho")), fmt(ref.get("rho"))]
        for p in PRECISIONS[1:]:
            d = scan[p]["rho"] - ref["rho"] if "rho" in scan[p] and "rho" in ref else None
            cells.append(f"{fmt(scan[p].get('rho'))} ({fmt(d, 4, True)})")
        cells.append(" / ".join(fmt(scan[p].get("rho_vs_fp32_scores"), 5) for p in PRECISIONS[1:]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def contacts_table(results: dict[str, Any]) -> list[str]:
    """Mean precisions per range and cutoff, random baseline beside each range; one row per precision."""
    cols = [f"{r}_{c}" for r in RANGES for c in (*TOPS, "random")]
    lines = ["| precision | " + " | ".join(c.replace("_", " ") for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    by = results["contacts"]["by_precision"]
    for p in PRECISIONS:
        lines.append(f"| {p} | " + " | ".join(fmt(by[p].get(c), 4) for c in cols) + " |")
    return lines


def report(args: argparse.Namespace, results: dict[str, Any], v: dict[str, Any], commands: list[dict]) -> str:
    """The whole markdown report."""
    cos, con = results["cosine"], results["contacts"]
    out = [f"## Precision accuracy: `{args.checkpoint}`", "",
           f"Representations: {cos['proteins']} held-out proteins (last layer, per residue); ECE: `{args.data_bin}` "
           f"heldout; variants: masked-marginal, rows with status ok; contacts: regression fitted in fp32 on "
           f"{', '.join(Path(f).name for f in con['fit'])}, tested on {con['by_precision']['fp32']['structures']} "
           f"distinct chains from {con['files']} files.", "", *summary_table(results, v), "",
           "### Zero-shot variant effects (Spearman ρ with the measured score)", "", *spearman_table(results), "",
           "### Contact precision (mean over test chains)", "", *contacts_table(results), ""]
    failures = [f"- {sec} {p}: {val['error']}" for sec in ("ece",) for p, val in results[sec].items() if "error" in val]
    failures += [f"- {sec} {p}: {val['error']}" for sec in ("cosine", "contacts")
                 for p, val in results[sec]["by_precision"].items() if "error" in val]
    failures += [f"- variants {name} {p}: {val['error']}" for name, scan in results["spearman"].items()
                 for p, val in scan.items() if "error" in val]
    if failures:
        out += ["### Failures", "", *failures, ""]
    if con["refused"] or con["skipped"]:
        out += ["### Structures left out", "", *(f"- refused: {ln}" for ln in con["refused"]),
                *(f"- {ln}" for ln in con["skipped"]), ""]
    screens = sum(1 for c in commands if c.get("refused"))
    out += ["### Commands", "", f"`TEST` = the {con['files']} test structure files (listed under contacts.test_files "
            f"in --json); {screens} earlier fp32 evaluate runs each stopped at one refused file, dropped and rerun.",
            "", "```", *(c["command"] for c in commands if c["rc"] == 0), "```"]
    return "\n".join(out)


def fail(message: str) -> None:
    """Print one ``error:`` line and exit with status 2 (the project's usage-error status)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def check_inputs(args: argparse.Namespace) -> None:
    """Exit with a one-line error when the checkpoint or data are missing."""
    default_ckpt = parse_args([]).checkpoint
    if not Path(args.checkpoint).exists():
        hint = "run make table1 first or pass --checkpoint" if args.checkpoint == default_ckpt else "check the path"
        fail(f"{args.checkpoint}: no such checkpoint — {hint}")
    for what, path in (("--data-bin", args.data_bin), ("--heldout-fasta", args.heldout_fasta)):
        if not Path(path).exists():
            fail(f"{path} ({what}) not found — run make table1 first or pass {what}")


def depth_check(arch: str, fasta: Path, count: int) -> int:
    """Representation cosine of bf16 / int8 against fp32 for a randomly initialised model of a named arch (seed
    0): how the error grows over a released model's depth, which the small trained model cannot show."""
    import torch

    from fairseq_esm.modules.alphabet import Alphabet
    from fairseq_esm.modules.esm1 import ESM1, EsmConfig
    from fairseq_esm.modules.generations import NAMED_SIZES, generation_of_arch
    from fairseq_esm.modules.precision import set_precision

    generation = generation_of_arch(arch)
    if generation is None or arch not in NAMED_SIZES[generation.name]:
        fail(f"--depth-check {arch}: not a named arch")
    layers, dim, ffn, heads = NAMED_SIZES[generation.name][arch]
    torch.manual_seed(0)
    alphabet = Alphabet.from_architecture(generation.alphabet)
    config = EsmConfig(layers, dim, ffn, heads, emb_layer_norm_before=generation.name != "esm2")
    records = [(rid, seq[:1022]) for rid, seq in itertools.islice(read_fasta(fasta), count)]
    _, _, tokens = alphabet.get_batch_converter()(records)
    residues = tokens.ne(alphabet.padding_idx)
    reference = None
    print(f"{arch} (random, seed 0), {len(records)} proteins, {int(residues.sum()):,} tokens; last layer vs fp32:")
    base = ESM1(config, alphabet, generation)
    for precision in ("fp32", "bf16", "int8"):
        model = set_precision(copy.deepcopy(base), precision)
        with torch.inference_mode():
            rep = model(tokens, repr_layers=[layers])["representations"][layers][residues]
        del model
        if reference is None:
            reference = rep
            continue
        cosine = torch.cosine_similarity(rep, reference, dim=-1)
        print(f"  {precision}: cosine min {cosine.min().item():.6f}, mean {cosine.mean().item():.6f}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """Measure, print the tables, write the JSON."""
    args = parse_args(argv)
    if args.depth_check:
        return depth_check(args.depth_check, ROOT / "examples/data/uniprot_sample.fasta.gz", args.depth_proteins)
    check_inputs(args)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="precision_accuracy_"))
    work.mkdir(parents=True, exist_ok=True)
    run = Runner(args.threads, args.device)
    start = time.perf_counter()
    try:
        results = {"cosine": measure_cosine(args, run, work), "ece": measure_ece(args, run, work),
                   "spearman": measure_spearman(args, run, work), "contacts": measure_contacts(args, run, work)}
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    v = verdicts(results)
    print(report(args, results, v, run.commands))
    if args.json:
        payload = {"settings": vars(args), "bounds": BOUNDS, "results": results, "verdicts": v,
                   "commands": run.commands, "seconds": round(time.perf_counter() - start, 1)}
        Path(args.json).write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return 0 if all(x["met"] for w in v.values() for x in w.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
