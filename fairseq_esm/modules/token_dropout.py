"""ESM-1b token dropout: ``<mask>`` inputs carry no embedding, and the rest is rescaled to compensate."""

from __future__ import annotations

from torch import Tensor

#: masked fraction the scaling assumes: 15% of residues selected, 80% of those replaced by <mask>
TRAIN_MASK_RATIO = 0.15 * 0.8


def token_dropout(x: Tensor, tokens: Tensor, mask_idx: int, padding_mask: Tensor) -> Tensor:
    """Zero the ``<mask>`` rows of x (B, T, C) and scale by (1 - 0.12) / (1 - observed mask ratio).

    The scaling applies at inference too: a sequence without masks is multiplied by 0.88.
    """
    is_mask = tokens.eq(mask_idx)  # (B, T)
    x = x.masked_fill(is_mask.unsqueeze(-1), 0.0)
    observed = is_mask.sum(-1).float() / (~padding_mask).sum(-1).float()  # (B,)
    scale = (1 - TRAIN_MASK_RATIO) / (1 - observed)
    return x * scale.to(x.dtype)[:, None, None]
