"""Memory of a 4,000-residue protein through the 33-layer, 1280-dim shape on CPU, embeddings only.

    python benchmarks/memory_long_protein.py [--residues 4000] [--threads N] [--generation esm1b|esm2]

The protein is real sequence: sample proteins (examples/data/uniprot_sample.fasta.gz) concatenated in
file order and cut to ``--residues``. The model is a randomly initialised ESM-1b (or ESM-2, rotary positions)
of the 650M shape (33 layers, d=1280, ffn 5120, 20 heads) with ``max_positions = residues + 2``, so the whole
protein is one window (no cropping or windowing). One forward in inference mode asks for the last layer's
representation and no attention maps. Reported: wall time, resident memory (``resource.getrusage``
peak, ``/proc/self/statm`` current) before and after, the SDPA kernels the profiler saw in that
forward, and what materialised attention would need. A second check runs one layer on a padded
two-protein batch with our key-padding mask and reports its kernel too. Installs nothing.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_speed import SAMPLE, machine  # noqa: E402

SHAPE = (33, 1280, 5120, 20)
GIB = 1 << 30
SDPA_OPS = ("scaled_dot_product", "_flash_attention", "_efficient_attention", "attention_math")


def long_protein(residues: int) -> str:
    """Sample proteins joined in file order, cut to ``residues``."""
    from fairseq_esm.io.fasta import read_fasta

    parts, total = [], 0
    for _, seq in read_fasta(str(SAMPLE)):
        parts.append(seq)
        total += len(seq)
        if total >= residues:
            return "".join(parts)[:residues]
    raise SystemExit(f"error: the sample has only {total} residues")


def peak_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def current_gib() -> float:
    """Resident memory now."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / GIB


def build(max_positions: int, generation: str = "esm1b"):
    """Random ESM-1b or ESM-2 of the 33-layer 1280-dim shape, eval mode."""
    from fairseq_esm.models.esm import Esm1bConfig, Esm1bModel, Esm2Config, Esm2Model
    from fairseq_esm.modules.alphabet import esm1b_alphabet

    kind, make_config = {"esm1b": (Esm1bModel, Esm1bConfig), "esm2": (Esm2Model, Esm2Config)}[generation]
    layers, dim, ffn, heads = SHAPE
    torch.manual_seed(0)
    config = make_config(encoder_layers=layers, encoder_embed_dim=dim, encoder_ffn_embed_dim=ffn,
                         encoder_attention_heads=heads, max_positions=max_positions)
    return kind(config, esm1b_alphabet()).eval()


def sdpa_kernels(profiler) -> dict[str, int]:
    """Attention kernels the profiler recorded, with call counts."""
    counts = Counter(event.name for event in profiler.events() if any(op in event.name for op in SDPA_OPS))
    return dict(counts)


def forward(model, tokens: torch.Tensor) -> tuple[float, dict[str, int], torch.Tensor]:
    """Seconds, SDPA kernels seen, and the last layer's representation of one inference-mode forward."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as profiler:
        start = time.perf_counter()
        out = model(tokens, repr_layers=[model.num_layers])
        seconds = time.perf_counter() - start
    return seconds, sdpa_kernels(profiler), out["representations"][model.num_layers]


def padded_layer_kernels(model, length: int) -> dict[str, int]:
    """Kernels of layer 1 on two proteins, the second half padding, with our key-padding mask."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(2, length, SHAPE[1])
    padding = torch.zeros(2, length, dtype=torch.bool)
    padding[1, length // 2 :] = True
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as profiler:
        model.layers[0](x, padding)
    return sdpa_kernels(profiler)


def report_materialised(length: int) -> None:
    """What fair-esm-style explicit attention (a (H, L, L) fp32 matrix per layer) would hold."""
    layers, _, _, heads = SHAPE
    per_layer = heads * length * length * 4 / GIB
    print(f"materialised attention at L={length}: {per_layer:.2f} GiB per layer for the scores "
          f"(x2 with the softmax output: {2 * per_layer:.2f} GiB transient per layer); "
          f"all {layers} layers' maps kept (need_head_weights / contacts): {layers * per_layer:.1f} GiB")


def main(argv: list[str] | None = None) -> int:
    """Build once, run one forward, print memory, time and kernels."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--residues", type=int, default=4000)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--generation", choices=("esm1b", "esm2"), default="esm1b")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from fairseq_esm.modules.alphabet import load_alphabet

    protein = long_protein(args.residues)
    tokens = load_alphabet("esm1b").tokenize(protein)[None]  # (1, L + 2)
    length = tokens.size(1)
    print(f"machine: {machine(torch.device('cpu'))}")
    start, base = time.perf_counter(), current_gib()
    model = build(length, args.generation)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.generation} {SHAPE} random weights, {params / 1e6:.0f}M parameters ({params * 4 / GIB:.2f} GiB "
          f"fp32), "
          f"max_positions {length}: the {args.residues}-residue protein ({length} tokens) is one window, "
          f"no windowing; built in {time.perf_counter() - start:.0f} s")
    before_peak, before_now = peak_gib(), current_gib()
    print(f"RSS before the forward: {before_now:.2f} GiB now, {before_peak:.2f} GiB peak (interpreter + data "
          f"{base:.2f} GiB)")
    seconds, kernels, rep = forward(model, tokens)
    after_peak = peak_gib()
    extra = max(0.0, after_peak - before_now)
    print(f"forward (inference mode, last-layer embeddings, no attention maps): {seconds:.1f} s, "
          f"{length / seconds:,.0f} tokens/s; embeddings {tuple(rep.shape)}, finite {bool(rep.isfinite().all())}")
    print(f"RSS peak after the forward: {after_peak:.2f} GiB; the forward's working memory <= {extra:.2f} GiB "
          f"above the weights-loaded RSS")
    print(f"SDPA kernels in that forward: {kernels}")
    padded = padded_layer_kernels(model, length)
    print(f"SDPA kernels, one layer, 2 x {length} tokens with a key-padding mask: {padded}")
    report_materialised(length)
    return 0


if __name__ == "__main__":
    sys.exit(main())
