"""Checkpoint I/O: the official key map, export that fair-esm reads, fairseq checkpoints, clear errors."""

from __future__ import annotations

import argparse
import fractions
from pathlib import Path

import pytest
import torch
from esm.pretrained import load_model_and_alphabet_local
from fairseq import options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.models import build_model
from omegaconf import OmegaConf

import fairseq_esm.tasks  # noqa: F401  (registers the plugin: protein_mlm, the esm models)
from fairseq_esm.checkpoints import load_model
from fairseq_esm.checkpoints.pt_files import (
    CheckpointError,
    export_official,
    initialize_from_checkpoint,
    official_to_ours,
    ours_to_official,
    read_file,
    regression_path,
)
from fairseq_esm.modules.alphabet import load_alphabet
from fairseq_esm.modules.generations import ESM_1, ESM_1B, ESM_2

# fair-esm's loader calls a bare torch.load, which since torch 2.6 refuses the Namespace it stores
torch.serialization.add_safe_globals([argparse.Namespace])

# fairseq's namespace -> omegaconf conversion trips Hydra 1.1 deprecation warnings on every config
pytestmark = [
    pytest.mark.filterwarnings(r"ignore:\s*'config' is validated against ConfigStore schema:UserWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning:hydra"),
]
SIZES = ["--encoder-layers", "2", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
         "--encoder-attention-heads", "4", "--max-positions", "64"]
ARCH = {"esm1b": "esm1b_t4_1M", "esm1": "esm1_t6_7M", "esm2": "esm2_t4_1M"}
#: the alphabet of each generation (ESM-2 uses ESM-1b's)
ALPHABET = {"esm1b": "esm1b", "esm1": "esm1", "esm2": "esm1b"}
#: a file name fair-esm reads as each generation (its loader follows the name: esm2* is ESM-2)
FILE = {"esm1b": "{}.pt", "esm1": "{}.pt", "esm2": "esm2_{}.pt"}
SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "MSEQNNTEMTFQIQRIYTKDISFEAPNAPHVFQK", "GSHMLE"]

GOLDEN_KEYS = [
    (ESM_1B, "embed_tokens.weight", "encoder.sentence_encoder.embed_tokens.weight"),
    (ESM_1B, "embed_positions.weight", "encoder.sentence_encoder.embed_positions.weight"),
    (ESM_1B, "layers.0.self_attn.k_proj.weight", "encoder.sentence_encoder.layers.0.self_attn.k_proj.weight"),
    (ESM_1B, "layers.32.final_layer_norm.bias", "encoder.sentence_encoder.layers.32.final_layer_norm.bias"),
    (ESM_1B, "emb_layer_norm_before.weight", "encoder.sentence_encoder.emb_layer_norm_before.weight"),
    (ESM_1B, "emb_layer_norm_after.bias", "encoder.sentence_encoder.emb_layer_norm_after.bias"),
    (ESM_1B, "lm_head.weight", "encoder.lm_head.weight"),
    (ESM_1B, "lm_head.dense.weight", "encoder.lm_head.dense.weight"),
    (ESM_1B, "lm_head.layer_norm.bias", "encoder.lm_head.layer_norm.bias"),
    (ESM_1B, "contact_head.regression.weight", "contact_head.regression.weight"),
    (ESM_1, "embed_tokens.weight", "decoder.embed_tokens.weight"),
    (ESM_1, "embed_positions._float_tensor", "decoder.embed_positions._float_tensor"),
    (ESM_1, "layers.5.self_attn.bias_k", "decoder.layers.5.self_attn.bias_k"),
    (ESM_1, "layers.0.fc1.weight", "decoder.layers.0.fc1.weight"),
    (ESM_1, "embed_out", "decoder.embed_out"),
    (ESM_1, "embed_out_bias", "decoder.embed_out_bias"),
    (ESM_1, "contact_head.regression.bias", "contact_head.regression.bias"),
    (ESM_2, "layers.0.self_attn.rot_emb.inv_freq", "encoder.sentence_encoder.layers.0.self_attn.rot_emb.inv_freq"),
    (ESM_2, "emb_layer_norm_after.weight", "encoder.sentence_encoder.emb_layer_norm_after.weight"),
    (ESM_2, "lm_head.bias", "encoder.lm_head.bias"),
]


class _Task:
    """The one thing ``build_model`` asks of a task: its dictionary."""

    def __init__(self, alphabet):
        self.source_dictionary = alphabet


def cli_cfg(generation: str, *extra: str):
    """The full config fairseq-train builds for a small model of ``generation``."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser, ["unused-data", "--task", "protein_mlm", "--alphabet", ALPHABET[generation], "--arch", ARCH[generation],
                 *SIZES, *(["--encoder-ffn-embed-dim", "128"] if generation == "esm2" else []), *extra]
    )
    return convert_namespace_to_omegaconf(args)


def random_model(generation: str, *extra: str):
    """A small model built the fairseq-train way, every parameter random (the <mask> row zero, as released)."""
    torch.manual_seed(1)
    model = build_model(cli_cfg(generation, *extra).model, _Task(load_alphabet(ALPHABET[generation])))
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.add_(0.1 * torch.randn_like(param))
        if generation == "esm1b":
            model.embed_tokens.weight[model.mask_idx] = 0
    return model.eval()


def tokens(generation: str) -> torch.Tensor:
    """Padded batch with a <mask>."""
    alphabet = load_alphabet(ALPHABET[generation])
    rows = [alphabet.tokenize(s) for s in SEQUENCES]
    out = torch.full((len(rows), max(map(len, rows))), alphabet.padding_idx, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    out[0, 4] = alphabet.mask_idx
    return out


@pytest.mark.parametrize("generation, ours, official", GOLDEN_KEYS)
def test_key_map_golden_values(generation, ours, official):
    assert ours_to_official(ours, generation) == official
    assert official_to_ours(official, generation) == ours


@pytest.mark.parametrize("generation", ["esm1b", "esm1", "esm2"])
def test_key_map_inverts_on_every_parameter(generation):
    model = random_model(generation)
    for key in model.state_dict():
        assert official_to_ours(ours_to_official(key, model.generation), model.generation) == key


@pytest.mark.parametrize("generation", ["esm1b", "esm1", "esm2"])
def test_official_round_trip(generation, tmp_path):
    """ours -> official -> ours -> official: same keys, same tensors, same settings (``args``, or ESM-2's
    ``cfg["model"]``)."""
    first, _ = export_official(random_model(generation), tmp_path / FILE[generation].format("first"))
    reloaded, alphabet = load_model(first)
    assert alphabet.name == ALPHABET[generation] and reloaded.generation.name == generation and not reloaded.training
    second, _ = export_official(reloaded, tmp_path / FILE[generation].format("second"))
    a, b = read_file(first), read_file(second)
    settings = (lambda data: data["cfg"]["model"]) if generation == "esm2" else (lambda data: data["args"])
    assert vars(settings(a)) == vars(settings(b))
    assert settings(a).arch == {"esm1b": "roberta_large", "esm1": "protein_bert_base", "esm2": "ESM2"}[generation]
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    regression = read_file(regression_path(first))["model"]
    assert sorted(regression) == ["contact_head.regression.bias", "contact_head.regression.weight"]


@pytest.mark.parametrize("generation", ["esm1b", "esm1", "esm2"])
@torch.no_grad()
def test_export_loads_in_fair_esm_with_equal_outputs(generation, tmp_path):
    model = random_model(generation)
    path, _ = export_official(model, tmp_path / FILE[generation].format("exported"))
    theirs, their_alphabet = load_model_and_alphabet_local(path)
    batch = tokens(generation)
    expected = theirs.eval()(batch, repr_layers=[2], return_contacts=True)
    for ours in (model, load_model(path)[0]):
        got = ours(batch, repr_layers=[2], return_contacts=True)
        for key in ("logits", "attentions", "contacts"):
            assert (expected[key] - got[key]).abs().max() <= 1e-4, key
        assert (expected["representations"][2] - got["representations"][2]).abs().max() <= 1e-4
    assert len(their_alphabet) == len(load_alphabet(ALPHABET[generation]))


def test_official_file_without_regression_loads_with_a_warning(tmp_path):
    path, regression = export_official(random_model("esm1b"), tmp_path / "model.pt")
    regression.unlink()
    with pytest.warns(UserWarning, match="contact regression"):
        model, _ = load_model(path)
    assert model.lm_head is not None


def test_loading_zeroes_the_esm1b_mask_embedding_like_fair_esm(tmp_path):
    model = random_model("esm1b")
    with torch.no_grad():
        model.embed_tokens.weight[model.mask_idx] = 1.0
    path, _ = export_official(model, tmp_path / "model.pt")
    loaded, alphabet = load_model(path)
    assert loaded.embed_tokens.weight[alphabet.mask_idx].abs().max() == 0
    theirs, _ = load_model_and_alphabet_local(path)
    assert torch.equal(theirs.embed_tokens.weight, loaded.embed_tokens.weight)


def fairseq_checkpoint(model, cfg, path: Path) -> Path:
    """The layout fairseq's Trainer.state_dict writes (the parts a loader reads)."""
    state = {
        "args": None,
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "model": model.state_dict(),
        "optimizer_history": [{"criterion_name": "EsmMaskedLMCriterion", "num_updates": 3}],
        "extra_state": {"previous_training_time": 1.5},
    }
    torch.save(state, path)
    return path


@pytest.mark.parametrize("generation", ["esm1b", "esm1", "esm2"])
@torch.no_grad()
def test_load_fairseq_checkpoint(generation, tmp_path):
    model = random_model(generation)
    path = fairseq_checkpoint(model, cli_cfg(generation), tmp_path / "checkpoint_best.pt")
    loaded, alphabet = load_model(path)
    assert alphabet.name == ALPHABET[generation] and loaded.generation == model.generation and not loaded.training
    assert torch.equal(loaded(tokens(generation))["logits"], model(tokens(generation))["logits"])


@pytest.mark.parametrize("source", ["official", "fairseq"])
def test_pretrained_checkpoint_initialises_the_model(source, tmp_path):
    trained = random_model("esm1b")
    if source == "official":
        path, _ = export_official(trained, tmp_path / "pretrained.pt")
    else:
        path = fairseq_checkpoint(trained, cli_cfg("esm1b"), tmp_path / "checkpoint_best.pt")
    fresh = build_model(cli_cfg("esm1b", "--pretrained-checkpoint", str(path)).model, _Task(load_alphabet("esm1b")))
    expected = trained.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in fresh.state_dict().items())


def test_pretrained_checkpoint_of_the_other_variant_is_refused(tmp_path):
    path, _ = export_official(random_model("esm1"), tmp_path / "esm1_model.pt")
    with pytest.raises(CheckpointError, match="esm1 checkpoint; it cannot initialise an esm1b model"):
        initialize_from_checkpoint(random_model("esm1b"), path)


def test_pretrained_checkpoint_with_other_max_positions_names_it(tmp_path):
    path, _ = export_official(random_model("esm1b"), tmp_path / "model.pt")
    cfg = cli_cfg("esm1b", "--pretrained-checkpoint", str(path), "--max-positions", "128").model
    with pytest.raises(CheckpointError, match=r"embed_positions.weight: checkpoint \(66, 32\).*max_positions=64"):
        build_model(cfg, _Task(load_alphabet("esm1b")))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope.pt")


def test_truncated_file(tmp_path):
    path, _ = export_official(random_model("esm1b"), tmp_path / "model.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model(cut)


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("MKTAYIAKQRQ\n")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model(text)
    other = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], other)
    with pytest.raises(CheckpointError, match="not a model checkpoint"):
        load_model(other)


def test_random_bytes_are_unreadable_not_unsafe(tmp_path):
    """torch refuses random bytes with the same UnpicklingError as a pickle payload; the file's own structure
    (a pickle that does not parse) tells them apart, so --allow-unsafe is not offered for junk."""
    junk = tmp_path / "junk.pt"
    junk.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint") as err:
        load_model(junk)
    assert "allow-unsafe" not in str(err.value) and "weights_only" not in str(err.value)


def rewrite(path: Path, edit) -> Path:
    """Apply ``edit`` to an official file's dict in place."""
    data = read_file(path)
    edit(data)
    torch.save(data, path)
    return path


def test_unknown_official_arch(tmp_path):
    path, _ = export_official(random_model("esm1b"), tmp_path / "model.pt")
    rewrite(path, lambda d: setattr(d["args"], "arch", "transformer_lm"))
    with pytest.raises(CheckpointError, match="unknown arch 'transformer_lm'"):
        load_model(path)


def test_vocabulary_mismatch(tmp_path):
    path, _ = export_official(random_model("esm1b"), tmp_path / "model.pt")

    def widen(data):
        for key in ("encoder.sentence_encoder.embed_tokens.weight", "encoder.lm_head.weight", "encoder.lm_head.bias"):
            data["model"][key] = torch.cat([data["model"][key], data["model"][key][:2]])

    rewrite(path, widen)
    with pytest.raises(CheckpointError, match="vocabulary size mismatch: checkpoint embeds 35 tokens.*has 33"):
        load_model(path)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    path, _ = export_official(random_model("esm1"), tmp_path / "model.pt")

    def damage(data):
        del data["model"]["decoder.layers.1.fc2.bias"]
        data["model"]["decoder.layers.1.adapter.weight"] = torch.zeros(1)

    rewrite(path, damage)
    with pytest.raises(CheckpointError, match="missing keys: layers.1.fc2.bias; unexpected keys: layers.1.adapter"
                       ) as err:
        load_model(path)
    assert str(err.value).startswith(f"{path} does not fit the esm1 model its config describes: ")
    assert "\n" not in str(err.value)


def test_arbitrary_objects_need_allow_unsafe(tmp_path):
    path, _ = export_official(random_model("esm1b"), tmp_path / "model.pt")
    rewrite(path, lambda d: setattr(d["args"], "lr", fractions.Fraction(1, 3)))
    with pytest.raises(CheckpointError, match=r"\(fractions.Fraction\); .*--allow-unsafe \(allow_unsafe=True") as err:
        load_model(path)
    assert "weights_only" not in str(err.value) and err.value.__cause__ is None and err.value.__suppress_context__
    model, _ = load_model(path, allow_unsafe=True)
    assert model.num_layers == 2


def test_export_refuses_names_fair_esm_would_misread(tmp_path):
    with pytest.raises(ValueError, match="file name"):
        export_official(random_model("esm1b"), tmp_path / "esm2_mine.pt")
    with pytest.raises(ValueError, match="ESM-2 file name must start with esm2"):
        export_official(random_model("esm2"), tmp_path / "mine.pt")
    with pytest.raises(ValueError, match="feed-forward width of 4 x embed_dim"):
        export_official(random_model("esm2", "--encoder-ffn-embed-dim", "96"), tmp_path / "esm2_narrow.pt")


def test_esm2_keeps_its_mask_embedding_like_fair_esm(tmp_path):
    """fair-esm zeroes the <mask> row of ESM-1b files on load, never of ESM-2 files (the tied head uses it)."""
    model = random_model("esm2")
    path, _ = export_official(model, tmp_path / "esm2_model.pt")
    loaded, alphabet = load_model(path)
    assert loaded.embed_tokens.weight[alphabet.mask_idx].abs().max() > 0
    theirs, _ = load_model_and_alphabet_local(path)
    assert torch.equal(theirs.embed_tokens.weight, loaded.embed_tokens.weight)


def esm2_damaged(tmp_path: Path, damage) -> Path:
    """An official ESM-2 file (2 layers, dim 32, 4 heads) with ``damage`` applied to its dict."""
    path, _ = export_official(random_model("esm2"), tmp_path / "esm2_damaged.pt")
    return rewrite(path, damage)


def set_setting(name: str, value):
    return lambda data: setattr(data["cfg"]["model"], name, value)


PREFIX = "encoder.sentence_encoder."


@pytest.mark.parametrize("damage, first", [
    (lambda d: d["model"].pop(PREFIX + "layers.1.fc2.bias"), "missing keys: layers.1.fc2.bias"),
    (lambda d: d["model"].update({PREFIX + "layers.1.adapter.weight": torch.zeros(1)}),
     "unexpected keys: layers.1.adapter.weight"),
    (lambda d: d["model"].update({PREFIX + "layers.0.fc1.weight": torch.zeros(64, 31)}),
     "shape mismatches: layers.0.fc1.weight: checkpoint (64, 31) != model (128, 32)"),
    (set_setting("encoder_layers", 3), "the config says 3 layers, the weights hold 2"),
    (set_setting("encoder_embed_dim", 64), "the config says embed_dim 64, the weights have 32"),
    (set_setting("encoder_attention_heads", 2), "the config says 2 attention heads, the weights' rotary "
                                                "frequencies fit 4"),
], ids=["missing", "extra", "misshaped", "layers", "width", "heads"])
def test_damaged_esm2_file_is_one_line_naming_the_file_and_the_first_mismatch(damage, first, tmp_path):
    path = esm2_damaged(tmp_path, damage)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path} does not fit the esm2 model its config describes: ")
    assert message.split("describes: ", 1)[1].startswith(first), message


def test_fairseq_load_state_dict_of_another_size_is_one_short_error():
    """fairseq's resume and validate call model.load_state_dict(strict=True): a checkpoint of another
    depth is refused with a capped list of keys, not torch's page-long RuntimeError."""
    deeper = random_model("esm1b", "--encoder-layers", "4").state_dict()
    model = random_model("esm1b")
    with pytest.raises(CheckpointError, match=r"--arch or its sizes changed\?\): the config says 2 layers, the "
                       r"weights hold 4; unexpected keys: .*more\)") as err:
        model.load_state_dict(deeper, strict=True, model_cfg=model.cfg)
    assert str(err.value).endswith(
        "; shape mismatches: contact_head.regression.weight: checkpoint (1, 16) != model (1, 8)"
    ) and "\n" not in str(err.value)
    model.load_state_dict(random_model("esm1b").state_dict(), strict=True, model_cfg=model.cfg)  # same size: loads
