"""``protein_contacts``: binary cross-entropy over resolved pairs at separation >= 6, Top-L long-range precision.

The loss is summed in nats over pairs i < j with ``j - i >= MIN_SEPARATION`` and both residues resolved, logged
in bits per pair. ``p_at_l_long`` is the Top-L precision at separation >= 24 of each protein
(``evaluation/contact_metrics.py``), averaged over proteins that have long-range candidates.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from fairseq.criterions import register_criterion
from fairseq.dataclass import FairseqDataclass

from fairseq_esm.criterions.bits_criterion import BitsCriterion, Ratio
from fairseq_esm.data.structure_labels_dataset import IGNORE
from fairseq_esm.modules.contact_metrics import contact_precisions

#: the shortest sequence separation trained on (local pairs are trivially in contact)
MIN_SEPARATION = 6


@dataclass
class ContactCriterionConfig(FairseqDataclass):
    pass


def long_range_precisions(probs: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> list[float]:
    """Top-L long-range precision of each protein (NaN: no long-range candidates)."""
    values = []
    for row, n in enumerate(lengths.tolist()):
        contacts = target[row, :n, :n].cpu().numpy()
        resolved = np.diagonal(contacts) != IGNORE  # a pair is IGNORE iff one of its residues is unresolved
        values.append(contact_precisions(probs[row, :n, :n].float().cpu().numpy(), contacts, resolved)["long_P@L"])
    return values


@register_criterion("protein_contacts", dataclass=ContactCriterionConfig)
class ContactCriterion(BitsCriterion):
    """Pairwise BCE; ``sample_size`` = scored pairs; ``p_at_l_long`` averaged over proteins (evaluation only)."""

    loss_round = 4
    ratios = (Ratio("p_at_l_long", "p_at_l_long_sum", "p_at_l_long_n", 1.0, 4),)

    def forward(self, model: torch.nn.Module, sample: dict[str, Any], reduce: bool = True):
        target = sample["target"]  # (B, L, L), IGNORE where not scored
        logits = model(**sample["net_input"])  # (B, L, L)
        width = target.size(1)
        scored = target.ne(IGNORE) & torch.ones(width, width, dtype=torch.bool, device=target.device).triu(
            MIN_SEPARATION
        )
        loss = F.binary_cross_entropy_with_logits(logits[scored].float(), target[scored].float(), reduction="sum")
        precisions = [] if model.training else long_range_precisions(
            torch.sigmoid(logits.detach()), target, sample["net_input"]["src_lengths"]
        )
        finite = [p for p in precisions if math.isfinite(p)]
        sample_size = int(scored.sum())
        counts = {"p_at_l_long_sum": sum(finite), "p_at_l_long_n": len(finite)}
        return loss, sample_size, self.logging_output(sample, loss, sample_size, **counts)
