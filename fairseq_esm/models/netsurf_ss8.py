"""Netsurf-style 8-state secondary-structure head on ESM representations (Rives et al. 2021, supplement 12;
Klausen et al. 2019, NetSurfP-2.0).

representations (+ optional extra features) -> LayerNorm -> [conv k1 | conv k2 | identity] concatenated ->
two-layer BiLSTM -> dropout -> linear to 8 classes (``H G I E B T S C``). The paper: 1024 LSTM units,
dropout 0.5; NetSurfP-2.0's convolutions have 32 filters of widths 129 and 257 (``netsurf_ss8_paper``).
The default ``netsurf_ss8`` is small enough to train on a CPU.
"""

# no `from __future__ import annotations`: fairseq reads the config field types at runtime
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq.models import BaseFairseqModel, register_model, register_model_architecture
from fairseq.utils import safe_getattr
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fairseq_esm.data.structure_labels_dataset import SS8_STATES
from fairseq_esm.models.backbone import Backbone, BackboneConfig


@dataclass
class NetsurfConfig(BackboneConfig):
    conv_channels: int = field(default=16, metadata={"help": "filters of each of the two parallel convolutions"})
    short_kernel: int = field(default=9, metadata={"help": "width of the first convolution (odd)"})
    long_kernel: int = field(default=17, metadata={"help": "width of the second convolution (odd)"})
    lstm_hidden: int = field(default=64, metadata={"help": "units per direction of the two-layer BiLSTM"})
    dropout: float = field(default=0.5, metadata={"help": "dropout between LSTM layers and before the output"})


class NetsurfHead(nn.Module):
    """(B, L, D) features and residue counts -> (B, L, 8) logits."""

    def __init__(self, in_dim: int, cfg: NetsurfConfig, n_classes: int = len(SS8_STATES)) -> None:
        super().__init__()
        for kernel in (cfg.short_kernel, cfg.long_kernel):
            if kernel % 2 == 0:
                raise ValueError(f"convolution widths must be odd (same-length output), got {kernel}")
        self.norm = nn.LayerNorm(in_dim)
        self.convs = nn.ModuleList(
            nn.Conv1d(in_dim, cfg.conv_channels, k, padding=k // 2) for k in (cfg.short_kernel, cfg.long_kernel)
        )
        self.lstm = nn.LSTM(in_dim + 2 * cfg.conv_channels, cfg.lstm_hidden, num_layers=2, batch_first=True,
                            bidirectional=True, dropout=cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(2 * cfg.lstm_hidden, n_classes)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        keep = (torch.arange(x.size(1), device=x.device)[None, :] < lengths[:, None]).unsqueeze(-1)  # (B, L, 1)
        x = self.norm(x) * keep  # padding stays zero for the convolutions
        channels = x.transpose(1, 2)  # (B, D, L)
        x = torch.cat([x] + [torch.relu(conv(channels)).transpose(1, 2) for conv in self.convs], dim=-1)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        hidden, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=x.size(1))
        return self.out(self.dropout(hidden))  # (B, L, 8)


@register_model("netsurf_ss8", dataclass=NetsurfConfig)
class NetsurfSS8Model(BaseFairseqModel):
    """ESM backbone (frozen unless --finetune-backbone) + Netsurf head; extra per-residue features concatenated."""

    def __init__(self, backbone: Backbone, head: NetsurfHead, feature_dim: int) -> None:
        super().__init__()
        self.backbone, self.head, self.feature_dim = backbone, head, feature_dim

    @classmethod
    def build_model(cls, cfg: NetsurfConfig, task) -> "NetsurfSS8Model":
        backbone = Backbone(cfg, task.source_dictionary.name)
        feature_dim = task.cfg.feature_dim
        return cls(backbone, NetsurfHead(backbone.embed_dim + feature_dim, cfg), feature_dim)

    def max_positions(self) -> Optional[int]:
        return None  # long proteins are windowed by the backbone

    def forward(self, src_tokens: Tensor, src_lengths: Tensor, features: Optional[Tensor] = None) -> Tensor:
        """Wrapped tokens (B, T), residue counts (B,), features (B, L, F) -> SS8 logits (B, L, 8)."""
        x = self.backbone(src_tokens, src_lengths)
        if self.feature_dim:
            x = torch.cat([x, features.to(x)], dim=-1)
        return self.head(x, src_lengths)


@register_model_architecture("netsurf_ss8", "netsurf_ss8_paper")
def netsurf_ss8_paper(cfg: NetsurfConfig) -> None:
    """The paper's sizes: 1024 LSTM units, dropout 0.5, NetSurfP-2.0's 32 filters of widths 129 and 257."""
    for key, value in (("conv_channels", 32), ("short_kernel", 129), ("long_kernel", 257), ("lstm_hidden", 1024)):
        setattr(cfg, key, safe_getattr(cfg, key, value))
