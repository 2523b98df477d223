"""``protein_ss8``: cross-entropy over the labelled residues, Q8 accuracy logged for fairseq-validate.

The loss is summed in nats over residues with a label (``target != IGNORE``) and logged in bits per residue.
``q8`` is the percentage of labelled residues whose most probable state is the DSSP state, pooled over all
residues of the split (as CB513 Q8 is reported), not averaged per protein.
"""

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from fairseq.criterions import register_criterion
from fairseq.dataclass import FairseqDataclass

from fairseq_esm.criterions.bits_criterion import BitsCriterion, Ratio
from fairseq_esm.data.structure_labels_dataset import IGNORE


@dataclass
class SecondaryStructureCriterionConfig(FairseqDataclass):
    pass


@register_criterion("protein_ss8", dataclass=SecondaryStructureCriterionConfig)
class SecondaryStructureCriterion(BitsCriterion):
    """Per-residue 8-class cross-entropy; ``sample_size`` = labelled residues; ``q8`` in percent."""

    loss_round = 4
    ratios = (Ratio("q8", "n_correct", "sample_size", 100.0, 2),)

    def forward(self, model: torch.nn.Module, sample: dict[str, Any], reduce: bool = True):
        target = sample["target"]  # (B, L), IGNORE where not scored
        logits = model(**sample["net_input"])  # (B, L, 8)
        scored = target.ne(IGNORE)
        lprobs = F.log_softmax(logits[scored], dim=-1, dtype=torch.float32)  # (N, 8)
        loss = F.nll_loss(lprobs, target[scored], reduction="sum")
        sample_size = int(scored.sum())
        n_correct = int(lprobs.argmax(dim=-1).eq(target[scored]).sum())
        return loss, sample_size, self.logging_output(sample, loss, sample_size, n_correct=n_correct)
