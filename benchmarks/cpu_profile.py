"""Where the CPU time goes: a torch.profiler breakdown of one extraction batch and one training step.

    python benchmarks/cpu_profile.py --width 1280 --layers 2 --dtypes fp32,bf16 [--tokens 4096] [--threads N]
                                     [--repeats 2] [--json FILE] [--quick]

The model is our ESM-1b (``fairseq_esm.models.esm.Esm1bModel``, random weights, seed 0) at ``--width`` dims
(20 heads, ffn 4 x width; 1280 is ESM-1b's width) with ``--layers`` layers: per-layer shares are what matter,
so a few layers stand for 33. The batch is real proteins of the shipped sample: a length-sorted run from the
median length up, as many as fit in ``--tokens`` padded token slots (as fairseq's length-sorted batches).

Workloads, each run once to warm up and then ``--repeats`` times under ``torch.profiler`` (CPU activity, no
shapes); the fastest run is shown (on a shared CPU the slow ones are the ones other processes disturbed):

* ``extract``: ``model(tokens, repr_layers=[last])`` under ``torch.inference_mode`` in eval mode, as
  ``fairseq-esm-extract`` runs it, through ``fairseq_esm.modules.precision.set_precision`` in every dtype (linear
  weights packed for oneDNN; bf16: forward under CPU autocast, LayerNorm and residual stream fp32).
* ``train``: zero_grad, masked-LM forward at the 15% masked positions, fp32 log_softmax + NLL (the
  ``esm_masked_lm`` criterion), backward, Adam step. ``bf16`` is what ``fairseq-train --bf16 --cpu`` does: the
  whole model ``.to(torch.bfloat16)``, grads copied into a flat fp32 master copy, ``torch.optim.Adam`` on the
  master, weights copied back (fairseq's FP16Optimizer with bf16, emulated). int8 is not trained.

Every profiled op's *self* CPU time (leaf time, so nothing counts twice) goes to one category: by the op's own
name first (``aten::copy_`` is a copy even inside ``aten::addmm``, a cast when under ``aten::to``), else by its
nearest categorised caller (``aten::index_select`` in ``aten::embedding``); ops under the ``optimizer``
record_function (zero_grad, grad copies, Adam, copy-back) all count as ``optimizer``. ``views/autograd`` is
views, allocations and autograd-engine nodes; ``python/untracked`` is the time of the step not inside any op
(interpreter, profiler overhead), so the shares sum to 100% of the profiled wall time. GFLOP/s figures divide
analytic FLOPs of the linear layers (+ LM head) / attention by those categories' time. ``cores busy`` is the
process's user + kernel CPU time over the wall time: below ``--threads`` means other processes had the CPU
(compare shares, not absolute ms, between runs then); minor page faults count first touches of fresh memory.
``--quick`` is a tiny model and batch for the smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch.autograd.profiler_util import FunctionEvent
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_speed import machine  # noqa: E402
from train_speed import Batch, masked, sample_proteins  # noqa: E402

HEADS = 20
MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul", "aten::baddbmm", "aten::addbmm",
          "aten::mv", "aten::_addmm_activation", "aten::mkldnn_linear", "aten::_mkldnn_matmul"}
MATMUL_PARTS = ("mkldnn_matmul", "_linear_pointwise", "onednn", "quantized::linear", "linear_dynamic", "fbgemm_linear",
                "_weight_int8")
ATTENTION_PARTS = ("scaled_dot_product", "flash_attention", "efficient_attention")
SOFTMAX_PARTS = ("softmax", "cross_entropy", "nll_loss")
CASTS = {"aten::to", "aten::_to_copy", "aten::type_as"}
COPIES = {"aten::copy_", "aten::clone", "aten::contiguous", "aten::_copy_from", "aten::_copy_from_and_resize"}
ELEMENTWISE = {"add", "add_", "mul", "mul_", "div", "div_", "sub", "sub_", "rsub", "neg", "sqrt", "rsqrt", "exp",
               "masked_fill", "masked_fill_", "where", "fill_", "zero_", "sum", "mean", "pow", "addcmul_",
               "addcdiv_", "lerp_", "eq", "ne", "lt", "gt", "bitwise_not", "logical_not", "any", "cat", "stack",
               "ones_like", "zeros_like", "scatter_add_", "index_add_", "sign", "abs", "maximum", "clamp"}
VIEWS = {"view", "_unsafe_view", "reshape", "as_strided", "transpose", "t", "permute", "unsqueeze", "squeeze",
         "expand", "slice", "select", "detach", "detach_", "alias", "empty", "empty_like", "empty_strided",
         "resize_", "numpy_T", "split", "chunk", "unbind", "narrow", "result_type", "lift_fresh", "_reshape_alias"}
CATEGORIES = ("matmul", "attention", "layernorm", "gelu", "softmax/CE", "casts", "copies", "elementwise",
              "embedding", "optimizer", "views/autograd", "other ops", "python/untracked")
ROOT_SPAN, OPTIMIZER_SPAN = "profiled step", "optimizer"


def ancestors(event: FunctionEvent) -> list[FunctionEvent]:
    """The event's enclosing events, innermost first."""
    chain, parent = [], event.cpu_parent
    while parent is not None:
        chain.append(parent)
        parent = parent.cpu_parent
    return chain


def own_category(name: str) -> Optional[str]:
    """The category an op's own name gives (None: decide from its parents or its kind)."""
    if name in MATMUL or any(part in name for part in MATMUL_PARTS):
        return "matmul"
    if any(part in name for part in ATTENTION_PARTS):
        return "attention"
    checks = (("layer_norm", "layernorm"), ("gelu", "gelu"), ("embedding", "embedding"))
    for part, category in checks:
        if part in name:
            return category
    if any(part in name for part in SOFTMAX_PARTS):
        return "softmax/CE"
    return None


def is_bookkeeping(name: str) -> bool:
    """Views, allocations and autograd-engine nodes (their self time is framework overhead, not arithmetic)."""
    return (name.startswith("autograd::") or "AccumulateGrad" in name or name == "detach"
            or (name.startswith("aten::") and name[6:] in VIEWS)
            or (not name.startswith("aten::") and name.rstrip("0123456789").endswith("Backward")))


def categorize(event: FunctionEvent) -> str:
    """One profiled event's category: optimizer span > own name > enclosing op > casts/copies/elementwise."""
    chain = ancestors(event)
    if event.name == OPTIMIZER_SPAN or any(parent.name == OPTIMIZER_SPAN for parent in chain):
        return "optimizer"
    if event.name == ROOT_SPAN:
        return "python/untracked"
    category = own_category(event.name)
    if category is not None:
        return category
    if event.name in CASTS or (event.name in COPIES and any(p.name in CASTS for p in chain)):
        return "casts"
    if event.name in COPIES:
        return "copies"
    for parent in chain:
        category = own_category(parent.name)
        if category is not None:
            return category
    if event.name.startswith("aten::") and event.name[6:] in ELEMENTWISE:
        return "elementwise"
    if is_bookkeeping(event.name):
        return "views/autograd"
    return "other ops"


def op_label(event: FunctionEvent) -> str:
    """The op's name, with its caller when that is another op (``aten::copy_ < aten::addmm``)."""
    parent = event.cpu_parent
    if parent is None or parent.name in (ROOT_SPAN, OPTIMIZER_SPAN) or parent.name.startswith("autograd::"):
        return event.name
    return f"{event.name} < {parent.name}"


def breakdown(events: list[FunctionEvent]) -> dict[str, Any]:
    """Self CPU ms per category and per op name (all profiled events), their total and the top ops."""
    per_category: dict[str, float] = dict.fromkeys(CATEGORIES, 0.0)
    per_op: dict[str, float] = defaultdict(float)
    for event in events:
        ms = event.self_cpu_time_total / 1000.0
        per_category[categorize(event)] += ms
        per_op[op_label(event)] += ms
    total = sum(per_category.values())
    top = sorted(per_op.items(), key=lambda item: -item[1])[:8]
    return {"total_ms": total, "categories": {k: {"ms": v, "share": 100.0 * v / total} for k, v in
                                               per_category.items()},
            "top_ops": [{"op": name, "ms": ms, "share": 100.0 * ms / total} for name, ms in top]}


def build_model(width: int, layers: int, heads: int) -> torch.nn.Module:
    """Our ESM-1b with ``width`` dims, ffn 4 x width, random weights (seed 0), max_positions 1024."""
    from fairseq_esm.models.esm import Esm1bConfig, Esm1bModel
    from fairseq_esm.modules.alphabet import esm1b_alphabet

    torch.manual_seed(0)
    config = Esm1bConfig(encoder_layers=layers, encoder_embed_dim=width, encoder_ffn_embed_dim=4 * width,
                         encoder_attention_heads=heads, max_positions=1024)
    return Esm1bModel(config, esm1b_alphabet())


def pick_batch(tokens: int) -> Batch:
    """Length-sorted sample proteins from the median length up, as many as fit ``tokens`` padded slots."""
    proteins = sorted(sample_proteins(), key=len)
    chosen = []
    for seq in proteins[len(proteins) // 2:]:
        if (len(chosen) + 1) * (len(seq) + 2) > tokens:
            break
        chosen.append(seq)
    if not chosen:
        chosen = [proteins[len(proteins) // 2][: max(1, tokens - 2)]]
    return masked(chosen)


class MasterAdam:
    """fairseq's FP16Optimizer for ``--bf16``, emulated: flat fp32 master weights, Adam on them, copy back."""

    def __init__(self, params: list[torch.nn.Parameter], lr: float) -> None:
        self.params = params
        self.master = torch.cat([p.detach().float().reshape(-1) for p in params]).requires_grad_()
        self.master.grad = torch.zeros_like(self.master)
        self.adam = torch.optim.Adam([self.master], lr=lr)

    def zero_grad(self) -> None:
        """Drop the bf16 model's grads."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """bf16 grads -> fp32 master grads, Adam on the master, master -> bf16 weights."""
        offset = 0
        for p in self.params:
            view = self.master.grad[offset: offset + p.numel()]
            if p.grad is None:
                view.zero_()  # a parameter the loss does not reach (the contact head)
            else:
                view.copy_(p.grad.reshape(-1))
            offset += p.numel()
        self.adam.step()
        offset = 0
        for p in self.params:
            p.copy_(self.master[offset: offset + p.numel()].view_as(p))
            offset += p.numel()


def extract_step(model: torch.nn.Module, batch: Batch) -> Callable[[], None]:
    """One extraction batch: last-layer representations under inference_mode, returned as fp32 on the CPU."""
    tokens = batch[0]
    last = model.num_layers

    def run() -> None:
        with torch.inference_mode():
            out = model(tokens, repr_layers=[last])
            out["representations"][last].to("cpu", torch.float32)

    return run


def train_step(model: torch.nn.Module, batch: Batch, bf16: bool) -> Callable[[], None]:
    """One masked-LM update: zero_grad, forward at the masked positions, fp32 log_softmax + NLL, backward, Adam."""
    targets, chosen = batch
    tokens = targets.masked_fill(chosen, model.mask_idx)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = MasterAdam(params, 1e-4) if bf16 else torch.optim.Adam(params, lr=1e-4)

    def run() -> None:
        with record_function(OPTIMIZER_SPAN):
            optimizer.zero_grad()
        logits = model(tokens, masked_tokens=chosen)["logits"]
        loss = F.nll_loss(F.log_softmax(logits, dim=-1, dtype=torch.float32), targets[chosen])
        loss.backward()
        with record_function(OPTIMIZER_SPAN):
            optimizer.step()

    return run


def prepare(workload: str, dtype: str, args: argparse.Namespace, batch: Batch) -> Callable[[], None]:
    """A fresh model in ``dtype`` and the step function of ``workload``."""
    from fairseq_esm.modules.precision import set_precision

    model = build_model(args.width, args.layers, args.heads)
    if workload == "extract":
        set_precision(model, dtype)  # what the tools do, float32 included (oneDNN-packed linears on CPUs)
        return extract_step(model, batch)
    model.train()
    if dtype == "bf16":
        model.to(torch.bfloat16)
    return train_step(model, batch, dtype == "bf16")


def analytic_flops(workload: str, width: int, layers: int, batch: Batch) -> dict[str, float]:
    """FLOPs of the Transformer's linear layers (+ LM head) and of attention (QK^T, AV) for one step."""
    tokens, chosen = batch
    slots, (size, length) = tokens.numel(), tokens.shape
    linear = 2 * slots * layers * (4 * width * width + 2 * width * 4 * width)
    attention = 4 * size * length * length * width * layers
    head_rows = slots if workload == "extract" else int(chosen.sum())
    linear += 2 * head_rows * (width * width + 33 * width)
    if workload == "train":
        linear, attention = 3 * linear, 3.5 * attention  # backward: two matmuls per linear; flash bwd recomputes
    return {"matmul": float(linear), "attention": float(attention)}


def profiled_run(step: Callable[[], None]) -> tuple[float, list[FunctionEvent], dict[str, float]]:
    """Wall ms, the profiled events and the process's kernel time / page faults of one step."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        with record_function(ROOT_SPAN):
            step()
        wall, after = 1000.0 * (time.perf_counter() - start), resource.getrusage(resource.RUSAGE_SELF)
    usage = {"user_ms": 1000.0 * (after.ru_utime - before.ru_utime),
             "sys_ms": 1000.0 * (after.ru_stime - before.ru_stime),
             "minor_faults": float(after.ru_minflt - before.ru_minflt)}
    return wall, list(prof.events()), usage


def measure(workload: str, dtype: str, args: argparse.Namespace, batch: Batch) -> dict[str, Any]:
    """One warm-up, ``--repeats`` profiled runs; the breakdown of the fastest (least disturbed) one."""
    step = prepare(workload, dtype, args, batch)
    step()
    runs = [profiled_run(step) for _ in range(max(1, args.repeats))]
    wall, events, usage = min(runs, key=lambda run: run[0])
    result = breakdown(events)
    result.update(workload=workload, dtype=dtype, wall_ms=wall, walls_ms=[run[0] for run in runs],
                  load_after=os.getloadavg()[0], usage=usage)
    flops = analytic_flops(workload, args.width, args.layers, batch)
    result["gflops"] = {k: flops[k] / 1e6 / max(result["categories"][k]["ms"], 1e-9) for k in flops}
    return result


def print_result(result: dict[str, Any]) -> None:
    """The category table and the top ops of one (workload, dtype)."""
    label = {"fp32": "fp32 (set_precision: oneDNN-packed linears)" if result["workload"] == "extract" else "fp32",
             "int8": "int8 (set_precision)",
             "bf16": "bf16 (set_precision: bf16 linears + autocast)" if result["workload"] == "extract"
             else "bf16 (model .to(bf16) + fp32 master Adam, as fairseq-train --bf16 --cpu)"}[result["dtype"]]
    walls = ", ".join(f"{wall:.0f}" for wall in result["walls_ms"])
    print(f"\n== {result['workload']} / {label}\n  wall {result['wall_ms']:.1f} ms (fastest of profiled runs: {walls}"
          f" ms), sum of self times {result['total_ms']:.1f} ms, load average after {result['load_after']:.2f}")
    usage = result["usage"]
    busy = (usage["user_ms"] + usage["sys_ms"]) / result["wall_ms"]
    note = " (< threads: other processes had the CPU)" if busy < 0.8 * torch.get_num_threads() else ""
    print(f"  process CPU time user {usage['user_ms']:.0f} ms + kernel {usage['sys_ms']:.0f} ms = {busy:.2f} cores busy"
          f"{note}, {usage['minor_faults']:.0f} minor page faults")
    print(f"  {'category':<18} {'ms':>10} {'share':>7}")
    for name, row in sorted(result["categories"].items(), key=lambda item: -item[1]["ms"]):
        print(f"  {name:<18} {row['ms']:>10.1f} {row['share']:>6.1f}%")
    gflops = result["gflops"]
    print(f"  throughput: linear layers {gflops['matmul']:.0f} GFLOP/s, attention {gflops['attention']:.0f} GFLOP/s"
          " (analytic FLOPs / category time)")
    print("  top ops (self CPU):")
    for row in result["top_ops"]:
        print(f"    {row['op'][:80]:<80} {row['ms']:>9.1f} ms {row['share']:>6.1f}%")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks model and batch."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=HEADS)
    parser.add_argument("--tokens", type=int, default=4096, help="padded token slots of the batch")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16, int8 (int8: extract only)")
    parser.add_argument("--workloads", default="extract,train")
    parser.add_argument("--repeats", type=int, default=2, help="profiled runs; the fastest is shown")
    parser.add_argument("--json", type=Path, help="write all results here")
    parser.add_argument("--quick", action="store_true", help="tiny model and batch (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.width, args.layers, args.heads, args.tokens, args.repeats = 64, 1, 4, 256, 1
    return args


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """Profile every (workload, dtype) asked for; print the tables, optionally write JSON."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(machine(torch.device("cpu")))
    batch = pick_batch(args.tokens)
    from fairseq_esm.modules.alphabet import load_alphabet

    real = int(batch[0].ne(load_alphabet("esm1b").padding_idx).sum())
    print(f"model: ESM-1b, {args.layers} layers x {args.width} dims, {args.heads} heads, ffn {4 * args.width}; "
          f"batch {tuple(batch[0].shape)} = {batch[0].numel()} slots, {real} real tokens, "
          f"{int(batch[1].sum())} masked")
    results = []
    for workload in args.workloads.split(","):
        for dtype in args.dtypes.split(","):
            if workload == "train" and dtype == "int8":
                continue
            results.append(measure(workload, dtype, args, batch))
            print_result(results[-1])
    if args.json:
        meta = {"machine": machine(torch.device("cpu")), "args": {k: str(v) for k, v in vars(args).items()}}
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
