"""fairseq-train's own loop on a ``contact_probe`` data dir: the bilinear probe of ``fairseq-esm-probes``.

One run per held-out partition: task ``contact_probe``, model ``bilinear_contact_probe``, criterion
``protein_contacts``, one protein per update, trained as every in-process run is (``tasks/fairseq_training.py``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from fairseq_esm.tasks.fairseq_training import Optimisation, run_fairseq_train, run_options
from fairseq_esm.tasks.heldout import USER_DIR

CPU = torch.device("cpu")


def probe_argv(data: str | Path, save_dir: str | Path, probe_dim: int, settings: Optimisation,
               device: torch.device) -> list[str]:
    """The fairseq-train command line of one probe fit."""
    return [str(data), "--user-dir", USER_DIR, "--task", "contact_probe", "--arch", "bilinear_contact_probe",
            "--criterion", "protein_contacts", "--probe-dim", str(probe_dim), *run_options(settings, save_dir, device)]


def train_contact_probe(data: str | Path, save_dir: str | Path, probe_dim: int, settings: Optimisation,
                        device: torch.device = CPU, progress: bool = False) -> tuple[Path, list[float]]:
    """Fit the probe on ``data``'s train split; returns ``checkpoint_last.pt`` and each epoch's mean loss (bits)."""
    return run_fairseq_train(probe_argv(data, save_dir, probe_dim, settings, device), save_dir, device,
                             progress=progress, desc="contact probe")
