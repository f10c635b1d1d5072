"""Synthetic data of "Representation Collapsing Problems in Vector Quantization" (Zhao et al., arXiv 2411.16550).

The paper's set: 10 classes of 1,000 points each, drawn from Gaussians and standardized with a standard scaler
(zero mean, unit variance per dimension), in dimensions 2, 3, 4 and 8. The paper does not give the cluster
spread; we draw centres from N(0, center_std^2 I) and points from N(centre, I), which with the default
``center_std=5`` gives well-separated modes, as its figures show, and record the choice here.
"""

from __future__ import annotations

import torch

from vqkit._validate import check_positive_int, check_range


def gaussian_clusters(
    dim: int = 2,
    num_clusters: int = 10,
    points_per_cluster: int = 1000,
    *,
    center_std: float = 5.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardized mixture of equal-size Gaussian clusters.

    Returns:
        ``x`` ``[num_clusters * points_per_cluster, dim]`` float32 (per-dimension zero mean, unit variance) and
        ``labels`` ``[N]`` int64, the cluster (data mode) of each point, ordered by cluster.
    """
    check_positive_int("dim", dim)
    check_positive_int("num_clusters", num_clusters)
    check_positive_int("points_per_cluster", points_per_cluster)
    check_range("center_std", center_std, 0.0, float("inf"))
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_clusters, dim, generator=generator) * center_std
    labels = torch.arange(num_clusters).repeat_interleave(points_per_cluster)
    x = centers[labels] + torch.randn(labels.numel(), dim, generator=generator)
    x = (x - x.mean(0)) / x.std(0, unbiased=False).clamp(min=1e-12)
    return x, labels
