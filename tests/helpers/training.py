"""Helpers of the training-reliability tests (determinism, resume, distributed, corrupt data): a tiny
ESM-1b run of the real fairseq-train on real proteins, and parsers for fairseq's JSON log and checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: 240 train proteins, --max-tokens 1024, --max-positions 64: 15 batches per epoch
TRAIN_PROTEINS, VALID_PROTEINS = 240, 40


def tiny_data(fairseq_preprocess, sample_proteins) -> Path:
    """fairseq-preprocess'd data-bin of real UniProt proteins (240 train / 40 valid)."""
    train = sample_proteins[:TRAIN_PROTEINS]
    return fairseq_preprocess(train, sample_proteins[TRAIN_PROTEINS : TRAIN_PROTEINS + VALID_PROTEINS])


def train_args(data: Path, save_dir: Path, *extra: str) -> list[str]:
    """fairseq-train options of a ~1M-parameter ESM-1b, logging every update as JSON."""
    return [
        str(data), "--user-dir", "fairseq_esm", "--task", "protein_mlm", "--criterion", "esm_masked_lm",
        "--arch", "esm1b_t4_1M", "--max-positions", "64", "--max-tokens", "1024", "--seed", "3",
        "--num-workers", "0", "--optimizer", "adam", "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt",
        "--warmup-updates", "2", "--disable-validation", "--no-epoch-checkpoints",
        "--log-format", "json", "--log-interval", "1", "--save-dir", str(save_dir), *extra,
    ]


def environment() -> dict[str, str]:
    """This venv's console scripts first on PATH."""
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}


def run(cmd: list[str]) -> str:
    """Run a command in the repository root; fail the test with its output if it fails."""
    proc = subprocess.run(cmd, cwd=ROOT, env=environment(), check=False, capture_output=True, text=True)
    output = f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{output}"
    return proc.stdout + proc.stderr


def update_stats(log: str) -> dict[int, dict[str, str]]:
    """fairseq's per-update ``train_inner`` JSON records, by update number (values as logged)."""
    records = [json.loads(line[line.index("{") :]) for line in log.splitlines() if "| train_inner |" in line]
    return {int(r["num_updates"]): r for r in records}


def losses(log: str) -> dict[int, str]:
    """Per-update training loss (bits per masked token), as fairseq printed it."""
    return {update: record["loss"] for update, record in update_stats(log).items()}


def checkpoint(path: Path) -> dict:
    """A checkpoint of ours, read the safe way (tensors and plain containers only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def max_weight_difference(a: Path, b: Path) -> float:
    """Largest absolute difference between the model weights of two checkpoints."""
    first, second = checkpoint(a)["model"], checkpoint(b)["model"]
    assert first.keys() == second.keys()
    return max((first[k].float() - second[k].float()).abs().max().item() for k in first)
