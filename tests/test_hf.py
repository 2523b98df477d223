"""HuggingFace EsmForMaskedLM <-> our ESM-1b: the key table, numerics against fair-esm, refusals.

A random fair-esm ESM-1b saved in the official layout is converted with ``fairseq-esm-convert --to hf``;
transformers' own ``EsmForMaskedLM`` must then reproduce fair-esm on real proteins (padding and ``<mask>``
in the batch, so token dropout is exercised), and the directory must come back through our loader and
fair-esm unchanged.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from esm.pretrained import load_model_and_alphabet_local

from fairseq_esm.checkpoints import load_model
from fairseq_esm.checkpoints.huggingface import (
    TransformersMissing,
    _hide_broken_torchaudio,
    import_transformers,
    key_table,
    load_hf_model,
)
from fairseq_esm.cli.common import run_main
from fairseq_esm.cli.convert import main
from fairseq_esm.models.esm import Esm1bConfig, Esm1bModel
from fairseq_esm.modules.alphabet import load_alphabet
from fairseq_esm.modules.batching import pad_tokens

TOL = 1e-4
LAYERS = 3




@pytest.fixture(scope="module")
def transformers():
    module = import_transformers()
    module.utils.logging.disable_progress_bar()
    return module


@pytest.fixture(scope="module")
def hf_dir(official_checkpoint, transformers, tmp_path_factory) -> Path:
    """The official test model converted to a HuggingFace directory by the CLI."""
    out = tmp_path_factory.mktemp("hf") / "esm1b_hf"
    assert run_main(main, [str(official_checkpoint("esm1b", layers=LAYERS)), "--out", str(out), "--to", "hf"]) == 0
    return out


def real_batch(proteins: list[str], count: int = 4) -> torch.Tensor:
    """Real proteins of different lengths (cropped to the 128-position context), padded, with <mask> tokens."""
    alphabet = load_alphabet("esm1b")
    chosen = [p for p in proteins[:60] if 40 <= len(p)][:count]
    tokens = pad_tokens([alphabet.tokenize(p[: 90 - 17 * i]) for i, p in enumerate(chosen)], alphabet.padding_idx)
    tokens[0, [3, 10, 11]] = alphabet.mask_idx
    tokens[2, 7] = alphabet.mask_idx
    return tokens


def assert_close(got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.shape == want.shape
    diff = (got - want).abs().max().item()
    assert diff <= TOL, diff
    return diff


def hf_outputs(hf_model, tokens: torch.Tensor):
    """Logits, per-layer hidden states and the final-LayerNorm'd last state of transformers' model."""
    mask = tokens.ne(load_alphabet("esm1b").padding_idx).long()
    with torch.no_grad():
        out = hf_model(input_ids=tokens, attention_mask=mask, output_hidden_states=True)
        last = hf_model.esm(input_ids=tokens, attention_mask=mask).last_hidden_state
    return out.logits, out.hidden_states, last


@pytest.mark.parametrize("emb_layer_norm_before", [True, False])
def test_key_table_is_a_bijection_onto_hf_parameters(emb_layer_norm_before, transformers):
    cfg = Esm1bConfig(encoder_layers=2, encoder_embed_dim=16, encoder_ffn_embed_dim=32, encoder_attention_heads=2,
                      max_positions=20, emb_layer_norm_before=emb_layer_norm_before)
    ours = Esm1bModel(cfg, load_alphabet("esm1b"))
    table = key_table(2, emb_layer_norm_before)
    assert set(table) == set(ours.state_dict())
    assert len(set(table.values())) == len(table)
    hf_config = transformers.EsmConfig(vocab_size=33, pad_token_id=1, mask_token_id=32, hidden_size=16,
                                       num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                       max_position_embeddings=22, layer_norm_eps=1e-5,
                                       emb_layer_norm_before=emb_layer_norm_before)
    assert set(table.values()) == set(transformers.EsmForMaskedLM(hf_config).state_dict())
    assert table["layers.1.self_attn.q_proj.weight"] == "esm.encoder.layer.1.attention.self.query.weight"
    assert table["layers.0.final_layer_norm.bias"] == "esm.encoder.layer.0.LayerNorm.bias"
    assert table["lm_head.weight"] == "lm_head.decoder.weight"


def test_hf_model_reproduces_fair_esm(hf_dir, official_checkpoint, transformers, sample_proteins):
    """transformers' EsmForMaskedLM on the converted directory == fair-esm on the official file."""
    theirs, _ = load_model_and_alphabet_local(official_checkpoint("esm1b", layers=LAYERS))
    tokens = real_batch(sample_proteins)
    with torch.no_grad():
        expected = theirs.eval()(tokens, repr_layers=list(range(LAYERS + 1)))
    hf_model = transformers.EsmForMaskedLM.from_pretrained(str(hf_dir)).eval()
    logits, hidden, last = hf_outputs(hf_model, tokens)
    assert_close(logits, expected["logits"])
    assert len(hidden) == LAYERS + 1
    for layer in range(LAYERS):  # fair-esm reports the last layer after the final LayerNorm, HF before it
        assert_close(hidden[layer], expected["representations"][layer])
    assert_close(last, expected["representations"][LAYERS])
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["max_position_embeddings"] == 128 + 1 + 1 and config["position_embedding_type"] == "absolute"
    assert config["token_dropout"] is True and config["layer_norm_eps"] == 1e-5


def test_hf_contacts_match_fair_esm(hf_dir, official_checkpoint, transformers, sample_proteins):
    theirs, _ = load_model_and_alphabet_local(official_checkpoint("esm1b", layers=LAYERS))
    tokens = real_batch(sample_proteins)
    hf_model = transformers.EsmForMaskedLM.from_pretrained(str(hf_dir), attn_implementation="eager").eval()
    with torch.no_grad():
        expected = theirs.eval()(tokens, return_contacts=True)["contacts"]
        got = hf_model.predict_contacts(tokens, attention_mask=tokens.ne(1).long())
    assert_close(got, expected)


def test_hf_directory_loads_as_our_model(hf_dir, transformers, sample_proteins):
    tokens = real_batch(sample_proteins)
    ours, alphabet = load_model(hf_dir)
    assert alphabet.name == "esm1b" and ours.max_positions() == 128 and not ours.training
    hf_model = transformers.EsmForMaskedLM.from_pretrained(str(hf_dir)).eval()
    logits, hidden, last = hf_outputs(hf_model, tokens)
    with torch.no_grad():
        got = ours(tokens, repr_layers=[1, LAYERS])
    assert_close(got["logits"], logits)
    assert_close(got["representations"][1], hidden[1])
    assert_close(got["representations"][LAYERS], last)


def test_hf_to_official_loads_in_fair_esm(hf_dir, transformers, sample_proteins, tmp_path, capsys):
    out = tmp_path / "from_hf.pt"
    assert run_main(main, [str(hf_dir), "--out", str(out), "--to", "official"]) == 0
    assert "max |logits difference|" in capsys.readouterr().out
    theirs, _ = load_model_and_alphabet_local(out)
    tokens = real_batch(sample_proteins)
    logits, _, _ = hf_outputs(transformers.EsmForMaskedLM.from_pretrained(str(hf_dir)).eval(), tokens)
    with torch.no_grad():
        assert_close(theirs.eval()(tokens)["logits"], logits)


def test_auto_tokenizer_encodes_like_our_alphabet(hf_dir, transformers, sample_proteins):
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    alphabet = load_alphabet("esm1b")
    proteins = [p[:100] for p in sample_proteins[:5]]
    encoded = tokenizer(proteins, padding=True, return_tensors="pt")
    assert torch.equal(encoded["input_ids"], pad_tokens([alphabet.tokenize(p) for p in proteins], alphabet.padding_idx))
    assert tokenizer.mask_token_id == alphabet.mask_idx and tokenizer.model_max_length == 128


def write_hf(transformers, out: Path, **config_changes) -> Path:
    """A random tiny EsmForMaskedLM directory (ESM-1b-like unless ``config_changes`` say otherwise)."""
    values = dict(vocab_size=33, pad_token_id=1, mask_token_id=32, hidden_size=16, num_hidden_layers=2,
                  num_attention_heads=2, intermediate_size=32, max_position_embeddings=66, layer_norm_eps=1e-5,
                  emb_layer_norm_before=True, token_dropout=True)
    values.update(config_changes)
    model = transformers.EsmForMaskedLM(transformers.EsmConfig(**values))
    with torch.no_grad():
        model.esm.embeddings.word_embeddings.weight[values["mask_token_id"]] = 0.0  # as in released ESM-1b
    model.save_pretrained(str(out))
    return out


def convert_error(src: Path, tmp_path: Path, capsys, to: str = "official") -> str:
    """Run the CLI on a source it must refuse: status 2, exactly one ``error:`` line, which is returned."""
    dst = tmp_path / ("out" if to == "hf" else "out.pt")
    assert run_main(main, [str(src), "--out", str(dst), "--to", to]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(lines) == 1, err
    assert not dst.exists()
    return lines[0]


def test_esm2_rotary_directory_is_refused(transformers, tmp_path, capsys):
    src = write_hf(transformers, tmp_path / "esm2_like", position_embedding_type="rotary", emb_layer_norm_before=False)
    line = convert_error(src, tmp_path, capsys)
    assert "position_embedding_type='rotary'" in line and "absolute" in line


@pytest.mark.parametrize("change, needle", [
    ({"layer_norm_eps": 1e-12}, "layer_norm_eps=1e-12 differs from ESM-1b's 1e-05"),
    ({"vocab_size": 35}, "vocab_size=35 but the ESM-1b alphabet has 33"),
    ({"mask_token_id": 31}, "mask_token_id=31"),
])
def test_config_mismatches_are_named(change, needle, transformers, tmp_path, capsys):
    assert needle in convert_error(write_hf(transformers, tmp_path / "hf", **change), tmp_path, capsys)


def test_other_vocabulary_is_refused(hf_dir, tmp_path, capsys):
    src = tmp_path / "swapped"
    src.mkdir()
    for item in hf_dir.iterdir():
        (src / item.name).write_bytes(item.read_bytes())
    tokens = (hf_dir / "vocab.txt").read_text().split()
    tokens[4], tokens[5] = tokens[5], tokens[4]
    (src / "vocab.txt").write_text("\n".join(tokens))
    assert "vocab.txt differs from the ESM-1b alphabet at index 4: 'A' != 'L'" in convert_error(src, tmp_path, capsys)


def test_directory_without_weights_is_refused(hf_dir, tmp_path, capsys):
    src = tmp_path / "config_only"
    src.mkdir()
    (src / "config.json").write_bytes((hf_dir / "config.json").read_bytes())
    assert "has config.json but no weights" in convert_error(src, tmp_path, capsys)


def test_missing_contact_head_loads_with_a_warning(transformers, tmp_path):
    from safetensors.torch import load_file, save_file

    src = write_hf(transformers, tmp_path / "no_contacts")
    state = load_file(str(src / "model.safetensors"))
    save_file({k: v for k, v in state.items() if "contact_head" not in k}, str(src / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.warns(UserWarning, match="no contact regression weights"):
        model, _ = load_hf_model(src)
    assert model.num_layers == 2


def test_without_transformers_the_error_says_what_to_install(hf_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(TransformersMissing, match=r"pip install 'fairseq-esm\[hf\]'"):
        load_hf_model(hf_dir)


def test_broken_torchaudio_is_hidden_from_transformers(tmp_path, monkeypatch):
    """A torchaudio that raises OSError on import (built for another torch) is made invisible to find_spec."""
    package = tmp_path / "torchaudio"
    package.mkdir()
    (package / "__init__.py").write_text("raise OSError('Could not load this library: _torchaudio.abi3.so')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "torchaudio", None)
    monkeypatch.delitem(sys.modules, "torchaudio")
    _hide_broken_torchaudio()
    assert sys.modules["torchaudio"] is None and importlib.util.find_spec("torchaudio") is None


def test_healthy_torchaudio_is_left_alone(tmp_path, monkeypatch):
    package = tmp_path / "torchaudio"
    package.mkdir()
    (package / "__init__.py").write_text("WORKS = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "torchaudio", None)
    monkeypatch.delitem(sys.modules, "torchaudio")
    _hide_broken_torchaudio()
    assert sys.modules["torchaudio"].WORKS
