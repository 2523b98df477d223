"""The pre-LayerNorm Transformer block shared by ESM-1, ESM-1b and ESM-2."""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from fairseq_esm.modules.attention import SelfAttention


class TransformerLayer(nn.Module):
    """x + Attn(LN(x)), then x + FFN(LN(x)) with exact (erf) GELU; fairseq parameter names."""

    def __init__(
        self, embed_dim: int, ffn_embed_dim: int, attention_heads: int, add_bias_kv: bool, layer_norm_eps: float,
        rotary: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = SelfAttention(embed_dim, attention_heads, add_bias_kv=add_bias_kv, rotary=rotary)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.fc1 = nn.Linear(embed_dim, ffn_embed_dim)
        self.fc2 = nn.Linear(ffn_embed_dim, embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)

    def forward(
        self, x: Tensor, padding_mask: Optional[Tensor] = None, need_head_weights: bool = False
    ) -> tuple[Tensor, Optional[Tensor]]:
        """x (B, T, C) -> (B, T, C) and the per-head attention (B, H, T, S) when asked for."""
        attn_out, attn = self.self_attn(self.self_attn_layer_norm(x), padding_mask, need_weights=need_head_weights)
        x = x + attn_out
        hidden = self.fc1(self.final_layer_norm(x))
        if not getattr(self.fc1, "applies_gelu", False):  # set_precision's packed fc1 applies it in its kernel
            hidden = F.gelu(hidden)
        x = x + self.fc2(hidden)
        return x, attn
