"""How far two codebooks with a shared index space agree: cross-modal decoding (IVQ, OpenReview Y3cUZ8fNnu,
section 3.3) reads codes of one modality with the codebooks of another, which is meaningful only as far as code
``i`` plays the same role in both.

* ``gram_correlation``: the Pearson correlation of the two tables' cosine-similarity matrices over distinct
  pairs (representational similarity analysis). 1: code ``i`` relates to code ``j`` the same way in both
  tables; about 0: the shared index carries no shared geometry (independently trained VQ codebooks).
* ``js_divergence_bits``: the Jensen-Shannon divergence of two code histograms, in bits (0: both modalities use
  the codes equally; 1: disjoint codes). Codes of one modality that the other rarely saw decode to latents its
  decoder was not trained on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vqkit.functional.stats import entropy_bits


@torch.no_grad()
def gram_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Correlation of the cosine-similarity structure of two index-aligned code tables.

    Args:
        a: ``[K, d_a]`` code ``i``'s vector in the first codebook (e.g. an IVQ level's hexagram table).
        b: ``[K, d_b]`` the same codes in the second; ``d_b`` may differ from ``d_a``.

    Returns the Pearson correlation, over the ``K (K - 1) / 2`` pairs ``i < j``, of ``cos(a_i, a_j)`` and
    ``cos(b_i, b_j)``; ``nan`` when one of them is constant.
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[0] or a.shape[0] < 3:
        raise ValueError(
            f"a, b: expected two [K, d] tables with the same K >= 3, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    rows, cols = torch.triu_indices(a.shape[0], a.shape[0], offset=1, device=a.device)
    sims = []
    for table in (a, b):
        unit = F.normalize(table.double(), dim=1)
        sims.append((unit @ unit.T)[rows, cols])
    x, y = (s - s.mean() for s in sims)
    denominator = float(x.norm() * y.norm())
    return float((x * y).sum()) / denominator if denominator > 0 else float("nan")


@torch.no_grad()
def js_divergence_bits(p: torch.Tensor, q: torch.Tensor) -> float:
    """Jensen-Shannon divergence, in bits, of two histograms ``[K]`` (counts or probabilities), in [0, 1]."""
    if p.shape != q.shape or p.dim() != 1:
        raise ValueError(f"p, q: expected two [K] histograms, got {tuple(p.shape)} and {tuple(q.shape)}")
    if bool((p < 0).any() or (q < 0).any()) or float(p.sum()) <= 0 or float(q.sum()) <= 0:
        raise ValueError("p, q: expected non-negative histograms with positive mass")
    p, q = p.double() / p.sum(), q.double() / q.sum()
    mixture = entropy_bits((p + q) / 2)
    return float(mixture - (entropy_bits(p) + entropy_bits(q)) / 2)
