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
    """Symmetric cross-entropy with row ``i`` of ``a`` matched to row ``i`` of ``b``: ``[M, D], [M, D] -> []``,
    or ``P`` such pairs at once, ``[P, M, D], [P, M, D] -> [P]`` (one batched pass: IVQ's structure terms are
    up to a dozen pairs of small tables, where one pass per pair is mostly per-call overhead).

    Logits are ``sim(a_i, b_j) / temperature`` with ``sim`` the cosine similarity (bounded: the loss lies in
    ``[0, 2 / temperature + log M]``) or the raw dot product (unbounded); the result is the mean of the
    row-wise and column-wise cross-entropies against the diagonal.
    """
    if a.shape != b.shape or a.dim() not in (2, 3):
        raise ValueError(
            "a, b: expected two [M, D] (or [P, M, D]) tensors of one shape, "
            f"got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    if similarity == "cosine":
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.transpose(-1, -2) / temperature
    m = a.shape[-2]
    target = torch.arange(m, device=a.device).expand(logits.shape[:-1])
    terms = [
        F.cross_entropy(scores.reshape(-1, m), target.reshape(-1), reduction="none").view(target.shape)
        for scores in (logits, logits.transpose(-1, -2))
    ]
    return 0.5 * (terms[0] + terms[1]).mean(-1)
