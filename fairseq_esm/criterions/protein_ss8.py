"""``protein_ss8``: cross-entropy over the labelled residues, Q8 and Q3 accuracy logged for fairseq-validate.

The loss is summed in nats over residues with a label (``target != IGNORE``) and logged in bits per residue.
``q8`` is the percentage of labelled residues whose most probable state is the DSSP state, pooled over all
residues of the split (as CB513 Q8 is reported), not averaged per protein. ``q3`` is the same after DSSP's
standard reduction of both the predicted and the true state (H,G,I -> H; E,B -> E; T,S,C -> C): the 8-state
prediction's argmax, reduced, against the reduced label (``SS8_TO_SS3``). ``residues`` is the number of labelled
residues scored (summed, so fairseq-validate prints the split's total: nothing skipped goes unseen).
"""

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.dataclass import FairseqDataclass

from fairseq_esm.criterions.bits_criterion import BitsCriterion, Ratio
from fairseq_esm.data.structure_labels_dataset import IGNORE, SS8_TO_SS3


@dataclass
class SecondaryStructureCriterionConfig(FairseqDataclass):
    pass


@register_criterion("protein_ss8", dataclass=SecondaryStructureCriterionConfig)
class SecondaryStructureCriterion(BitsCriterion):
    """Per-residue 8-class cross-entropy; ``sample_size`` = labelled residues; ``q8`` and ``q3`` in percent."""

    loss_round = 4
    ratios = (Ratio("q8", "n_correct", "sample_size", 100.0, 2), Ratio("q3", "n_correct3", "sample_size", 100.0, 2))

    def forward(self, model: torch.nn.Module, sample: dict[str, Any], reduce: bool = True):
        target = sample["target"]  # (B, L), IGNORE where not scored
        logits = model(**sample["net_input"])  # (B, L, 8)
        scored = target.ne(IGNORE)
        lprobs = F.log_softmax(logits[scored], dim=-1, dtype=torch.float32)  # (N, 8)
        labels = target[scored]
        loss = F.nll_loss(lprobs, labels, reduction="sum")
        sample_size = int(scored.sum())
        predicted = lprobs.argmax(dim=-1)
        to_ss3 = torch.as_tensor(SS8_TO_SS3, device=labels.device)
        n_correct = int(predicted.eq(labels).sum())
        n_correct3 = int(to_ss3[predicted].eq(to_ss3[labels]).sum())
        return loss, sample_size, self.logging_output(sample, loss, sample_size, n_correct=n_correct,
                                                      n_correct3=n_correct3)

    @classmethod
    def reduce_metrics(cls, logging_outputs: list[dict[str, Any]]) -> None:
        """``loss``, ``q8``, ``q3`` and ``residues``: the labelled residues they are computed over."""
        super().reduce_metrics(logging_outputs)
        metrics.log_scalar_sum("residues", sum(int(log.get("sample_size", 0)) for log in logging_outputs))
