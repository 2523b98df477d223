"""Peak memory of contact prediction: all layers' attention maps stacked (fair-esm's design, and ours before
streaming) against the streamed head of ``EsmModel.predict_contacts``, one fresh process per case.

    python benchmarks/contact_memory.py [--lengths 500 1000 2000] [--layers 12] [--dim 480] [--heads 20]
                                        [--limit-gb 10] [--threads 1]

The model is a randomly initialised ESM-1b (default 12 layers x 480 dims x 20 heads, ``esm1b_t12_34M``) with
room for the longest protein; the proteins are the first of the shipped sample with at least that many
residues, cut to length (batch of one). ``stacked`` is ``model(tokens, return_contacts=True)["contacts"]``,
which also returns the (1, L, H, T, T) maps; ``streamed`` is ``model.predict_contacts(tokens)``. Each child
process reports peak RSS (``resource.getrusage``) before and after the call; the address space is capped at
``--limit-gb`` so a case that would exhaust a shared machine fails alone (shown as failed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "data" / "uniprot_sample.fasta.gz"
PATHS = ("stacked", "streamed")


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def protein(length: int) -> str:
    """The first sample protein with at least ``length`` residues, cut to ``length``."""
    from fairseq_esm.io.fasta import read_fasta

    return next(seq[:length] for _, seq in read_fasta(str(SAMPLE)) if len(seq) >= length)


def child(args: argparse.Namespace) -> None:
    """One case in this fresh process: build the model, run one path, print a JSON line, save the contacts."""
    import numpy as np
    import torch

    from fairseq_esm.models.esm import Esm1bConfig, Esm1bModel
    from fairseq_esm.modules.alphabet import esm1b_alphabet

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = Esm1bConfig(encoder_layers=args.layers, encoder_embed_dim=args.dim, encoder_ffn_embed_dim=4 * args.dim,
                         encoder_attention_heads=args.heads, max_positions=args.length + 2)
    alphabet = esm1b_alphabet()
    model = Esm1bModel(config, alphabet).eval()
    tokens = alphabet.tokenize(protein(args.length))[None]
    with torch.no_grad():
        model.predict_contacts(tokens[:, :32])  # warm up kernels and allocator on a short prefix
    before = peak_rss_mb()
    start = time.perf_counter()
    with torch.no_grad():
        contacts = (model(tokens, return_contacts=True)["contacts"] if args.child == "stacked"
                    else model.predict_contacts(tokens))
    seconds = time.perf_counter() - start
    np.save(args.save, contacts[0].numpy())
    print(json.dumps({"before_mb": before, "peak_mb": peak_rss_mb(), "seconds": seconds}))


def run_case(args: argparse.Namespace, path: str, length: int, save: Path) -> dict:
    """Run one case in a fresh interpreter with the address space capped; its JSON line, or the failure."""
    limit = int(args.limit_gb * 2**30)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    argv = [sys.executable, __file__, "--child", path, "--length", str(length), "--save", str(save),
            "--layers", str(args.layers), "--dim", str(args.dim), "--heads", str(args.heads),
            "--threads", str(args.threads)]
    done = subprocess.run(argv, capture_output=True, text=True, preexec_fn=cap, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return {"error": f"over the {args.limit_gb:g} GiB cap" if "allocate" in last else last[:100]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Every length x path in its own process; a table of peak RSS and the agreement of the two paths."""
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--dim", type=int, default=480)
    parser.add_argument("--heads", type=int, default=20)
    parser.add_argument("--limit-gb", type=float, default=10.0, help="address-space cap of each case (GiB)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    one_copy = args.layers * args.heads * 4 / 2**20  # MiB per (T + 2)^2 of one fp32 (1, L, H, T, T)
    print(f"ESM-1b {args.layers} layers x {args.dim} dims x {args.heads} heads, batch 1, {args.threads} thread(s), "
          f"cap {args.limit_gb:g} GiB; load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| residues | one (1,L,H,T,T) fp32 MiB | stacked peak RSS MiB (+call) | streamed peak RSS MiB (+call) "
          "| ratio of +call | max abs diff | stacked s | streamed s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for length in args.lengths:
            cases = {path: run_case(args, path, length, Path(tmp) / f"{path}{length}.npy") for path in PATHS}
            cells = []
            for path in PATHS:
                case = cases[path]
                cells.append(f"failed: {case['error']}" if "error" in case else
                             f"{case['peak_mb']:,.0f} (+{case['peak_mb'] - case['before_mb']:,.0f})")
            ok = all("error" not in c for c in cases.values())
            grow = [c["peak_mb"] - c["before_mb"] for c in cases.values()] if ok else []
            ratio = f"{grow[0] / max(grow[1], 1):.1f}x" if ok else "-"
            maps = [np.load(Path(tmp) / f"{path}{length}.npy") for path in PATHS] if ok else []
            diff = f"{np.abs(maps[0] - maps[1]).max():.1e}" if ok else "-"
            secs = [f"{c['seconds']:.1f}" if "error" not in c else "-" for c in cases.values()]
            print(f"| {length:,} | {one_copy * (length + 2) ** 2:,.0f} | {cells[0]} | {cells[1]} | {ratio} | {diff} "
                  f"| {secs[0]} | {secs[1]} |", flush=True)


if __name__ == "__main__":
    main()
