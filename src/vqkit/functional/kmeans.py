"""k-means for codebook initialization: k-means++ seeding (Arthur & Vassilvitskii, 2007) and Lloyd iterations.

Used to initialize codebooks from the first batch (SoundStream / Encodec practice) and, in the
pretrain-then-finetune recipe of "Representation Collapsing Problems in Vector Quantization"
(arXiv 2411.16550), from a pretrained encoder's outputs. Assignment uses the chunked search kernel, cluster sums
use ``index_add_``: no ``N x K`` matrix is formed.

Deviation from Encodec's ``kmeans``: seeding is k-means++ instead of uniform random samples (fewer empty
clusters and a better start); as there, an empty cluster keeps its previous centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from vqkit.functional.search import nearest_code, squared_norms
from vqkit.functional.stats import code_counts
from vqkit.types import Distance

Seeding = Literal["kmeans++", "random"]


@dataclass
class KMeansResult:
    """Attributes: ``centers`` ``[K, D]``; ``counts`` ``[K]`` points per centre after the last assignment."""

    centers: torch.Tensor
    counts: torch.Tensor


@torch.no_grad()
def kmeans_plusplus(
    x: torch.Tensor, num_centers: int, *, distance: Distance = "l2", generator: torch.Generator | None = None
) -> torch.Tensor:
    """k-means++ seeding: each new centre drawn with probability proportional to its squared distance to the
    nearest centre so far. ``[N, D] -> [K, D]``. With ``K > N`` every point is used once and the rest are
    duplicates with a tiny jitter (there are no more distinct points to pick).

    Every pick stays on the device, so seeding ``K`` centres reads nothing back to the host (the loop this
    replaces read each pick back with ``.item()`` and tested the total with ``bool``: two device syncs per centre
    on GPU). The draw is ``torch.multinomial``'s own for one sample, an exponential race (``argmax`` of the
    weights over ``Exp(1)`` noise from ``generator``), written out without the checks of the weights that
    ``multinomial`` runs on the host in some torch versions; with the same operations on the same weights, a
    seed gives the same centres as before. A zero total (every point on a centre) falls back to uniform
    weights by ``torch.where`` instead of a branch."""
    n = x.shape[0]
    points = F.normalize(x, dim=-1) if distance == "cosine" else x
    if num_centers >= n:
        extra = torch.randint(n, (num_centers - n,), device=x.device, generator=generator)
        order = torch.cat([torch.randperm(n, device=x.device, generator=generator), extra])
        centers = points[order].clone()
        jitter = torch.randn(centers[n:].shape, device=x.device, generator=generator, dtype=x.dtype)
        centers[n:] += 1e-3 * points.std() * jitter
        return centers
    centers = points.new_empty((num_centers, points.shape[1]))
    pick = torch.randint(n, (1,), device=x.device, generator=generator)
    centers[:1] = points.index_select(0, pick)
    # The distances |x - c|^2 as before, into buffers allocated once (the same values, no [N, D] allocation
    # per centre).
    diff = torch.empty_like(points)
    min_d = torch.sub(points, centers[0], out=diff).pow_(2).sum(-1)
    d, noise = torch.empty_like(min_d), torch.empty_like(min_d)
    for i in range(1, num_centers):
        total = min_d.sum()
        weights = torch.where(total > 0, min_d / total, 1.0)
        pick = torch.argmax(weights / noise.exponential_(generator=generator), dim=0, keepdim=True)
        centers[i : i + 1] = points.index_select(0, pick)
        torch.sum(torch.sub(points, centers[i], out=diff).pow_(2), -1, out=d)
        torch.minimum(min_d, d, out=min_d)
    return centers


@torch.no_grad()
def lloyd_step(x: torch.Tensor, centers: torch.Tensor, distance: Distance = "l2") -> KMeansResult:
    """One Lloyd iteration: assign every point to its nearest centre, move each centre to its points' mean
    (the normalized mean for cosine). Empty clusters keep their centre."""
    codes = nearest_code(x, centers, distance=distance).codes
    k = centers.shape[0]
    counts = code_counts(codes, k, x.dtype)
    sums = torch.zeros_like(centers).index_add_(0, codes, x)
    means = sums / counts.clamp(min=1.0)[:, None]
    if distance == "cosine":
        means = F.normalize(means, dim=-1)
    new_centers = torch.where(counts[:, None] > 0, means, centers)
    return KMeansResult(centers=new_centers, counts=counts)


@torch.no_grad()
def kmeans(
    x: torch.Tensor,
    num_centers: int,
    *,
    iters: int = 10,
    distance: Distance = "l2",
    seeding: Seeding = "kmeans++",
    init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> KMeansResult:
    """k-means on ``x`` ``[N, D]`` (computed in float32).

    Args:
        num_centers: K.
        iters: Lloyd iterations after seeding.
        distance: ``"l2"`` or ``"cosine"`` (spherical k-means).
        seeding: ``"kmeans++"`` (K sequential steps of O(N*D); default) or ``"random"`` (distinct random points:
            use it for very large K).
        init: explicit initial centres ``[K, D]``; overrides ``seeding``.
        generator: random source for seeding.

    Returns:
        ``KMeansResult`` with ``centers`` ``[K, D]`` and ``counts`` ``[K]``.
    """
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"kmeans: expected x [N, D] with N >= 1, got {tuple(x.shape)}")
    if num_centers < 1:
        raise ValueError(f"kmeans: num_centers must be >= 1, got {num_centers}")
    x = x.float()
    if init is not None:
        centers = init.float().clone()
    elif seeding == "kmeans++":
        centers = kmeans_plusplus(x, num_centers, distance=distance, generator=generator)
    else:
        n = x.shape[0]
        if num_centers <= n:
            order = torch.randperm(n, device=x.device, generator=generator)[:num_centers]
        else:
            order = torch.randint(n, (num_centers,), device=x.device, generator=generator)
        centers = x[order].clone()
        if distance == "cosine":
            centers = F.normalize(centers, dim=-1)
    result = KMeansResult(centers=centers, counts=torch.zeros(num_centers, device=x.device))
    for _ in range(iters):
        result = lloyd_step(x, result.centers, distance)
    if iters == 0:
        codes = nearest_code(x, centers, distance=distance).codes
        result.counts = code_counts(codes, num_centers, x.dtype)
    return result


__all__ = ["KMeansResult", "Seeding", "kmeans", "kmeans_plusplus", "lloyd_step", "squared_norms"]
