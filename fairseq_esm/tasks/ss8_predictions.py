"""SS8 predictions of a ``protein_ss8`` checkpoint on one split, batched and filtered as ``fairseq-validate`` does.

The checkpoint is loaded with its own task (``tasks/heldout.load_checkpoint``), so a held-out protein longer than
the backbone's context is windowed and one over ``--max-tokens`` is batched alone, exactly as for the criterion's
``q8`` / ``q3``; every labelled residue of the split is returned once.
"""

from __future__ import annotations

import numpy as np
import torch
from fairseq import utils
from tqdm import tqdm

from fairseq_esm.checkpoints.pt_files import CheckpointError
from fairseq_esm.data.structure_labels_dataset import IGNORE
from fairseq_esm.tasks.heldout import load_checkpoint
from fairseq_esm.tasks.protein_ss8 import SecondaryStructureTask


def load_ss8_checkpoint(path: str, data: str):
    """(model, task) of a ``protein_ss8`` checkpoint with ``data`` as its data dir; refused in one line otherwise."""
    model, task, _ = load_checkpoint(path, data, seed=1)
    if not isinstance(task, SecondaryStructureTask):
        raise CheckpointError(f"{path}: a {type(task).__name__} checkpoint, not one of --task protein_ss8")
    return model, task


@torch.inference_mode()
def split_predictions(model, task, split: str, max_tokens: int = 8192, device: str = "cpu",
                      progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, true) SS8 indices of every labelled residue of ``split``, in batch order."""
    model.eval().to(device)
    task.load_dataset(split)
    dataset = task.dataset(split)
    batches = task.get_batch_iterator(
        dataset, max_tokens=max_tokens,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions()),
        ignore_invalid_inputs=False,
    ).next_epoch_itr(shuffle=False)
    predicted, true = [], []
    for sample in tqdm(batches, desc=split, disable=not progress, leave=False):
        sample = utils.apply_to_sample(lambda tensor: tensor.to(device), sample) if device != "cpu" else sample
        target = sample["target"]
        scored = target.ne(IGNORE)
        predicted.append(model(**sample["net_input"])[scored].argmax(dim=-1).cpu().numpy())
        true.append(target[scored].cpu().numpy())
    if not predicted:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(predicted).astype(np.int64), np.concatenate(true).astype(np.int64)
