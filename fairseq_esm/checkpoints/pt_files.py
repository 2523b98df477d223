"""Read and write ESM checkpoints: official fair-esm ``.pt`` files and fairseq checkpoints of this plugin.

Official layouts (what ``esm.pretrained.load_model_and_alphabet_local`` reads): ESM-1/ESM-1b files are
``{"args": Namespace, "model": state}`` with ESM-1b keys under ``encoder.sentence_encoder.`` (``lm_head`` under
``encoder.``) and ESM-1 keys under ``decoder.``; ESM-2 files are ``{"cfg": {"model": sizes}, "model": state}``
with ESM-1b's prefixes (fair-esm picks the layout from the file name: ``esm2*``). Both come with a sibling
``<stem>-contact-regression.pt`` holding ``{"model": {"contact_head.regression.*"}}`` (ESM-1v files have
none). Files are read with ``weights_only=True`` (tensors and ``argparse.Namespace``); a file holding other
objects is refused with one message naming ``--allow-unsafe``, decided by the exception type and the file's own
structure, never by torch's wording.
HuggingFace ``EsmForMaskedLM`` directories go through :mod:`fairseq_esm.checkpoints.huggingface`. Nothing here
imports fairseq: a fairseq checkpoint is a dict whose ``cfg["model"]`` holds the sizes, and the model built is
the plain :class:`fairseq_esm.modules.esm1.ESM1` with the same parameter names.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import io
import pickle
import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import Any, NamedTuple, Optional

import torch

from fairseq_esm.errors import InputError
from fairseq_esm.modules.alphabet import Alphabet, load_alphabet
from fairseq_esm.modules.esm1 import ESM1, EsmConfig
from fairseq_esm.modules.generations import ESM_2, OFFICIAL_ARCHS, Generation, generation_of_arch

REGRESSION_KEYS = ("contact_head.regression.weight", "contact_head.regression.bias")
SIZE_FIELDS = ("layers", "embed_dim", "ffn_embed_dim", "attention_heads")
MAX_LISTED = 8  # keys named per kind of mismatch; a wrong layer count would otherwise list hundreds


class CheckpointError(InputError):
    """A file that is not a usable ESM checkpoint, or whose weights do not fit the model."""


class CheckpointContents(NamedTuple):
    """A checkpoint translated to this plugin's terms: generation, model config, state dict with our names."""

    generation: Generation
    config: Any
    state: dict[str, torch.Tensor]
    optional_missing: frozenset[str]
    #: warn when the contact regression is absent (not for ESM-1v files, which are released without one)
    regression_expected: bool = True


def official_to_ours(key: str, generation: Generation) -> str:
    """Official state-dict key -> our parameter name (regression keys are unprefixed in both)."""
    for prefix in sorted({generation.official_body_prefix, generation.official_head_prefix}, key=len, reverse=True):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def ours_to_official(key: str, generation: Generation) -> str:
    """Our parameter name -> official state-dict key (regression keys belong to the sibling file)."""
    if key.startswith("contact_head."):
        return key
    prefix = generation.official_head_prefix if key.startswith("lm_head.") else generation.official_body_prefix
    return prefix + key


def regression_path(path: str | Path) -> Path:
    """The sibling file fair-esm expects: ``<path without .pt>-contact-regression.pt``."""
    path = Path(path)
    return path.with_name(path.with_suffix("").name + "-contact-regression.pt")


def unsafe_refusal(path: str | Path) -> str:
    """The one message for a file that ``weights_only`` loading refuses: what it holds, and ``--allow-unsafe``."""
    try:  # public since torch 2.5; zip checkpoints only. The names are a courtesy: the refusal does not need them.
        found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        found = [name for name in found if name != "argparse.Namespace"]
    except Exception:
        found = []
    held = f" ({', '.join(found[:4])}{', ...' if len(found) > 4 else ''})" if found else ""
    return (
        f"{path} holds Python objects beyond tensors and argparse.Namespace{held}; loading them can run code, so it "
        f"is refused. Only if you trust the file: pass --allow-unsafe (allow_unsafe=True in Python), or rewrite it "
        f"once with fairseq-esm-convert {path} --out SAFE.pt --to fairseq --allow-unsafe"
    )


def _parse_pickle(stream) -> list[tuple[str, Any]]:
    """The opcodes of the next pickle in ``stream`` (read, never executed); ValueError if it is malformed."""
    return [(op.name, arg) for op, arg, _ in pickletools.genops(stream)]


def holds_well_formed_pickle(path: Path) -> bool:
    """Whether the pickle ``torch.load`` reads from ``path`` parses opcode by opcode (nothing built or run).

    When ``weights_only`` loading fails on a well-formed pickle, the file holds objects it does not allow; when
    the pickle itself is malformed, the file is damaged or not a checkpoint. Zip checkpoints keep it in
    ``*/data.pkl``; legacy ones as the fourth pickle after torch's magic number; anything else is one pickle."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "data.pkl"), None)
                if name is None:
                    return False
                _parse_pickle(io.BytesIO(archive.read(name)))
                return True
        with open(path, "rb") as stream:
            first = _parse_pickle(stream)
            if any(arg == torch.serialization.MAGIC_NUMBER for name, arg in first if name.startswith("LONG")):
                for _ in range(3):  # protocol version, system info, the object
                    _parse_pickle(stream)
            return True
    except Exception:
        return False


def read_file(path: str | Path, allow_unsafe: bool = False, mmap: bool = False) -> Any:
    """``torch.load`` on CPU, tensors and ``argparse.Namespace`` only unless ``allow_unsafe``.

    ``mmap`` maps a zip checkpoint's tensors instead of reading them (copy on write: the file never changes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "no such checkpoint file", str(path))
    # allow-listed globally: the safe_globals context manager would, on exit, also drop a caller's entry
    torch.serialization.add_safe_globals([argparse.Namespace])
    try:
        with warnings.catch_warnings():  # a plain pickle: torch's protocol notice would precede our one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=not allow_unsafe, mmap=mmap)
    except pickle.UnpicklingError:  # torch's text suggests weights_only=False: never shown, not even as the cause
        if not allow_unsafe and holds_well_formed_pickle(path):
            raise CheckpointError(unsafe_refusal(path)) from None
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (damaged, or another format)") from None
    except Exception as err:  # torch's legacy unpickler fails on junk with KeyError, IndexError, ...
        first = str(err).splitlines()[0].split(". ")[0] if str(err).strip() else ""
        detail = f": {type(err).__name__}" + (f": {first}" if first and "weights_only" not in first else "")
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated or another format){detail}"
        ) from (None if "weights_only" in str(err) else err)


def _model_config(values: dict[str, Any]) -> EsmConfig:
    """The network config with the given values (unknown keys, such as fairseq's, ignored)."""
    names = {f.name for f in dataclasses.fields(EsmConfig)}
    return EsmConfig(**{k: v for k, v in values.items() if k in names})


def _setting(settings: Any, name: str, default: Any = None) -> Any:
    """``settings.name`` or ``settings[name]`` (official configs are a Namespace, a dict or an OmegaConf node)."""
    if isinstance(settings, dict):
        return settings.get(name, default)
    try:
        return getattr(settings, name, default)
    except Exception:  # an OmegaConf node without the key
        return default


def is_official_cfg_layout(data: Any) -> bool:
    """The ESM-2 release layout: ``cfg["model"]`` with the sizes and state keys under ``encoder.sentence_encoder.``
    (a checkpoint of ``fairseq-train --user-dir fairseq_esm`` has the same ``cfg`` but unprefixed keys)."""
    if not isinstance(data, dict) or not isinstance(data.get("cfg"), dict) or not isinstance(data.get("model"), dict):
        return False
    model_cfg = data["cfg"].get("model")
    return _setting(model_cfg, "encoder_layers") is not None and any(
        isinstance(k, str) and k.startswith(ESM_2.official_body_prefix) for k in data["model"])


def _official_contents(data: dict, path: Path, allow_unsafe: bool) -> CheckpointContents:
    """Official fair-esm file (+ optional regression sibling) -> our names and config."""
    if is_official_cfg_layout(data):
        generation, settings = ESM_2, data["cfg"]["model"]
    else:
        settings = data["args"]
        generation = OFFICIAL_ARCHS.get(getattr(settings, "arch", None))
        if generation is None:
            raise CheckpointError(
                f"{path}: unknown arch {getattr(settings, 'arch', None)!r}; expected one of {sorted(OFFICIAL_ARCHS)}"
            )
    state = {official_to_ours(k, generation): v for k, v in data["model"].items()}
    sibling = regression_path(path)
    optional: frozenset[str] = frozenset(REGRESSION_KEYS)
    if sibling.is_file():
        state.update(read_file(sibling, allow_unsafe)["model"])
        optional = frozenset()
    prefix = generation.official_args_prefix
    values = {f"encoder_{f}": _setting(settings, prefix + f) for f in SIZE_FIELDS}
    if generation.ffn_is_4x and values["encoder_ffn_embed_dim"] is None and values["encoder_embed_dim"] is not None:
        values["encoder_ffn_embed_dim"] = 4 * values["encoder_embed_dim"]  # ESM-2 releases do not store it
    missing_args = [prefix + f for f in SIZE_FIELDS if values[f"encoder_{f}"] is None]
    if missing_args:
        raise CheckpointError(f"{path}: official {generation.official_layout} lack {missing_args}")
    values.update(
        max_positions=_setting(settings, "max_positions", 1024),
        token_dropout=bool(_setting(settings, "token_dropout", generation is ESM_2)),
        # structure is read off the weights, as fair-esm does for emb_layer_norm_before
        emb_layer_norm_before=any(k.startswith("emb_layer_norm_before.") for k in state),
        final_bias="embed_out_bias" in state,
    )
    if generation.zero_mask_embedding and "embed_tokens.weight" in state:
        # fair-esm zeroes the ESM-1b <mask> embedding on load (token dropout never embeds it)
        state["embed_tokens.weight"][load_alphabet(generation.alphabet).mask_idx].zero_()
    return CheckpointContents(generation, _model_config(values), state, optional, "esm1v" not in path.stem)


def _fairseq_contents(data: dict, path: Path) -> CheckpointContents:
    """fairseq checkpoint written by ``fairseq-train --user-dir fairseq_esm``."""
    model_cfg = dict(data["cfg"]["model"] or {})
    arch = model_cfg.get("_name") or model_cfg.get("arch")
    generation = generation_of_arch(arch)
    if generation is None:
        raise CheckpointError(f"{path}: arch {arch!r} is not an ESM arch of this plugin")
    return CheckpointContents(generation, _model_config(model_cfg), data["model"], frozenset())


def is_official_layout(data: Any) -> bool:
    """fair-esm's release layouts: ``{"args": Namespace, "model": ...}`` without a fairseq ``cfg`` (ESM-1,
    ESM-1b, ESM-1v), or the ESM-2 layout (:func:`is_official_cfg_layout`)."""
    return (isinstance(data, dict) and data.get("cfg") is None and isinstance(data.get("args"), argparse.Namespace)
            ) or is_official_cfg_layout(data)


def checkpoint_contents(data: Any, path: str | Path, allow_unsafe: bool = False) -> CheckpointContents:
    """What :func:`read_file` returned for ``path``, either kind -> generation, config and state in our names."""
    path = Path(path)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise CheckpointError(f"{path} is not a model checkpoint (expected a dict with a 'model' state dict)")
    if is_official_layout(data):
        return _official_contents(data, path, allow_unsafe)
    if data.get("cfg") is not None:
        return _fairseq_contents(data, path)
    raise CheckpointError(f"{path} has neither fairseq 'cfg' nor official fair-esm 'args'")


def read_checkpoint(path: str | Path, allow_unsafe: bool = False) -> CheckpointContents:
    """Either checkpoint kind -> generation, config and state dict in our names."""
    return checkpoint_contents(read_file(path, allow_unsafe), path, allow_unsafe)


def model_name(model) -> str:
    """``esm1b`` / ``esm1`` / ``esm2`` for ESM models, the registered name for others (``bilstm_lm``)."""
    generation = getattr(model, "generation", None)
    return generation.name if generation is not None else getattr(model, "registered_name", type(model).__name__)


class ShortLoadErrors:
    """fairseq's resume/validate path calls ``model.load_state_dict(strict=True)``: a checkpoint of another size
    or vocabulary is refused with the keys that differ (one short message), not torch's page-long RuntimeError."""

    def load_state_dict(self, state_dict, strict: bool = True, model_cfg=None, args=None):
        problems = mismatch_problems(self, state_dict) if strict else []
        if problems:
            raise CheckpointError(
                f"the checkpoint's weights do not fit this {model_name(self)} model "
                f"(were --arch or its sizes changed?): " + "; ".join(problems)
            )
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)


def mismatch_problems(
    model: ESM1, state: dict[str, torch.Tensor], optional_missing: frozenset[str] = frozenset()
) -> list[str]:
    """Why ``state`` does not fit ``model``: vocabulary, the config's sizes against the weights', then missing,
    unexpected and misshaped keys (empty if it fits). The first entry is the first mismatch to report."""
    expected = model.state_dict()
    vocab, found = expected["embed_tokens.weight"].size(0), state.get("embed_tokens.weight")
    if found is not None and found.size(0) != vocab:
        return [f"vocabulary size mismatch: checkpoint embeds {found.size(0)} tokens, "
                f"the {model_name(model)} alphabet has {vocab}"]
    problems = size_problems(model, state) if isinstance(model, ESM1) else []
    missing = sorted(expected.keys() - state.keys() - optional_missing)
    unexpected = sorted(state.keys() - expected.keys())
    misshaped = [
        f"{k}: checkpoint {tuple(state[k].shape)} != model {tuple(expected[k].shape)}"
        for k in sorted(expected.keys() & state.keys())
        if state[k].shape != expected[k].shape
    ]
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", misshaped)):
        if keys:
            more = f", ... ({len(keys) - MAX_LISTED} more)" if len(keys) > MAX_LISTED else ""
            problems.append(f"{label}: {', '.join(keys[:MAX_LISTED])}{more}")
    positions, table = state.get("embed_positions.weight"), expected.get("embed_positions.weight")
    if positions is not None and table is not None and positions.shape != table.shape:
        problems.append(f"the checkpoint was trained with max_positions={positions.size(0) - model.padding_idx - 1}")
    return problems


def size_problems(model: ESM1, state: dict[str, torch.Tensor]) -> list[str]:
    """Where the model's config (layers, width, heads) disagrees with what the weights hold."""
    problems = []
    cfg, found = model.cfg, state.get("embed_tokens.weight")
    if found is not None and found.dim() == 2 and found.size(1) != cfg.encoder_embed_dim:
        problems.append(f"the config says embed_dim {cfg.encoder_embed_dim}, the weights have {found.size(1)}")
    layers = {int(k.split(".")[1]) for k in state if k.startswith("layers.") and k.split(".")[1].isdigit()}
    if layers and max(layers) + 1 != model.num_layers:
        problems.append(f"the config says {model.num_layers} layers, the weights hold {max(layers) + 1}")
    frequencies = state.get("layers.0.self_attn.rot_emb.inv_freq")  # rotary: head_dim / 2 of them
    if (frequencies is not None and model.num_layers and frequencies.dim() == 1
            and 2 * frequencies.numel() != model.layers[0].self_attn.head_dim):
        heads = cfg.encoder_embed_dim // max(2 * frequencies.numel(), 1)
        problems.append(f"the config says {cfg.encoder_attention_heads} attention heads, the weights' rotary "
                        f"frequencies fit {heads}")
    return problems


def load_weights(
    model: ESM1, state: dict[str, torch.Tensor], source: str, optional_missing: frozenset[str] = frozenset(),
    regression_expected: bool = True,
) -> None:
    """``load_state_dict(strict)`` with errors that name the vocabulary, missing, unexpected and misshaped keys."""
    problems = mismatch_problems(model, state, optional_missing)
    if problems and problems[0].startswith("vocabulary size mismatch"):
        raise CheckpointError(f"{source}: {problems[0]}")
    if problems:
        raise CheckpointError(f"{source} does not fit the {model_name(model)} model its config describes: "
                              + "; ".join(problems))
    absent = model.state_dict().keys() - state.keys()
    if absent and regression_expected:
        warnings.warn(f"{source}: no contact regression weights; contact predictions are not calibrated")
    model.load_state_dict(state, strict=not absent)


def read_model(path: str | Path, allow_unsafe: bool = False) -> tuple[ESM1, Alphabet]:
    """(model in eval mode, alphabet) from an official fair-esm ``.pt`` or a fairseq checkpoint of this plugin."""
    return model_of(read_checkpoint(path, allow_unsafe), str(path))


def model_of(contents: CheckpointContents, source: str) -> tuple[ESM1, Alphabet]:
    """(model in eval mode, alphabet) built from a checkpoint's contents; ``source`` names it in errors."""
    alphabet = load_alphabet(contents.generation.alphabet)
    model = ESM1(contents.config, alphabet, contents.generation)
    load_weights(model, contents.state, source, contents.optional_missing, contents.regression_expected)
    return model.eval(), alphabet


def initialize_from_checkpoint(model: ESM1, path: str | Path, allow_unsafe: bool = False) -> None:
    """Copy a checkpoint's weights into a freshly built model (``pretrained_checkpoint`` for fine-tuning)."""
    contents = read_checkpoint(path, allow_unsafe)
    if contents.generation != model.generation:
        raise CheckpointError(
            f"{path} is an {contents.generation.name} checkpoint; it cannot initialise an {model.generation.name} model"
        )
    load_weights(model, contents.state, str(path), contents.optional_missing, contents.regression_expected)


def official_args(model: ESM1) -> argparse.Namespace:
    """The settings fair-esm reads (``args``, or ESM-2's ``cfg["model"]``): arch name, prefixed sizes, flags."""
    generation, cfg = model.generation, model.cfg
    values = {generation.official_args_prefix + f: getattr(cfg, f"encoder_{f}") for f in SIZE_FIELDS}
    values.update(
        arch=generation.official_arch,
        max_positions=cfg.max_positions,
        token_dropout=bool(cfg.token_dropout),
        emb_layer_norm_before=model.emb_layer_norm_before is not None,
        final_bias=model.embed_out_bias is not None,
    )
    return argparse.Namespace(**values)


def official_name_problem(generation: Generation, path: Path) -> Optional[str]:
    """Why fair-esm would misread ``path`` for this generation (it picks the loader from the file name)."""
    stem = path.stem
    if path.suffix != ".pt":
        return "use a .pt name"
    if generation is ESM_2:
        return None if stem.startswith("esm2") and "esm1v" not in stem else "an ESM-2 file name must start with esm2"
    if stem.startswith("esm2") or "esm1v" in stem or "esm_if" in stem:
        return "use a name that neither starts with esm2 nor contains esm1v / esm_if"
    return None


def export_official(model: ESM1, path: str | Path) -> tuple[Path, Path]:
    """Write ``path`` and its ``-contact-regression.pt`` sibling in fair-esm's layout for the model's generation
    (``args`` for ESM-1/ESM-1b, ``cfg`` for ESM-2); returns both paths."""
    path = Path(path)
    generation = model.generation
    problem = official_name_problem(generation, path)
    if problem:
        raise ValueError(f"{path.name}: fair-esm reads the file name; {problem}")
    if generation.ffn_is_4x and model.cfg.encoder_ffn_embed_dim != 4 * model.cfg.encoder_embed_dim:
        raise ValueError(f"{path.name}: fair-esm builds ESM-2 with a feed-forward width of 4 x embed_dim "
                         f"({4 * model.cfg.encoder_embed_dim}); this model has {model.cfg.encoder_ffn_embed_dim}. "
                         "Convert it to 'fairseq' or 'hf' instead")
    state = model.state_dict()
    body = {ours_to_official(k, generation): v for k, v in state.items() if not k.startswith("contact_head.")}
    regression = {k: v for k, v in state.items() if k.startswith("contact_head.")}
    path.parent.mkdir(parents=True, exist_ok=True)
    if generation.official_layout == "cfg":
        torch.save({"cfg": {"model": official_args(model)}, "model": body}, path)
    else:
        torch.save({"args": official_args(model), "model": body}, path)
    torch.save({"model": regression}, regression_path(path))
    return path, regression_path(path)

