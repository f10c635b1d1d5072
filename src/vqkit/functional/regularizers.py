"""Codebook regularizers (pure functions of the codes).

``orthogonal_penalty``: orthogonal regularization of the codebook (arXiv 2112.00384, in the ViT-VQGAN line of
l2-normalized codes): ``|| l2(C) l2(C)^T - I ||_F^2`` over the codes in use, normalized by the number of
counted pairs, which spreads the directions of the codes the batch uses. Deviation: computed on the codes the
batch used (a random sample of at most ``orthogonal_codes`` of them), not on the whole codebook.

``usage_entropy``: the entropy (diversity) penalty on the soft assignment ``p_n = softmax(-d_n / tau)`` of each
vector over the codes, ``mean_n H(p_n) - diversity * H(mean_n p_n)`` in nats: low when each vector is confidently
assigned and the batch spreads over the codebook. It is MAGVIT-v2's entropy penalty (Yu et al., arXiv
2310.05737; ``vqkit.functional.lfq`` has its factorized form for sign codes) over an explicit codebook, as
vector-quantize-pytorch's ``entropy_loss_weight`` / ``diversity_gamma``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vqkit.functional.numerics import floored_logits
from vqkit.functional.stats import entropy_bits


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


def usage_entropy(distances: torch.Tensor, temperature: float, diversity: float = 1.0) -> torch.Tensor:
    """``distances`` ``[N, K]`` (differentiable) -> ``mean_n H(p_n) - diversity * H(mean_n p_n)``, nats, with
    ``p_n = softmax(-distances_n / temperature)``; 0 for an empty batch (a rank without vectors)."""
    if distances.shape[0] == 0:
        return distances.sum() * 0.0
    logits = floored_logits(distances / -temperature)  # fast exp, no subnormal products (its docstring)
    log_p = torch.log_softmax(logits, dim=-1)
    p = log_p.exp()
    per_vector = -(p * log_p).sum(-1).mean()
    # The codebook term from the batch-mean assignment; entropy_bits works in float64 bits (log p clamped).
    codebook = (entropy_bits(p.mean(0)) * math.log(2.0)).to(distances.dtype)
    return per_vector - diversity * codebook
