"""``fairseq-esm-convert`` between our fairseq checkpoints and the official fair-esm layout, and its refusals.

Round trips start from random fair-esm models saved in the official layout; fair-esm loads the file at
the end and must give the logits it gave for the file at the start. The fairseq checkpoint must load in
fairseq's own ``load_model_ensemble_and_task``, as ``fairseq-validate --path`` does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from esm.pretrained import load_model_and_alphabet_local
from fairseq import checkpoint_utils
from fairseq.data import Dictionary

from fairseq_esm.checkpoints import load_model
from fairseq_esm.checkpoints.pt_files import read_file
from fairseq_esm.cli import export_official
from fairseq_esm.cli.common import run_main
from fairseq_esm.cli.convert import main
from fairseq_esm.modules.alphabet import DICT_DIR, load_alphabet
from fairseq_esm.modules.batching import pad_tokens
from fairseq_esm.tasks.fairseq_checkpoint import save_fairseq_checkpoint

TOL = 1e-4
DIFF = re.compile(r"max \|logits difference\| SRC vs reloaded DST on 3 proteins \((\d+) tokens, one <mask>\): (\S+)")

# fairseq's namespace -> omegaconf conversion inside load_model_ensemble_and_task trips Hydra deprecation warnings
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def convert(capsys, *argv: object) -> float:
    """Run the CLI; it must succeed and report a logits difference within TOL, which is returned."""
    assert run_main(main, [str(a) for a in argv]) == 0
    match = DIFF.search(capsys.readouterr().out)
    assert match, "no difference line printed"
    assert float(match.group(2)) <= TOL
    return float(match.group(2))


def real_batch(variant: str, proteins: list[str]) -> torch.Tensor:
    """Four real proteins cropped to different lengths (padding), with <mask> tokens in two rows."""
    alphabet = load_alphabet(variant)
    tokens = pad_tokens([alphabet.tokenize(p[: 110 - 23 * i]) for i, p in enumerate(proteins[:4])],
                        alphabet.padding_idx)
    tokens[0, [2, 9]] = alphabet.mask_idx
    tokens[3, 5] = alphabet.mask_idx
    return tokens


@torch.no_grad()
def fair_esm_logits(path: Path, tokens: torch.Tensor) -> torch.Tensor:
    model, _ = load_model_and_alphabet_local(path)
    return model.eval()(tokens)["logits"]


@pytest.mark.parametrize("variant", ["esm1b", "esm1"])
def test_official_fairseq_official_round_trip(variant, official_checkpoint, sample_proteins, tmp_path, capsys):
    source = official_checkpoint(variant)
    fairseq_ckpt, back = tmp_path / "checkpoint_converted.pt", tmp_path / "back" / "model.pt"
    convert(capsys, source, "--out", fairseq_ckpt, "--to", "fairseq")
    convert(capsys, fairseq_ckpt, "--out", back, "--to", "official")
    tokens = real_batch(variant, sample_proteins)
    diff = (fair_esm_logits(back, tokens) - fair_esm_logits(source, tokens)).abs().max().item()
    assert diff <= TOL
    stored = read_file(fairseq_ckpt)
    assert stored["cfg"]["model"]["_name"] == variant and stored["cfg"]["task"]["_name"] == "protein_mlm"
    assert stored["cfg"]["task"]["alphabet"] == variant and stored["cfg"]["criterion"]["_name"] == "esm_masked_lm"
    assert stored["cfg"]["model"]["encoder_layers"] == 3 and stored["cfg"]["model"]["max_positions"] == 128
    assert back.with_name("model-contact-regression.pt").is_file()


@pytest.mark.parametrize("variant", ["esm1b", "esm1"])
def test_fairseq_checkpoint_loads_in_fairseq(variant, official_checkpoint, sample_proteins, tmp_path):
    """What ``fairseq-validate --path`` and ``--finetune-from-model`` do: rebuild task and model from cfg."""
    ours, _ = load_model(official_checkpoint(variant))
    path = save_fairseq_checkpoint(ours, tmp_path / "checkpoint.pt")
    data = tmp_path / "data-bin"
    data.mkdir()
    Dictionary.load(str(DICT_DIR / "esm1b.txt")).save(str(data / "dict.txt"))  # what fairseq-preprocess writes
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(path)], arg_overrides={"data": str(data)})
    assert cfg.model._name == variant and task.alphabet.name == variant
    tokens = real_batch(variant, sample_proteins)
    with torch.no_grad():
        assert torch.equal(models[0].eval()(tokens)["logits"], ours(tokens)["logits"])


def test_named_arch_is_recorded_when_sizes_match(tmp_path):
    from fairseq_esm.models.esm import Esm1bConfig, Esm1bModel

    cfg = Esm1bConfig(encoder_layers=4, encoder_embed_dim=128, encoder_ffn_embed_dim=512, encoder_attention_heads=8,
                      max_positions=64, token_dropout=False)
    path = save_fairseq_checkpoint(Esm1bModel(cfg, load_alphabet("esm1b")), tmp_path / "c.pt", data="/data/bin")
    stored = read_file(path)["cfg"]
    assert stored["model"]["_name"] == "esm1b_t4_1M" and stored["model"]["token_dropout"] is False
    assert stored["task"]["data"] == "/data/bin" and stored["task"]["max_positions"] == 64
    loaded, _ = load_model(path)
    assert loaded.token_dropout is False and loaded.max_positions() == 64


def test_export_official_module_is_an_alias(official_checkpoint, sample_proteins, tmp_path, capsys):
    source = official_checkpoint("esm1b")
    out = tmp_path / "exported.pt"
    assert run_main(export_official.main, [str(source), str(out)]) == 0
    captured = capsys.readouterr()
    assert DIFF.search(captured.out) and "deprecated" not in captured.err
    tokens = real_batch("esm1b", sample_proteins)
    assert (fair_esm_logits(out, tokens) - fair_esm_logits(source, tokens)).abs().max().item() <= TOL


def refused(capsys, *argv: object) -> str:
    """The CLI must stop with status 2 and exactly one ``error:`` line, returned."""
    assert run_main(main, [str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def test_esm1_to_hf_is_refused(official_checkpoint, tmp_path, capsys):
    out = tmp_path / "esm1_hf"
    line = refused(capsys, official_checkpoint("esm1"), "--out", out, "--to", "hf")
    assert "ESM-1 has no HuggingFace equivalent" in line and "sinusoidal" in line
    assert not out.exists()


@pytest.mark.parametrize("case, needle", [
    ("missing_src", "nope.pt: no such file"),
    ("not_pt", "does not end in .pt"),
    ("hf_to_file", "--to hf writes a directory"),
    ("same_path", "is SRC itself"),
    ("fair_esm_name", "fair-esm reads the file name"),
    ("not_a_checkpoint", "not a readable PyTorch checkpoint"),
    ("no_out", "pass --out"),
    ("two_outs", "give only --out"),
])
def test_bad_arguments_are_one_line_exit_2(case, needle, official_checkpoint, tmp_path, capsys):
    source = official_checkpoint("esm1b")
    junk = tmp_path / "notes.pt"
    junk.write_text("MKTAYIAKQRQ\n")
    argv = {
        "missing_src": [tmp_path / "nope.pt", "--out", tmp_path / "out.pt", "--to", "official"],
        "not_pt": [source, "--out", tmp_path / "out.bin", "--to", "fairseq"],
        "hf_to_file": [source, "--out", tmp_path / "out.pt", "--to", "hf"],
        "same_path": [source, "--out", source, "--to", "official"],
        "fair_esm_name": [source, "--out", tmp_path / "esm2_mine.pt", "--to", "official"],
        "not_a_checkpoint": [junk, "--out", tmp_path / "out.pt", "--to", "fairseq"],
        "no_out": [source, "--to", "official"],
        "two_outs": [source, tmp_path / "out.pt", "--out", tmp_path / "out.pt", "--to", "official"],
    }[case]
    assert needle in refused(capsys, *argv)


@pytest.fixture
def hf_dir_with_mask_row(official_checkpoint, tmp_path, capsys) -> Path:
    """The official test model as an HF directory whose <mask> embedding row is not zero."""
    from fairseq_esm.checkpoints.huggingface import import_transformers

    out = tmp_path / "hf"
    convert(capsys, official_checkpoint("esm1b"), "--out", out, "--to", "hf")
    hf_model = import_transformers().EsmForMaskedLM.from_pretrained(str(out))
    with torch.no_grad():
        hf_model.esm.embeddings.word_embeddings.weight[load_alphabet("esm1b").mask_idx] = 0.5
    hf_model.save_pretrained(str(out))
    return out


def test_a_conversion_that_changes_logits_exits_1(hf_dir_with_mask_row, tmp_path, capsys):
    """fair-esm zeroes the ESM-1b <mask> embedding on load; an HF model with a trained <mask> row therefore
    gets another <mask> logit column in the official layout, and the check must say so."""
    with pytest.warns(UserWarning, match="<mask> embedding row is not zero"):
        status = run_main(main, [str(hf_dir_with_mask_row), "--out", str(tmp_path / "out.pt"), "--to", "official"])
    assert status == 1
    captured = capsys.readouterr()
    assert float(DIFF.search(captured.out).group(2)) > TOL
    assert "error:" in captured.err and "does not reproduce" in captured.err


def test_console_script_help():
    script = Path(sys.executable).parent / "fairseq-esm-convert"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert "--to {fairseq,official,hf}" in proc.stdout and "--data" in proc.stdout
