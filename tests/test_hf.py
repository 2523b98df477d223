"""HuggingFace EsmForMaskedLM <-> our ESM-1b: the key table, numerics against fair-esm, refusals.

A random fair-esm ESM-1b saved in the official layout is converted with ``fairseq-esm-convert --to hf``;
transformers' own ``EsmForMaskedLM`` must then reproduce fair-esm on real proteins (padding and ``<mask>``
in the batch, so token dropout is exercised), and the directory must come back through our loader and
fair-esm unchanged. ESM-2 goes both ways too (transformers' ``position_embedding_type="rotary"``): a random fair-esm
ESM-2 read by our loader and written with ``--to hf``, and a random transformers ESM-2 (also in the layout of the
``facebook/esm2_t*`` Hub files) read by our loader, each equal to the other side within 1e-4.
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
    save_hf_model,
)
from fairseq_esm.checkpoints.pt_files import CheckpointError
from fairseq_esm.cli.common import run_main
from fairseq_esm.cli.convert import main
from fairseq_esm.models.esm import Esm1bConfig, Esm1bModel
from fairseq_esm.modules.alphabet import load_alphabet
from fairseq_esm.modules.batching import pad_tokens
from fairseq_esm.modules.esm1 import ESM1, EsmConfig
from fairseq_esm.modules.generations import ESM_2

TOL = 1e-4
LAYERS = 3
#: transformers 5.x's one rotary frequency buffer, and the literal key save_pretrained (5.24) stores it under
INV_FREQ = "esm.rotary_embeddings.inv_freq"
SAVED_INV_FREQ = "esm.encoder.layer.*.attention.self.rotary_embeddings.inv_freq"


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


# ---- ESM-2: transformers' position_embedding_type="rotary" ----


def compare_with_hf(ours, hf_model, tokens: torch.Tensor) -> None:
    """Our logits and every layer's representation == transformers' on ``tokens`` (the last layer after the final
    LayerNorm, which HF reports as ``last_hidden_state`` and we as the last representation)."""
    logits, hidden, last = hf_outputs(hf_model, tokens)
    with torch.no_grad():
        got = ours(tokens, repr_layers=list(range(LAYERS + 1)))
    assert_close(got["logits"], logits)
    assert len(hidden) == LAYERS + 1
    for layer in range(LAYERS):
        assert_close(got["representations"][layer], hidden[layer])
    assert_close(got["representations"][LAYERS], last)


def write_hf_esm2(transformers, out: Path, seed: int = 0) -> Path:
    """A random transformers ESM-2 (rotary) directory: every weight drawn at random (LayerNorm gains around 1,
    the ``<mask>`` row too: ESM-2 trains it), saved with ``save_pretrained``."""
    config = transformers.EsmConfig(
        vocab_size=33, pad_token_id=1, mask_token_id=32, hidden_size=64, num_hidden_layers=LAYERS,
        num_attention_heads=4, intermediate_size=256, max_position_embeddings=1026, layer_norm_eps=1e-5,
        position_embedding_type="rotary", emb_layer_norm_before=False, token_dropout=True,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(seed)
    model = transformers.EsmForMaskedLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            gain = "norm" in name.lower() and name.endswith("weight")
            param.copy_((1.0 if gain else 0.0) + 0.2 * torch.randn_like(param))
    model.save_pretrained(str(out))
    return out


def copy_dir(src: Path, dst: Path, **config_changes) -> Path:
    """A copy of an HF directory, with ``config.json`` values changed."""
    dst.mkdir()
    for item in src.iterdir():
        (dst / item.name).write_bytes(item.read_bytes())
    config = json.loads((src / "config.json").read_text())
    config.update(config_changes)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def rewrite_weights(directory: Path, change) -> Path:
    """Replace ``model.safetensors`` with ``change(state)``."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(directory / "model.safetensors"))
    save_file(change(dict(state)), str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


@pytest.fixture(scope="module")
def esm2_ours(official_checkpoint):
    """A random fair-esm ESM-2 in the official layout, read by our loader."""
    model, _ = load_model(official_checkpoint("esm2", layers=LAYERS))
    assert model.generation == ESM_2
    return model


@pytest.fixture(scope="module")
def esm2_hf_dir(official_checkpoint, transformers, tmp_path_factory) -> Path:
    """The random official ESM-2 converted to a HuggingFace directory by the CLI (which checks the logits)."""
    out = tmp_path_factory.mktemp("hf") / "esm2_hf"
    assert run_main(main, [str(official_checkpoint("esm2", layers=LAYERS)), "--out", str(out), "--to", "hf"]) == 0
    return out


@pytest.fixture(scope="module")
def hf_esm2_dir(transformers, tmp_path_factory) -> Path:
    """A random transformers ESM-2 saved with save_pretrained."""
    return write_hf_esm2(transformers, tmp_path_factory.mktemp("hf") / "hf_esm2")


def test_key_table_covers_esm2_parameters(transformers, esm2_ours):
    table = key_table(LAYERS, False, ESM_2)
    assert set(table) == set(esm2_ours.state_dict())
    hf_model = transformers.EsmForMaskedLM(transformers.EsmConfig(
        vocab_size=33, pad_token_id=1, mask_token_id=32, hidden_size=64, num_hidden_layers=LAYERS,
        num_attention_heads=4, intermediate_size=256, position_embedding_type="rotary", emb_layer_norm_before=False))
    assert set(table.values()) == set(hf_model.state_dict())
    shared = {ours for ours, theirs in table.items() if list(table.values()).count(theirs) > 1}
    assert shared == {f"layers.{i}.self_attn.rot_emb.inv_freq" for i in range(LAYERS)}
    assert table["layers.2.self_attn.rot_emb.inv_freq"] == INV_FREQ
    assert "embed_positions.weight" not in table and "emb_layer_norm_before.weight" not in table
    assert "emb_layer_norm_before.weight" in key_table(LAYERS, True, ESM_2)  # our ESM-2 may have one; HF too


def test_esm2_to_hf_reproduces_our_model(esm2_hf_dir, esm2_ours, transformers, sample_proteins):
    """Our ESM-2 saved by ``--to hf``: transformers' EsmForMaskedLM gives our logits and hidden states."""
    from safetensors import safe_open

    hf_model = transformers.EsmForMaskedLM.from_pretrained(str(esm2_hf_dir)).eval()
    compare_with_hf(esm2_ours, hf_model, real_batch(sample_proteins))
    config = json.loads((esm2_hf_dir / "config.json").read_text())
    assert config["position_embedding_type"] == "rotary" and config["emb_layer_norm_before"] is False
    assert config["token_dropout"] is True and config["layer_norm_eps"] == 1e-5 and config["rope_theta"] == 10000
    assert config["max_position_embeddings"] == 1024 + 1 + 1 and config["intermediate_size"] == 4 * 64
    with safe_open(str(esm2_hf_dir / "model.safetensors"), "pt") as stored:
        names = set(stored.keys())
        assert torch.equal(stored.get_tensor(SAVED_INV_FREQ), esm2_ours.layers[0].self_attn.rot_emb.inv_freq)
    assert not any("position_embeddings" in name for name in names)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(esm2_hf_dir))
    assert tokenizer.model_max_length == 1024 and tokenizer.mask_token_id == 32


def test_esm2_hf_directory_loads_back_unchanged(esm2_hf_dir, esm2_ours):
    ours, alphabet = load_model(esm2_hf_dir)
    assert ours.generation == ESM_2 and alphabet.name == "esm1b" and ours.embed_positions is None
    assert ours.emb_layer_norm_before is None and ours.token_dropout and ours.max_positions() == 1024
    expected = esm2_ours.state_dict()
    got = ours.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in got)


def test_hf_esm2_loads_as_our_model(hf_esm2_dir, transformers, sample_proteins, recwarn):
    """A transformers ESM-2 (random weights, trained <mask> row) read by our loader == transformers."""
    ours, _ = load_model(hf_esm2_dir)
    assert not [w for w in recwarn if "mask" in str(w.message)]  # ESM-2 keeps its <mask> row: no warning
    assert ours.generation == ESM_2 and ours.embed_tokens.weight[32].abs().sum() > 0
    hf_model = transformers.EsmForMaskedLM.from_pretrained(str(hf_esm2_dir)).eval()
    compare_with_hf(ours, hf_model, real_batch(sample_proteins))


@pytest.mark.parametrize("layout", ["hub", "no_frequencies"])
def test_hub_layouts_of_esm2_load(layout, hf_esm2_dir, transformers, sample_proteins, tmp_path):
    """``facebook/esm2_t*`` files (transformers 4.x): one ``inv_freq`` per layer and an unused position table,
    which transformers ignores and so do we; a file without frequencies gets the computed ones."""

    def change(state):
        frequencies = state.pop(SAVED_INV_FREQ)
        if layout == "hub":
            for i in range(LAYERS):
                state[f"esm.encoder.layer.{i}.attention.self.rotary_embeddings.inv_freq"] = frequencies.clone()
            state["esm.embeddings.position_embeddings.weight"] = torch.randn(1026, 64)
        return state

    src = rewrite_weights(copy_dir(hf_esm2_dir, tmp_path / layout), change)
    ours, _ = load_model(src)
    hf_model = transformers.EsmForMaskedLM.from_pretrained(str(src)).eval()
    compare_with_hf(ours, hf_model, real_batch(sample_proteins))


def test_hf_esm2_to_official_loads_in_fair_esm(hf_esm2_dir, transformers, sample_proteins, tmp_path, capsys):
    out = tmp_path / "esm2_from_hf.pt"
    assert run_main(main, [str(hf_esm2_dir), "--out", str(out), "--to", "official"]) == 0
    assert "max |logits difference|" in capsys.readouterr().out
    theirs, _ = load_model_and_alphabet_local(out)
    tokens = real_batch(sample_proteins)
    logits, _, _ = hf_outputs(transformers.EsmForMaskedLM.from_pretrained(str(hf_esm2_dir)).eval(), tokens)
    with torch.no_grad():
        assert_close(theirs.eval()(tokens)["logits"], logits)


@pytest.mark.parametrize("change, needle", [
    ({"position_embedding_type": "relative_key"},
     "position_embedding_type='relative_key' is neither 'absolute' (ESM-1b) nor 'rotary' (ESM-2)"),
    ({"rope_theta": 500000.0}, "rope_theta=500000.0 but ESM-2 rotates with base 10000"),
    ({"layer_norm_eps": 1e-12}, "layer_norm_eps=1e-12 differs from ESM-2's 1e-05"),
    ({"num_attention_heads": 5}, "hidden_size=64 is not a multiple of num_attention_heads=5"),
    ({"num_attention_heads": 64}, "rotary positions need an even head size"),
    ({"num_hidden_layers": 4}, "config.json says 4 layers, the weights hold 3"),
    ({"num_hidden_layers": 2}, "config.json says 2 layers, the weights hold 3"),
    ({"hidden_size": 32}, "esm.embeddings.word_embeddings.weight has shape (33, 64), the config needs (33, 32)"),
    ({"num_attention_heads": 2}, "esm.contact_head.regression.weight has shape (1, 12), the config needs (1, 6)"),
    ({"emb_layer_norm_before": True}, "esm.embeddings.layer_norm.bias is missing"),
])
def test_esm2_config_mismatches_are_refused(change, needle, hf_esm2_dir, tmp_path, capsys):
    src = copy_dir(hf_esm2_dir, tmp_path / "changed", **change)
    line = convert_error(src, tmp_path, capsys)
    assert needle in line and str(src) in line


@pytest.mark.parametrize("case, needle", [
    ("missing", "esm.encoder.layer.1.output.dense.weight is missing"),
    ("extra", "esm.encoder.extra.weight is not part of this config's EsmForMaskedLM"),
    ("misshaped", "lm_head.dense.weight has shape (64, 32), the config needs (64, 64)"),
])
def test_esm2_weight_mismatches_are_refused(case, needle, hf_esm2_dir, tmp_path, capsys):
    changes = {
        "missing": lambda s: {k: v for k, v in s.items() if k != "esm.encoder.layer.1.output.dense.weight"},
        "extra": lambda s: {**s, "esm.encoder.extra.weight": torch.zeros(3)},
        "misshaped": lambda s: {**s, "lm_head.dense.weight": torch.zeros(64, 32)},
    }
    src = rewrite_weights(copy_dir(hf_esm2_dir, tmp_path / case), changes[case])
    line = convert_error(src, tmp_path, capsys)
    assert needle in line and str(src) in line and "weights do not fit its config.json" in line


def test_esm1_stays_refused(official_checkpoint, tmp_path):
    model, _ = load_model(official_checkpoint("esm1", layers=LAYERS))
    with pytest.raises(CheckpointError, match="ESM-1 has no HuggingFace equivalent"):
        save_hf_model(model, tmp_path / "esm1_hf")
    assert not (tmp_path / "esm1_hf").exists()


def test_layers_with_different_rotary_frequencies_are_refused(tmp_path):
    cfg = EsmConfig(encoder_layers=2, encoder_embed_dim=16, encoder_ffn_embed_dim=64, encoder_attention_heads=2,
                    token_dropout=True, emb_layer_norm_before=False)
    model = ESM1(cfg, load_alphabet("esm1b"), ESM_2)
    model.layers[1].self_attn.rot_emb.inv_freq.mul_(2)
    with pytest.raises(CheckpointError, match="layers.1.self_attn.rot_emb.inv_freq differs from layers.0"):
        save_hf_model(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
