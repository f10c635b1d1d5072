"""BSQ's entropy math (``vqkit.functional.bsq``) against brute force over every corner, in numpy float64."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vqkit.functional import bsq, lfq


def corners(bits: int) -> np.ndarray:
    """Every code ``[2^L, L]``: all sign patterns scaled by ``1 / sqrt(L)``."""
    return np.array(list(itertools.product([-1.0, 1.0], repeat=bits))) / math.sqrt(bits)


def soft_assignment(u: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """``q(c | u) ∝ exp(-|u - c|^2 / tau)`` over every corner: ``([N, 2^L], corners [2^L, L])``."""
    c = corners(u.shape[1])
    logits = -((u[:, None, :] - c[None]) ** 2).sum(-1) / tau
    logits -= logits.max(1, keepdims=True)
    q = np.exp(logits)
    return q / q.sum(1, keepdims=True), c


def entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(p)).sum(-1)


def group_marginal_entropy(q: np.ndarray, c: np.ndarray, start: int, stop: int) -> float:
    """``H(E_n[q(c_g | u_n)])``: the average assignment summed over the corners sharing group ``g``'s signs."""
    avg = q.mean(0)
    patterns: dict[tuple[bool, ...], float] = {}
    for row, code in zip(avg, c, strict=True):
        key = tuple(bool(v > 0) for v in code[start:stop])
        patterns[key] = patterns.get(key, 0.0) + float(row)
    return float(entropy(np.array(list(patterns.values()))))


def on_sphere(n: int, bits: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, bits, generator=g, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("tau", [0.3, 1.0])
@pytest.mark.parametrize("group_size", [5, 9])  # one group holding every bit: the exact entropy
def test_one_group_is_the_exact_entropy_over_every_corner(tau: float, group_size: int) -> None:
    u = on_sphere(64, 5, seed=1)
    per_sample, codebook = bsq.grouped_entropy_terms(u, temperature=tau, group_size=group_size)
    q, _ = soft_assignment(u.numpy(), tau)
    np.testing.assert_allclose(float(per_sample), entropy(q).mean(), rtol=1e-6)
    np.testing.assert_allclose(float(codebook), entropy(q.mean(0)), rtol=1e-6)


@pytest.mark.parametrize("group_size", [1, 2, 4])  # 4 of 6 bits: groups of 4 and 2
def test_groups_sum_their_marginal_entropies_and_bound_the_exact_one(group_size: int) -> None:
    u = on_sphere(48, 6, seed=2)
    u = u + 0.4 * u[:, :1]  # correlated bits: the factorization is a strict bound
    tau = 0.5
    per_sample, codebook = bsq.grouped_entropy_terms(u, temperature=tau, group_size=group_size)
    q, c = soft_assignment(u.numpy(), tau)
    expected = sum(group_marginal_entropy(q, c, a, b) for a, b in bsq.group_bounds(6, group_size))
    np.testing.assert_allclose(float(codebook), expected, rtol=1e-6)
    np.testing.assert_allclose(float(per_sample), entropy(q).mean(), rtol=1e-6)  # exact at any group size
    assert float(codebook) > entropy(q.mean(0)) + 1e-3


def test_the_bound_is_tight_when_the_groups_are_independent() -> None:
    """Every pairing of a set of first halves with a set of second halves: the average assignment is the
    product of the halves' averages, so the sum of the two groups' entropies is the exact entropy."""
    a, b = on_sphere(7, 3, seed=3), on_sphere(5, 3, seed=4)
    u = torch.cat([a.repeat_interleave(5, 0), b.repeat(7, 1)], 1) / math.sqrt(2)
    _, grouped = bsq.grouped_entropy_terms(u, temperature=0.4, group_size=3)
    _, exact = bsq.grouped_entropy_terms(u, temperature=0.4, group_size=6)
    torch.testing.assert_close(grouped, exact, rtol=1e-9, atol=1e-12)


def test_group_size_one_is_lfq_factorized_at_the_sphere_scale() -> None:
    u = on_sphere(40, 7, seed=5)
    got = bsq.grouped_entropy_terms(u, temperature=0.2, group_size=1)
    want = lfq.entropy_terms(u, scale=7**-0.5, temperature=0.2, mode="factorized")
    for x, y in zip(got, want, strict=True):
        torch.testing.assert_close(x, y)
    p = 1 / (1 + np.exp(-4 * u.numpy() / (math.sqrt(7) * 0.2)))  # the per-bit probabilities, by hand
    mean = p.mean(0)
    bits = -(mean * np.log(mean) + (1 - mean) * np.log(1 - mean))
    np.testing.assert_allclose(float(got[1]), bits.sum(), rtol=1e-6)


def test_grouped_entropy_gradient_matches_finite_differences() -> None:
    u = on_sphere(6, 5, seed=6).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda v: torch.stack(bsq.grouped_entropy_terms(v, temperature=0.7, group_size=3)), (u,)
    )


def test_group_bounds_cover_every_bit_once() -> None:
    assert bsq.group_bounds(18, 9) == [(0, 9), (9, 18)]
    assert bsq.group_bounds(8, 3) == [(0, 3), (3, 6), (6, 8)]
    assert bsq.group_bounds(4, 9) == [(0, 4)]


def test_codes_are_the_corners_of_the_unit_sphere() -> None:
    bits = 5
    bits_of = lfq.index_to_bits(torch.arange(2**bits), bits)
    values = lfq.bits_to_values(bits_of, bsq.sphere_scale(bits), torch.float64)
    torch.testing.assert_close(values.norm(dim=-1), torch.ones(2**bits, dtype=torch.float64))
    got = sorted(map(tuple, values.numpy().round(12)))
    assert got == sorted(map(tuple, corners(bits).round(12)))


def test_empty_batch_has_zero_entropy() -> None:
    per_sample, codebook = bsq.grouped_entropy_terms(torch.zeros(0, 6), group_size=4)
    assert float(per_sample) == 0.0 and float(codebook) == 0.0
