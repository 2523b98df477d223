"""Dilated residual 2D network for binary contacts on ESM representations (Rives et al. 2021, supplement 13;
after Wang et al. 2017, Xu 2018, Adhikari 2019).

representations (+ optional extra features) -> linear to d2 -> outer concatenation (2·d2, L, L), with optional
pair features (the MSA "cov" maps, K*K) concatenated in the channel dimension -> 1×1 conv to
d3 -> MaxOut over channel pairs (d3/2) -> N residual blocks [BatchNorm-ReLU-Conv3×3-Dropout-ReLU-Conv3×3],
dilations 1, 2, 4 repeating -> Conv3×3 to one map -> symmetrised logits (sigmoid in the criterion).
The paper: d2 = 128, d3 = 128, 32 blocks, dropout 0.3 (``contact_resnet_paper``); ``contact_resnet`` is small.
"""

# no `from __future__ import annotations`: fairseq reads the config field types at runtime
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq.models import BaseFairseqModel, register_model, register_model_architecture
from fairseq.utils import safe_getattr
from torch import Tensor, nn

from fairseq_esm.models.backbone import Backbone, BackboneConfig

DILATIONS = (1, 2, 4)


@dataclass
class ContactResNetConfig(BackboneConfig):
    sequence_dim: int = field(default=32, metadata={"help": "d2: per-residue projection before the outer concat"})
    pair_channels: int = field(default=32, metadata={"help": "d3: channels of the 1×1 conv (halved by MaxOut)"})
    blocks: int = field(default=6, metadata={"help": "residual blocks (dilations 1, 2, 4 repeating)"})
    dropout: float = field(default=0.3, metadata={"help": "dropout inside each residual block"})


class ResidualBlock(nn.Module):
    """x + Conv3×3(ReLU(Dropout(Conv3×3(ReLU(BatchNorm(x)))))), both convs dilated, same size. Each conv reads
    zeros outside the protein (``keep``), as if the map were unpadded: BatchNorm shifts the padding off zero."""

    def __init__(self, channels: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        """x (B, C, L, L), keep (B, 1, L, L) -> (B, C, L, L), zero outside the protein."""
        y = self.conv1(torch.relu(self.norm(x)) * keep)
        y = self.conv2(torch.relu(self.dropout(y)) * keep)
        return (x + y) * keep


class ContactResNet(nn.Module):
    """(B, L, D) features [+ (B, P, L, L) pair features] -> (B, L, L) symmetric contact logits."""

    def __init__(self, in_dim: int, cfg: ContactResNetConfig, pair_dim: int = 0) -> None:
        super().__init__()
        if cfg.pair_channels % 2:
            raise ValueError(f"--pair-channels must be even (MaxOut halves it), got {cfg.pair_channels}")
        self.project = nn.Linear(in_dim, cfg.sequence_dim)
        self.pair_in = nn.Conv2d(2 * cfg.sequence_dim + pair_dim, cfg.pair_channels, 1)
        channels = cfg.pair_channels // 2
        self.blocks = nn.ModuleList(
            ResidualBlock(channels, DILATIONS[i % len(DILATIONS)], cfg.dropout) for i in range(cfg.blocks)
        )
        self.out = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, x: Tensor, lengths: Tensor, pair: Optional[Tensor] = None) -> Tensor:
        width = x.size(1)
        keep = torch.arange(width, device=x.device)[None, :] < lengths[:, None]  # (B, L)
        pair_keep = (keep[:, :, None] & keep[:, None, :]).unsqueeze(1)  # (B, 1, L, L)
        y = self.project(x).transpose(1, 2)  # (B, d2, L)
        z = torch.cat([y[:, :, :, None].expand(-1, -1, -1, width), y[:, :, None, :].expand(-1, -1, width, -1)], 1)
        if pair is not None:
            z = torch.cat([z, pair.to(z)], 1)
        z = self.pair_in(z) * pair_keep  # (B, d3, L, L), zero outside the protein
        z = z.view(z.size(0), -1, 2, width, width).amax(dim=2)  # MaxOut over channel pairs: (B, d3/2, L, L)
        for block in self.blocks:
            z = block(z, pair_keep)
        logits = self.out(z).squeeze(1)  # (B, L, L)
        return (logits + logits.transpose(1, 2)) / 2


@register_model("contact_resnet", dataclass=ContactResNetConfig)
class ContactResNetModel(BaseFairseqModel):
    """ESM backbone (frozen unless --finetune-backbone) + dilated ResNet; extra per-residue features and the
    task's pair features (``--pair-feature-k``) concatenated."""

    def __init__(self, backbone: Backbone, head: ContactResNet, feature_dim: int, pair_dim: int = 0) -> None:
        super().__init__()
        self.backbone, self.head, self.feature_dim, self.pair_dim = backbone, head, feature_dim, pair_dim

    @classmethod
    def build_model(cls, cfg: ContactResNetConfig, task) -> "ContactResNetModel":
        backbone = Backbone(cfg, task.source_dictionary.name)
        feature_dim, pair_dim = task.cfg.feature_dim, task.cfg.pair_feature_k ** 2
        return cls(backbone, ContactResNet(backbone.embed_dim + feature_dim, cfg, pair_dim), feature_dim, pair_dim)

    def max_positions(self) -> Optional[int]:
        return None  # long proteins are windowed by the backbone; memory grows with L² (--max-positions)

    def forward(self, src_tokens: Tensor, src_lengths: Tensor, features: Optional[Tensor] = None,
                pair_features: Optional[Tensor] = None) -> Tensor:
        """Wrapped tokens (B, T), residue counts (B,), features (B, L, F), pair features (B, P, L, L) ->
        contact logits (B, L, L)."""
        x = self.backbone(src_tokens, src_lengths)
        if self.feature_dim:
            x = torch.cat([x, features.to(x)], dim=-1)
        return self.head(x, src_lengths, pair_features if self.pair_dim else None)


@register_model_architecture("contact_resnet", "contact_resnet_paper")
def contact_resnet_paper(cfg: ContactResNetConfig) -> None:
    """The paper's sizes: d2 = 128, d3 = 128 (64 after MaxOut), 32 blocks."""
    for key, value in (("sequence_dim", 128), ("pair_channels", 128), ("blocks", 32)):
        setattr(cfg, key, safe_getattr(cfg, key, value))
