"""Codebook update rules against small numpy references: EMA step, k-means init, restarts, CVQ anchors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vqkit.functional.kmeans import kmeans
from vqkit.quantizers import VQ, Codebook


def numpy_ema_step(
    weight: np.ndarray, ema_sum: np.ndarray, count: np.ndarray, x: np.ndarray, decay: float, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = len(weight)
    assign = ((x[:, None] - weight[None]) ** 2).sum(-1).argmin(1)
    onehot = np.eye(k)[assign]
    count = decay * count + (1 - decay) * onehot.sum(0)
    ema_sum = decay * ema_sum + (1 - decay) * onehot.T @ x
    n = count.sum()
    smoothed = (count + eps) / (n + k * eps) * n
    return ema_sum / smoothed[:, None], ema_sum, count


def test_ema_step_matches_numpy() -> None:
    cb = Codebook(6, 3, update="ema", init="gaussian", decay=0.9, eps=1e-5).double()
    w, s, c = cb.weight.numpy().copy(), cb.ema_sum.numpy().copy(), cb.cluster_size.numpy().copy()
    rng = np.random.default_rng(0)
    for _ in range(4):
        x = rng.standard_normal((40, 3))
        xt = torch.from_numpy(x)
        cb.update(xt, cb.search(xt))
        w, s, c = numpy_ema_step(w, s, c, x, 0.9, 1e-5)
        np.testing.assert_allclose(cb.weight.numpy(), w, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(cb.cluster_size.numpy(), c, rtol=1e-12)


def test_ema_codebook_converges_to_cluster_means() -> None:
    means = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]])
    q = VQ(2, 3, update="ema", init="kmeans", decay=0.8)
    for _ in range(30):
        x = means[torch.randint(3, (300,))] + 0.1 * torch.randn(300, 2)
        q(x)
    got = q.codebook.weight
    torch.testing.assert_close(torch.cdist(got, means).min(1).values, torch.zeros(3), atol=0.05, rtol=0)


def test_kmeans_init_runs_once_on_first_training_batch() -> None:
    q = VQ(4, 8, init="kmeans")
    assert not bool(q.codebook.initialized)
    q.eval()
    q(torch.randn(50, 4))
    assert not bool(q.codebook.initialized)  # eval never initializes
    q.train()
    x = torch.randn(200, 4)
    q(x)
    assert bool(q.codebook.initialized)
    first = q.codebook.weight.detach().clone()
    # The codes are k-means of the first training batch with the codebook's seed and iterations.
    expected = kmeans(x, 8, iters=10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(first, expected.centers)
    torch.testing.assert_close(q.codebook.cluster_size, expected.counts.float())
    q(torch.randn(200, 4) + 10)
    assert torch.equal(q.codebook.weight.detach(), first)  # grad mode: only the optimizer changes it now


def test_initialized_is_read_from_the_device_once_and_reset_by_loading() -> None:
    q = VQ(4, 8, init="kmeans").train()
    q(torch.randn(200, 4))
    q.codebook.initialized.fill_(False)  # behind the cache's back: the cached answer stands (no device read)
    first = q.codebook.weight.detach().clone()
    q(torch.randn(200, 4) + 10)
    assert torch.equal(q.codebook.weight.detach(), first)
    q.load_state_dict(VQ(4, 8, init="kmeans").state_dict())  # an uninitialized codebook: init again
    shifted = torch.randn(200, 4) + 10
    q(shifted)
    assert bool(q.codebook.initialized) and q.codebook.weight.detach().mean() > 5
    q.init_codebook(torch.randn(200, 4) - 10)  # forced k-means, e.g. from a pretrained encoder
    assert q.codebook.weight.detach().mean() < -5


def test_dead_code_restart_moves_unused_codes_onto_data() -> None:
    q = VQ(2, 16, init="uniform", restart="dead", restart_threshold=1.0)
    data = torch.randn(256, 2) * 3 + 20  # far from the tiny initial codebook
    for _ in range(3):
        q(data)
    used = q.encode(data).unique().numel()
    assert used > 8, f"only {used} codes used after restarts"
    assert (q.codebook.weight.detach().mean(0) - 20).abs().max() < 5


def test_cvq_anchor_rule_matches_reference() -> None:
    torch.manual_seed(0)
    k, d, decay = 5, 3, 0.99
    cb = Codebook(k, d, init="gaussian", restart="anchor", decay=decay).double()
    x = torch.randn(30, d, dtype=torch.float64)
    weight0 = cb.weight.detach().clone()
    usage0 = cb.usage.clone()
    codes = cb.search(x)
    cb.update(x, codes)
    freq = torch.bincount(codes, minlength=k).double() / 30
    usage = decay * usage0 + (1 - decay) * freq
    nearest_feature = x[torch.cdist(weight0, x).argmin(1)]
    alpha = torch.exp(-(usage * k * 10) / (1 - decay) - 1e-3)[:, None]
    torch.testing.assert_close(cb.weight.detach(), weight0 * (1 - alpha) + nearest_feature * alpha)


@pytest.mark.parametrize("update", ["grad", "ema"])
def test_cvq_first_step_moves_codebook_onto_data(update: str) -> None:
    q = VQ(4, 32, distance="cosine", restart="anchor", update=update)  # type: ignore[arg-type]
    data = torch.randn(500, 4) + 3
    used = q.encode(data).unique()
    q(data)
    # Usage starts at zero: every code the batch did not use gets alpha ≈ 1 and lands on its nearest feature
    # (CVQ's near-full first-step replacement); a used code gets alpha ≈ exp(-1000 K p) ≈ 0 and stays.
    unused = torch.ones(32, dtype=torch.bool)
    unused[used] = False
    assert int(unused.sum()) > 16
    nearest = torch.cdist(q.codebook.weight.detach()[unused], data).min(1).values
    assert float(nearest.max()) < 0.05


def test_restarted_codes_get_a_grace_period() -> None:
    cb = Codebook(
        4, 2, update="grad", restart="dead", restart_threshold=1.0, decay=0.9
    )  # only restarts move it
    first = None
    for step in range(6):
        before = cb.weight.clone()
        cb.update(torch.randn(8, 2) * 0.01, torch.zeros(8, dtype=torch.long))  # only code 0 is ever used
        moved = (cb.weight != before).any(1)[1:]
        if step == 0:
            first = cb.weight[1:].clone()
            assert moved.all()  # unused from the start: restarted at once
        else:
            assert not moved.any(), f"restarted again at step {step}"
    assert first is not None and torch.equal(cb.weight[1:], first)


@pytest.mark.parametrize("scale", [0.5, 50.0])  # the EMA counts of a small and of a large batch
def test_a_share_threshold_does_not_depend_on_the_batch_size(scale: float) -> None:
    """``restart_measure="share"`` (Mimi): a code is dead under ``restart_threshold / K`` of the assignments,
    whatever the batch size; the count threshold (Encodec) kills every code of a small batch."""
    dead_sets = {}
    for measure in ("count", "share"):
        cb = Codebook(
            8,
            2,
            restart="dead",
            restart_threshold=0.5 if measure == "share" else 1.0,
            restart_measure=measure,
        )
        counts = torch.full((8,), scale)
        counts[3] = scale * 0.01  # one code used 100x less than the others
        cb.cluster_size.copy_(counts)
        before = cb.weight.detach().clone()
        cb.restart_rule.apply(cb, torch.randn(64, 2))
        dead_sets[measure] = (cb.weight.detach() != before).any(1).nonzero().flatten().tolist()
    assert dead_sets["share"] == [3]
    assert dead_sets["count"] == ([3] if scale > 1 else list(range(8)))


@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_cvq_anchors_from_the_search_equal_a_second_search(distance: str) -> None:
    # search_for_update hands the restart each code's nearest row from the step's own score tiles; the anchors
    # must be those of the swapped search it replaces (grad updates: the codes have not moved in between).
    torch.manual_seed(0)
    fused = Codebook(16, 4, init="gaussian", restart="anchor", distance=distance)
    second = Codebook(16, 4, init="gaussian", restart="anchor", distance=distance)
    second.load_state_dict(fused.state_dict())
    for step in range(3):
        x = torch.randn(300, 4, generator=torch.Generator().manual_seed(step)) + step
        codes, nearest = fused.search_for_update(x)
        assert nearest is not None and torch.equal(codes, second.search(x))
        fused.update(x, codes, nearest)
        second.update(x, codes)  # no hint: the restart searches with the roles swapped
        torch.testing.assert_close(fused.weight, second.weight, rtol=0, atol=1e-6)
    ema = Codebook(16, 4, init="gaussian", restart="anchor", update="ema")
    assert ema.search_for_update(torch.randn(10, 4))[1] is None  # EMA moves the codes first: search again
