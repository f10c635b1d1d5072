"""Codebook regularizers (pure functions of the codes).

``orthogonal_penalty``: orthogonal regularization of the codebook (arXiv 2112.00384, in the ViT-VQGAN line of
l2-normalized codes): ``|| l2(C) l2(C)^T - I ||_F^2`` over the codes in use, normalized by the number of
counted pairs, which spreads the directions of the codes the batch uses. Deviation: computed on the codes the
batch used (a random sample of at most ``orthogonal_codes`` of them), not on the whole codebook.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def orthogonal_penalty(codes: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``codes`` ``[M, d]``, ``weights`` ``[M]`` in {0, 1} (which codes count; default all) -> the mean squared
    deviation of the codes' cosine Gram matrix from the identity over the counted pairs (0 for orthonormal)."""
    unit = F.normalize(codes, dim=-1)
    gram = unit @ unit.T
    deviation = (gram - torch.eye(codes.shape[0], device=codes.device, dtype=codes.dtype)).square()
    if weights is None:
        return deviation.mean()
    w = weights.to(codes.dtype)
    pairs = w[:, None] * w[None, :]
    return (deviation * pairs).sum() / pairs.sum().clamp(min=1.0)
