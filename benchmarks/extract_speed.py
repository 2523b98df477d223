"""Extraction speed: fair-esm's own ``esm-extract`` loop against ours, same proteins, weights, device, budget.

    python benchmarks/extract_speed.py [--count 300] [--max-length 1022] [--toks-per-batch 4096]
                                       [--device cpu|cuda] [--threads N] [--repeats 3]
                                       [--generations esm1b,esm2]

The weights are a randomly initialised model of 6 layers x 320 dims, per generation: ESM-1b (arch
``esm1b_t6_8M``, 7.8M parameters) and ESM-2 (``esm2_t6_8M_UR50D``, 7.5M; rotary positions), each written
in fair-esm's release layout, so both sides load the same file (fair-esm runs its ``ESM2`` class for ESM-2).
Both loops keep the results in memory and write nothing: fair-esm's is its ``esm/scripts/extract.py``
(FastaBatchedDataset, get_batch_indices, its batch converter, forward with repr_layers, per-protein ``per_tok``
and ``mean`` clones); ours is :func:`fairseq_esm.inference.extract.extract_representations` with the same layers and
``include``. The two alternate ``--repeats`` times in this one run (no separate warm-up: the median
absorbs a slow first run); the mean representations of the two are compared.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "data" / "uniprot_sample.fasta.gz"
LAYERS = (-1,)


def machine(device: torch.device) -> str:
    """CPU or GPU model, threads, load, and the versions that matter here."""
    cpuinfo = Path("/proc/cpuinfo")
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")), "") if cpuinfo.exists() else platform.processor()
    gpu = f"; GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}, load average {load}"
            f"{gpu}; torch {torch.__version__}, Python {platform.python_version()}")


def proteins(count: int, max_length: int) -> list[tuple[str, str]]:
    """The first ``count`` proteins of the shipped sample with at most ``max_length`` residues."""
    from fairseq_esm.io.fasta import read_fasta

    return [r for r in read_fasta(str(SAMPLE)) if len(r[1]) <= max_length][:count]


#: the randomly initialised model of each generation, and the file name fair-esm reads as that generation
WEIGHTS = {"esm1b": "esm1b_t6_8M_random.pt", "esm2": "esm2_t6_8M_random.pt"}


def official_weights(path: Path, generation: str = "esm1b") -> Path:
    """A randomly initialised 6-layer, 320-dim model of ``generation``, exported in fair-esm's release layout
    (+ contact regression)."""
    from fairseq_esm.checkpoints.pt_files import export_official
    from fairseq_esm.models.esm import Esm1bConfig, Esm1bModel, Esm2Config, Esm2Model
    from fairseq_esm.modules.alphabet import esm1b_alphabet

    kind, make_config = {"esm1b": (Esm1bModel, Esm1bConfig), "esm2": (Esm2Model, Esm2Config)}[generation]
    torch.manual_seed(0)
    config = make_config(encoder_layers=6, encoder_embed_dim=320, encoder_ffn_embed_dim=1280,
                         encoder_attention_heads=20, max_positions=1024)
    export_official(kind(config, esm1b_alphabet()), path)
    return path


def fair_esm_loop(path: Path, records: list[tuple[str, str]], toks_per_batch: int, device: torch.device
                  ) -> Callable[[], dict[str, torch.Tensor]]:
    """fair-esm's esm/scripts/extract.py body for ``--include mean per_tok`` (no files written)."""
    import argparse as _argparse

    import esm

    torch.serialization.add_safe_globals([_argparse.Namespace])  # fair-esm's bare torch.load needs it
    model, alphabet = esm.pretrained.load_model_and_alphabet_local(str(path))
    model = model.eval().to(device)
    dataset = esm.FastaBatchedDataset([label for label, _ in records], [seq for _, seq in records])
    batches = dataset.get_batch_indices(toks_per_batch, extra_toks_per_seq=1)
    loader = torch.utils.data.DataLoader(dataset, collate_fn=alphabet.get_batch_converter(1022), batch_sampler=batches)
    repr_layers = [(i + model.num_layers + 1) % (model.num_layers + 1) for i in LAYERS]

    def run() -> dict[str, torch.Tensor]:
        means = {}
        with torch.no_grad():
            for labels, strs, toks in loader:
                out = model(toks.to(device, non_blocking=True), repr_layers=repr_layers, return_contacts=False)
                out["logits"].to(device="cpu")
                representations = {layer: t.to(device="cpu") for layer, t in out["representations"].items()}
                for i, label in enumerate(labels):
                    n = min(1022, len(strs[i]))
                    result = {"representations": {k: t[i, 1 : n + 1].clone() for k, t in representations.items()},
                              "mean_representations": {k: t[i, 1 : n + 1].mean(0).clone()
                                                       for k, t in representations.items()}}
                    means[label] = result["mean_representations"][repr_layers[0]]
        return means

    return run


def our_loop(path: Path, records: list[tuple[str, str]], toks_per_batch: int, device: torch.device
             ) -> Callable[[], dict[str, torch.Tensor]]:
    """Our generator with the same layers and ``include`` (no files written)."""
    from fairseq_esm.checkpoints import load_model
    from fairseq_esm.inference.extract import ExtractSpec, extract_representations, resolve_layers

    model, alphabet = load_model(path, device)
    spec = ExtractSpec(layers=resolve_layers(LAYERS, model.num_layers), include=frozenset({"mean", "per_tok"}),
                       toks_per_batch=toks_per_batch)

    def run() -> dict[str, torch.Tensor]:
        return {result["label"]: result["mean_representations"][spec.layers[0]]
                for _, result in extract_representations(model, alphabet, records, spec)}

    return run


def timed(run: Callable[[], dict], device: torch.device) -> tuple[float, dict]:
    """Wall seconds of one run (device synchronised) and its output."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    """Per generation, alternate the two loops ``--repeats`` times; print residues/s of each and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300, help="proteins (default %(default)s)")
    parser.add_argument("--max-length", type=int, default=1022, help="longest protein taken, in residues")
    parser.add_argument("--toks-per-batch", type=int, default=4096)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--generations", default="esm1b,esm2", help="comma-separated: esm1b, esm2")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    records = proteins(args.count, args.max_length)
    residues = sum(len(seq) for _, seq in records)
    print(f"machine: {machine(device)}")
    longest = max(len(seq) for _, seq in records)
    print(f"{len(records)} proteins ({residues:,} residues, longest {longest}) from {SAMPLE.name}; "
          f"6 x 320 random weights; layer {LAYERS[0]}, per_tok + mean, toks_per_batch {args.toks_per_batch}, "
          f"device {device}, nothing written; median of {args.repeats} alternating runs")
    for generation in args.generations.split(","):
        with tempfile.TemporaryDirectory(prefix="extract_speed_") as tmp:
            path = official_weights(Path(tmp) / WEIGHTS[generation], generation)
            loops = {f"fair-esm esm-extract loop ({generation})": fair_esm_loop(path, records, args.toks_per_batch,
                                                                                device),
                     f"fairseq-esm extract_representations ({generation})": our_loop(path, records,
                                                                                      args.toks_per_batch, device)}
            times: dict[str, list[float]] = {name: [] for name in loops}
            outputs: dict[str, dict] = {}
            for _ in range(args.repeats):
                for name, run in loops.items():
                    seconds, outputs[name] = timed(run, device)
                    times[name].append(seconds)
        theirs, ours = outputs.values()
        diff = max((theirs[k].float() - ours[k].float()).abs().max().item() for k in theirs)
        medians = {name: statistics.median(t) for name, t in times.items()}
        for name, seconds in medians.items():
            print(f"{name:46s} {seconds:8.3f} s  {residues / seconds:10,.0f} residues/s   (runs: "
                  f"{', '.join(f'{t:.3f}' for t in times[name])})")
        base, mine = medians.values()
        print(f"{generation}: ours / fair-esm speed: {base / mine:.2f}x; max |mean representation difference| "
              f"{diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
