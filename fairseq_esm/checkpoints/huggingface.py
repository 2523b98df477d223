"""HuggingFace ``EsmForMaskedLM`` <-> this plugin's ESM-1b: an explicit key table, config checks, load and save.

transformers' ``ESM1`` (``models/esm/modeling_esm.py``) computes ESM-1b under other names: learned
positions indexed from ``padding_idx + 1`` (so ``max_position_embeddings = max_positions + padding_idx + 1``,
1026 for the 1024-position model), the same token dropout and padding zeroing, pre-LN layers, and the
RoBERTa LM head tied to the word embeddings. ESM-2 (rotary positions) and ESM-1 have no counterpart.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from fairseq_esm.checkpoints.pt_files import REGRESSION_KEYS, CheckpointError, load_weights
from fairseq_esm.modules.alphabet import Alphabet, load_alphabet
from fairseq_esm.modules.esm1 import ESM1, EsmConfig
from fairseq_esm.modules.generations import ESM_1B

#: what ``from_pretrained`` reads weights from, plain or sharded
WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)

#: our parameter name -> EsmForMaskedLM's, outside the Transformer layers
GLOBAL_KEYS = {
    "embed_tokens.weight": "esm.embeddings.word_embeddings.weight",
    "embed_positions.weight": "esm.embeddings.position_embeddings.weight",
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
ESM1_REFUSAL = (
    "ESM-1 has no HuggingFace equivalent: transformers' ESM1 has no sinusoidal positions, no sqrt(d) "
    "embedding scale and no learned attention bias_k/bias_v; convert ESM-1 to 'official' or 'fairseq' instead"
)


class TransformersMissing(CheckpointError):
    """HuggingFace conversion asked for without transformers installed."""


def key_table(num_layers: int, emb_layer_norm_before: bool = True) -> dict[str, str]:
    """Every parameter of our ESM-1b with ``num_layers`` layers -> its EsmForMaskedLM name."""
    table = {
        ours: theirs for ours, theirs in GLOBAL_KEYS.items()
        if emb_layer_norm_before or not ours.startswith("emb_layer_norm_before.")
    }
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
    """What keeps an HF ESM config from being this plugin's ESM-1b (empty when it fits)."""

    def get(name: str, default: Any = None) -> Any:
        return getattr(config, name, default)

    problems = []
    if get("model_type") != "esm":
        problems.append(f"model_type={get('model_type')!r}, not 'esm'")
    if get("is_folding_model"):
        problems.append("is_folding_model=True (ESMFold), not a masked language model")
    if get("position_embedding_type", "absolute") != "absolute":
        problems.append(
            f"position_embedding_type={get('position_embedding_type')!r} (ESM-2 style); ESM-1b has learned "
            "absolute positions, so this model cannot be converted"
        )
    if abs(float(get("layer_norm_eps", 0.0) or 0.0) - ESM_1B.layer_norm_eps) > 1e-12:
        problems.append(f"layer_norm_eps={get('layer_norm_eps')} differs from ESM-1b's {ESM_1B.layer_norm_eps}")
    if get("is_decoder") or get("add_cross_attention"):
        problems.append("is_decoder/add_cross_attention set; ESM-1b is a bidirectional encoder")
    if not get("tie_word_embeddings", True):
        problems.append("tie_word_embeddings=False; ESM-1b's LM head is tied to the token embeddings")
    expected = {"vocab_size": len(alphabet), "pad_token_id": alphabet.padding_idx, "mask_token_id": alphabet.mask_idx}
    problems += [f"{name}={get(name)} but the ESM-1b alphabet has {want}"
                 for name, want in expected.items() if get(name) != want]
    if get("max_position_embeddings", 0) <= alphabet.padding_idx + 1:
        problems.append(f"max_position_embeddings={get('max_position_embeddings')} leaves no positions "
                        f"(ESM-1b uses max_positions + padding_idx + 1)")
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


def _from_pretrained(transformers: Any, path: Path, config: Any) -> tuple[Any, dict]:
    """EsmForMaskedLM with the directory's weights, plus transformers' loading report (missing keys)."""
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise CheckpointError(f"{path} has config.json but no weights (expected one of {', '.join(WEIGHT_FILES)})")
    try:
        return transformers.EsmForMaskedLM.from_pretrained(str(path), config=config, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: transformers could not read the weights: {err}") from err


def _ours_from_hf_state(hf_state: dict[str, torch.Tensor], table: dict[str, str], info: dict, source: str
                        ) -> tuple[dict[str, torch.Tensor], frozenset[str]]:
    """Our state dict, and the regression keys to treat as optional when the directory lacks them."""
    missing = set(info.get("missing_keys", ())) | {str(k) for k in info.get("mismatched_keys", ())}
    regression = {table[k] for k in REGRESSION_KEYS}
    if missing - regression:
        raise CheckpointError(f"{source}: weights missing or misshaped in the directory: {', '.join(sorted(missing))}")
    optional = frozenset(REGRESSION_KEYS) if missing & regression else frozenset()
    state = {ours: hf_state[theirs] for ours, theirs in table.items() if ours not in optional}
    return state, optional


def load_hf_model(path: str | Path) -> tuple[ESM1, Alphabet]:
    """(our ESM-1b in eval mode, alphabet) from a HuggingFace ``EsmForMaskedLM`` directory."""
    path = Path(path)
    transformers = import_transformers()
    alphabet = load_alphabet("esm1b")
    config = _read_config(transformers, path)
    problems = config_problems(config, alphabet) or vocab_problems(path, config, alphabet)
    if problems:
        raise CheckpointError(f"{path} is not an ESM-1b model this plugin can use: " + "; ".join(problems))
    hf_model, info = _from_pretrained(transformers, path, config)
    hf_state = hf_model.state_dict()
    if not torch.equal(hf_state["lm_head.decoder.weight"], hf_state["esm.embeddings.word_embeddings.weight"]):
        raise CheckpointError(f"{path}: lm_head.decoder.weight is not tied to the word embeddings")
    cfg = EsmConfig(
        encoder_layers=config.num_hidden_layers, encoder_embed_dim=config.hidden_size,
        encoder_ffn_embed_dim=config.intermediate_size, encoder_attention_heads=config.num_attention_heads,
        max_positions=config.max_position_embeddings - alphabet.padding_idx - 1,
        token_dropout=bool(config.token_dropout), emb_layer_norm_before=bool(config.emb_layer_norm_before),
    )
    model = ESM1(cfg, alphabet, ESM_1B)
    table = key_table(cfg.encoder_layers, cfg.emb_layer_norm_before)
    state, optional = _ours_from_hf_state(hf_state, table, info, str(path))
    load_weights(model, state, str(path), optional)
    if model.embed_tokens.weight[alphabet.mask_idx].any():
        warnings.warn(f"{path}: the <mask> embedding row is not zero; fair-esm zeroes it when it loads ESM-1b, "
                      "so an official export changes the <mask> logit column", stacklevel=2)
    return model.eval(), alphabet


def hf_config(transformers: Any, model: ESM1) -> Any:
    """The ``EsmConfig`` describing our ESM-1b ``model`` (dropout off, as in the released ESM-1b config)."""
    alphabet, cfg = load_alphabet("esm1b"), model.cfg
    return transformers.EsmConfig(
        vocab_size=len(alphabet), pad_token_id=alphabet.padding_idx, mask_token_id=alphabet.mask_idx,
        hidden_size=cfg.encoder_embed_dim, num_hidden_layers=model.num_layers,
        num_attention_heads=cfg.encoder_attention_heads, intermediate_size=cfg.encoder_ffn_embed_dim,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        max_position_embeddings=model.embed_positions.weight.size(0), layer_norm_eps=ESM_1B.layer_norm_eps,
        position_embedding_type="absolute", emb_layer_norm_before=model.emb_layer_norm_before is not None,
        token_dropout=bool(model.token_dropout), tie_word_embeddings=True, architectures=["EsmForMaskedLM"],
    )


def save_hf_model(model: ESM1, outdir: str | Path) -> Path:
    """Write ``outdir`` so ``EsmForMaskedLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load it."""
    if model.generation != ESM_1B:
        raise CheckpointError(ESM1_REFUSAL)
    outdir = Path(outdir)
    transformers = import_transformers()
    table = key_table(model.num_layers, model.emb_layer_norm_before is not None)
    hf_model = transformers.EsmForMaskedLM(hf_config(transformers, model))
    hf_model.load_state_dict({table[k]: v for k, v in model.state_dict().items()}, strict=True)
    outdir.mkdir(parents=True, exist_ok=True)
    hf_model.save_pretrained(str(outdir))
    vocab = outdir / "vocab.txt"
    vocab.write_text("\n".join(load_alphabet("esm1b").symbols) + "\n", encoding="utf-8")
    tokenizer = transformers.EsmTokenizer(vocab_file=str(vocab), model_max_length=model.max_positions())
    tokenizer.save_pretrained(str(outdir))
    return outdir
