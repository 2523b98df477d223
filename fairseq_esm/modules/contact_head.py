"""Unsupervised contact prediction: logistic regression on symmetrized, APC-corrected attention maps.

Symmetrize and APC act on each map alone and the regression is a weighted sum over (layer, head), so
``ContactStream`` can fold each layer's maps into running logits as the model makes them (fair-esm's
``ContactPredictionHead``, which ``forward`` mirrors, needs all layers stacked: ~7 copies of (B, L, H, T, T)).
"""

from __future__ import annotations

from typing import Optional

import torch
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
        """tokens (B, T), attentions (B, L, H, T, T) -> contact probabilities (B, T', T') (never autocast: the
        regression weighs hundreds of maps and needs the regression's own precision)."""
        with torch.autocast(attentions.device.type, enabled=False):
            return self._probabilities(tokens, attentions.to(self.regression.weight))

    def _probabilities(self, tokens: Tensor, attentions: Tensor) -> Tensor:
        if self.append_eos:
            # eos sits at a different column in each padded row: zero it, then drop the last column
            not_eos = tokens.ne(self.eos_idx).to(attentions)
            attentions = attentions * (not_eos[:, None, :] * not_eos[:, :, None])[:, None, None]
            attentions = attentions[..., :-1, :-1]
        if self.prepend_bos:
            attentions = attentions[..., 1:, 1:]
        batch, layers, heads, length, _ = attentions.shape
        features = apc(symmetrize(attentions.reshape(batch, layers * heads, length, length)))  # (B, LH, T', T')
        features = features.permute(0, 2, 3, 1)  # (B, T', T', LH)
        return self.regression(features).squeeze(-1).sigmoid()

    def stream(self, tokens: Tensor, padding_mask: Tensor) -> "ContactStream":
        """Running contact logits to which the model adds each layer's maps (see ``ContactStream``)."""
        return ContactStream(self, tokens, padding_mask)


class ContactStream:
    """The head's logits summed layer by layer: ``add`` each layer's (B, H, T, S) maps in order, then read
    ``probabilities``. The regression is linear, so per layer, with A_h the masked map of head h,
    r_h the row sums of A_h + A_h^T and t_h their total (APC of a symmetric map is S - r r^T / t),
    sum_h w_h APC(A_h + A_h^T) = M + M^T - sum_h (w_h / t_h) r_h r_h^T,  M = sum_h w_h A_h:
    nothing of size (H, T, T) is copied, only (B, T, T) tensors are made."""

    def __init__(self, head: ContactPredictionHead, tokens: Tensor, padding_mask: Tensor) -> None:
        self.head = head
        weight = head.regression.weight
        self.dtype = torch.promote_types(weight.dtype, torch.float32)  # of the running sums
        self.start, self.stop = int(head.prepend_bos), tokens.size(1) - int(head.append_eos)
        keep = ~padding_mask  # (B, T); eos sits at a different column in each padded row
        if head.append_eos:
            keep = keep & tokens.ne(head.eos_idx)
        keep[:, : self.start] = False
        keep[:, self.stop :] = False
        self.keep = keep.to(weight)  # (B, T): 1 at the residues, 0 at specials and padding
        residues = self.keep[:, self.start : self.stop]  # (B, T')
        self.pairs = residues[:, :, None] * residues[:, None, :]  # (B, T', T')
        self.logits = torch.zeros_like(self.pairs, dtype=self.dtype)  # (B, T', T')
        self.features_added = 0  # (layer, head) maps folded in so far

    def add(self, attention: Tensor) -> None:
        """Fold one layer's (B, H, T, S) maps (S = T, or T + 1 with ESM-1's bias key) into the logits (never
        autocast; low-precision maps are widened to the running sums' dtype first)."""
        with torch.autocast(attention.device.type, enabled=False):
            self._add(attention.to(torch.promote_types(attention.dtype, self.dtype)))

    def _add(self, attention: Tensor) -> None:
        weight = self.head.regression.weight[0]  # (L * H,) layer-major, as fair-esm's view(B, L * H, T, T)
        first, heads = self.features_added, attention.size(1)
        if first + heads > weight.numel():
            raise ValueError(f"the contact regression has {weight.numel()} weights: no room for {heads} more heads")
        w = weight[first : first + heads]  # (H,)
        batch, _, length, columns = attention.shape
        # explicit bmm on views: matmul's broadcasting may fold the maps into a transposed copy
        maps = attention.flatten(0, 1)  # (B * H, T, S)
        keep = self.keep.to(maps).repeat_interleave(heads, dim=0)  # (B * H, T)
        keep_columns = nn.functional.pad(keep, (0, columns - length))  # (B * H, S): ESM-1's bias key is no residue
        rows = torch.bmm(maps, keep_columns[:, :, None]).view(batch, heads, length)  # masked row sums of A_h
        cols = torch.bmm(keep[:, None, :], maps)[:, 0, :length].view(batch, heads, length)  # masked column sums
        sums = ((rows + cols) * self.keep[:, None, :].to(rows))[..., self.start : self.stop].to(self.dtype)  # r_h
        scaled = sums * (w.to(self.dtype) / sums.sum(-1))[..., None]  # (B, H, T'): r_h w_h / t_h
        mixed = torch.bmm(w.expand(batch, 1, heads), attention.flatten(2).to(w)).view(batch, length, columns)  # M
        mixed = mixed[:, self.start : self.stop, self.start : self.stop].to(self.dtype) * self.pairs
        self.logits += mixed + mixed.transpose(1, 2) - torch.matmul(scaled.transpose(1, 2), sums)
        self.features_added += heads

    def probabilities(self) -> Tensor:
        """(B, T', T') contact probabilities, in the regression's dtype; every layer must have been added."""
        linear = self.head.regression
        if self.features_added != linear.in_features:
            raise ValueError(f"{self.features_added} attention maps added, the regression weighs {linear.in_features}")
        return (self.logits + linear.bias).to(linear.weight.dtype).sigmoid()
