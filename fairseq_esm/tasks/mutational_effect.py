"""The ``mutational_effect`` task: fine-tune an ESM language model to regress one protein's measured effects.

The paper's Figure 7 head (Methods "Mutational Effect"): a variant's score is the sum over its mutated positions
of log p(mutant) - log p(wild type), with those positions masked (the masked marginal), trained on the squared
error against the target (``--criterion mutational_effect``). Reads a data dir of ``wild_type.fasta`` and
``{split}.tsv`` (``data/mutational_effect.py``); one sample is one masked wild-type window, so ``--batch-size``
counts distinct position sets per update. The model is a registered ESM model started from
``--pretrained-checkpoint``; ``--train-layers N`` freezes all but its last N layers and its LM head.

    fairseq-train DATA --user-dir fairseq_esm --task mutational_effect --criterion mutational_effect \\
        --arch esm1b_t33_650M_UR50S --pretrained-checkpoint esm1b_t33_650M_UR50S.pt --optimizer adam \\
        --lr 1e-4 --weight-decay 0.01 --lr-scheduler fixed --batch-size 8 --max-epoch 3
    fairseq-validate DATA --user-dir fairseq_esm --task mutational_effect --path checkpoint_last.pt \\
        --valid-subset test
"""

# no `from __future__ import annotations`: fairseq reads the config field types at runtime
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.tasks import register_task

from fairseq_esm.data.mutational_effect import MutationalEffectDataset, read_split, read_wild_type
from fairseq_esm.errors import InputError
from fairseq_esm.modules.alphabet import Alphabet, load_alphabet
from fairseq_esm.modules.batching import residue_budget
from fairseq_esm.modules.esm1 import ESM1
from fairseq_esm.tasks.esm_task import EsmTask, RunConfig

logger = logging.getLogger(__name__)

#: parameters that --train-layers keeps trainable besides the last layers (the tied embedding stays frozen)
HEAD_PARAMETERS = ("emb_layer_norm_after.", "lm_head.dense.", "lm_head.layer_norm.", "lm_head.bias", "embed_out")


@dataclass
class MutationalEffectConfig(RunConfig):
    data: str = field(default="???", metadata={"help": "data dir holding wild_type.fasta and {split}.tsv"})
    alphabet: ChoiceEnum(["esm1b", "esm1"]) = field(  # type: ignore[valid-type]
        default="esm1b", metadata={"help": "ESM vocabulary of the model: esm1b (<cls> ... <eos>) or esm1 (<cls> ...)"}
    )
    max_positions: int = field(
        default=1024, metadata={"help": "the model's context in tokens; longer wild types are cut to the window "
                                "centred on each variant's positions"}
    )
    train_layers: Optional[int] = field(
        default=None, metadata={"help": "train only the last N layers, the final LayerNorm and the LM head's own "
                                "weights (default: the whole model)"}
    )


def freeze_all_but_last(model: ESM1, layers: int) -> None:
    """Leave only the last ``layers`` layers, the final LayerNorm and the LM head's own weights trainable."""
    if not 1 <= layers <= model.num_layers:
        raise InputError(f"--train-layers {layers}: the model has {model.num_layers} layers")
    keep = HEAD_PARAMETERS + tuple(f"layers.{i}." for i in range(model.num_layers - layers, model.num_layers))
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(keep))


@register_task("mutational_effect", dataclass=MutationalEffectConfig)
class MutationalEffectTask(EsmTask):
    """Regress measured mutational effects with the masked-marginal head of an ESM model."""

    cfg: MutationalEffectConfig

    def __init__(self, cfg: MutationalEffectConfig, alphabet: Alphabet, wild_type: str) -> None:
        super().__init__(cfg, alphabet)
        self.wild_type = wild_type

    @classmethod
    def setup_task(cls, cfg: MutationalEffectConfig, **kwargs) -> "MutationalEffectTask":
        """Read the wild type of the data dir."""
        wild_type = read_wild_type(cfg.data)
        logger.info(f"wild type: {len(wild_type)} residues")
        return cls(cfg, load_alphabet(str(cfg.alphabet)), wild_type)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs) -> None:
        path = os.path.join(self.cfg.data, f"{split}.tsv")
        if not os.path.exists(path):
            raise FileNotFoundError(f"no split {split!r}: {path} not found")
        budget = residue_budget(self.cfg.max_positions, self.alphabet)
        variants, targets = read_split(path, self.wild_type, budget)
        dataset = MutationalEffectDataset(self.alphabet, self.wild_type, variants, targets, budget,
                                          shuffle=split == self.cfg.train_subset, seed=self.cfg.seed)
        logger.info(f"{split}: {dataset.num_variants:,} variants at {len(dataset):,} position sets")
        self.datasets[split] = dataset

    def build_model(self, cfg: FairseqDataclass, from_checkpoint: bool = False):
        """The registered model (``--pretrained-checkpoint`` loaded there), all but its last layers frozen on
        ``--train-layers``."""
        model = super().build_model(cfg, from_checkpoint)
        if self.cfg.train_layers is not None:
            freeze_all_but_last(model, self.cfg.train_layers)
        return model
