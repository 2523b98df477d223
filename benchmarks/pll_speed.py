"""Pseudo-log-likelihood speed: masked copies per second of three loops on the same proteins and weights.

    python benchmarks/pll_speed.py [--lengths 100,300] [--toks-per-batch 4096] [--threads 1]
                                   [--device cpu|cuda] [--repeats 1]

(a) our reference loop, one masked copy per forward (``pseudo_log_likelihoods(..., batch=False)``);
(b) our batched PLL, the copies in padded forward passes under ``--toks-per-batch`` tokens with only the masked
    rows projected (``pseudo_log_likelihoods``, what ``fairseq-esm-score --metrics pll`` runs);
(c) fair-esm's recipe, on fair-esm's own model loaded with ``esm.pretrained.load_model_and_alphabet_local`` from the
    same file: for each position clone the tokens, set ``<mask>``, forward, log-softmax, take the true residue, as
    ``compute_pppl`` in fair-esm's ``examples/variant-prediction/predict.py`` does. That function loops over
    ``range(1, len(sequence) - 1)`` and reads ``sequence[i]`` at token ``i``, so it leaves out the last two
    residues and scores each position against its neighbour's letter; here it runs over every residue with the
    residue at that token, so the three loops compute the same number.

The weights are a randomly initialised ESM-1b of 6 layers x 320 dims (``extract_speed.official_weights``) written
in fair-esm's release layout. Proteins: the first one of the shipped UniProt sample within 5 % of each length.
Every loop scores whole proteins (every residue), first after one warm-up forward per model; the three PLLs of
each protein are compared. A last line counts, without running them, the masked copies of the variant
pseudo-likelihood on the shipped TEM-1 slice with and without sharing (``variant_workload``).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_speed import SAMPLE, machine, official_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DMS = ROOT / "examples" / "data" / "dms"


def pick_proteins(lengths: list[int]) -> list[tuple[str, str]]:
    """The first protein of the sample within 5 % of each length."""
    from fairseq_esm.io.fasta import read_fasta

    records = list(read_fasta(str(SAMPLE)))
    picked = []
    for length in lengths:
        near = [r for r in records if abs(len(r[1]) - length) <= max(1, length // 20)]
        if not near:
            raise SystemExit(f"no protein of about {length} residues in {SAMPLE.name}")
        picked.append(near[0])
    return picked


def fair_esm_recipe(path: Path, device: torch.device) -> Callable[[str], float]:
    """fair-esm's pseudo-likelihood loop (predict.py's ``compute_pppl``, every residue) on fair-esm's model."""
    import argparse as _argparse

    import esm

    torch.serialization.add_safe_globals([_argparse.Namespace])  # fair-esm's bare torch.load needs it
    model, alphabet = esm.pretrained.load_model_and_alphabet_local(str(path))
    model = model.eval().to(device)
    batch_converter = alphabet.get_batch_converter()

    def pll(sequence: str) -> float:
        _, _, batch_tokens = batch_converter([("protein1", sequence)])
        log_probs = []
        for i in range(1, len(sequence) + 1):
            batch_tokens_masked = batch_tokens.clone()
            batch_tokens_masked[0, i] = alphabet.mask_idx
            with torch.no_grad():
                token_probs = torch.log_softmax(model(batch_tokens_masked.to(device))["logits"], dim=-1)
            log_probs.append(token_probs[0, i, alphabet.get_idx(sequence[i - 1])].item())
        return sum(log_probs)

    pll("MKTAYIAKQR")  # warm-up
    return pll


def our_loops(path: Path, device: torch.device, toks_per_batch: int) -> dict[str, Callable[[str], float]]:
    """(a) the one-copy-at-a-time reference and (b) the batched PLL, on our model from the same file."""
    from fairseq_esm.checkpoints import load_model
    from fairseq_esm.inference.scoring import pseudo_log_likelihoods

    model, alphabet = load_model(path, device)
    loops = {"(a) ours, one copy per forward": lambda s: pseudo_log_likelihoods(model, alphabet, [s], batch=False)[0],
             "(b) ours, batched": lambda s: pseudo_log_likelihoods(model, alphabet, [s], toks_per_batch)[0]}
    for run in loops.values():
        run("MKTAYIAKQR")  # warm-up
    return loops


def timed(run: Callable[[str], float], sequence: str, device: torch.device) -> tuple[float, float]:
    """Wall seconds of one PLL (device synchronised) and the PLL."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    pll = run(sequence)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, pll


def sharing_line(toks_per_batch: int) -> str:
    """Masked copies of the variant pseudo-likelihood on the shipped TEM-1 slice, with and without sharing, for
    ESM-1b's context and a 100-residue one (windows); only the context matters to the count."""
    from fairseq_esm.inference.variant_scoring import variant_workload
    from fairseq_esm.io.mutations import parse_variant
    from fairseq_esm.models.esm import Esm1bConfig, Esm1bModel
    from fairseq_esm.modules.alphabet import esm1b_alphabet

    wild_type = "".join((DMS / "BLAT_ECOLX.fasta").read_text().splitlines()[1:])
    with open(DMS / "BLAT_ECOLX_Stiffler_2015_slice.csv", newline="") as handle:
        variants = [parse_variant(row["mutant"]) for row in csv.DictReader(handle)]
    alphabet = esm1b_alphabet()
    parts = []
    for context in (1024, 102):
        model = Esm1bModel(Esm1bConfig(encoder_layers=1, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                                       encoder_attention_heads=4, max_positions=context), alphabet)
        work = variant_workload(model, alphabet, wild_type, variants, "pseudo-likelihood", toks_per_batch)
        parts.append(f"{work.unshared_copies:,} -> {work.copies:,} with a {context - 2}-residue context")
    return (f"variant pseudo-likelihood on the TEM-1 slice ({len(variants)} rows, {len(wild_type)} residues), masked "
            f"copies unshared -> shared (counted, not run): " + "; ".join(parts))


def main(argv: list[str] | None = None) -> int:
    """Per protein, time the three loops ``--repeats`` times (alternating); print copies/s, ratios, differences."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="100,300", help="protein lengths, comma-separated (default %(default)s)")
    parser.add_argument("--toks-per-batch", type=int, default=4096, help="token budget of (b) (default %(default)s)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on a shared machine a second OpenMP thread spins "
                        "against busy cores and one-copy forwards slow down tenfold; 0: torch's default)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs per loop; the median is shown")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    records = pick_proteins([int(n) for n in args.lengths.split(",")])
    print(f"machine: {machine(device)}", flush=True)
    print(f"ESM-1b 6 x 320 random weights; toks_per_batch {args.toks_per_batch} for (b); device {device}; "
          f"median of {args.repeats} alternating run(s); whole proteins, one masked copy per residue", flush=True)
    with tempfile.TemporaryDirectory(prefix="pll_speed_") as tmp:
        path = official_weights(Path(tmp) / "esm1b_t6_8M_random.pt", "esm1b")
        loops = our_loops(path, device, args.toks_per_batch)
        loops["(c) fair-esm predict.py recipe"] = fair_esm_recipe(path, device)
        for rid, sequence in records:
            times: dict[str, list[float]] = {name: [] for name in loops}
            plls: dict[str, float] = {}
            for _ in range(args.repeats):
                for name, run in loops.items():
                    seconds, plls[name] = timed(run, sequence, device)
                    times[name].append(seconds)
            rates = {name: len(sequence) / statistics.median(t) for name, t in times.items()}
            print(f"\n{rid}: {len(sequence)} residues = {len(sequence)} masked copies")
            for name, rate in rates.items():
                print(f"  {name:34s} {statistics.median(times[name]):8.2f} s {rate:9.1f} copies/s   "
                      f"pll {plls[name]:.6f}", flush=True)
            a, b, c = rates.values()
            values = list(plls.values())
            diff = max(abs(x - y) for x in values for y in values)
            print(f"  speed: batched / one-at-a-time {b / a:.2f}x, batched / fair-esm {b / c:.2f}x, "
                  f"one-at-a-time / fair-esm {a / c:.2f}x; max |PLL difference| between the three {diff:.2e}")
        print()
        print(sharing_line(args.toks_per_batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
