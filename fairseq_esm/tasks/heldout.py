"""Held-out ECE of a language model on one split of a data-bin, computed as ``fairseq-validate`` does.

A fairseq checkpoint is scored with its own task and criterion (``esm_masked_lm``: the masked targets;
``bidirectional_lm``: every residue); an untrained model is built from an ``--arch`` with the same
task. Every model in one table is scored with the same ``seed``, so masked models see the same masks.
"""

from __future__ import annotations

import math
import os
import pickle
import warnings
from dataclasses import dataclass

import torch
from fairseq import checkpoint_utils, options, tasks, utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.models import ARCH_MODEL_REGISTRY
from tqdm import tqdm

from fairseq_esm.checkpoints.pt_files import CheckpointError

#: this package's directory: the ``--user-dir`` that registers it with fairseq
USER_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class HeldoutResult:
    """One model's cross-entropy on a split: ECE = exp(nats per target)."""

    nats: float
    targets: int
    correct: int
    parameters: int
    criterion: str

    @property
    def ece(self) -> float:
        return math.exp(self.nats / self.targets)

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / self.targets


def load_checkpoint(path: str, data: str, seed: int):
    """Model, task and criterion of a fairseq checkpoint, its data path and seed replaced."""
    overrides = {"data": data, "seed": seed}
    try:
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides=overrides)
    except (pickle.UnpicklingError, EOFError, RuntimeError, KeyError, AttributeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path}: not a fairseq checkpoint of a fairseq_esm model ({reason})") from None
    return models[0], task, task.build_criterion(cfg.criterion)


def build_untrained(arch: str, data: str, seed: int, criterion: str = "esm_masked_lm", extra: list[str] = ()):
    """A randomly initialised ``arch`` (fairseq's own init, seeded) with the ``protein_mlm`` task."""
    if arch not in ARCH_MODEL_REGISTRY:
        ours = sorted(a for a, model in ARCH_MODEL_REGISTRY.items()  # the language models: ESM generations, BiLSTM
                      if hasattr(model, "generation") or a.startswith("bilstm"))
        raise CheckpointError(f"unknown --arch {arch!r}; this plugin's: {', '.join(ours)}")
    parser = options.get_training_parser()
    argv = [data, "--user-dir", USER_DIR, "--task", "protein_mlm",
            "--arch", arch, "--criterion", criterion, "--seed", str(seed), "--cpu", *extra]
    args = options.parse_args_and_arch(parser, argv)
    with warnings.catch_warnings():  # hydra's deprecation chatter from fairseq's config conversion
        warnings.simplefilter("ignore")
        cfg = convert_namespace_to_omegaconf(args)
    utils.set_torch_seed(seed)
    task = tasks.setup_task(cfg.task)
    return task.build_model(cfg.model), task, task.build_criterion(cfg.criterion)


@torch.inference_mode()
def score_split(model, task, criterion, split: str, max_tokens: int = 8192, progress: bool = True,
                device: str = "cpu") -> HeldoutResult:
    """Sum the criterion over every batch of ``split`` (the epoch-independent held-out masks) on ``device``."""
    model.eval().to(device)
    task.load_dataset(split)
    dataset = task.dataset(split)
    batches = task.get_batch_iterator(dataset, max_tokens=max_tokens, max_positions=task.max_positions(),
                                      ignore_invalid_inputs=False).next_epoch_itr(shuffle=False)
    nats, targets, correct = 0.0, 0, 0
    for sample in tqdm(batches, desc=split, disable=not progress, leave=False):
        _, size, log = criterion(model, utils.move_to_cuda(sample) if device != "cpu" else sample)
        nats, targets, correct = nats + float(log["loss"]), targets + size, correct + int(log.get("n_correct", 0))
    parameters = sum(p.numel() for p in model.parameters())
    return HeldoutResult(nats, targets, correct, parameters, type(criterion).__name__)
