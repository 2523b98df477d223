"""The ``contact_probe`` task: fit the bilinear contact probe on precomputed per-residue features.

Reads a data dir of ``{split}.npz`` (features, lengths, flattened contact maps; ``data/contact_probe.py``), one
protein per sample; the model (``--arch bilinear_contact_probe``) standardises with the train split's feature
statistics, and ``--criterion protein_contacts`` scores every resolved pair ``j - i >= 6``. What
``fairseq-esm-probes`` runs for each held-out partition (``tasks/contact_probe_training.py``).

    fairseq-train DATA --user-dir fairseq_esm --task contact_probe --arch bilinear_contact_probe \\
        --criterion protein_contacts --optimizer adam --lr 1e-3 --weight-decay 0.2 --lr-scheduler fixed \\
        --batch-size 1 --max-epoch 10 --disable-validation
"""

# no `from __future__ import annotations`: fairseq reads the config field types at runtime
import logging
import os
from dataclasses import dataclass, field

import numpy as np
from fairseq.tasks import register_task

from fairseq_esm.data.contact_probe import ContactProbeDataset, feature_stats, read_split
from fairseq_esm.tasks.esm_task import ResumableTask, RunConfig

logger = logging.getLogger(__name__)


@dataclass
class ContactProbeTaskConfig(RunConfig):
    data: str = field(default="???", metadata={"help": "data dir holding {split}.npz (features, lengths, contacts)"})


@register_task("contact_probe", dataclass=ContactProbeTaskConfig)
class ContactProbeTask(ResumableTask):
    """Contact maps from precomputed per-residue features; no dictionary, no length limit."""

    cfg: ContactProbeTaskConfig

    def split_path(self, split: str) -> str:
        """``{data}/{split}.npz``, which must exist."""
        path = os.path.join(self.cfg.data, f"{split}.npz")
        if not os.path.exists(path):
            raise FileNotFoundError(f"no split {split!r}: {path} not found")
        return path

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs) -> None:
        dataset = ContactProbeDataset(*read_split(self.split_path(split)))
        logger.info(f"{split}: {len(dataset):,} proteins, {int(dataset.sizes.sum()):,} residues")
        self.datasets[split] = dataset

    def feature_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the train split's features: the model's standardisation."""
        return feature_stats(self.split_path(self.cfg.train_subset))

    @property
    def source_dictionary(self) -> None:
        return None

    @property
    def target_dictionary(self) -> None:
        return None
