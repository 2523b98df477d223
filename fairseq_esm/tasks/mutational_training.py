"""fairseq-train's own loop on a ``mutational_effect`` data dir, run in this process from a model in memory.

What ``fairseq-esm-finetune-variants`` runs per fold: the model is written once as a fairseq checkpoint and
every run starts from it (``--pretrained-checkpoint``, the model's own sizes), trains with fairseq's ``adam``
(decoupled weight decay, as AdamW), a constant learning rate (``fixed``), no clipping and no validation, and
leaves ``checkpoint_last.pt`` in its save dir. fairseq's log lines stay off stderr: a tqdm bar shows the
updates, and each epoch's mean training loss is read from fairseq's end-of-epoch line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from fairseq import options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from omegaconf import DictConfig
from tqdm import tqdm

from fairseq_esm.models.fairseq_checkpoint import model_arch, model_section, save_fairseq_checkpoint
from fairseq_esm.modules.esm1 import ESM1
from fairseq_esm.tasks.heldout import USER_DIR

#: loggers whose INFO lines (config, model, checkpoints) a run keeps quiet
CHATTY = ("fairseq", "fairseq_cli", "fairseq_esm")
PROGRESS_LOGGER = "fairseq.logging.progress_bar"
#: warnings of fairseq's training loop a user cannot act on: torch deprecations, pinned memory without a GPU
IGNORED_WARNINGS = ((FutureWarning, ""), (UserWarning, "'pin_memory' argument"))


@dataclass
class StartModel:
    """A model written for ``--pretrained-checkpoint``, with the ``--arch``, alphabet and config that rebuild it."""

    checkpoint: Path
    arch: str
    alphabet: str
    model_cfg: dict[str, Any]


@dataclass(frozen=True)
class Optimisation:
    """The fairseq-train settings of one run: adam with decoupled weight decay at a constant learning rate."""

    epochs: int
    lr: float
    weight_decay: float
    batch_size: int  # masked wild-type windows (distinct position sets) per update
    seed: int
    train_layers: Optional[int] = None

    def options(self) -> list[str]:
        """The fairseq-train options that say this."""
        layers = [] if self.train_layers is None else ["--train-layers", str(self.train_layers)]
        return ["--optimizer", "adam", "--lr", repr(self.lr), "--weight-decay", repr(self.weight_decay),
                "--lr-scheduler", "fixed", "--clip-norm", "0", "--max-epoch", str(self.epochs),
                "--batch-size", str(self.batch_size), "--seed", str(self.seed), *layers]


def write_start(model: ESM1, path: str | Path) -> StartModel:
    """Write ``model`` as a fairseq checkpoint at ``path``, to start every run from."""
    checkpoint = save_fairseq_checkpoint(model, path)
    config = {**model_section(model), "pretrained_checkpoint": str(checkpoint)}
    return StartModel(checkpoint, model_arch(model), model.generation.name, config)


def training_config(argv: list[str], start: StartModel) -> DictConfig:
    """fairseq's config of the command line ``argv``, the model section set to ``start``'s own."""
    with warnings.catch_warnings():  # Hydra's deprecation notices on every namespace -> omegaconf conversion
        warnings.simplefilter("ignore")
        cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    cfg.model.update(start.model_cfg)
    return cfg


def train_argv(start: StartModel, data: str | Path, save_dir: str | Path, settings: Optimisation,
               device: torch.device) -> list[str]:
    """The fairseq-train command line of one run (the model's sizes are set on the parsed config)."""
    positions = str(start.model_cfg["max_positions"])
    return [str(data), "--user-dir", USER_DIR, "--task", "mutational_effect", "--criterion", "mutational_effect",
            "--alphabet", start.alphabet, "--arch", start.arch, "--max-positions", positions,
            *settings.options(), "--disable-validation", "--save-dir", str(save_dir), "--no-epoch-checkpoints",
            "--save-interval", str(settings.epochs), "--no-save-optimizer-state", "--num-workers", "0",
            "--log-format", "json", "--log-interval", "1", *(["--cpu"] if device.type == "cpu" else [])]


class TrainingLog(logging.Handler):
    """fairseq's JSON progress lines: one tick of the bar per update, each epoch's mean training loss kept."""

    def __init__(self, bar: tqdm) -> None:
        super().__init__(logging.INFO)
        self.bar, self.losses = bar, []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "train_inner":
            self.bar.update(1)
            self.bar.set_postfix(loss=json.loads(record.getMessage())["loss"], refresh=False)
        elif record.name == "train":
            self.losses.append(float(json.loads(record.getMessage())["train_loss"]))


@contextlib.contextmanager
def quiet_fairseq(handler: logging.Handler) -> Iterator[None]:
    """For one run: fairseq's INFO chatter off, its progress lines to ``handler`` only; warnings still shown."""
    chatty = [logging.getLogger(name) for name in CHATTY]
    progress = logging.getLogger(PROGRESS_LOGGER)
    saved = [(logger, logger.level) for logger in (*chatty, progress)], progress.propagate
    for logger in chatty:
        logger.setLevel(logging.WARNING)
    progress.setLevel(logging.INFO)
    progress.propagate = False
    progress.addHandler(handler)
    try:
        yield
    finally:
        progress.removeHandler(handler)
        levels, progress.propagate = saved
        for logger, level in levels:
            logger.setLevel(level)


def train_mutational_effect(start: StartModel, data: str | Path, save_dir: str | Path, settings: Optimisation,
                            device: torch.device, progress: bool = True, desc: str = "",
                            total: Optional[int] = None) -> tuple[Path, list[float]]:
    """Run fairseq-train's ``main`` on ``data``; returns ``checkpoint_last.pt`` and each epoch's mean loss."""
    from fairseq_cli import train  # imported here: fairseq imports every module of tasks/ for --user-dir

    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with tqdm(total=total, desc=desc, unit="update", disable=None if progress else True, leave=False) as bar:
        log = TrainingLog(bar)
        with quiet_fairseq(log), warnings.catch_warnings(), on_device:
            for category, message in IGNORED_WARNINGS:
                warnings.filterwarnings("ignore", message, category)
            cfg = training_config(train_argv(start, data, save_dir, settings, device), start)
            train.main(cfg)
    return Path(save_dir) / "checkpoint_last.pt", log.losses
