"""Our ESM-1b / ESM-1 / ESM-2 against fair-esm's own ``ProteinBertModel`` / ``ESM2`` on real proteins, plus
model-level checks.

fair-esm builds small random models (LayerNorms and biases perturbed away from their init), the
test writes them in the official file layout (the inverse of fair-esm's upgrade code), and both
loaders read the same file. Every output must agree to 1e-4 in float32.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from esm.model.esm2 import ESM2
from esm.pretrained import load_model_and_alphabet_local
from fairseq import options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.models import build_model
from helpers.oracle import fair_esm_model, official_name, write_official
from helpers.proteins import read_proteins

import fairseq_esm.tasks  # noqa: F401  (registers the plugin: tasks, criterions, models)
from fairseq_esm.checkpoints import load_model
from fairseq_esm.models.esm import Esm1bConfig, Esm1bModel
from fairseq_esm.modules.alphabet import load_alphabet

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4
# fairseq's namespace -> omegaconf conversion trips Hydra 1.1 deprecation warnings on every config
pytestmark = [
    pytest.mark.filterwarnings(r"ignore:\s*'config' is validated against ConfigStore schema:UserWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning:hydra"),
]
LAYERS, DIM, FFN, HEADS = 3, 64, 128, 4
#: the alphabet of each generation (ESM-2 uses ESM-1b's)
ALPHABET = {"esm1b": "esm1b", "esm1": "esm1", "esm2": "esm1b"}


def real_proteins(count: int = 4, max_len: int = 60) -> list[str]:
    """The first proteins of the shipped UniProt sample, cut to different lengths (so batches pad)."""
    return [p[: max_len - 9 * i] for i, p in enumerate(read_proteins(count))]


def batch(generation: str) -> torch.Tensor:
    """Padded (B, T) tokens of real proteins with a few residues replaced by <mask>."""
    alphabet = load_alphabet(ALPHABET[generation])
    rows = [alphabet.tokenize(p) for p in real_proteins()]
    tokens = torch.full((len(rows), max(len(r) for r in rows)), alphabet.padding_idx, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row
    tokens[0, [3, 10, 11]] = alphabet.mask_idx
    tokens[2, 5] = alphabet.mask_idx
    assert tokens.eq(alphabet.padding_idx).any(dim=1).sum() == len(rows) - 1  # all but the longest pad
    return tokens


@pytest.fixture(scope="module", params=["esm1b", "esm1", "esm2"])
def loaded(request, tmp_path_factory):
    """(generation, fair-esm's model, ours), both read from the same official file."""
    folder = tmp_path_factory.mktemp("official")
    path = write_official(fair_esm_model(request.param), folder / official_name(request.param))
    theirs, _ = load_model_and_alphabet_local(path)
    ours, alphabet = load_model(path)
    assert alphabet.name == ALPHABET[request.param] and ours.generation.name == request.param
    return request.param, theirs.eval(), ours


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@torch.no_grad()
def test_outputs_match_fair_esm(loaded):
    generation, theirs, ours = loaded
    tokens = batch(generation)
    kwargs = dict(repr_layers=range(LAYERS + 1), return_contacts=True)
    expected, got = theirs(tokens, **kwargs), ours(tokens, **kwargs)
    for key in ("logits", "attentions", "contacts"):
        assert max_diff(expected[key], got[key]) <= TOLERANCE, key
    assert expected["representations"].keys() == got["representations"].keys()
    for layer, rep in expected["representations"].items():
        assert max_diff(rep, got["representations"][layer]) <= TOLERANCE, layer
    assert got["attentions"].shape == (tokens.size(0), LAYERS, HEADS, tokens.size(1), tokens.size(1))


@torch.no_grad()
def test_fused_path_matches_fair_esm(loaded):
    """Without head weights we run SDPA, fair-esm runs torch's multi_head_attention_forward."""
    generation, theirs, ours = loaded
    tokens = batch(generation)
    expected, got = theirs(tokens, repr_layers=[LAYERS]), ours(tokens, repr_layers=[LAYERS])
    assert "attentions" not in got
    assert max_diff(expected["logits"], got["logits"]) <= TOLERANCE
    assert max_diff(expected["representations"][LAYERS], got["representations"][LAYERS]) <= TOLERANCE


@torch.no_grad()
def test_sdpa_equals_explicit_softmax(loaded):
    generation, _, ours = loaded
    tokens = batch(generation)
    fused = ours(tokens, repr_layers=range(LAYERS + 1))
    explicit = ours(tokens, repr_layers=range(LAYERS + 1), need_head_weights=True)
    assert max_diff(fused["logits"], explicit["logits"]) <= TOLERANCE
    for layer in range(LAYERS + 1):
        assert max_diff(fused["representations"][layer], explicit["representations"][layer]) <= TOLERANCE


@torch.no_grad()
def test_unpadded_single_sequence_matches(loaded):
    generation, theirs, ours = loaded
    tokens = batch(generation)[:1]
    assert max_diff(theirs(tokens)["logits"], ours(tokens)["logits"]) <= TOLERANCE


@torch.no_grad()
def test_masked_tokens_select_logit_rows(loaded):
    generation, _, ours = loaded
    tokens = batch(generation)
    masked = tokens.eq(ours.mask_idx)
    full = ours(tokens)["logits"]
    assert torch.equal(ours(tokens, masked_tokens=masked)["logits"], full[masked])


@torch.no_grad()
def test_predict_contacts(loaded):
    generation, theirs, ours = loaded
    tokens = batch(generation)
    assert max_diff(theirs.predict_contacts(tokens), ours.predict_contacts(tokens)) <= TOLERANCE


@pytest.mark.parametrize("layers, dim, heads", [(6, 320, 20), (12, 480, 20), (4, 160, 40)],
                         ids=["t6_8M", "t12_35M", "40_heads"])
@torch.no_grad()
def test_esm2_at_official_shapes_matches_fair_esm(layers, dim, heads, tmp_path):
    """ESM-2 at the t6 and t12 shapes and with more heads than 20: logits, every layer's representation and
    contacts within 1e-4 on a padded batch of unequal lengths, with and without the fused attention; and the
    file our exporter writes is read by fair-esm's own loader to the same outputs."""
    from fairseq_esm.checkpoints.pt_files import export_official

    path = write_official(fair_esm_model("esm2", layers=layers, dim=dim, heads=heads), tmp_path / "esm2_shape.pt")
    theirs, _ = load_model_and_alphabet_local(path)
    ours, _ = load_model(path)
    tokens = batch("esm2")
    everything = dict(repr_layers=range(layers + 1), return_contacts=True)
    expected, got = theirs.eval()(tokens, **everything), ours(tokens, **everything)
    for key in ("logits", "contacts"):
        assert max_diff(expected[key], got[key]) <= TOLERANCE, key
    for layer in range(layers + 1):
        assert max_diff(expected["representations"][layer], got["representations"][layer]) <= TOLERANCE, layer
    fused = ours(tokens, repr_layers=range(layers + 1))  # SDPA: no attention matrix
    for layer in range(layers + 1):
        assert max_diff(expected["representations"][layer], fused["representations"][layer]) <= TOLERANCE, layer
    exported, _ = export_official(ours, tmp_path / "esm2_ours.pt")
    reread, _ = load_model_and_alphabet_local(exported)
    again = reread.eval()(tokens, **everything)
    for key in ("logits", "contacts"):
        assert max_diff(again[key], got[key]) <= TOLERANCE, key


def test_esm2_rotary_attention_keeps_the_fused_kernel(monkeypatch):
    """Rotary positions rotate queries and keys before SDPA; no (T, T) matrix is written out."""
    model = load_model_from_oracle("esm2")
    explicit = []
    for layer in model.layers:
        original = layer.self_attn._explicit_attention
        monkeypatch.setattr(layer.self_attn, "_explicit_attention",
                            lambda *a, _f=original, **k: explicit.append(1) or _f(*a, **k))
    with torch.no_grad():
        model(batch("esm2"), repr_layers=[LAYERS])
    assert not explicit


def load_model_from_oracle(generation: str):
    """Our model with a fair-esm model's weights, built in memory (no files)."""
    from fairseq_esm.checkpoints.pt_files import checkpoint_contents, model_of
    reference = fair_esm_model(generation)
    body = {("encoder." if k.startswith("lm_head.") else "encoder.sentence_encoder.") + k: v
            for k, v in reference.state_dict().items()}
    sizes = {"encoder_layers": LAYERS, "encoder_embed_dim": DIM, "encoder_attention_heads": HEADS,
             "token_dropout": True}
    return model_of(checkpoint_contents({"cfg": {"model": sizes}, "model": body}, "memory.pt"), "memory")[0]


def esm1b_tiny(**overrides):
    """A fresh small ESM-1b of ours, for checks that need no reference."""
    sizes = dict(encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=4)
    alphabet = load_alphabet("esm1b")
    return Esm1bModel(Esm1bConfig(max_positions=128, **sizes, **overrides), alphabet), alphabet


def test_inputs_longer_than_max_positions_are_refused():
    model, _ = esm1b_tiny()
    with pytest.raises(ValueError, match="max_positions"):
        model(torch.full((1, 130), 5))


def test_token_dropout_rescales_without_masks():
    """ESM-1b scales embeddings by 0.88 at inference when nothing is masked."""
    model, alphabet = esm1b_tiny(emb_layer_norm_before=False)
    tokens = alphabet.tokenize("MKTAYIAK")[None]
    x = model._embed(tokens, tokens.eq(alphabet.padding_idx))
    expected = 0.88 * model.embed_tokens(tokens) + model.embed_positions(tokens)
    assert max_diff(x, expected) <= 1e-6


# measured parameter counts: the published ones for the released sizes, the name's for the small ones
ARCH_PARAMS = {
    "esm1b_t33_650M_UR50S": 652_359_094,
    "esm1b_t12_34M": 33_994_834,
    "esm1b_t6_8M": 7_841_434,
    "esm1b_t6_3M": 2_910_826,
    "esm1b_t4_1M": 945_986,
    "esm1_t34_670M_UR50S": 669_210_316,
    "esm1_t12_85M_UR50S": 85_126_836,
    "esm1_t6_43M_UR50S": 42_590_316,
    "esm1_t6_7M": 7_424_156,
    "esm2_t4_1M": 814_402,
}
#: ESM-2's released sizes: (layers, dim, heads) of fair-esm's ESM2, whose parameter count ours must equal
ESM2_RELEASED = {
    "esm2_t6_8M_UR50D": (6, 320, 20),
    "esm2_t12_35M_UR50D": (12, 480, 20),
    "esm2_t30_150M_UR50D": (30, 640, 20),
    "esm2_t33_650M_UR50D": (33, 1280, 20),
    "esm2_t36_3B_UR50D": (36, 2560, 40),
    "esm2_t48_15B_UR50D": (48, 5120, 40),
}


class _Task:
    """The one thing ``build_model`` asks of a task: its dictionary."""

    def __init__(self, alphabet):
        self.source_dictionary = alphabet


def cli_model_cfg(arch: str, *extra: str):
    """The model config fairseq-train builds from ``--arch arch`` (task defaults, max_positions 1024)."""
    generation = arch.split("_")[0]
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser, ["unused-data", "--task", "protein_mlm", "--alphabet", ALPHABET[generation], "--arch", arch, *extra]
    )
    return convert_namespace_to_omegaconf(args).model, generation


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", sorted(ARCH_PARAMS) + sorted(ESM2_RELEASED))
def test_named_arch_parameter_count(arch):
    """The published counts (ESM-1/ESM-1b), fair-esm's ESM2 at the released ESM-2 sizes (built on the meta
    device: the 15B model allocates nothing), and the small ones' names."""
    cfg, generation = cli_model_cfg(arch)
    with torch.device("meta"):
        model = build_model(cfg, _Task(load_alphabet(ALPHABET[generation])))
        if arch in ESM2_RELEASED:
            layers, dim, heads = ESM2_RELEASED[arch]
            reference = ESM2(num_layers=layers, embed_dim=dim, attention_heads=heads)
    assert model.generation.name == generation
    assert model.token_dropout == (generation in ("esm1b", "esm2"))
    expected = parameter_count(reference) if arch in ESM2_RELEASED else ARCH_PARAMS[arch]
    assert parameter_count(model) == expected
    if arch in ESM2_RELEASED:
        assert model.state_dict().keys() == reference.state_dict().keys()  # rot_emb.inv_freq included


def test_arch_sizes_can_be_overridden_on_the_command_line():
    cfg, _ = cli_model_cfg("esm1b_t4_1M", "--encoder-layers", "2", "--token-dropout")
    assert (cfg.encoder_layers, cfg.encoder_embed_dim, cfg.token_dropout) == (2, 128, False)


@pytest.mark.parametrize("arch, wrong", [("esm1b_t4_1M", "esm1"), ("esm1_t6_7M", "esm1b"), ("esm2_t4_1M", "esm1")])
def test_build_model_refuses_the_other_alphabet(arch, wrong):
    cfg, _ = cli_model_cfg(arch)
    with pytest.raises(ValueError, match="needs the .* alphabet.*--alphabet"):
        build_model(cfg, _Task(load_alphabet(wrong)))


def test_fresh_model_is_bert_initialised():
    model, alphabet = esm1b_tiny()
    weights = torch.cat([layer.fc1.weight.flatten() for layer in model.layers])
    assert abs(weights.std().item() - 0.02) < 0.002
    assert all(layer.fc1.bias.abs().max() == 0 for layer in model.layers)
    assert model.embed_tokens.weight[alphabet.padding_idx].abs().max() == 0
    assert model.lm_head.weight is model.embed_tokens.weight



FAIR_ESM_SCRIPT = """
import torch
{import_line}
data = [("p1", "MKTAYIAKQRQISFVKSHFSRQ"), ("p2", "KALTARQQEVFDLIRD<mask>GHQ"), ("p3", "MKV")]
model, alphabet = {load}
model.eval()
batch_converter = alphabet.get_batch_converter()
labels, strs, tokens = batch_converter(data)
with torch.no_grad():
    results = model(tokens, repr_layers=[{layers}], return_contacts=True)
torch.save({{"tokens": tokens, **{{k: results[k] for k in ("logits", "attentions", "contacts")}},
            "last": results["representations"][{layers}]}}, OUT)
"""


@pytest.mark.parametrize("generation", ["esm1b", "esm1", "esm2"])
def test_a_fair_esm_script_runs_by_changing_its_import_line(generation, tmp_path):
    """The README's promise: ``import fairseq_esm as esm`` and ``esm.load_model(path)`` for fair-esm's loader."""
    path = write_official(fair_esm_model(generation), tmp_path / official_name(generation))
    variants = {"fair_esm": ("import esm", f"esm.pretrained.load_model_and_alphabet_local({str(path)!r})"),
                "ours": ("import fairseq_esm as esm", f"esm.load_model({str(path)!r})")}
    outputs = {}
    for name, (import_line, load) in variants.items():
        out = tmp_path / f"{name}.pt"
        exec(FAIR_ESM_SCRIPT.format(import_line=import_line, load=load, layers=LAYERS), {"OUT": out})
        outputs[name] = torch.load(out)
    assert torch.equal(outputs["fair_esm"]["tokens"], outputs["ours"]["tokens"])
    for key in ("logits", "attentions", "contacts", "last"):
        assert max_diff(outputs["fair_esm"][key], outputs["ours"][key]) <= TOLERANCE, key
