"""``bidirectional_lm``: cross-entropy at every residue of the unmasked protein, reported in bits.

For models that never see the token they predict (``bilstm_lm``). ``protein_mlm`` samples carry
masked ``src_tokens``; the original protein is rebuilt (``target`` where it is not ``<pad>``,
``src_tokens`` elsewhere) and every residue is scored, not only the masked ones. As in
``esm_masked_lm`` the loss is logged in bits, so fairseq's ``ppl`` is the ECE over all residues;
``masked_ppl`` is the ECE over just the task's masked positions, the targets ``esm_masked_lm``
scores, for a like-for-like comparison with a Transformer on the same held-out set.
"""


from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from fairseq.criterions import register_criterion
from fairseq.dataclass import FairseqDataclass

from fairseq_esm.criterions.bits_criterion import BITS, BitsCriterion, Ratio
from fairseq_esm.io.residues import RESIDUE_LETTERS


@dataclass
class BidirectionalLMConfig(FairseqDataclass):
    pass


def rebuild_original(src_tokens: torch.Tensor, target: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """The unmasked protein: ``target`` at the masked positions, ``src_tokens`` everywhere else."""
    return torch.where(target.ne(padding_idx), target, src_tokens)


@register_criterion("bidirectional_lm", dataclass=BidirectionalLMConfig)
class BidirectionalLMCriterion(BitsCriterion):
    """Cross-entropy over all residues (not ``<cls>``/``<eos>``/``<pad>``) of ``protein_mlm`` samples;
    ``masked_ppl`` is the ECE over the positions the masked LM would be scored on."""

    ratios = (Ratio("accuracy", "n_correct", "sample_size", 100.0, 3),
              Ratio("masked_loss", "masked_loss", "masked_size", BITS, 3))
    perplexities = {"ppl": "loss", "masked_ppl": "masked_loss"}

    def __init__(self, task) -> None:
        super().__init__(task)
        alphabet = task.source_dictionary
        self.padding_idx = alphabet.pad()
        is_residue = np.zeros(len(alphabet), dtype=bool)
        is_residue[[alphabet.index(letter) for letter in RESIDUE_LETTERS]] = True
        self.is_residue = torch.from_numpy(is_residue)

    def forward(self, model: torch.nn.Module, sample: dict[str, Any], reduce: bool = True):
        """Summed CE (nats) over the residues of the rebuilt proteins; ``sample_size`` is the residue count."""
        target = sample["target"]
        tokens = rebuild_original(sample["net_input"]["src_tokens"], target, self.padding_idx)
        scored = self.is_residue.to(tokens.device)[tokens]  # (B, T)
        logits = model(src_tokens=tokens, masked_tokens=scored)["logits"]  # (N, V)
        lprobs = F.log_softmax(logits, dim=-1, dtype=torch.float32)
        per_residue = F.nll_loss(lprobs, tokens[scored], reduction="none")  # (N,)
        was_masked = target.ne(self.padding_idx)[scored]  # (N,)
        loss = per_residue.sum() if reduce else per_residue
        sample_size = int(per_residue.numel())
        counts = {"n_correct": int(lprobs.argmax(dim=-1).eq(tokens[scored]).sum()),
                  "masked_loss": per_residue.detach()[was_masked].sum(), "masked_size": int(was_masked.sum())}
        return loss, sample_size, self.logging_output(sample, per_residue, sample_size, **counts)
