"""SimVQ's transform diagnostics against numpy (effective ranks that can decline), its Table 3 codebook inits
and its Table 5 coefficient (``codebook_weight``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vqkit.quantizers.simvq import RANK_RTOL, SimVQ


def _numpy_ranks(w: np.ndarray) -> tuple[float, float, float, int]:
    """(relative-threshold rank, Roy & Vetterli entropy effective rank, |W|_F, numerical rank) in float64."""
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    p = s / s.sum()
    nz = p[p > 0]
    effective = float(np.exp(-(nz * np.log(nz)).sum()))
    return (
        float((s > RANK_RTOL * s.max()).sum()),
        effective,
        float(np.linalg.norm(w)),
        int(np.linalg.matrix_rank(w)),
    )


def _with_spectrum(q: SimVQ, singular: list[float], seed: int = 0) -> np.ndarray:
    """Set ``W = U diag(singular) V^T`` with random orthogonal ``U``, ``V``; returns it."""
    rng = np.random.default_rng(seed)
    d = len(singular)
    u, _ = np.linalg.qr(rng.standard_normal((d, d)))
    v, _ = np.linalg.qr(rng.standard_normal((d, d)))
    w = (u * np.asarray(singular)) @ v.T
    with torch.no_grad():
        q.transform.weight.copy_(torch.from_numpy(w))
    return w


@pytest.mark.parametrize(
    "singular",
    [[1.0] * 8, [3.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.05, 0.01], [2.0, 1.0, 1e-3, 1e-4, 0.0, 0.0, 0.0, 0.0]],
)
def test_transform_stats_match_numpy(singular: list[float]) -> None:
    q = SimVQ(8, 16)
    w = _with_spectrum(q, singular)
    rank, effective, frobenius, _ = _numpy_ranks(w)
    stats = q.transform_stats()
    assert float(stats["w_rank"]) == rank
    assert float(stats["w_effective_rank"]) == pytest.approx(effective, rel=1e-5)
    assert float(stats["w_frobenius"]) == pytest.approx(frobenius, rel=1e-5)


def test_a_shrinking_direction_shows_as_a_rank_decline_the_numerical_rank_misses() -> None:
    """Shrink one singular value of W step by step: both effective ranks fall, the machine-precision rank (what
    ``w_rank`` was before) stays at D until the direction is gone to float precision."""
    q = SimVQ(8, 16)
    seen = []
    for small in (1.0, 0.1, 1e-3):
        w = _with_spectrum(q, [1.0] * 7 + [small])
        stats = q.transform_stats()
        seen.append((float(stats["w_rank"]), float(stats["w_effective_rank"]), _numpy_ranks(w)[3]))
    assert [r for r, _, _ in seen] == [8.0, 8.0, 7.0]
    assert seen[0][1] == pytest.approx(8.0) and seen[0][1] > seen[1][1] > seen[2][1] > 7.0
    assert [n for _, _, n in seen] == [8, 8, 8]


def test_the_forward_reports_the_lazy_ranks_of_the_current_w() -> None:
    q = SimVQ(8, 16, stats_every=1)
    w = _with_spectrum(q, [4.0, 2.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.001])
    rank, effective, _, _ = _numpy_ranks(w)
    out = q(torch.randn(32, 8))
    assert float(out.metrics["w_rank"]) == rank == 7.0
    assert float(out.metrics["w_effective_rank"]) == pytest.approx(effective, rel=1e-5)


def test_codebook_inits_have_the_authors_variance() -> None:
    d, k = 16, 20000
    gaussian = SimVQ(d, k).codebook
    uniform = SimVQ(d, k, codebook_init="uniform").codebook
    bound = (3 / d) ** 0.5
    assert float(uniform.abs().max()) <= bound and float(uniform.abs().max()) > 0.99 * bound
    for c in (gaussian, uniform):
        assert float(c.var()) == pytest.approx(1 / d, rel=0.02) and abs(float(c.mean())) < 0.01
    assert float(gaussian.abs().max()) > bound  # a Gaussian's tail passes the uniform's bound
    with pytest.raises(ValueError, match="codebook_init: expected one of"):
        SimVQ(d, 8, codebook_init="normal")  # type: ignore[arg-type]


def test_codebook_weight_scales_the_codebook_term() -> None:
    """Table 5's coefficient c is ``codebook_weight=c, beta=0.25 c``: the loss is c times the default's."""
    torch.manual_seed(0)
    base = SimVQ(8, 16)
    scaled = SimVQ(8, 16, codebook_weight=1000.0, beta=250.0)
    scaled.load_state_dict(base.state_dict())
    x = torch.randn(64, 8)
    one, many = base(x), scaled(x)
    assert scaled.loss_weights == {"commitment": 250.0, "codebook": 1000.0}
    assert float(many.loss.detach()) == pytest.approx(1000 * float(one.loss.detach()), rel=1e-5)
    with pytest.raises(ValueError, match="codebook_weight"):
        SimVQ(8, 16, codebook_weight=-1.0)
