"""``esm_masked_lm``: cross-entropy at the masked positions, reported in bits so ppl is the ECE.

The loss is summed over targets in nats (what is optimized); ``reduce_metrics`` logs it divided
by ``ln 2``, so fairseq's derived ``ppl`` (2 ** loss) is the paper's exponentiated cross-entropy.
"""


from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from fairseq.criterions import register_criterion
from fairseq.dataclass import FairseqDataclass

from fairseq_esm.criterions.bits_criterion import BitsCriterion, Ratio


@dataclass
class EsmMaskedLMConfig(FairseqDataclass):
    pass


@register_criterion("esm_masked_lm", dataclass=EsmMaskedLMConfig)
class EsmMaskedLMCriterion(BitsCriterion):
    """Masked-LM cross-entropy over the targets of ``protein_mlm`` samples; ``ppl`` is the ECE."""

    ratios = (Ratio("accuracy", "n_correct", "sample_size", 100.0, 3),)
    perplexities = {"ppl": "loss"}

    def __init__(self, task) -> None:
        super().__init__(task)
        self.padding_idx = task.source_dictionary.pad()

    def forward(self, model: torch.nn.Module, sample: dict[str, Any], reduce: bool = True):
        """Summed CE (nats) at ``target != <pad>``; ``sample_size`` is the number of targets."""
        target = sample["target"]
        masked_tokens = target.ne(self.padding_idx)
        logits = model(**sample["net_input"], masked_tokens=masked_tokens)["logits"]
        targets = target[masked_tokens]
        lprobs = F.log_softmax(logits, dim=-1, dtype=torch.float32)
        loss = F.nll_loss(lprobs, targets, reduction="sum" if reduce else "none")
        sample_size = int(targets.numel())
        n_correct = int(lprobs.argmax(dim=-1).eq(targets).sum())
        return loss, sample_size, self.logging_output(sample, loss, sample_size, n_correct=n_correct)
