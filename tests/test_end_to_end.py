"""The real CLIs, end to end, on a slice of the shipped UniProt sample.

split_fasta → binarize_fasta → fairseq-train --user-dir fairseq_esm → fairseq-validate.
The default suite trains for a few updates; the whole demo is marked slow.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
from helpers.proteins import SAMPLE

BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path = ROOT, env: dict | None = None) -> str:
    """Run a CLI, fail the test with its output if it fails."""
    full_env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def first_records(n: int, out: Path) -> Path:
    """Write the first n records of the sample verbatim."""
    count = 0
    with gzip.open(SAMPLE, "rt") as src, out.open("w") as dst:
        for line in src:
            if line.startswith(">"):
                count += 1
                if count > n:
                    break
            dst.write(line)
    return out


@pytest.fixture(scope="module")
def data_bin(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("e2e")
    fasta = first_records(400, work / "slice.fasta")
    run([sys.executable, "preprocess/split_fasta.py", str(fasta), "--out", str(work / "fasta"),
         "--valid-count", "40", "--seed", "1"])
    run([sys.executable, "preprocess/binarize_fasta.py", "--trainpref", str(work / "fasta/train.fasta"),
         "--validpref", str(work / "fasta/valid.fasta"), "--destdir", str(work / "data-bin"), "--workers", "1"])
    return work / "data-bin"


TASK = ["--user-dir", "fairseq_esm", "--task", "protein_mlm", "--criterion", "esm_masked_lm",
        "--max-positions", "256", "--max-tokens", "4096", "--seed", "3", "--cpu", "--num-workers", "0"]


def valid_stats(output: str) -> dict:
    lines = [l for l in output.splitlines() if '"valid_ppl"' in l]
    assert lines, f"no validation stats in:\n{output[-3000:]}"
    return json.loads(lines[-1][lines[-1].find("{"):])


def test_fairseq_train_then_validate(data_bin: Path, tmp_path: Path):
    save = tmp_path / "ckpt"
    out = run(["fairseq-train", str(data_bin), *TASK, "--arch", "esm1b_t4_1M", "--optimizer", "adam",
               "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "2", "--max-update", "6",
               "--save-dir", str(save), "--no-epoch-checkpoints", "--log-format", "json", "--log-interval", "1"])
    losses = [float(json.loads(l[l.find("{"):])["loss"]) for l in out.splitlines() if "| train_inner |" in l]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert (save / "checkpoint_last.pt").exists() and (save / "checkpoint_best.pt").exists()

    stats = valid_stats(run(["fairseq-validate", str(data_bin), *TASK, "--path", str(save / "checkpoint_best.pt"),
                             "--log-format", "json"]))
    ppl = float(stats["valid_ppl"])
    # ECE is 2**bits; a 33-token softmax that learned nothing sits near 33, anything trained is well below
    assert 1.0 < ppl < 33.0
    assert abs(2 ** float(stats["valid_loss"]) - ppl) < 0.05 * ppl


@pytest.mark.slow  # two more fairseq runs; bit-identical runs are covered by test_determinism in make test
def test_validation_is_deterministic(data_bin: Path, tmp_path: Path):
    """Same checkpoint, same seed → the same masked held-out set and the same ECE."""
    save = tmp_path / "ckpt"
    run(["fairseq-train", str(data_bin), *TASK, "--arch", "esm1b_t4_1M", "--optimizer", "adam", "--lr", "1e-3",
         "--max-update", "2", "--save-dir", str(save), "--no-epoch-checkpoints"])
    args = ["fairseq-validate", str(data_bin), *TASK, "--path", str(save / "checkpoint_last.pt"), "--log-format", "json"]
    assert valid_stats(run(args))["valid_ppl"] == valid_stats(run(args))["valid_ppl"]


@pytest.mark.slow
def test_demo_beats_unigram_baseline(tmp_path: Path):
    """The README's main command end to end: the trained model must beat amino-acid frequencies."""
    run(["bash", "examples/pretrain_demo.sh"], env={"OUT": str(tmp_path / "demo")})
    result = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert result["model"]["ppl"] < result["unigram"]["unigram_ece"]


def test_model_trained_here_loads_in_fair_esm(data_bin: Path, tmp_path: Path):
    """fairseq-train → export_official → fair-esm's own loader gives our logits."""
    import argparse

    import esm
    import torch

    from fairseq_esm.checkpoints import load_model

    save = tmp_path / "ckpt"
    run(["fairseq-train", str(data_bin), *TASK, "--arch", "esm1b_t4_1M", "--optimizer", "adam", "--lr", "1e-3",
         "--max-update", "3", "--save-dir", str(save), "--no-epoch-checkpoints"])
    out = tmp_path / "export" / "esm1b_demo.pt"
    run([sys.executable, "-m", "fairseq_esm.cli.export_official", str(save / "checkpoint_last.pt"), str(out)])

    ours, alphabet = load_model(save / "checkpoint_last.pt")
    torch.serialization.add_safe_globals([argparse.Namespace])
    theirs, their_alphabet = esm.pretrained.load_model_and_alphabet_local(str(out))
    theirs.eval()
    _, _, tokens = their_alphabet.get_batch_converter()([("a", "MKTAYIAKQRQISFVKSHFSRQ"), ("b", "MSEQ<mask>NCE")])
    with torch.no_grad():
        diff = (ours(tokens)["logits"] - theirs(tokens)["logits"]).abs().max().item()
    assert diff <= 1e-4


def test_export_cli_refuses_a_non_checkpoint(tmp_path: Path):
    bogus = tmp_path / "notes.pt"
    bogus.write_text("not a checkpoint")
    proc = subprocess.run([sys.executable, "-m", "fairseq_esm.cli.export_official", str(bogus), str(tmp_path / "o.pt")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "notes.pt" in proc.stderr and "Traceback" not in proc.stderr
