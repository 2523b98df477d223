"""Training-step speed: our ESM-1b / ESM-2 against HuggingFace ``EsmForMaskedLM`` (sdpa) and fair-esm, same weights.

    python benchmarks/train_speed.py [--sizes small,medium] [--shapes 8x256,1x1000] [--threads N]
                                     [--repeats 5] [--device cpu|cuda] [--dtype fp32|bf16]
                                     [--realistic-count 48] [--max-tokens 4096] [--fairseq-train]
                                     [--generations esm1b,esm2]

``--generations`` (default ``esm1b``): ESM-1b rows compare with HF's absolute-position ESM and fair-esm's
``ProteinBertModel``; ESM-2 rows (rotary positions, ffn 4 x dim as the released ESM-2) with HF's rotary
``EsmForMaskedLM`` and fair-esm's ``ESM2``, on the same batches.

One step = forward + backward + Adam step, mean cross-entropy at 15% masked residue positions
(replaced by ``<mask>``; the same positions for all three). The three models start from the same
random weights (ours, exported to fair-esm's release layout and to EsmForMaskedLM with
``fairseq_esm.checkpoints.huggingface``; their initial losses are printed to show it), each with its own Adam,
in one loop:
ours computes the LM head at the masked positions only (``masked_tokens``, as the ``esm_masked_lm``
criterion does), fair-esm and HF over every position (HF through ``labels=``, as its users train).
small = 6 layers, d=320, 20 heads (the issue's anchor); medium = 12 layers, d=480, 20 heads
(esm1b_t12_34M). Rows ``BxT`` are B real proteins of the shipped sample cropped to T tokens (no padding);
the ``realistic`` row is the first ``--realistic-count`` sample proteins (<= 1022 residues): ours in
fairseq's length-sorted ``--max-tokens`` batches (as ``protein_mlm`` feeds fairseq-train), HF and
fair-esm in random batches of the same count padded to the longest (a DataLoader with a fixed batch
size). Tokens/s counts real tokens (``<cls>``/``<eos>`` included, padding not). The models alternate
within every repeat; medians over ``--repeats`` after one warm-up step each. ``--fairseq-train``
also runs the real fairseq-train (--arch esm1b_t6_8M / esm1b_t12_34M, same --max-tokens, adam) on the
first 400 sample proteins and reports the real-token rate of its logged updates 2..N (wpb / wps), next to
one pass of our bare step over N-1 token-budget batches of the same proteins. Installs nothing.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_speed import SAMPLE, machine  # noqa: E402

SIZES = {"small": (6, 320, 1280, 20), "medium": (12, 480, 1920, 20)}
ARCH = {"small": "esm1b_t6_8M", "medium": "esm1b_t12_34M"}
ESM2_ARCH = {"small": "esm2_t6_8M_UR50D", "medium": "esm2_t12_35M_UR50D"}
MASK_PROB, MAX_RESIDUES = 0.15, 1022
FAIRSEQ_PROTEINS = 400  # enough that --fairseq-updates stay inside epoch 1 (no epoch set-up in the timing)
Batch = tuple[torch.Tensor, torch.Tensor]  # tokens (B, T), masked positions (B, T)
Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # tokens, masked, targets -> loss


def sample_proteins() -> list[str]:
    """Sequences of the shipped sample, in file order, with at most 1022 residues."""
    from fairseq_esm.io.fasta import read_fasta

    return [seq for _, seq in read_fasta(str(SAMPLE)) if len(seq) <= MAX_RESIDUES]


def masked(seqs: list[str], width: int | None = None) -> Batch:
    """Right-padded ``<cls> seq <eos>`` tokens and 15% masked residue positions (seeded per protein)."""
    from fairseq_esm.modules.alphabet import load_alphabet

    alphabet = load_alphabet("esm1b")
    rows = [alphabet.tokenize(s) for s in seqs]
    tokens = torch.full((len(rows), width or max(len(r) for r in rows)), alphabet.padding_idx, dtype=torch.long)
    chosen = torch.zeros_like(tokens, dtype=torch.bool)
    for i, (seq, row) in enumerate(zip(seqs, rows)):
        tokens[i, : len(row)] = row
        rng = np.random.default_rng(sum(map(ord, seq[:50])) + len(seq))
        picks = rng.choice(len(seq), max(1, round(MASK_PROB * len(seq))), replace=False) + 1
        chosen[i, torch.from_numpy(picks)] = True
    return tokens, chosen


def shape_batch(proteins: list[str], shape: str) -> list[Batch]:
    """``BxT``: the first B proteins of at least T-2 residues, cropped to T tokens."""
    size, length = (int(x) for x in shape.lower().split("x"))
    long_enough = [p[: length - 2] for p in proteins if len(p) >= length - 2][:size]
    if len(long_enough) < size:
        raise SystemExit(f"error: the sample has only {len(long_enough)} proteins of >= {length - 2} residues")
    return [masked(long_enough)]


def realistic_batches(proteins: list[str], count: int, max_tokens: int) -> dict[str, list[Batch]]:
    """Ours: fairseq's length-sorted token-budget batches; theirs: as many random batches, padded."""
    from fairseq.data import data_utils

    seqs = proteins[:count]
    sizes = np.array([len(s) + 2 for s in seqs])
    order = np.argsort(sizes, kind="stable")
    ours = data_utils.batch_by_size(order, lambda i: sizes[i], max_tokens=max_tokens)
    per_batch = math.ceil(len(seqs) / len(ours))
    shuffled = np.random.default_rng(0).permutation(len(seqs))
    theirs = [shuffled[i : i + per_batch] for i in range(0, len(seqs), per_batch)]
    return {"ours": [masked([seqs[i] for i in b]) for b in ours],
            "theirs": [masked([seqs[i] for i in b]) for b in theirs]}


def padding_fraction(batches: list[Batch]) -> float:
    """Share of ``<pad>`` among all token slots."""
    from fairseq_esm.modules.alphabet import load_alphabet

    pad = load_alphabet("esm1b").padding_idx
    return sum(int(t.eq(pad).sum()) for t, _ in batches) / sum(t.numel() for t, _ in batches)


def build_ours(size: str, generation: str = "esm1b"):
    """A randomly initialised ESM-1b or ESM-2 (seed 0) of the named size, max_positions 1024."""
    from fairseq_esm.models.esm import Esm1bConfig, Esm1bModel, Esm2Config, Esm2Model
    from fairseq_esm.modules.alphabet import esm1b_alphabet

    kind, make_config = {"esm1b": (Esm1bModel, Esm1bConfig), "esm2": (Esm2Model, Esm2Config)}[generation]
    layers, dim, ffn, heads = SIZES[size]
    torch.manual_seed(0)
    config = make_config(encoder_layers=layers, encoder_embed_dim=dim, encoder_ffn_embed_dim=ffn,
                         encoder_attention_heads=heads, max_positions=1024)
    return kind(config, esm1b_alphabet())


def build_fair_esm(ours, tmp: Path):
    """fair-esm's model (``ProteinBertModel``, or ``ESM2``) loaded from our weights in its release layout."""
    import argparse as _argparse

    import esm

    from fairseq_esm.checkpoints.pt_files import export_official

    torch.serialization.add_safe_globals([_argparse.Namespace])  # fair-esm's bare torch.load needs it
    path, _ = export_official(ours, tmp / f"{ours.generation.name}_random.pt")
    model, _ = esm.pretrained.load_model_and_alphabet_local(str(path))
    return model


def build_hf(ours):
    """transformers' EsmForMaskedLM (absolute or rotary positions) with the sdpa attention, from our weights."""
    from fairseq_esm.checkpoints.huggingface import hf_config, hf_state_dict, import_transformers

    transformers = import_transformers()
    config = hf_config(transformers, ours)
    config._attn_implementation = "sdpa"
    model = transformers.EsmForMaskedLM(config)
    model.load_state_dict(hf_state_dict(ours), strict=False)
    expected = set(model.state_dict())
    missing = expected - set(hf_state_dict(ours))
    assert not missing, f"HF parameters left at their init: {sorted(missing)[:5]}"
    return model


def loss_functions(ours, fair, hf, pad: int) -> dict[str, Step]:
    """Each model's MLM loss as its users compute it (mean CE at the masked positions)."""

    def our_loss(tokens, chosen, targets):
        return F.cross_entropy(ours(tokens, masked_tokens=chosen)["logits"], targets[chosen])

    def fair_loss(tokens, chosen, targets):
        return F.cross_entropy(fair(tokens)["logits"][chosen], targets[chosen])

    def hf_loss(tokens, chosen, targets):
        labels = targets.masked_fill(~chosen, -100)
        return hf(input_ids=tokens, attention_mask=tokens.ne(pad).long(), labels=labels).loss

    return {"fairseq-esm (ours)": our_loss, "HF EsmForMaskedLM sdpa": hf_loss, "fair-esm": fair_loss}


class Trainer:
    """One model's training step: zero_grad, forward under autocast, backward, Adam."""

    def __init__(self, model, loss: Step, device: torch.device, dtype: str, mask_idx: int) -> None:
        self.model = model.to(device).train()
        self.loss, self.device, self.mask_idx = loss, device, mask_idx
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step(self, batch: Batch) -> float:
        """One update on ``batch``; returns the loss."""
        targets, chosen = (t.to(self.device) for t in batch)
        tokens = targets.masked_fill(chosen, self.mask_idx)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast:
            loss = self.loss(tokens, chosen, targets)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def run(self, batches: list[Batch]) -> float:
        """Wall seconds of one update per batch (device synchronised)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        for batch in batches:
            self.step(batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start


def trainers(size: str, device: torch.device, dtype: str, tmp: Path, generation: str = "esm1b"
             ) -> dict[str, Trainer]:
    """The three models, same initial weights, each with its own Adam."""
    ours = build_ours(size, generation)
    fair, hf = build_fair_esm(ours, tmp), build_hf(ours)
    losses = loss_functions(ours, fair, hf, ours.padding_idx)
    models = dict(zip(losses, (ours, hf, fair)))
    return {name: Trainer(models[name], losses[name], device, dtype, ours.mask_idx) for name in losses}


def initial_losses(models: dict[str, Trainer], batch: Batch) -> list[float]:
    """Each model's loss on ``batch`` before any update (equal when the weights are the same)."""
    values = []
    for trainer in models.values():
        targets, chosen = (t.to(trainer.device) for t in batch)
        with torch.no_grad(), trainer.autocast:
            values.append(trainer.loss(targets.masked_fill(chosen, trainer.mask_idx), chosen, targets).item())
    return values


def real_tokens(batches: list[Batch]) -> int:
    """Non-padding tokens of a workload."""
    from fairseq_esm.modules.alphabet import load_alphabet

    pad = load_alphabet("esm1b").padding_idx
    return sum(int(t.ne(pad).sum()) for t, _ in batches)


def measure(models: dict[str, Trainer], workloads: dict[str, list[Batch]], repeats: int) -> dict[str, float]:
    """Median tokens/s of each model: warm-up step, then ``repeats`` alternating passes."""
    for name, trainer in models.items():
        trainer.step(workloads[name][0])
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, trainer in models.items():
            times[name].append(trainer.run(workloads[name]))
    return {name: real_tokens(workloads[name]) / statistics.median(t) for name, t in times.items()}


def fairseq_train_wps(proteins: list[str], arch: str, args: argparse.Namespace) -> float:
    """Real-token rate of the real fairseq-train on ``proteins`` (binarized here), updates 2..N of its log."""
    import json
    import os
    import subprocess

    root, bin_dir = Path(__file__).resolve().parents[1], Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory(prefix="train_speed_fairseq_") as tmp:
        fasta = Path(tmp) / "train.fasta"
        fasta.write_text("".join(f">p{i}\n{seq}\n" for i, seq in enumerate(proteins)))
        subprocess.run([sys.executable, "preprocess/binarize_fasta.py", "--trainpref", str(fasta),
                        "--destdir", f"{tmp}/data-bin"], cwd=root, env=env, check=True, capture_output=True)
        cmd = ["fairseq-train", f"{tmp}/data-bin", "--user-dir", "fairseq_esm", "--task", "protein_mlm",
               "--criterion", "esm_masked_lm", "--arch", arch, "--max-tokens", str(args.max_tokens),
               "--optimizer", "adam", "--lr", "1e-4", "--max-update", str(args.fairseq_updates),
               "--disable-validation", "--no-save", "--num-workers", "0", "--log-format", "json",
               "--log-interval", "1", "--device-id", "0"] + (["--cpu"] if args.device == "cpu" else [])
        cmd += ["--bf16"] if args.dtype == "bf16" else []
        log = subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True, text=True)
    records = [json.loads(line[line.index("{"):]) for line in (log.stdout + log.stderr).splitlines()
               if "| train_inner |" in line][1:]
    if not records:
        raise SystemExit("error: fairseq-train logged no train_inner records after the first update")
    tokens = [float(r["wpb"]) for r in records]
    return sum(tokens) / sum(t / float(r["wps"]) for t, r in zip(tokens, records))


def compare_fairseq_train(ours: Trainer, proteins: list[str], arch: str, args: argparse.Namespace) -> None:
    """fairseq-train's logged rate next to our bare step over N-1 of the same kind of batches (one pass)."""
    wps = fairseq_train_wps(proteins, arch, args)
    batches = realistic_batches(proteins, len(proteins), args.max_tokens)["ours"]
    picked = np.random.default_rng(1).choice(len(batches), min(len(batches), args.fairseq_updates - 1), replace=False)
    bare = measure({"ours": ours}, {"ours": [batches[i] for i in picked]}, 1)["ours"]
    print(f"  fairseq-train loop ({len(proteins)} proteins, --max-tokens {args.max_tokens}, updates 2..."
          f"{args.fairseq_updates}): {wps:,.0f} wps; bare step on {len(picked)} such batches: {bare:,.0f} tok/s; "
          f"fairseq-train / bare {wps / bare:.2f}x", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options in the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="small,medium", help="comma-separated: small, medium")
    parser.add_argument("--shapes", default="8x256,1x1000", help="comma-separated BxT batches of real proteins")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16 = autocast")
    parser.add_argument("--realistic-count", type=int, default=48, help="sample proteins of the realistic row; 0: none")
    parser.add_argument("--max-tokens", type=int, default=4096, help="token budget of our realistic batches")
    parser.add_argument("--fairseq-train", action="store_true", help="also time the real fairseq-train loop")
    parser.add_argument("--fairseq-updates", type=int, default=12, help="fairseq-train updates (first is dropped)")
    parser.add_argument("--generations", default="esm1b", help="comma-separated: esm1b, esm2")
    args = parser.parse_args(argv)
    unknown = set(args.sizes.split(",")) - set(SIZES)
    if unknown:
        parser.error(f"unknown size(s) {', '.join(sorted(unknown))}; choose from {', '.join(SIZES)}")
    return args


def workloads_of(args: argparse.Namespace, proteins: list[str]) -> dict[str, dict[str, list[Batch]]]:
    """Row name -> model name -> batches; notes the padding of the realistic row."""
    rows = {}
    for shape in filter(None, args.shapes.split(",")):
        batches = shape_batch(proteins, shape)
        rows[shape] = {"ours": batches, "theirs": batches}
    if args.realistic_count:
        rows["realistic"] = realistic_batches(proteins, args.realistic_count, args.max_tokens)
    return rows


def print_table(results: list[tuple[str, str, dict[str, float]]], names: list[str]) -> None:
    """Medians and ratios, one line per (size, row)."""
    print(f"\n{'size':13s} {'batch':10s} " + " ".join(f"{n:>25s}" for n in names)
          + f" {'ours/HF':>8s} {'ours/fair-esm':>13s}")
    for size, row, speeds in results:
        ours, hf, fair = (speeds[n] for n in names)
        print(f"{size:13s} {row:10s} " + " ".join(f"{speeds[n]:>19,.0f} tok/s" for n in names)
              + f" {ours / hf:>7.2f}x {ours / fair:>12.2f}x")


def describe_rows(rows: dict[str, dict[str, list[Batch]]]) -> None:
    """Token counts and padding of every row."""
    for row, work in rows.items():
        ours, theirs = work["ours"], work["theirs"]
        print(f"  {row}: {real_tokens(ours):,} real tokens; ours {len(ours)} batches, padding "
              f"{padding_fraction(ours):.1%}; HF / fair-esm {len(theirs)} batches, "
              f"padding {padding_fraction(theirs):.1%}")


def main(argv: list[str] | None = None) -> int:
    """Build each size's three models once, time every row, print one table."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    proteins = sample_proteins()
    rows = workloads_of(args, proteins)
    print(f"machine: {machine(device)}")
    print(f"train step (fwd + bwd + Adam), {args.dtype}, device {device}, random weights shared by all three; "
          f"median of {args.repeats} alternating repeats after 1 warm-up step")
    describe_rows(rows)
    results, names = [], []
    for generation in args.generations.split(","):
        for size in args.sizes.split(","):
            with tempfile.TemporaryDirectory(prefix="train_speed_") as tmp:
                models = trainers(size, device, args.dtype, Path(tmp), generation)
            names = list(models)
            start = initial_losses(models, shape_batch(proteins, "4x128")[0])
            label = f"{generation} {size}"
            print(f"{label} {SIZES[size]}: initial losses on 4x128 " + ", ".join(f"{v:.6f}" for v in start))
            for row, work in rows.items():
                speeds = measure(models, {n: work["ours" if n == names[0] else "theirs"] for n in names},
                                 args.repeats)
                results.append((label, row, speeds))
                print(f"  {row}: " + ", ".join(f"{n} {v:,.0f}" for n, v in speeds.items()), flush=True)
            if args.fairseq_train:
                arch = ARCH[size] if generation == "esm1b" else ESM2_ARCH[size]
                compare_fairseq_train(models[names[0]], proteins[:FAIRSEQ_PROTEINS], arch, args)
            del models
    if results:
        print_table(results, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
