"""``protein_ss8``: cross-entropy over the labelled residues, Q8 accuracy logged for fairseq-validate.

The loss is summed in nats over residues with a label (``target != IGNORE``) and logged in bits per residue.
``q8`` is the percentage of labelled residues whose most probable state is the DSSP state, pooled over all
residues of the split (as CB513 Q8 is reported), not averaged per protein.
"""

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass

from fairseq_esm.data.structure_labels_dataset import IGNORE


@dataclass
class SecondaryStructureCriterionConfig(FairseqDataclass):
    pass


@register_criterion("protein_ss8", dataclass=SecondaryStructureCriterionConfig)
class SecondaryStructureCriterion(FairseqCriterion):
    """Per-residue 8-class cross-entropy; ``sample_size`` = labelled residues."""

    def forward(self, model: torch.nn.Module, sample: dict[str, Any], reduce: bool = True):
        target = sample["target"]  # (B, L), IGNORE where not scored
        logits = model(**sample["net_input"])  # (B, L, 8)
        scored = target.ne(IGNORE)
        lprobs = F.log_softmax(logits[scored], dim=-1, dtype=torch.float32)  # (N, 8)
        loss = F.nll_loss(lprobs, target[scored], reduction="sum")
        sample_size = int(scored.sum())
        logging_output = {
            "loss": loss.detach(),
            "ntokens": sample["ntokens"],
            "nsentences": sample["nsentences"],
            "sample_size": sample_size,
            "n_correct": int(lprobs.argmax(dim=-1).eq(target[scored]).sum()),
        }
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs: list[dict[str, Any]]) -> None:
        """``loss`` in bits per labelled residue, ``q8`` in percent of labelled residues."""
        loss_sum = sum(float(log.get("loss", 0.0)) for log in logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        n_correct = sum(log.get("n_correct", 0) for log in logging_outputs)
        if sample_size == 0:
            return
        metrics.log_scalar("loss", loss_sum / sample_size / math.log(2), sample_size, round=4)
        metrics.log_scalar("q8", 100.0 * n_correct / sample_size, sample_size, round=2)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
