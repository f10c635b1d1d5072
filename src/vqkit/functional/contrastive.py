"""The CLIP-style contrastive term IVQ's structure losses are built from (Radford et al., arXiv 2103.00020)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Similarity = Literal["cosine", "dot"]
SIMILARITIES = ("cosine", "dot")


def symmetric_contrastive(
    a: torch.Tensor, b: torch.Tensor, *, similarity: Similarity = "cosine", temperature: float = 1.0
) -> torch.Tensor:
    """Symmetric cross-entropy with row ``i`` of ``a`` matched to row ``i`` of ``b``: ``[M, D], [M, D] -> []``.

    Logits are ``sim(a_i, b_j) / temperature`` with ``sim`` the cosine similarity (bounded: the loss lies in
    ``[0, 2 / temperature + log M]``) or the raw dot product (unbounded); the result is the mean of the
    row-wise and column-wise cross-entropies against the diagonal.
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(
            f"a, b: expected two [M, D] tensors of one shape, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    if similarity == "cosine":
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
