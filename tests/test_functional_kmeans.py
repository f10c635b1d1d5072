"""k-means: Lloyd steps against numpy, k-means++ seeding properties."""

from __future__ import annotations

import numpy as np
import torch

from vqkit.functional import kmeans, kmeans_plusplus, lloyd_step


def numpy_lloyd(x: np.ndarray, centers: np.ndarray, iters: int) -> np.ndarray:
    for _ in range(iters):
        assign = ((x[:, None] - centers[None]) ** 2).sum(-1).argmin(1)
        new = centers.copy()
        for k in range(len(centers)):
            members = x[assign == k]
            if len(members):
                new[k] = members.mean(0)
        centers = new
    return centers


def test_lloyd_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 5))
    init = x[:8].copy()
    init[7] = 100.0  # a centre no point is nearest to: it must stay where it is
    ours = kmeans(torch.from_numpy(x), 8, iters=6, init=torch.from_numpy(init))
    ref = numpy_lloyd(x.astype(np.float32).astype(np.float64), init, 6)
    np.testing.assert_allclose(ours.centers.numpy(), ref, rtol=1e-4, atol=1e-5)
    assert ours.centers[7].eq(100.0).all()
    assert int(ours.counts.sum()) == 300


def test_lloyd_step_never_increases_distortion() -> None:
    x = torch.randn(500, 4)
    centers = x[:16].clone()
    prev = float("inf")
    for _ in range(5):
        d = torch.cdist(x, centers).min(1).values.pow(2).mean().item()
        assert d <= prev + 1e-6
        prev = d
        centers = lloyd_step(x, centers).centers


def test_kmeanspp_picks_distinct_points_and_finds_separated_clusters() -> None:
    g = torch.Generator().manual_seed(0)
    means = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [50.0, 50.0]])
    x = torch.cat([m + 0.1 * torch.randn(100, 2, generator=g) for m in means])
    seeds = kmeans_plusplus(x, 4, generator=torch.Generator().manual_seed(3))
    # D^2 sampling puts one seed in each far-apart cluster.
    assert torch.cdist(seeds, means).argmin(1).unique().numel() == 4
    result = kmeans(x, 4, iters=3, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        torch.cdist(result.centers, means).min(1).values, torch.zeros(4), atol=0.05, rtol=0
    )


def test_more_centres_than_points() -> None:
    """With fewer points than centres every point is a centre (zero distortion), and every other centre is a
    point's duplicate with the documented jitter (1e-3 of the data's std)."""
    x = torch.randn(5, 3)
    result = kmeans(x, 9, iters=2, generator=torch.Generator().manual_seed(0))
    assert result.centers.shape == (9, 3)
    distances = torch.cdist(x, result.centers)
    torch.testing.assert_close(distances.min(dim=1).values, torch.zeros(5), atol=1e-6, rtol=0)
    assert float(distances.min(dim=0).values.max()) < 1e-2 * float(x.std())


def test_spherical_kmeans_returns_unit_centres() -> None:
    result = kmeans(torch.randn(200, 6), 5, iters=3, distance="cosine")
    torch.testing.assert_close(result.centers.norm(dim=1), torch.ones(5))
