"""One loader for every model a user may hold: our fairseq checkpoints, official fair-esm ``.pt``
files, and HuggingFace ``EsmForMaskedLM`` directories (converted to our model on load)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..alphabet import EsmAlphabet
from ..models.esm import EsmModel
from ..pretrained import CheckpointError, load_model


def is_hf_directory(path: str | Path) -> bool:
    """A HuggingFace model directory: a folder holding ``config.json``."""
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def load_any(path: str | Path, device: str | torch.device = "cpu", allow_unsafe: bool = False
             ) -> tuple[EsmModel, EsmAlphabet]:
    """(model in eval mode on ``device``, alphabet) from any supported checkpoint kind."""
    path = Path(path)
    if is_hf_directory(path):
        from ..hf import load_hf_model  # transformers is optional: import only when needed

        model, alphabet = load_hf_model(path)
    elif path.is_dir():
        raise CheckpointError(f"{path} is a directory without config.json; expected a .pt file or a HuggingFace folder")
    else:
        model, alphabet = load_model(path, allow_unsafe)
    return model.to(device).eval(), alphabet


def pick_device(name: str | None = None) -> torch.device:
    """``--device`` or the best available: cuda, else cpu."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def untrained_like(model: EsmModel, alphabet: EsmAlphabet, seed: int) -> EsmModel:
    """A freshly initialised model with ``model``'s config (same shape), seeded, on the same device."""
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    return type(model)(model.cfg, alphabet).to(device).eval()
