"""Multi-head self-attention with fairseq's parameter names, ESM-1's optional learned bias key/value and ESM-2's
rotary positions."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairseq_esm.modules.rotary import RotaryEmbedding


class SelfAttention(nn.Module):
    """Batch-first multi-head self-attention; fused SDPA unless per-head weights are requested (rotary positions
    rotate the queries and keys first, so they keep the fused path)."""

    def __init__(self, embed_dim: int, num_heads: int, add_bias_kv: bool = False, rotary: bool = False) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.bias_v = nn.Parameter(torch.zeros(1, 1, embed_dim))
        else:
            self.bias_k = self.bias_v = None
        self.rot_emb = RotaryEmbedding(self.head_dim) if rotary else None

    def _heads(self, x: Tensor) -> Tensor:
        """(B, T, C) -> (B, H, T, D)."""
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def _project(
        self, x: Tensor, key_padding_mask: Optional[Tensor]
    ) -> tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
        """Queries, keys, values (B, H, T|S, D) and the keep-mask (B, 1, 1, S) or None."""
        if torch.is_autocast_enabled(x.device.type):  # cast once for the three projections, not once each
            x = x.to(torch.get_autocast_dtype(x.device.type))
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
        if self.rot_emb is not None:
            q, k = self.rot_emb(q, k)
        keep = None if key_padding_mask is None else ~key_padding_mask
        if self.bias_k is not None:
            # the learned key/value is one extra, never-padded position at the end
            k = torch.cat([k, self._heads(self.bias_k).expand(k.size(0), -1, -1, -1)], dim=2)  # (B, H, S+1, D)
            v = torch.cat([v, self._heads(self.bias_v).expand(v.size(0), -1, -1, -1)], dim=2)
            if keep is not None:
                keep = torch.cat([keep, keep.new_ones(keep.size(0), 1)], dim=1)
        if keep is not None:
            keep = keep[:, None, None, :]  # (B, 1, 1, S)
        return q, k, v, keep

    def forward(
        self, x: Tensor, key_padding_mask: Optional[Tensor] = None, need_weights: bool = False
    ) -> tuple[Tensor, Optional[Tensor]]:
        """x (B, T, C), key_padding_mask (B, T) True at pads -> output (B, T, C), weights (B, H, T, S) or None."""
        q, k, v, keep = self._project(x, key_padding_mask)
        if need_weights:
            out, weights = self._explicit_attention(q, k, v, keep)
        else:
            # fused kernel: never materialises the (T, S) matrix, so it cannot return it
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)  # (B, H, T, D)
            weights = None
        batch, _, length, _ = out.shape
        out = out.transpose(1, 2).reshape(batch, length, -1)  # (B, T, C)
        return self.out_proj(out), weights

    def _explicit_attention(
        self, q: Tensor, k: Tensor, v: Tensor, keep: Optional[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Softmax attention written out, for when the caller needs the (B, H, T, S) weights."""
        scores = torch.matmul(q * self.scaling, k.transpose(-1, -2))  # (B, H, T, S)
        if keep is not None:
            scores = scores.masked_fill(~keep, float("-inf"))
        weights = F.softmax(scores, dim=-1, dtype=torch.float32).type_as(scores)
        return torch.matmul(weights, v), weights  # (B, H, T, D), (B, H, T, S)
