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


def loop_kmeanspp(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """k-means++ as a plain loop over picks with ``torch.multinomial`` and ``.item()`` (the previous
    implementation, one host read per centre), on the same generator."""
    g = torch.Generator().manual_seed(seed)
    picks = [int(torch.randint(len(x), (1,), generator=g).item())]
    min_d = (x - x[picks[0]]).pow(2).sum(-1)
    for _ in range(1, k):
        picks.append(int(torch.multinomial(min_d / min_d.sum(), 1, generator=g).item()))
        min_d = torch.minimum(min_d, (x - x[picks[-1]]).pow(2).sum(-1))
    return x[picks]


def test_kmeanspp_matches_the_multinomial_loop_bit_for_bit() -> None:
    """The on-device draw is ``multinomial``'s own: a seed gives the centres the host-synced loop gave."""
    x = torch.randn(400, 5) * 3.0 + 1.0
    for seed in range(5):
        seeds = kmeans_plusplus(x, 40, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(seeds, loop_kmeanspp(x, 40, seed))


def test_kmeanspp_centres_are_distinct_data_points() -> None:
    x = torch.randn(60, 4)
    for seed in range(10):
        seeds = kmeans_plusplus(x, 59, generator=torch.Generator().manual_seed(seed))
        index = (seeds[:, None] == x[None]).all(-1).float().argmax(1)
        assert torch.equal(x[index], seeds)  # every centre is a data point ...
        assert index.unique().numel() == 59  # ... and a picked point has weight 0: never picked twice
    cosine = kmeans_plusplus(x, 5, distance="cosine", generator=torch.Generator().manual_seed(0))
    normalized = torch.nn.functional.normalize(x, dim=-1)
    assert (cosine[:, None] == normalized[None]).all(-1).any(1).all()
    # Every point on one spot: the uniform fallback picks points without dividing by a zero total.
    same = torch.ones(10, 3)
    torch.testing.assert_close(kmeans_plusplus(same, 4), torch.ones(4, 3), rtol=0, atol=0)


def test_kmeanspp_gives_each_separated_cluster_one_seed_for_every_seed() -> None:
    g = torch.Generator().manual_seed(0)
    means = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [50.0, 50.0], [25.0, 25.0]])
    x = torch.cat([m + 0.1 * torch.randn(60, 2, generator=g) for m in means])
    for seed in range(50):
        seeds = kmeans_plusplus(x, 5, generator=torch.Generator().manual_seed(seed))
        assert torch.cdist(seeds, means).argmin(1).unique().numel() == 5, seed


def test_kmeanspp_second_pick_follows_d2_weighting() -> None:
    """Over 4000 seeds the (first, second) picks on five points on a line match ``P(f) P(j | f)`` with
    ``P(f) = 1/5`` and ``P(j | f) ∝ (x_j - x_f)^2``: chi-square over the 20 cells with ``j != f`` under its
    99.9% quantile for 19 degrees of freedom (43.82), and no second pick on the first."""
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]])
    n, runs = 5, 4000
    observed = np.zeros((n, n))
    for seed in range(runs):
        seeds = kmeans_plusplus(x, 2, generator=torch.Generator().manual_seed(seed))
        first, second = (int((x[:, 0] == s).nonzero()) for s in seeds[:, 0])
        observed[first, second] += 1
    d2 = (x - x.T).pow(2).double().numpy()
    expected = runs / n * d2 / d2.sum(1, keepdims=True)
    assert np.trace(observed) == 0
    off = ~np.eye(n, dtype=bool)
    chi2 = float((((observed - expected) ** 2)[off] / expected[off]).sum())
    assert chi2 < 43.82, (chi2, observed, expected)


def test_kmeanspp_is_seeded() -> None:
    x = torch.randn(300, 5)
    a = kmeans_plusplus(x, 16, generator=torch.Generator().manual_seed(4))
    b = kmeans_plusplus(x, 16, generator=torch.Generator().manual_seed(4))
    c = kmeans_plusplus(x, 16, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, c)
