"""``esm_masked_lm``: cross-entropy at the masked positions, reported in bits so ppl is the ECE.

The loss is summed over targets in nats (what is optimized); ``reduce_metrics`` logs it divided
by ``ln 2``, so fairseq's derived ``ppl`` (2 ** loss) is the paper's exponentiated cross-entropy.
"""


import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from fairseq import metrics, utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass


@dataclass
class EsmMaskedLMConfig(FairseqDataclass):
    pass


@register_criterion("esm_masked_lm", dataclass=EsmMaskedLMConfig)
class EsmMaskedLMCriterion(FairseqCriterion):
    """Masked-LM cross-entropy over the targets of ``protein_mlm`` samples."""

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
        logging_output = {
            "loss": loss.detach().sum(),
            "ntokens": sample["ntokens"],
            "nsentences": sample["nsentences"],
            "sample_size": sample_size,
            "n_correct": int(lprobs.argmax(dim=-1).eq(targets).sum()),
        }
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs: list[dict[str, Any]]) -> None:
        """Log ``loss`` in bits per target (so ``ppl`` = ECE) and ``accuracy`` in percent."""
        loss_sum = sum(float(log.get("loss", 0.0)) for log in logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        n_correct = sum(log.get("n_correct", 0) for log in logging_outputs)
        if sample_size == 0:
            return
        metrics.log_scalar("loss", loss_sum / sample_size / math.log(2), sample_size, round=3)
        metrics.log_scalar("accuracy", 100.0 * n_correct / sample_size, sample_size, round=3)
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["loss"].avg))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
