"""fairseq-train's own loop on a ``mutational_effect`` data dir, run in this process from a model in memory.

What ``fairseq-esm-finetune-variants`` runs per fold: the model is written once as a fairseq checkpoint and
every run starts from it (``--pretrained-checkpoint``, the model's own sizes) and trains as every in-process run
does (``tasks/fairseq_training.py``: adam, constant lr, no clipping, no validation, ``checkpoint_last.pt``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from fairseq_esm.modules.esm1 import ESM1
from fairseq_esm.tasks.fairseq_checkpoint import model_arch, model_section, save_fairseq_checkpoint
from fairseq_esm.tasks.fairseq_training import Optimisation, run_fairseq_train, run_options
from fairseq_esm.tasks.heldout import USER_DIR


@dataclass
class StartModel:
    """A model written for ``--pretrained-checkpoint``, with the ``--arch``, alphabet and config that rebuild it."""

    checkpoint: Path
    arch: str
    alphabet: str
    model_cfg: dict[str, Any]


def write_start(model: ESM1, path: str | Path) -> StartModel:
    """Write ``model`` as a fairseq checkpoint at ``path``, to start every run from."""
    checkpoint = save_fairseq_checkpoint(model, path)
    config = {**model_section(model), "pretrained_checkpoint": str(checkpoint)}
    return StartModel(checkpoint, model_arch(model), model.generation.alphabet, config)


def train_argv(start: StartModel, data: str | Path, save_dir: str | Path, settings: Optimisation,
               device: torch.device) -> list[str]:
    """The fairseq-train command line of one run (the model's sizes are set on the parsed config); the batch
    size counts masked wild-type windows (distinct position sets)."""
    positions = str(start.model_cfg["max_positions"])
    return [str(data), "--user-dir", USER_DIR, "--task", "mutational_effect", "--criterion", "mutational_effect",
            "--alphabet", start.alphabet, "--arch", start.arch, "--max-positions", positions,
            *run_options(settings, save_dir, device)]


def train_mutational_effect(start: StartModel, data: str | Path, save_dir: str | Path, settings: Optimisation,
                            device: torch.device, progress: bool = True, desc: str = "",
                            total: Optional[int] = None) -> tuple[Path, list[float]]:
    """Run fairseq-train's ``main`` on ``data``; returns ``checkpoint_last.pt`` and each epoch's mean loss."""
    return run_fairseq_train(train_argv(start, data, save_dir, settings, device), save_dir, device,
                             start.model_cfg, progress, desc, total)
