"""The bilinear contact probe (ESM-1b paper, appendix "Linear projections"), a plain torch module.

``logit(i, j) = (P h_i + p) . (Q h_j + q) + b`` on representations standardised with the training residues'
mean and standard deviation, kept as buffers so a checkpoint carries them.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class BilinearContactProbe(nn.Module):
    """Two linear maps ``C -> dim`` (with vector biases) and a scalar bias on standardised representations."""

    def __init__(self, embed_dim: int, dim: int, mean: Optional[torch.Tensor] = None,
                 std: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        self.left, self.right = nn.Linear(embed_dim, dim), nn.Linear(embed_dim, dim)
        self.bias = nn.Parameter(torch.zeros(()))
        self.register_buffer("mean", torch.zeros(embed_dim) if mean is None else torch.as_tensor(mean).float())
        self.register_buffer("std", torch.ones(embed_dim) if std is None else torch.as_tensor(std).float())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(..., L, C) representations -> (..., L, L) contact logits."""
        x = (features - self.mean) / self.std
        return self.left(x) @ self.right(x).transpose(-1, -2) + self.bias
