"""``bilinear_contact_probe``: the linear contact probe (``modules/bilinear_contact_probe.py``) as a fairseq model.

Built on the ``contact_probe`` task: its input size and standardisation (buffers, saved in the checkpoint) come
from the train split's features, so a checkpoint's state dict loads into the plain torch module.
"""

# no `from __future__ import annotations`: fairseq reads the config field types at runtime
from dataclasses import dataclass, field

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model

from fairseq_esm.modules.bilinear_contact_probe import BilinearContactProbe


@dataclass
class BilinearContactProbeConfig(FairseqDataclass):
    probe_dim: int = field(default=128, metadata={"help": "dimension of the two linear maps (the paper's 128)"})


@register_model("bilinear_contact_probe", dataclass=BilinearContactProbeConfig)
class BilinearContactProbeModel(BilinearContactProbe, BaseFairseqModel):
    """The probe on (B, L, C) features -> (B, L, L) logits; standardised with the train split's statistics."""

    @classmethod
    def build_model(cls, cfg: BilinearContactProbeConfig, task) -> "BilinearContactProbeModel":
        mean, std = task.feature_stats()
        return cls(len(mean), cfg.probe_dim, torch.from_numpy(mean), torch.from_numpy(std))

    def forward(self, features: torch.Tensor, src_lengths: torch.Tensor) -> torch.Tensor:
        """Logits of every pair; ``src_lengths`` is the criterion's (padding is never scored)."""
        return super().forward(features)
