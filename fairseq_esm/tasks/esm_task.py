"""What every task of the plugin shares: the parts of fairseq's config it reads, resuming from an intact
checkpoint, and (``EsmTask``) proteins tokenized by one ESM alphabet, cropped to ``max_positions``."""

# no `from __future__ import annotations`: fairseq reads the config field types at runtime

import logging
from dataclasses import dataclass

import torch.distributed as dist
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask
from omegaconf import II, DictConfig

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
        first if a kill left it truncated (``checkpoints/recovery.py``), and in a distributed run have every rank
        read it (below). Loading a trained model does neither."""
        if not from_checkpoint:
            self.recover_last_checkpoint()
            self.load_checkpoint_on_every_rank()
        return super().build_model(cfg, from_checkpoint)

    def recover_last_checkpoint(self) -> None:
        """On rank 0, when fairseq will resume from ``SAVE_DIR/checkpoint_last.pt``; the other ranks wait for it."""
        if getattr(self.cfg, "restore_file", None) != "checkpoint_last.pt" or not getattr(self.cfg, "save_dir", None):
            return
        if distributed_world_size() > 1 and dist.get_rank() != 0:
            dist.barrier()  # rank 0 may be putting an intact checkpoint in place of checkpoint_last.pt
            return
        note = recover_last_checkpoint(self.cfg.save_dir, self.cfg.checkpoint_suffix or "")
        if note:
            logger.warning(note)
        if distributed_world_size() > 1:
            dist.barrier()

    def load_checkpoint_on_every_rank(self) -> None:
        """Set fairseq's ``--load-checkpoint-on-all-dp-ranks`` in a distributed run. Without it rank 0 reads the
        checkpoint and broadcasts it pickled, and the other ranks' ``torch.load`` (``weights_only`` by default
        since torch 2.6) refuses its ``omegaconf`` config: every resume of a multi-rank run would stop with an
        ``UnpicklingError``. Each rank reads the file itself instead, through the plugin's safe reader (the save
        directory must be one every node sees, as fairseq's resume already assumes)."""
        root = self.cfg._get_root() if isinstance(self.cfg, DictConfig) else None
        checkpoint = root.get("checkpoint") if root is not None else None
        if distributed_world_size() > 1 and checkpoint is not None and not checkpoint.load_checkpoint_on_all_dp_ranks:
            checkpoint.load_checkpoint_on_all_dp_ranks = True
            logger.info("every rank reads the checkpoint it resumes from itself (--load-checkpoint-on-all-dp-ranks)")


def distributed_world_size() -> int:
    """Ranks of the initialised default process group; 1 outside a distributed run."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


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
