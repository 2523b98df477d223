"""ESM-1b's RoBERTa masked-LM head: dense -> GELU -> LayerNorm -> tied embedding + bias."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RobertaLMHead(nn.Module):
    """Projects features back to vocabulary logits through the (tied) input embedding matrix."""

    def __init__(self, embed_dim: int, weight: nn.Parameter, layer_norm_eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(embed_dim, embed_dim)
        self.layer_norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.weight = weight
        self.bias = nn.Parameter(torch.zeros(weight.size(0)))

    def forward(self, features: Tensor) -> Tensor:
        """features (..., C) -> logits (..., V)."""
        x = self.layer_norm(F.gelu(self.dense(features)))
        return F.linear(x, self.weight) + self.bias
