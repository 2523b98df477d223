"""fairseq-train's own loop run in this process: what the fine-tuning and contact-probe runners share.

A run trains with fairseq's ``adam`` (decoupled weight decay, as AdamW), a constant learning rate (``fixed``),
no clipping and no validation, and leaves ``checkpoint_last.pt`` in its save dir. fairseq's log lines stay off
stderr: a tqdm bar shows the updates, and each epoch's mean training loss is read from fairseq's end-of-epoch
line.
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

#: loggers whose INFO lines (config, model, checkpoints) a run keeps quiet
CHATTY = ("fairseq", "fairseq_cli", "fairseq_esm")
PROGRESS_LOGGER = "fairseq.logging.progress_bar"
#: warnings of fairseq's training loop a user cannot act on: torch deprecations, pinned memory without a GPU
IGNORED_WARNINGS = ((FutureWarning, ""), (UserWarning, "'pin_memory' argument"))


@dataclass(frozen=True)
class Optimisation:
    """The fairseq-train settings of one run: adam with decoupled weight decay at a constant learning rate."""

    epochs: int
    lr: float
    weight_decay: float
    batch_size: int  # samples per update
    seed: int
    train_layers: Optional[int] = None

    def options(self) -> list[str]:
        """The fairseq-train options that say this."""
        layers = [] if self.train_layers is None else ["--train-layers", str(self.train_layers)]
        return ["--optimizer", "adam", "--lr", repr(self.lr), "--weight-decay", repr(self.weight_decay),
                "--lr-scheduler", "fixed", "--clip-norm", "0", "--max-epoch", str(self.epochs),
                "--batch-size", str(self.batch_size), "--seed", str(self.seed), *layers]


def run_options(settings: Optimisation, save_dir: str | Path, device: torch.device) -> list[str]:
    """The options every run shares: ``settings``, no validation, only ``checkpoint_last.pt``, JSON log lines."""
    return [*settings.options(), "--disable-validation", "--save-dir", str(save_dir), "--no-epoch-checkpoints",
            "--save-interval", str(settings.epochs), "--no-save-optimizer-state", "--num-workers", "0",
            "--log-format", "json", "--log-interval", "1", *(["--cpu"] if device.type == "cpu" else [])]


def training_config(argv: list[str], model_cfg: Optional[dict[str, Any]] = None) -> DictConfig:
    """fairseq's config of the command line ``argv``, the model section updated with ``model_cfg``."""
    with warnings.catch_warnings():  # Hydra's deprecation notices on every namespace -> omegaconf conversion
        warnings.simplefilter("ignore")
        cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    cfg.model.update(model_cfg or {})
    return cfg


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


def run_fairseq_train(argv: list[str], save_dir: str | Path, device: torch.device,
                      model_cfg: Optional[dict[str, Any]] = None, progress: bool = True, desc: str = "",
                      total: Optional[int] = None) -> tuple[Path, list[float]]:
    """Run fairseq-train's ``main`` on ``argv``; returns ``checkpoint_last.pt`` and each epoch's mean loss."""
    from fairseq_cli import train  # imported here: fairseq imports every module of tasks/ for --user-dir

    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with tqdm(total=total, desc=desc, unit="update", disable=None if progress else True, leave=False) as bar:
        log = TrainingLog(bar)
        with quiet_fairseq(log), warnings.catch_warnings(), on_device:
            for category, message in IGNORED_WARNINGS:
                warnings.filterwarnings("ignore", message, category)
            train.main(training_config(argv, model_cfg))
    return Path(save_dir) / "checkpoint_last.pt", log.losses
