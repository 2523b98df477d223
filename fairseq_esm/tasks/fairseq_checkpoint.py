"""Write any loaded ESM model as a fairseq checkpoint of this plugin, in the layout ``fairseq-train`` saves.

The stored ``cfg`` is the one ``fairseq-train --task protein_mlm --criterion esm_masked_lm --arch ...`` builds,
with the model's own sizes, so ``fairseq-validate --path``, ``fairseq-train --finetune-from-model`` /
``--restore-file`` and :func:`fairseq_esm.load_model` all read it. No optimizer state is stored.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from fairseq import options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.models import MODEL_DATACLASS_REGISTRY
from omegaconf import OmegaConf

from fairseq_esm.modules.esm1 import ESM1
from fairseq_esm.modules.generations import arch_name

#: stored as ``task.data`` when none is given: OmegaConf's "missing" marker, so fairseq asks for the data
#: directory (``fairseq-validate DATA`` supplies it) instead of reading a wrong one
UNSET_DATA = "???"


def model_arch(model: ESM1) -> str:
    """The named ``--arch`` with exactly this model's sizes, else the generic model name (``esm1b`` / ``esm1``)."""
    sizes = (model.num_layers, model.cfg.encoder_embed_dim, model.cfg.encoder_ffn_embed_dim,
             model.cfg.encoder_attention_heads)
    return arch_name(model.generation, sizes)


def model_section(model: ESM1) -> dict[str, Any]:
    """Every field of the model's registered config, read off the model (structure from its modules)."""
    fields = {f.name for f in dataclasses.fields(MODEL_DATACLASS_REGISTRY[model.generation.name])} - {"_name"}
    values = {name: getattr(model.cfg, name) for name in fields if hasattr(model.cfg, name)}
    values.update(encoder_layers=model.num_layers, max_positions=model.max_positions(),
                  token_dropout=bool(model.token_dropout), pretrained_checkpoint=None)
    if "emb_layer_norm_before" in fields:
        values["emb_layer_norm_before"] = model.emb_layer_norm_before is not None
    if "final_bias" in fields:
        values["final_bias"] = model.embed_out_bias is not None
    return values


def fairseq_config(model: ESM1, data: Optional[str] = None) -> dict[str, Any]:
    """The full config (all fairseq sections) ``fairseq-train`` would store for this model, as plain containers."""
    import fairseq_esm.tasks  # noqa: F401  (registers protein_mlm and esm_masked_lm, which the config names)

    argv = [data or UNSET_DATA, "--task", "protein_mlm", "--alphabet", model.generation.name,
            "--criterion", "esm_masked_lm", "--arch", model_arch(model), "--max-positions", str(model.max_positions())]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Hydra's deprecation notices on every namespace -> omegaconf conversion
        args = options.parse_args_and_arch(options.get_training_parser(), argv)
        cfg = OmegaConf.to_container(convert_namespace_to_omegaconf(args), resolve=True, enum_to_str=True)
    cfg["model"].update(model_section(model))
    return cfg


def save_fairseq_checkpoint(model: ESM1, path: str | Path, data: Optional[str] = None) -> Path:
    """Write ``path`` as ``fairseq-train`` would at update 0: cfg, weights, an empty optimizer history."""
    path = Path(path)
    state = {
        "args": None,
        "cfg": fairseq_config(model, data),
        "model": model.state_dict(),
        "criterion": None,
        # fairseq's loaders read the last entry; no optimizer state follows, so resuming starts a fresh optimizer
        "optimizer_history": [{"criterion_name": "EsmMaskedLMCriterion", "optimizer_name": "none",
                               "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "task_state": {},
        "extra_state": {"train_iterator": {"version": 2, "epoch": 1, "iterations_in_epoch": 0, "shuffle": True},
                        "previous_training_time": 0.0},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path
