"""HuggingFace ``EsmForMaskedLM`` <-> this plugin's ESM-1b and ESM-2: one explicit key table, config checks,
load and save.

transformers' ``EsmForMaskedLM`` computes both generations under other names; its config's
``position_embedding_type`` says which: ``absolute`` is ESM-1b (learned positions indexed from ``padding_idx + 1``,
so ``max_position_embeddings = max_positions + padding_idx + 1``, 1026 for the 1024-position model), ``rotary``
is ESM-2 (the ``facebook/esm2_t*`` configs: no LayerNorm before the first layer; ``max_position_embeddings`` is
kept with the same meaning though nothing is looked up). Both have the same token dropout and padding zeroing,
pre-LN layers and the RoBERTa LM head tied to the word embeddings. ESM-1 has no counterpart.

Rotary frequencies: transformers 5.x keeps ONE persistent buffer ``esm.rotary_embeddings.inv_freq`` (head_dim / 2
floats) for every layer, where our model, like fair-esm, keeps one per layer (``layers.{i}.self_attn.rot_emb.
inv_freq``). ``save_pretrained`` (5.24) writes it under the literal key ``esm.encoder.layer.*.attention.self.
rotary_embeddings.inv_freq`` and Hub files written by transformers 4.x hold one per layer; ``from_pretrained``
reads all of these (the first layer's value) and recomputes it from ``rope_theta`` where none is stored. Hub
ESM-2 files also hold an unused ``esm.embeddings.position_embeddings.weight``, which transformers, and so this
loader, ignores.
"""

from __future__ import annotations

import re
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from fairseq_esm.checkpoints.pt_files import REGRESSION_KEYS, CheckpointError, load_weights
from fairseq_esm.modules.alphabet import Alphabet, load_alphabet
from fairseq_esm.modules.esm1 import ESM1, EsmConfig
from fairseq_esm.modules.generations import ESM_1, ESM_1B, ESM_2, Generation

#: what ``from_pretrained`` reads weights from, plain or sharded
WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)
#: the generation EsmForMaskedLM computes, by its config's ``position_embedding_type``
HF_GENERATIONS = {"absolute": ESM_1B, "rotary": ESM_2}
#: the generations' names in messages
LABELS = {ESM_1B.name: "ESM-1b", ESM_2.name: "ESM-2"}
#: ESM-2's rotary base (``rope_theta``): frequencies ``base^(-2i/head_dim)``, as :mod:`fairseq_esm.modules.rotary`
ROTARY_BASE = 10000.0

#: our parameter name -> EsmForMaskedLM's, outside the Transformer layers, in every generation
GLOBAL_KEYS = {
    "embed_tokens.weight": "esm.embeddings.word_embeddings.weight",
    "emb_layer_norm_before.weight": "esm.embeddings.layer_norm.weight",
    "emb_layer_norm_before.bias": "esm.embeddings.layer_norm.bias",
    "emb_layer_norm_after.weight": "esm.encoder.emb_layer_norm_after.weight",
    "emb_layer_norm_after.bias": "esm.encoder.emb_layer_norm_after.bias",
    "contact_head.regression.weight": "esm.contact_head.regression.weight",
    "contact_head.regression.bias": "esm.contact_head.regression.bias",
    "lm_head.dense.weight": "lm_head.dense.weight",
    "lm_head.dense.bias": "lm_head.dense.bias",
    "lm_head.layer_norm.weight": "lm_head.layer_norm.weight",
    "lm_head.layer_norm.bias": "lm_head.layer_norm.bias",
    "lm_head.weight": "lm_head.decoder.weight",  # tied to the token embeddings on both sides
    "lm_head.bias": "lm_head.bias",
}
#: what carries positions, by :attr:`Generation.positions`; ``{i}`` is every layer (all of ours map to the one
#: rotary buffer transformers shares among its layers)
POSITION_KEYS = {
    "learned": {"embed_positions.weight": "esm.embeddings.position_embeddings.weight"},
    "rotary": {"layers.{i}.self_attn.rot_emb.inv_freq": "esm.rotary_embeddings.inv_freq"},
}
#: module of layer i: ours under ``layers.{i}.`` -> EsmForMaskedLM's under ``esm.encoder.layer.{i}.``
LAYER_MODULES = {
    "self_attn.q_proj": "attention.self.query",
    "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value",
    "self_attn.out_proj": "attention.output.dense",
    "self_attn_layer_norm": "attention.LayerNorm",
    "fc1": "intermediate.dense",
    "fc2": "output.dense",
    "final_layer_norm": "LayerNorm",
}
#: EsmForMaskedLM's names that a directory may lack: the contact regression (loaded with a warning) and the
#: rotary frequencies (transformers computes them from ``rope_theta``, which must be ESM-2's)
OPTIONAL_HF_KEYS = frozenset({GLOBAL_KEYS[k] for k in REGRESSION_KEYS} | set(POSITION_KEYS["rotary"].values()))
HF_LAYER_KEY = re.compile(r"^esm\.encoder\.layer\.(\d+)\.")
ESM1_REFUSAL = (
    "ESM-1 has no HuggingFace equivalent: transformers' ESM1 has no sinusoidal positions, no sqrt(d) "
    "embedding scale and no learned attention bias_k/bias_v; convert ESM-1 to 'official' or 'fairseq' instead"
)


class TransformersMissing(CheckpointError):
    """HuggingFace conversion asked for without transformers installed."""


def position_embedding_type(generation: Generation) -> str:
    """EsmForMaskedLM's ``position_embedding_type`` for ``generation``; ESM-1 (no counterpart) is refused."""
    for kind, known in HF_GENERATIONS.items():
        if known == generation:
            return kind
    raise CheckpointError(ESM1_REFUSAL if generation == ESM_1 else f"{generation.name} has no HuggingFace equivalent")


def key_table(num_layers: int, emb_layer_norm_before: bool = True, generation: Generation = ESM_1B) -> dict[str, str]:
    """Every parameter and buffer of our ``generation`` model with ``num_layers`` layers -> its EsmForMaskedLM
    name (one-to-one except ESM-2's per-layer rotary frequencies, which all map to transformers' one buffer)."""
    position_embedding_type(generation)  # refuses ESM-1
    table = {
        ours: theirs for ours, theirs in GLOBAL_KEYS.items()
        if emb_layer_norm_before or not ours.startswith("emb_layer_norm_before.")
    }
    for ours, theirs in POSITION_KEYS[generation.positions].items():
        table.update({ours.format(i=i): theirs for i in range(num_layers)} if "{i}" in ours else {ours: theirs})
    for i in range(num_layers):
        for ours, theirs in LAYER_MODULES.items():
            for kind in ("weight", "bias"):
                table[f"layers.{i}.{ours}.{kind}"] = f"esm.encoder.layer.{i}.{theirs}.{kind}"
    return table


def _hide_broken_torchaudio() -> None:
    """transformers imports torchaudio whenever it is installed; one built for another torch (torchaudio
    2.11 with torch 2.13) raises OSError on import, which would break ESM, which never uses audio.
    Only in that case: ``sys.modules[...] = None`` makes ``find_spec`` report it absent."""
    if "torchaudio" in sys.modules:
        return
    try:
        import torchaudio  # noqa: F401
    except ModuleNotFoundError:
        return
    except Exception:  # OSError / ImportError from a binary built against another torch
        for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
            del sys.modules[name]
        sys.modules["torchaudio"] = None


def import_transformers() -> Any:
    """The ``transformers`` module, or a one-line error saying how to install it."""
    _hide_broken_torchaudio()
    try:
        import transformers
    except ImportError as err:
        raise TransformersMissing(
            f"HuggingFace models need transformers ({err}); install it with: pip install 'fairseq-esm[hf]'"
        ) from err
    return transformers


def config_problems(config: Any, alphabet: Alphabet) -> list[str]:
    """What keeps an HF ESM config from being this plugin's ESM-1b or ESM-2 (empty when it fits)."""

    def get(name: str, default: Any = None) -> Any:
        return getattr(config, name, default)

    problems = []
    if get("model_type") != "esm":
        problems.append(f"model_type={get('model_type')!r}, not 'esm'")
    if get("is_folding_model"):
        problems.append("is_folding_model=True (ESMFold), not a masked language model")
    kind = get("position_embedding_type", "absolute")
    generation = HF_GENERATIONS.get(kind)
    if generation is None:
        problems.append(f"position_embedding_type={kind!r} is neither 'absolute' (ESM-1b) nor 'rotary' (ESM-2)")
        generation = ESM_1B
    label = LABELS[generation.name]
    if abs(float(get("layer_norm_eps", 0.0) or 0.0) - generation.layer_norm_eps) > 1e-12:
        problems.append(f"layer_norm_eps={get('layer_norm_eps')} differs from {label}'s {generation.layer_norm_eps}")
    if get("is_decoder") or get("add_cross_attention"):
        problems.append(f"is_decoder/add_cross_attention set; {label} is a bidirectional encoder")
    if not get("tie_word_embeddings", True):
        problems.append(f"tie_word_embeddings=False; {label}'s LM head is tied to the token embeddings")
    expected = {"vocab_size": len(alphabet), "pad_token_id": alphabet.padding_idx, "mask_token_id": alphabet.mask_idx}
    problems += [f"{name}={get(name)} but the ESM-1b alphabet has {want}"
                 for name, want in expected.items() if get(name) != want]
    if get("max_position_embeddings", 0) <= alphabet.padding_idx + 1:
        problems.append(f"max_position_embeddings={get('max_position_embeddings')} leaves no positions "
                        f"(ESM-1b and ESM-2 use max_positions + padding_idx + 1)")
    return problems + _head_problems(get("hidden_size", 0), get("num_attention_heads", 0), generation,
                                     get("rope_theta"))


def _head_problems(width: int, heads: int, generation: Generation, rope_theta: Any) -> list[str]:
    """Attention shapes our model cannot build: a width the heads do not divide, an odd rotary head, another base."""
    if not heads or width % heads:
        return [f"hidden_size={width} is not a multiple of num_attention_heads={heads}"]
    if generation.positions != "rotary":
        return []
    problems = []
    if (width // heads) % 2:
        problems.append(f"rotary positions need an even head size, not hidden_size / num_attention_heads = "
                        f"{width // heads}")
    if rope_theta is not None and float(rope_theta) != ROTARY_BASE:
        problems.append(f"rope_theta={rope_theta} but ESM-2 rotates with base {ROTARY_BASE:g}")
    return problems


def _first_difference(tokens: list[str], symbols: list[str]) -> str:
    """Where two token lists first differ, for an error message."""
    for index, (theirs, ours) in enumerate(zip(tokens, symbols, strict=False)):
        if theirs != ours:
            return f"index {index}: {theirs!r} != {ours!r}"
    return f"length: {len(tokens)} tokens != {len(symbols)}"


def vocab_problems(path: Path, config: Any, alphabet: Alphabet) -> list[str]:
    """Differences between the directory's vocabulary (``vocab.txt``, ``config.vocab_list``) and ours."""
    problems = []
    sources = {"config.json vocab_list": getattr(config, "vocab_list", None)}
    if (path / "vocab.txt").is_file():
        sources["vocab.txt"] = (path / "vocab.txt").read_text(encoding="utf-8").split()
    for name, tokens in sources.items():
        if tokens is not None and list(tokens) != list(alphabet.symbols):
            problems.append(f"{name} differs from the ESM-1b alphabet at {_first_difference(tokens, alphabet.symbols)}")
    return problems


def _read_config(transformers: Any, path: Path) -> Any:
    """``AutoConfig`` of the directory, read errors as CheckpointError."""
    try:
        return transformers.AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{path}/config.json is not a readable HuggingFace config: {err}") from err


@contextmanager
def _quiet(transformers: Any) -> Iterator[None]:
    """transformers' loading report off: what it would print, :func:`weight_problems` says in one line."""
    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.utils.logging.set_verbosity(verbosity)


def _from_pretrained(transformers: Any, path: Path, config: Any) -> tuple[Any, dict]:
    """EsmForMaskedLM with the directory's weights, plus transformers' loading report (missing, unexpected and
    misshaped keys; misshaped ones are reported, not raised, so that the error can name them)."""
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise CheckpointError(f"{path} has config.json but no weights (expected one of {', '.join(WEIGHT_FILES)})")
    try:
        with _quiet(transformers):
            return transformers.EsmForMaskedLM.from_pretrained(
                str(path), config=config, output_loading_info=True, ignore_mismatched_sizes=True
            )
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: transformers could not read the weights: {err}") from err


def _layer_count_problem(table: dict[str, str], num_layers: int, missing: set[str], unexpected: set[str]
                         ) -> Optional[str]:
    """``config.json says N layers, the weights hold M`` when whole layers are missing or extra, else None."""
    extra = {int(m.group(1)) for key in unexpected if (m := HF_LAYER_KEY.match(key))}
    held = num_layers
    if extra and min(extra) >= num_layers:
        held = max(extra) + 1
    elif not extra:
        absent = [i for i in range(num_layers)
                  if all(t in missing for t in table.values() if t.startswith(f"esm.encoder.layer.{i}."))]
        if absent and absent == list(range(absent[0], num_layers)):
            held = absent[0]
    return None if held == num_layers else f"config.json says {num_layers} layers, the weights hold {held}"


def weight_problems(info: dict, table: dict[str, str], num_layers: int) -> list[str]:
    """Where the directory's weights disagree with its config.json, from transformers' loading report, the most
    telling first: layer count, misshaped, missing (the optional ones aside), unexpected."""
    missing = set(info.get("missing_keys", ())) - OPTIONAL_HF_KEYS
    unexpected = set(info.get("unexpected_keys", ()))
    layers = _layer_count_problem(table, num_layers, missing, unexpected)
    return ([layers] if layers else []) + [
        f"{name} has shape {tuple(stored)}, the config needs {tuple(wanted)}"
        for name, stored, wanted in sorted(info.get("mismatched_keys", ()), key=lambda item: str(item[0]))
    ] + [f"{name} is missing" for name in sorted(missing)] + [
        f"{name} is not part of this config's EsmForMaskedLM" for name in sorted(unexpected)
    ]


def _ours_from_hf_state(hf_state: dict[str, torch.Tensor], table: dict[str, str], info: dict, source: str,
                        num_layers: int) -> tuple[dict[str, torch.Tensor], frozenset[str]]:
    """Our state dict, and the regression keys to treat as optional when the directory lacks them."""
    problems = weight_problems(info, table, num_layers)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckpointError(f"{source}: the weights do not fit its config.json: {problems[0]}{more}")
    regression = {table[k] for k in REGRESSION_KEYS}
    optional = frozenset(REGRESSION_KEYS) if regression & set(info.get("missing_keys", ())) else frozenset()
    state = {ours: hf_state[theirs] for ours, theirs in table.items() if ours not in optional}
    return state, optional


def load_hf_model(path: str | Path) -> tuple[ESM1, Alphabet]:
    """(our ESM-1b or ESM-2 in eval mode, alphabet) from a HuggingFace ``EsmForMaskedLM`` directory."""
    path = Path(path)
    transformers = import_transformers()
    alphabet = load_alphabet(ESM_1B.alphabet)  # ESM-2 uses the same 33 tokens
    config = _read_config(transformers, path)
    problems = config_problems(config, alphabet) or vocab_problems(path, config, alphabet)
    if problems:
        raise CheckpointError(f"{path} is not an ESM-1b or ESM-2 model this plugin can use: " + "; ".join(problems))
    generation = HF_GENERATIONS[config.position_embedding_type]
    hf_model, info = _from_pretrained(transformers, path, config)
    cfg = EsmConfig(
        encoder_layers=config.num_hidden_layers, encoder_embed_dim=config.hidden_size,
        encoder_ffn_embed_dim=config.intermediate_size, encoder_attention_heads=config.num_attention_heads,
        max_positions=config.max_position_embeddings - alphabet.padding_idx - 1,
        token_dropout=bool(config.token_dropout), emb_layer_norm_before=bool(config.emb_layer_norm_before),
    )
    table = key_table(cfg.encoder_layers, cfg.emb_layer_norm_before, generation)
    hf_state = hf_model.state_dict()
    state, optional = _ours_from_hf_state(hf_state, table, info, str(path), cfg.encoder_layers)
    if not torch.equal(hf_state["lm_head.decoder.weight"], hf_state["esm.embeddings.word_embeddings.weight"]):
        raise CheckpointError(f"{path}: lm_head.decoder.weight is not tied to the word embeddings")
    model = ESM1(cfg, alphabet, generation)
    load_weights(model, state, str(path), optional)
    if generation.zero_mask_embedding and model.embed_tokens.weight[alphabet.mask_idx].any():
        warnings.warn(f"{path}: the <mask> embedding row is not zero; fair-esm zeroes it when it loads ESM-1b, "
                      "so an official export changes the <mask> logit column", stacklevel=2)
    return model.eval(), alphabet


def hf_config(transformers: Any, model: ESM1) -> Any:
    """The ``EsmConfig`` describing our ESM-1b or ESM-2 ``model`` (dropout off, as in the released configs)."""
    generation, cfg = model.generation, model.cfg
    alphabet = load_alphabet(generation.alphabet)
    return transformers.EsmConfig(
        vocab_size=len(alphabet), pad_token_id=alphabet.padding_idx, mask_token_id=alphabet.mask_idx,
        hidden_size=cfg.encoder_embed_dim, num_hidden_layers=model.num_layers,
        num_attention_heads=cfg.encoder_attention_heads, intermediate_size=cfg.encoder_ffn_embed_dim,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        max_position_embeddings=model.max_positions() + alphabet.padding_idx + 1,
        layer_norm_eps=generation.layer_norm_eps, position_embedding_type=position_embedding_type(generation),
        rope_theta=ROTARY_BASE, emb_layer_norm_before=model.emb_layer_norm_before is not None,
        token_dropout=bool(model.token_dropout), tie_word_embeddings=True, architectures=["EsmForMaskedLM"],
    )


def hf_state_dict(model: ESM1) -> dict[str, torch.Tensor]:
    """Our model's state under EsmForMaskedLM's names; the per-layer rotary frequencies must agree (one buffer)."""
    table = key_table(model.num_layers, model.emb_layer_norm_before is not None, model.generation)
    state: dict[str, torch.Tensor] = {}
    first: dict[str, str] = {}
    for ours, value in model.state_dict().items():
        theirs = table[ours]
        if theirs in state and not torch.equal(state[theirs], value):
            raise CheckpointError(f"{ours} differs from {first[theirs]}; transformers keeps one {theirs} for all "
                                  "layers, so this model has no HuggingFace equivalent")
        state.setdefault(theirs, value)
        first.setdefault(theirs, ours)
    return state


def save_hf_model(model: ESM1, outdir: str | Path) -> Path:
    """Write ``outdir`` so ``EsmForMaskedLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load it."""
    position_embedding_type(model.generation)  # refuses ESM-1 before anything is written
    outdir = Path(outdir)
    transformers = import_transformers()
    state = hf_state_dict(model)
    hf_model = transformers.EsmForMaskedLM(hf_config(transformers, model))
    hf_model.load_state_dict(state, strict=True)
    outdir.mkdir(parents=True, exist_ok=True)
    hf_model.save_pretrained(str(outdir))
    vocab = outdir / "vocab.txt"
    vocab.write_text("\n".join(load_alphabet(model.generation.alphabet).symbols) + "\n", encoding="utf-8")
    tokenizer = transformers.EsmTokenizer(vocab_file=str(vocab), model_max_length=model.max_positions())
    tokenizer.save_pretrained(str(outdir))
    return outdir
