"""Rotary position embeddings (Su et al. 2021) as ESM-2 uses them: each head's queries and keys rotated by their
position, so attention scores depend on relative offsets; no table and nothing added to the embeddings."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dimension."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotates (B, H, T, D) queries and keys by position ``0 … T-1`` with frequencies ``10000^(-2i/D)``.

    ``inv_freq`` is a buffer kept in state dicts (official ESM-2 files hold ``rot_emb.inv_freq``). Inputs are
    right-padded, so a residue's position is its column."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}")
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)))

    def cos_sin(self, length: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """(T, D) cosines and sines of every position's angles (computed in the buffer's precision)."""
        positions = torch.arange(length, device=device).type_as(self.inv_freq)
        angles = torch.outer(positions, self.inv_freq)  # (T, D/2)
        angles = torch.cat((angles, angles), dim=-1)  # (T, D)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """Rotated (B, H, T, D) queries and keys."""
        cos, sin = self.cos_sin(k.size(-2), k.device, k.dtype)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
