"""Any loaded ESM model as a fairseq checkpoint of this plugin, in the layout ``fairseq-train`` saves.

The stored ``cfg`` is the one ``fairseq-train --task protein_mlm --criterion esm_masked_lm --arch ...`` builds,
with the model's own sizes, so ``fairseq-validate --path``, ``fairseq-train --finetune-from-model`` /
``--restore-file`` and :func:`fairseq_esm.load_model` all read it. No optimizer state is stored.

:func:`install_checkpoint_reader` puts the same translation in front of fairseq's own loader
(``checkpoint_utils.load_checkpoint_to_cpu``), so fairseq's tools read an official fair-esm ``.pt`` as the
checkpoint :func:`save_fairseq_checkpoint` would write for it, and read every file the safe way first
(tensors and ``argparse.Namespace`` only, else one ``error:`` line naming ``--allow-unsafe``).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
import zipfile
from pathlib import Path
from typing import Any, Optional

import torch
from fairseq import checkpoint_utils, options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf, overwrite_args_by_name
from fairseq.file_io import PathManager
from fairseq.models import MODEL_DATACLASS_REGISTRY
from omegaconf import OmegaConf

import fairseq_esm.tasks.protein_mlm  # noqa: F401  (registers protein_mlm, which the config names)
from fairseq_esm import criterions  # noqa: F401  (registers esm_masked_lm, which the config names)
from fairseq_esm.checkpoints.pt_files import (
    checkpoint_contents,
    is_official_cfg_layout,
    is_official_layout,
    model_of,
    read_file,
)
from fairseq_esm.modules.esm1 import ESM1
from fairseq_esm.modules.generations import OFFICIAL_ARCHS, arch_name

#: stored as ``task.data`` when none is given: OmegaConf's "missing" marker, so fairseq asks for the data
#: directory (``fairseq-validate DATA`` supplies it) instead of reading a wrong one
UNSET_DATA = "???"


def model_arch(model: ESM1) -> str:
    """The named ``--arch`` with exactly this model's sizes, else the generic model name (``esm1b`` / ``esm2`` …)."""
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
    argv = [data or UNSET_DATA, "--task", "protein_mlm", "--alphabet", model.generation.alphabet,
            "--criterion", "esm_masked_lm", "--arch", model_arch(model), "--max-positions", str(model.max_positions())]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Hydra's deprecation notices on every namespace -> omegaconf conversion
        args = options.parse_args_and_arch(options.get_training_parser(), argv)
        cfg = OmegaConf.to_container(convert_namespace_to_omegaconf(args), resolve=True, enum_to_str=True)
    cfg["model"].update(model_section(model))
    return cfg


def fairseq_state(model: ESM1, data: Optional[str] = None) -> dict[str, Any]:
    """What ``fairseq-train`` would save for ``model`` at update 0: cfg, weights, an empty optimizer history."""
    return {
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


def save_fairseq_checkpoint(model: ESM1, path: str | Path, data: Optional[str] = None) -> Path:
    """Write ``path`` as ``fairseq-train`` would at update 0 (:func:`fairseq_state`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fairseq_state(model, data), path)
    return path


def is_esm_release(data: Any) -> bool:
    """An official fair-esm file: the ESM-2 release layout, or the ESM-1/ESM-1b one with an ESM arch or without
    the optimizer history every fairseq checkpoint has (a legacy fairseq checkpoint of another model, ``args``
    and all, stays fairseq's)."""
    return is_official_cfg_layout(data) or is_official_layout(data) and (
        getattr(data["args"], "arch", None) in OFFICIAL_ARCHS or "optimizer_history" not in data
    )


def reads_official_files_safely(load):
    """fairseq's ``load_checkpoint_to_cpu``, behind the plugin's safe read and official-layout translation."""
    if getattr(load, "fairseq_esm_reader", False):
        return load

    @functools.wraps(load)
    def load_checkpoint_to_cpu(path, arg_overrides=None, load_on_all_ranks=False):
        local = PathManager.get_local_path(path)
        # zip checkpoints are mapped, not read: telling the layout costs one pass over the pickle
        data = read_file(local, mmap=zipfile.is_zipfile(local))
        if not is_esm_release(data):
            del data
            return load(path, arg_overrides, load_on_all_ranks)
        model, _ = model_of(checkpoint_contents(data, local), local)
        state = fairseq_state(model)
        state["cfg"] = OmegaConf.create(state["cfg"], flags={"allow_objects": True})  # as fairseq does
        if arg_overrides is not None:
            overwrite_args_by_name(state["cfg"], arg_overrides)  # as fairseq does for its own checkpoints
        return state

    load_checkpoint_to_cpu.fairseq_esm_reader = True
    return load_checkpoint_to_cpu


def install_checkpoint_reader() -> None:
    """Route fairseq's checkpoint reads (``--restore-file``, ``--finetune-from-model``, ``--path``) through
    :func:`reads_official_files_safely`; idempotent."""
    checkpoint_utils.load_checkpoint_to_cpu = reads_official_files_safely(checkpoint_utils.load_checkpoint_to_cpu)
