"""What every task of the plugin shares: the parts of fairseq's config it reads, resuming from an intact
checkpoint, and (``EsmTask``) proteins tokenized by one ESM alphabet, cropped to ``max_positions``."""

# no `from __future__ import annotations`: fairseq reads the config field types at runtime

import logging
from dataclasses import dataclass

import torch.distributed as dist
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask
from omegaconf import II

from fairseq_esm.checkpoints.recovery import recover_last_checkpoint
from fairseq_esm.modules.alphabet import Alphabet

logger = logging.getLogger(__name__)


@dataclass
class RunConfig(FairseqDataclass):
    """Settings of the whole run a task reads (interpolated from fairseq's other config groups)."""

    seed: int = II("common.seed")
    train_subset: str = II("dataset.train_subset")
    save_dir: str = II("checkpoint.save_dir")
    restore_file: str = II("checkpoint.restore_file")
    checkpoint_suffix: str = II("checkpoint.checkpoint_suffix")


class ResumableTask(FairseqTask):
    """A task whose fairseq-train run resumes from the newest intact checkpoint after a kill during a save."""

    def build_model(self, cfg: FairseqDataclass, from_checkpoint: bool = False):
        """fairseq-train builds a fresh model, then restores ``checkpoint_last.pt`` into it: repair that file
        first if a kill left it truncated (``checkpoints/recovery.py``). Loading a trained model does not."""
        if not from_checkpoint:
            self.recover_last_checkpoint()
        return super().build_model(cfg, from_checkpoint)

    def recover_last_checkpoint(self) -> None:
        """On rank 0, when fairseq will resume from ``SAVE_DIR/checkpoint_last.pt``."""
        if getattr(self.cfg, "restore_file", None) != "checkpoint_last.pt" or not getattr(self.cfg, "save_dir", None):
            return
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        note = recover_last_checkpoint(self.cfg.save_dir, self.cfg.checkpoint_suffix or "")
        if note:
            logger.warning(note)


class EsmTask(ResumableTask):
    """A fairseq task over proteins: the alphabet is both dictionaries; ``cfg.max_positions`` bounds a sample."""

    def __init__(self, cfg, alphabet: Alphabet) -> None:
        super().__init__(cfg)
        self.alphabet = alphabet

    def max_positions(self) -> int:
        return self.cfg.max_positions

    @property
    def source_dictionary(self) -> Alphabet:
        return self.alphabet

    @property
    def target_dictionary(self) -> Alphabet:
        return self.alphabet
