"""Unsupervised contact prediction: logistic regression on symmetrized, APC-corrected attention maps."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn


def symmetrize(x: Tensor) -> Tensor:
    """Make the last two dimensions symmetric."""
    return x + x.transpose(-1, -2)


def apc(x: Tensor) -> Tensor:
    """Average product correction: remove the row-mean x column-mean background of each map."""
    row = x.sum(-1, keepdim=True)
    col = x.sum(-2, keepdim=True)
    total = x.sum((-1, -2), keepdim=True)
    return x - row * col / total


class ContactPredictionHead(nn.Module):
    """Maps every layer's and head's attention to a (B, T', T') contact probability map (specials removed)."""

    def __init__(self, in_features: int, prepend_bos: bool, append_eos: bool, eos_idx: Optional[int]) -> None:
        super().__init__()
        if append_eos and eos_idx is None:
            raise ValueError("an alphabet that appends <eos> needs its eos index")
        self.prepend_bos = prepend_bos
        self.append_eos = append_eos
        self.eos_idx = eos_idx
        self.regression = nn.Linear(in_features, 1)

    def forward(self, tokens: Tensor, attentions: Tensor) -> Tensor:
        """tokens (B, T), attentions (B, L, H, T, T) -> contact probabilities (B, T', T')."""
        if self.append_eos:
            # eos sits at a different column in each padded row: zero it, then drop the last column
            not_eos = tokens.ne(self.eos_idx).to(attentions)
            attentions = attentions * (not_eos[:, None, :] * not_eos[:, :, None])[:, None, None]
            attentions = attentions[..., :-1, :-1]
        if self.prepend_bos:
            attentions = attentions[..., 1:, 1:]
        batch, layers, heads, length, _ = attentions.shape
        features = apc(symmetrize(attentions.reshape(batch, layers * heads, length, length)))  # (B, LH, T', T')
        features = features.to(self.regression.weight).permute(0, 2, 3, 1)  # (B, T', T', LH)
        return self.regression(features).squeeze(-1).sigmoid()
