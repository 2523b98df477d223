"""Position embeddings: learned (ESM-1b, RoBERTa-style) and sinusoidal (ESM-1), fair-esm's numbering."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LearnedPositionalEmbedding(nn.Embedding):
    """Learned table indexed by ``padding_idx + 1 + position`` of each non-pad token; pads get ``padding_idx``."""

    def __init__(self, max_positions: int, embed_dim: int, padding_idx: int) -> None:
        super().__init__(max_positions + padding_idx + 1, embed_dim, padding_idx)
        self.max_positions = max_positions

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, T) -> (B, T, C)."""
        if tokens.size(1) > self.max_positions:
            raise ValueError(f"sequence of {tokens.size(1)} tokens exceeds max_positions={self.max_positions}")
        not_pad = tokens.ne(self.padding_idx).long()
        positions = torch.cumsum(not_pad, dim=1) * not_pad + self.padding_idx  # (B, T)
        return F.embedding(positions, self.weight, self.padding_idx)


class SinusoidalPositionalEmbedding(nn.Module):
    """Fixed sin/cos table over ``padding_idx + 1 + column index`` (padding does not shift positions)."""

    def __init__(self, embed_dim: int, padding_idx: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.padding_idx = padding_idx
        # carries the module's dtype through .half() and is a key of official ESM-1 state dicts
        self.register_buffer("_float_tensor", torch.zeros(1))

    def table(self, num_positions: int, device: torch.device) -> Tensor:
        """(num_positions, C) sin | cos table with the ``padding_idx`` row zeroed."""
        half = self.embed_dim // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float, device=device) * -(math.log(10000) / (half - 1)))
        angles = torch.arange(num_positions, dtype=torch.float, device=device)[:, None] * freqs[None, :]
        table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (N, 2 * half)
        if self.embed_dim % 2:
            table = F.pad(table, (0, 1))
        table[self.padding_idx] = 0
        return table

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, T) -> (B, T, C)."""
        batch, length = tokens.shape
        not_pad = tokens.ne(self.padding_idx)
        columns = torch.arange(length, device=tokens.device).expand(batch, length) + self.padding_idx + 1
        positions = torch.where(not_pad, columns, self.padding_idx)  # (B, T)
        table = self.table(self.padding_idx + 1 + length, tokens.device).to(self._float_tensor.dtype)
        return table[positions]
