"""``mutational_effect``: squared error of the masked-marginal score against each variant's target.

A variant's score is the sum over its mutated positions of log p(mutant) - log p(wild type), read from one
forward pass of the wild-type window with those positions masked (``data/mutational_effect.py``). The loss is
the squared error summed over the batch's variants and ``sample_size`` is their number, so fairseq's update is
the gradient of the mean squared error and ``loss`` is logged as the MSE (not in bits).
"""

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from fairseq.criterions import register_criterion
from fairseq.dataclass import FairseqDataclass

from fairseq_esm.criterions.bits_criterion import BitsCriterion


@dataclass
class MutationalEffectCriterionConfig(FairseqDataclass):
    pass


def variant_scores(model: torch.nn.Module, sample: dict[str, Any]) -> torch.Tensor:
    """(N,) masked-marginal score of every variant in the batch."""
    logits = model(**sample["net_input"])["logits"]  # (R, V) at the masked positions, row-major
    lprobs = F.log_softmax(logits, dim=-1, dtype=torch.float32)
    rows = sample["rows"]
    ratios = lprobs[rows, sample["mt"]] - lprobs[rows, sample["wt"]]  # one per substitution
    return ratios.new_zeros(len(sample["target"])).index_add_(0, sample["variant"], ratios)


@register_criterion("mutational_effect", dataclass=MutationalEffectCriterionConfig)
class MutationalEffectCriterion(BitsCriterion):
    """Sum of squared errors over variants; ``sample_size`` = variants; ``loss`` logged as the MSE."""

    loss_scale = 1.0
    loss_round = 4

    def forward(self, model: torch.nn.Module, sample: dict[str, Any], reduce: bool = True):
        loss = (variant_scores(model, sample) - sample["target"].float()).pow(2).sum()
        sample_size = len(sample["target"])
        return loss, sample_size, self.logging_output(sample, loss, sample_size)
