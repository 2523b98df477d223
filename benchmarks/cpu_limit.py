"""CPU limit: how close a CPU extraction batch and a CPU training step come to this machine's own matrix-multiply
peak, and how we compare with HuggingFace ESM and fair-esm on identical batches.

    python benchmarks/cpu_limit.py [--widths 1280,320] [--layers 2,6] [--tokens 2048,4096] [--seq-len 512]
                                   [--repeats 3] [--peak-repeats 10] [--threads N]
                                   [--skip hf,fair-esm,extract,train]
                                   [--json FILE] [--quick]

Everything runs in one process with one torch thread count (``--threads``, default all cores), and the output
starts with the hardware (CPU model, speed-relevant CPU flags, bfloat16 hardware or not, torch, threads, load).

1. Peak, at the model's own shapes: per width d, a linear layer of a (tokens x d) input with a bias and the
   weights of q/k/v/out (d -> d), fc1 (d -> 4d) and fc2 (4d -> d), in float32 and bfloat16 through two kernels,
   torch's ``F.linear`` (MKL for float32 on x86) and oneDNN with the weight packed once (``PackedLinear``, what
   ``set_precision`` uses on CPUs), and the int8 reference (``quantize_dynamic`` nn.Linear: int8 weights,
   activations quantised per call). GFLOP/s per shape (best of ``--peak-repeats`` calls); the peak of a width
   and dtype is its best shape and kernel, so a library that leaves the hardware idle does not lower the bar.
2. Extraction: one forward pass of a batch under ``torch.inference_mode`` with the last layer's representations
   requested (the LM head runs over every token in all three implementations).
3. Training step: masked-LM forward (15% of residues replaced by <mask>) + backward + Adam step.

Rows: ours (``Esm1bModel``) in fp32, bf16 and int8 (extraction; ``set_precision``), and for training fp32,
``fairseq-train --bf16 --cpu``'s path (whole model in bfloat16, fairseq's FP16Optimizer: float32 master copies,
Adam on them, copied back) and plain autocast over fp32 weights; HuggingFace ``EsmForMaskedLM`` (sdpa) in fp32,
with bf16 weights and under autocast, "HF best" being its fastest row; fair-esm in fp32 and with bf16 weights.
All start from the same random weights (ours exported) and run the same batch: B real proteins of the shipped
sample cropped to ``--seq-len`` tokens (no padding), B = tokens / seq-len.

FLOPs are counted analytically and identically for every implementation, so the ratios are time ratios: per
sequence of T tokens, L layers, width d, ffn 4d: L x [2T(4d^2 + 2 d ffn) + 4T^2 d], plus the LM head
2N(d^2 + d V) over N tokens (extraction: every token; training: the masked tokens, the useful work, although
HF and fair-esm compute it everywhere); a training step counts 3 x forward. Embeddings, LayerNorms, softmax and
the optimizer are not counted. Times are the best of ``--repeats`` calls after one warm-up (medians in the JSON).
ESM-1b's 33 layers at width 1280 are too slow on a few cores, so a few layers run (default 2 at 1280, 6 at
smaller widths): the per-layer work is identical, so the fractions of peak hold. Goals are printed with met /
not met; nothing asserts on speed.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_speed import machine  # noqa: E402
from train_speed import (  # noqa: E402
    Batch,
    Trainer,
    build_fair_esm,
    build_hf,
    loss_functions,
    sample_proteins,
    shape_batch,
)

ESM1B_WIDTH, HEADS, CPU = 1280, 20, torch.device("cpu")
DTYPES = ("fp32", "bf16", "int8")
SKIPPABLE = ("hf", "fair-esm", "extract", "train")
ANCHORS = ("ours fp32", "HF fp32", "HF best", "fair-esm fp32")
GOALS = {"extract": 0.80, "train": 0.60}
BF16_SPEEDUP_GOAL = 1.5
QUICK = ["--widths", "80", "--layers", "1", "--tokens", "128", "--seq-len", "32", "--repeats", "1",
         "--peak-repeats", "2", "--threads", "1"]


# ---------------------------------------------------------------- timing and FLOPs


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def forward_flops(batch: int, length: int, width: int, layers: int, vocab: int, head_tokens: int) -> float:
    """Analytic FLOPs of one forward pass: Transformer layers over B x T tokens, LM head over ``head_tokens``."""
    ffn = 4 * width
    per_sequence = layers * (2 * length * (4 * width**2 + 2 * width * ffn) + 4 * length**2 * width)
    return batch * per_sequence + 2 * head_tokens * (width**2 + width * vocab)


# ---------------------------------------------------------------- 1. matrix-multiply peak


def linear_shapes(width: int) -> dict[str, tuple[int, int]]:
    """The model's linear layers at ``width``: name -> (in, out)."""
    return {"q/k/v/out": (width, width), "fc1": (width, 4 * width), "fc2": (4 * width, width)}


def int8_linear(layer: nn.Linear) -> nn.Module:
    """``layer`` dynamically quantised to int8 (the kernel ``set_precision(model, "int8")`` uses)."""
    with warnings.catch_warnings():  # torch.ao's deprecation note
        warnings.simplefilter("ignore")
        qconfig = {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}
        return torch.ao.quantization.quantize_dynamic(nn.Sequential(layer), qconfig, dtype=torch.qint8)[0]


#: peak kernels: (dtype, kernel); aten = torch's ``F.linear`` (MKL for float32 on x86), onednn = the packed
#: oneDNN linear ``set_precision`` uses on CPUs, int8 = the dynamically quantised linear
KERNELS = (("fp32", "aten"), ("fp32", "onednn"), ("bf16", "aten"), ("bf16", "onednn"), ("int8", "fbgemm"))


def linear_call(dtype: str, kernel: str, tokens: int, fan_in: int, fan_out: int) -> Callable[[], torch.Tensor]:
    """One (tokens x fan_in) @ (fan_in x fan_out) + bias in ``dtype`` through ``kernel``, ready to time."""
    from fairseq_esm.modules.precision import PackedLinear

    torch.manual_seed(0)
    layer, x = nn.Linear(fan_in, fan_out).requires_grad_(False), torch.randn(tokens, fan_in)
    if dtype == "int8":
        quantised = int8_linear(layer)
        return lambda: quantised(x)
    if kernel == "onednn":
        packed = PackedLinear(layer, torch.bfloat16 if dtype == "bf16" else torch.float32, tokens)
        x = x.to(packed.dtype)
        return lambda: packed(x)
    if dtype == "bf16":
        layer, x = layer.to(torch.bfloat16), x.to(torch.bfloat16)
    return lambda: F.linear(x, layer.weight, layer.bias)


def measure_peak(width: int, tokens: int, repeats: int) -> list[dict[str, Any]]:
    """GFLOP/s (int8: GOP/s) of every linear shape of ``width`` in every dtype and kernel."""
    rows = []
    for shape, (fan_in, fan_out) in linear_shapes(width).items():
        for dtype, kernel in KERNELS:
            seconds = timed(linear_call(dtype, kernel, tokens, fan_in, fan_out), repeats)
            flops = 2.0 * tokens * fan_in * fan_out
            rows.append({"width": width, "shape": shape, "in": fan_in, "out": fan_out, "tokens": tokens,
                         "dtype": dtype, "kernel": kernel, "seconds": min(seconds),
                         "gflops": flops / min(seconds) / 1e9})
    return rows


def peaks_of(rows: list[dict[str, Any]]) -> dict[str, float]:
    """dtype -> best GFLOP/s over the shapes and kernels (the machine's peak is its best kernel's)."""
    return {dtype: max(r["gflops"] for r in rows if r["dtype"] == dtype) for dtype in DTYPES}


def print_peak(width: int, tokens: int, rows: list[dict[str, Any]], peaks: dict[str, float]) -> None:
    """One line per shape and kernel, then the peak per dtype (the best kernel)."""
    print(f"\n== matmul peak, width {width}: linear of {tokens} tokens, bias; GFLOP/s (int8: GOP/s) ==")
    names = [f"{d} {k}" for d, k in KERNELS]
    print(f"{'shape':12s} {'in -> out':>12s} " + " ".join(f"{n:>12s}" for n in names))
    for shape, (fan_in, fan_out) in linear_shapes(width).items():
        values = {(r["dtype"], r["kernel"]): r["gflops"] for r in rows if r["shape"] == shape}
        print(f"{shape:12s} {f'{fan_in} -> {fan_out}':>12s} " + " ".join(f"{values[k]:12.1f}" for k in KERNELS))
    print("peak (best kernel): " + ", ".join(f"{d} {peaks[d]:.1f}" for d in DTYPES))


# ---------------------------------------------------------------- models


def build_ours(width: int, layers: int) -> nn.Module:
    """A randomly initialised ESM-1b (seed 0) of ``layers`` x ``width``, ffn 4 x width, 20 heads."""
    from fairseq_esm.models.esm import Esm1bConfig, Esm1bModel
    from fairseq_esm.modules.alphabet import esm1b_alphabet

    torch.manual_seed(0)
    config = Esm1bConfig(encoder_layers=layers, encoder_embed_dim=width, encoder_ffn_embed_dim=4 * width,
                         encoder_attention_heads=HEADS, max_positions=1024)
    return Esm1bModel(config, esm1b_alphabet())


def ours_extract(ours: nn.Module, precision: str) -> Callable[[torch.Tensor], Any]:
    """Our forward with the last layer's representations, after ``set_precision(precision)`` (``aten``: without
    it, torch's own ``F.linear`` in float32, as before the packed layers)."""
    from fairseq_esm.modules.precision import set_precision

    model = copy.deepcopy(ours).eval()
    model = model if precision == "aten" else set_precision(model, precision)
    return lambda tokens: model(tokens, repr_layers=[model.num_layers])


def hf_extract(ours: nn.Module, mode: str) -> Callable[[torch.Tensor], Any]:
    """EsmForMaskedLM (sdpa) in ``mode`` fp32 / bf16-weights / autocast, all hidden states returned."""
    model = build_hf(ours).eval()
    if mode == "bf16-weights":
        model = model.to(torch.bfloat16)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast")
    pad = ours.padding_idx

    def run(tokens: torch.Tensor) -> Any:
        """One forward pass of ``tokens`` (no padding mask needed, but passed as HF users do)."""
        with autocast:
            return model(input_ids=tokens, attention_mask=tokens.ne(pad).long(), output_hidden_states=True)

    return run


def fair_extract(ours: nn.Module, tmp: Path, bf16: bool) -> Callable[[torch.Tensor], Any]:
    """fair-esm's model, optionally cast to bfloat16, with the last layer's representations."""
    model = build_fair_esm(ours, tmp).eval()
    if bf16:
        model = model.to(torch.bfloat16)
    return lambda tokens: model(tokens, repr_layers=[model.num_layers])


def loss_of(implementation: str, model: nn.Module, pad: int) -> Callable:
    """The MLM loss of ``benchmarks/train_speed.py`` for one implementation."""
    key = {"ours": "fairseq-esm (ours)", "hf": "HF EsmForMaskedLM sdpa", "fair-esm": "fair-esm"}[implementation]
    ours, hf, fair = (model if implementation == name else None for name in ("ours", "hf", "fair-esm"))
    return loss_functions(ours, fair, hf, pad)[key]


def fairseq_bf16_optimizer(params: list[nn.Parameter]) -> Any:
    """fairseq's FP16Optimizer as ``--bf16 --optimizer adam`` builds it: fp32 master copies, no loss scaling."""
    from fairseq.optim.adam import FairseqAdamConfig
    from fairseq.optim.fp16_optimizer import FP16Optimizer
    from omegaconf import OmegaConf

    optimizer = OmegaConf.structured(FairseqAdamConfig(_name="adam", lr=[1e-4], tpu=False))
    cfg = OmegaConf.create({"common": {"bf16": True, "fp16_scale_window": 128}, "optimizer": optimizer})
    return FP16Optimizer.build_optimizer(cfg, params)


class FairseqBf16Trainer(Trainer):
    """``fairseq-train --bf16 --cpu``'s step: bfloat16 model, backward, FP16Optimizer (Adam on fp32 masters)."""

    def __init__(self, model: nn.Module, loss: Callable, mask_idx: int) -> None:
        super().__init__(model.to(torch.bfloat16), loss, CPU, "fp32", mask_idx)
        self.optimizer = fairseq_bf16_optimizer([p for p in self.model.parameters() if p.requires_grad])

    def step(self, batch: Batch) -> float:
        """One update on ``batch``; returns the loss."""
        targets, chosen = batch
        self.optimizer.zero_grad()
        loss = self.loss(targets.masked_fill(chosen, self.mask_idx), chosen, targets)
        self.optimizer.backward(loss)
        self.optimizer.step()
        return loss.item()


def trainer_of(implementation: str, model: nn.Module, mode: str, ours: nn.Module) -> Trainer:
    """A training step of ``model`` in ``mode``: fp32, autocast (fp32 weights), bf16-weights, fairseq-bf16."""
    loss = loss_of(implementation, model, ours.padding_idx)
    if mode == "fairseq-bf16":
        return FairseqBf16Trainer(model, loss, ours.mask_idx)
    if mode == "bf16-weights":
        model = model.to(torch.bfloat16)
    return Trainer(model, loss, CPU, "bf16" if mode == "autocast" else "fp32", ours.mask_idx)


#: name -> (implementation, dtype of the matching peak, how it runs, factory(ours, tmp) -> callable(batch))
Factory = Callable[[nn.Module, Path], Callable[[Batch], Any]]
EXTRACTION: dict[str, tuple[str, str, str, Factory]] = {
    "ours fp32": ("ours", "fp32", "set_precision fp32: oneDNN-packed linears on CPUs",
                  lambda o, t: ours_extract(o, "fp32")),
    "ours fp32 aten": ("ours", "fp32", "float32 through torch's F.linear (MKL on x86), no set_precision",
                       lambda o, t: ours_extract(o, "aten")),
    "ours bf16": ("ours", "bf16", "set_precision bf16: oneDNN-packed bf16 linears + autocast",
                  lambda o, t: ours_extract(o, "bf16")),
    "ours int8": ("ours", "int8", "set_precision int8: dynamic int8 linear layers",
                  lambda o, t: ours_extract(o, "int8")),
    "HF fp32": ("hf", "fp32", "EsmForMaskedLM sdpa, float32", lambda o, t: hf_extract(o, "fp32")),
    "HF bf16-weights": ("hf", "bf16", ".to(bfloat16) (= torch_dtype=bfloat16), sdpa",
                        lambda o, t: hf_extract(o, "bf16-weights")),
    "HF autocast": ("hf", "bf16", "fp32 weights under torch.autocast(cpu, bfloat16), sdpa",
                    lambda o, t: hf_extract(o, "autocast")),
    "fair-esm fp32": ("fair-esm", "fp32", "float32", lambda o, t: fair_extract(o, t, False)),
    "fair-esm bf16-weights": ("fair-esm", "bf16", ".to(bfloat16)", lambda o, t: fair_extract(o, t, True)),
}
TRAINING: dict[str, tuple[str, str, str, Factory]] = {
    "ours fp32": ("ours", "fp32", "float32, torch Adam",
                  lambda o, t: trainer_of("ours", copy.deepcopy(o), "fp32", o).step),
    "ours bf16 fairseq": ("ours", "bf16", "fairseq-train --bf16 --cpu: bf16 model, FP16Optimizer (Adam on fp32 "
                          "master copies)", lambda o, t: trainer_of("ours", copy.deepcopy(o), "fairseq-bf16", o).step),
    "ours autocast": ("ours", "bf16", "fp32 weights under torch.autocast(cpu, bfloat16), torch Adam",
                      lambda o, t: trainer_of("ours", copy.deepcopy(o), "autocast", o).step),
    "HF fp32": ("hf", "fp32", "EsmForMaskedLM sdpa, float32, torch Adam",
                lambda o, t: trainer_of("hf", build_hf(o), "fp32", o).step),
    "HF bf16-weights": ("hf", "bf16", ".to(bfloat16), torch Adam on the bf16 weights (pure bf16)",
                        lambda o, t: trainer_of("hf", build_hf(o), "bf16-weights", o).step),
    "HF autocast": ("hf", "bf16", "fp32 weights under torch.autocast(cpu, bfloat16), torch Adam (HF Trainer bf16)",
                    lambda o, t: trainer_of("hf", build_hf(o), "autocast", o).step),
    "fair-esm fp32": ("fair-esm", "fp32", "float32, torch Adam",
                      lambda o, t: trainer_of("fair-esm", build_fair_esm(o, t), "fp32", o).step),
    "fair-esm bf16-weights": ("fair-esm", "bf16", ".to(bfloat16), torch Adam on the bf16 weights (pure bf16)",
                              lambda o, t: trainer_of("fair-esm", build_fair_esm(o, t), "bf16-weights", o).step),
}
SECTIONS = {"extract": EXTRACTION, "train": TRAINING}


# ---------------------------------------------------------------- 2./3. extraction and training


def work_of(section: str, call: Callable[[Any], Any], batch: Batch) -> Callable[[], Any]:
    """What one timed call does: extraction under inference_mode on the tokens, or one training step."""
    if section == "train":
        return lambda: call(batch)

    def extract() -> Any:
        """One forward pass without autograd."""
        with torch.inference_mode():
            return call(batch[0])

    return extract


def run_row(section: str, factory: Factory, ours: nn.Module, tmp: Path, batch: Batch, repeats: int
            ) -> dict[str, Any]:
    """Build one row's model, time it on ``batch``; the error instead where it fails."""
    try:
        seconds = timed(work_of(section, factory(ours, tmp), batch), repeats)
    except Exception as error:  # a foreign implementation that cannot run this setting is a result, not a crash
        return {"error": f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:160]}"}
    return {"seconds": min(seconds), "seconds_median": statistics.median(seconds), "error": None}


def run_rows(section: str, table: dict, skip: set[str], ours: nn.Module, tmp: Path, batch: Batch, repeats: int
             ) -> dict[str, dict[str, Any]]:
    """Every row of one section not skipped, one model alive at a time."""
    rows = {}
    for name, (implementation, _, _, factory) in table.items():
        if implementation not in skip:
            rows[name] = run_row(section, factory, ours, tmp, batch, repeats)
            gc.collect()
    return rows


def section_flops(section: str, batch: Batch, width: int, layers: int, vocab: int) -> float:
    """The analytic FLOPs of one extraction batch or training step on ``batch``."""
    tokens, chosen = batch
    count, length = tokens.shape
    if section == "extract":
        return forward_flops(count, length, width, layers, vocab, tokens.numel())
    return 3 * forward_flops(count, length, width, layers, vocab, int(chosen.sum()))


def with_rates(rows: dict[str, dict[str, Any]], table: dict, flops: float, peaks: dict[str, float]) -> None:
    """Add GFLOP/s, fractions of peak and the ratios against the anchors to every timed row."""
    for name, row in rows.items():
        implementation, dtype, how, _ = table[name]
        row.update(implementation=implementation, dtype=dtype, how=how, gflop=flops / 1e9)
        if row["error"] is None:
            row["gflops"] = flops / row["seconds"] / 1e9
            row["frac_peak"] = row["gflops"] / peaks[dtype]
            row["frac_fp32_peak"] = row["gflops"] / peaks["fp32"]
    anchors = anchor_rates(rows)
    for row in rows.values():
        if row["error"] is None:
            row["ratios"] = {a: row["gflops"] / v if v else None for a, v in anchors.items()}


def fastest(rows: dict[str, dict[str, Any]], implementation: str, exclude: tuple[str, ...] = ()) -> str | None:
    """Name of the fastest timed row of ``implementation`` (None if none ran)."""
    timed_rows = [n for n, r in rows.items() if r["implementation"] == implementation and r["error"] is None
                  and r["dtype"] not in exclude]
    return max(timed_rows, key=lambda n: rows[n]["gflops"], default=None)


def anchor_rates(rows: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """GFLOP/s of the anchors: ours fp32, HF fp32, HF best (its fastest row), fair-esm fp32."""
    def rate(name: str | None) -> float | None:
        """GFLOP/s of row ``name`` (None if absent or failed)."""
        return rows[name].get("gflops") if name in rows else None

    return {"ours fp32": rate("ours fp32"), "HF fp32": rate("HF fp32"), "HF best": rate(fastest(rows, "hf")),
            "fair-esm fp32": rate("fair-esm fp32")}


def fmt(value: float | None, spec: str, suffix: str = "", width: int = 0) -> str:
    """``value`` formatted, or ``-`` where there is none; right-aligned in ``width``."""
    text = "-" if value is None or not math.isfinite(value) else f"{value:{spec}}{suffix}"
    return text.rjust(width)


def print_section(title: str, rows: dict[str, dict[str, Any]]) -> None:
    """The table of one section: time, GFLOP/s, fractions of peak, ratios against the anchors."""
    print(f"\n== {title} ==")
    print(f"{'row':22s} {'s/batch':>8s} {'GFLOP/s':>8s} {'%peak':>6s} {'%fp32pk':>7s} "
          + " ".join(f"{'x ' + a:>15s}" for a in ANCHORS))
    for name, row in rows.items():
        if row["error"] is not None:
            print(f"{name:22s} failed: {row['error']}")
            continue
        ratios = row["ratios"]
        print(f"{name:22s} {row['seconds']:8.3f} {row['gflops']:8.1f} {100 * row['frac_peak']:6.1f} "
              f"{100 * row['frac_fp32_peak']:7.1f} " + " ".join(fmt(ratios[a], '.2f', 'x', 15) for a in ANCHORS))
    best = fastest(rows, "hf")
    if best:
        print(f"HF best = {best} (the fastest HF row, any precision)")
    over = [name for name, row in rows.items() if row.get("frac_peak", 0) > 1]
    if over:
        print(f"note: {', '.join(over)} above 100% of the peak: the machine was busier while the peak was measured "
              "(see the load average); rerun on a quiet machine")


def print_legend(skip: set[str]) -> None:
    """What every row name means and which peak its %peak is of."""
    print("\nrows (%peak: of the measured peak of the row's dtype; int8 also shown against the fp32 peak):")
    for section, table in SECTIONS.items():
        if section in skip:
            continue
        for name, (implementation, dtype, how, _) in table.items():
            if implementation not in skip:
                print(f"  {section:7s} {name:22s} [{dtype} peak] {how}")


def measure_width(args: argparse.Namespace, width: int, layers: int, tokens: int, proteins: list[str],
                  skip: set[str]) -> dict[str, Any]:
    """Peak, extraction and training of one width; prints as it goes and returns every number."""
    length = min(args.seq_len, tokens)
    batch = shape_batch(proteins, f"{max(1, tokens // length)}x{length}")[0]
    count = batch[0].shape[0]
    peak_rows = measure_peak(width, count * length, args.peak_repeats)
    peaks = peaks_of(peak_rows)
    print_peak(width, count * length, peak_rows, peaks)
    result = {"width": width, "layers": layers, "batch": [count, length], "tokens": count * length,
              "masked_tokens": int(batch[1].sum()), "peak_shapes": peak_rows, "peaks": peaks, "sections": {}}
    ours = build_ours(width, layers)
    vocab = ours.embed_tokens.num_embeddings
    note = (f"width {width}, {layers} layer(s) (ESM-1b has 33: per-layer work is identical, so fractions of peak "
            f"hold), ffn {4 * width}, {HEADS} heads, batch {count} x {length} = {count * length} tokens")
    with tempfile.TemporaryDirectory(prefix="cpu_limit_") as tmp:
        for section, table in SECTIONS.items():
            if section in skip:
                continue
            flops = section_flops(section, batch, width, layers, vocab)
            rows = run_rows(section, table, skip, ours, Path(tmp), batch, args.repeats)
            with_rates(rows, table, flops, peaks)
            result["sections"][section] = {"gflop": flops / 1e9, "rows": rows}
            title = "extraction (forward, inference_mode, last-layer representations)" if section == "extract" \
                else "training step (masked-LM forward + backward + Adam)"
            print_section(f"{title}; {note}; {flops / 1e9:.1f} GFLOP per batch", rows)
    return result


# ---------------------------------------------------------------- 4. goals


def goal(text: str, value: float | None, target: float, unit: str) -> dict[str, Any]:
    """One goal: its value and whether it is met (None: could not be measured)."""
    met = None if value is None else value >= target
    shown = fmt(100 * value if unit == "%" and value is not None else value, ".1f" if unit == "%" else ".2f", unit)
    verdict = "n/a" if met is None else "met" if met else "NOT met"
    print(f"  {text}: {shown} (goal >= {100 * target if unit == '%' else target:g}{unit}) -> {verdict}")
    return {"goal": text, "value": value, "target": target, "met": met}


def section_rows(result: dict[str, Any], section: str) -> dict[str, dict[str, Any]]:
    """The rows of one section of one width (empty if skipped)."""
    return result["sections"].get(section, {}).get("rows", {})


def peak_goals(section: str, rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each of our rows of ``section`` against the peak of its dtype."""
    label = "extraction" if section == "extract" else "training step"
    return [goal(f"{label} {name} / {row['dtype']} peak", row.get("frac_peak"), GOALS[section], "%")
            for name, row in rows.items() if row["implementation"] == "ours"]


def hf_goal(section: str, rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Our fastest float row (fp32 / bf16) against HF's fastest row, where HF ran."""
    ours, hf = fastest(rows, "ours", exclude=("int8",)), fastest(rows, "hf")
    if ours is None or hf is None:
        return []
    label = "extraction" if section == "extract" else "training step"
    return [goal(f"{label}: ours best ({ours}) / HF best ({hf})", rows[ours]["ratios"]["HF best"], 1.0, "x")]


def bf16_goal(rows: dict[str, dict[str, Any]], bf16_hardware: bool) -> list[dict[str, Any]]:
    """Our bf16 extraction against our fp32 one, where the CPU has bfloat16 hardware."""
    if not bf16_hardware:
        print(f"  bf16 extraction >= {BF16_SPEEDUP_GOAL}x our fp32: n/a, this CPU has no bfloat16 hardware")
        return []
    ratios = rows.get("ours bf16", {}).get("ratios") or {}
    return [goal("bf16 extraction / our fp32 extraction", ratios.get("ours fp32"), BF16_SPEEDUP_GOAL, "x")]


def goals_of(result: dict[str, Any], bf16_hardware: bool) -> list[dict[str, Any]]:
    """Print and return the goals of one width (the sections that ran)."""
    print(f"width {result['width']}:")
    found = []
    for section in SECTIONS:
        rows = section_rows(result, section)
        if rows:
            found += peak_goals(section, rows) + (bf16_goal(rows, bf16_hardware) if section == "extract" else [])
            found += hf_goal(section, rows)
    return found


# ---------------------------------------------------------------- main


def per_width(value: str | None, widths: list[int], default: Callable[[int], int]) -> list[int]:
    """A comma-separated option with one value per width (or one for all); ``default(width)`` where absent."""
    if value is None:
        return [default(w) for w in widths]
    values = [int(v) for v in value.split(",")]
    if len(values) not in (1, len(widths)):
        raise SystemExit(f"error: {value!r} needs one value or one per width ({len(widths)})")
    return values * len(widths) if len(values) == 1 else values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options in the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="1280,320", help="model widths (1280 = ESM-1b)")
    parser.add_argument("--layers", help="layers per width (default 2 at >= 1024, else 6)")
    parser.add_argument("--tokens", help="tokens per batch, per width (default 2048 at >= 1024, else 4096)")
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per protein (<cls> + residues + <eos>)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after one warm-up; the best is reported")
    parser.add_argument("--peak-repeats", type=int, default=10, help="timed calls per matmul shape; the best counts")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--skip", default="", help=f"comma-separated: {', '.join(SKIPPABLE)}")
    parser.add_argument("--json", type=Path, help="write every number to this file")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke test " + " ".join(QUICK))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(QUICK + argv if "--quick" in argv else argv)
    unknown = set(filter(None, args.skip.split(","))) - set(SKIPPABLE)
    if unknown:
        parser.error(f"unknown --skip {', '.join(sorted(unknown))}; choose from {', '.join(SKIPPABLE)}")
    if not 3 <= args.seq_len <= 1024:
        parser.error("--seq-len must be within 3..1024")
    return args


def hardware() -> dict[str, Any]:
    """The machine a figure must be read with; printed first."""
    from fairseq_esm.modules.precision import SPEED_FLAGS, cpu_flags, cpu_has_bf16

    info = {"machine": machine(CPU), "flags": sorted(cpu_flags() & set(SPEED_FLAGS)), "bf16_hardware": cpu_has_bf16(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "load_average": list(os.getloadavg())}
    print("== hardware ==")
    print(f"cpu: {info['machine']}")
    print(f"speed-relevant CPU flags: {' '.join(info['flags']) or 'none found'}")
    print(f"bfloat16 hardware: {'yes' if info['bf16_hardware'] else 'no (bf16 matmuls are emulated)'}")
    return info


def import_all(skip: set[str]) -> None:
    """Import every implementation now, then exempt the imported objects from garbage collection (``gc.freeze``),
    so the collection after every row, which frees the last row's model, stays fast."""
    import fairseq.optim.fp16_optimizer  # noqa: F401

    import fairseq_esm.models.esm  # noqa: F401

    if "hf" not in skip:
        from fairseq_esm.checkpoints.huggingface import import_transformers

        import_transformers().EsmForMaskedLM  # noqa: B018  (transformers imports its models lazily)
    if "fair-esm" not in skip:
        import esm  # noqa: F401
    gc.collect()
    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    """Peak, extraction and training per width, then the goals; optional JSON of every number."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    widths = [int(w) for w in args.widths.split(",")]
    layers = per_width(args.layers, widths, lambda w: 2 if w >= 1024 else 6)
    tokens = per_width(args.tokens, widths, lambda w: 2048 if w >= 1024 else 4096)
    skip = set(filter(None, args.skip.split(",")))
    report: dict[str, Any] = {"hardware": hardware(), "options": {k: str(v) for k, v in vars(args).items()}}
    print_legend(skip)
    import_all(skip)
    proteins = sample_proteins()
    report["widths"] = [measure_width(args, w, n, t, proteins, skip) for w, n, t in zip(widths, layers, tokens)]
    print(f"\n== goals (set at the ESM-1b width {ESM1B_WIDTH}; other widths for reference) ==")
    report["goals"] = {r["width"]: goals_of(r, report["hardware"]["bf16_hardware"]) for r in report["widths"]}
    report["load_average_end"] = list(os.getloadavg())
    print(f"\nload average at the end: {' / '.join(f'{x:.2f}' for x in report['load_average_end'])} "
          f"({os.cpu_count()} cores; this run's {args.threads} threads count towards it)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
