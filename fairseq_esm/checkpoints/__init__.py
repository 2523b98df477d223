"""Every checkpoint a user may hold, read through one loader: this plugin's fairseq checkpoints, official
fair-esm ``.pt`` files and HuggingFace ``EsmForMaskedLM`` directories; written back to each format by
:mod:`~fairseq_esm.checkpoints.pt_files` (official), :mod:`~fairseq_esm.checkpoints.huggingface` and the
plugin's :mod:`~fairseq_esm.tasks.fairseq_checkpoint` (which needs fairseq's config builder)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from fairseq_esm.checkpoints.pt_files import CheckpointError, read_model
from fairseq_esm.modules.alphabet import Alphabet
from fairseq_esm.modules.esm1 import ESM1


def is_hf_directory(path: str | Path) -> bool:
    """A HuggingFace model directory: a folder holding ``config.json``."""
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def pick_device(name: Optional[str] = None) -> torch.device:
    """``--device`` or the best available: cuda, else cpu."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(
    path: str | Path, device: Optional[str | torch.device] = "cpu", allow_unsafe: bool = False
) -> tuple[ESM1, Alphabet]:
    """(model in eval mode on ``device``, alphabet) from any supported checkpoint kind.

    ``allow_unsafe`` unpickles arbitrary objects (only for files you trust); ``device=None`` picks cuda if present.
    """
    path = Path(path)
    if is_hf_directory(path):
        from fairseq_esm.checkpoints.huggingface import load_hf_model  # transformers is optional

        model, alphabet = load_hf_model(path)
    elif path.is_dir():
        raise CheckpointError(f"{path} is a directory without config.json; expected a .pt file or a HuggingFace folder")
    else:
        model, alphabet = read_model(path, allow_unsafe)
    return model.to(pick_device(device) if device is None else device).eval(), alphabet


def untrained_like(model: ESM1, alphabet: Alphabet, seed: int) -> ESM1:
    """A freshly initialised model with ``model``'s config (same shape), seeded, on the same device."""
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    return ESM1(model.cfg, alphabet, model.generation).to(device).eval()
