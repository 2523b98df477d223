"""The paper's MSA "cov" pair feature: the weighted covariance of projected member embeddings (torch)."""

import torch


def weighted_covariance(projected: torch.Tensor, present: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(k*k, L, L) uncentered weighted covariance of (M, L, k) projected members (zeros at gaps), with (M, L)
    presence and (M,) weights; channel k1*k + k2 as in the paper. Serves the offline tool and the dataset."""
    projected, present, weights = projected.float(), present.float(), weights.float()
    cov = torch.einsum("m,mik,mjl->klij", weights, projected, projected)  # (k, k, L, L)
    denominator = torch.einsum("m,mi,mj->ij", weights, present, present)
    k = projected.shape[-1]
    return (cov / denominator.clamp_min(1e-12)).reshape(k * k, *denominator.shape)
