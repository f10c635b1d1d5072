"""Hexagram arithmetic against a tiny pure-Python / numpy reference, and the contrastive term against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vqkit.functional import hexagram
from vqkit.functional.contrastive import Similarity, symmetric_contrastive


def ref_lines(index: int, lines: int) -> list[int]:
    return [int(c) for c in format(index, f"0{lines}b")]  # first line = most significant bit


def ref_index(bits: list[int]) -> int:
    return int("".join(map(str, bits)), 2)


@pytest.mark.parametrize("lines", [2, 4, 6])
def test_lines_and_index_round_trip_against_reference(lines: int) -> None:
    index = torch.arange(2**lines)
    bits = hexagram.index_to_lines(index, lines)
    assert bits.tolist() == [ref_lines(i, lines) for i in range(2**lines)]
    assert torch.equal(hexagram.lines_to_index(bits), index)


@pytest.mark.parametrize(("lines", "blocks"), [(6, 6), (6, 3), (6, 2), (6, 1), (4, 2), (12, 4)])
def test_block_codes_against_reference(lines: int, blocks: int) -> None:
    g = lines // blocks
    index = torch.arange(2**lines)
    codes = hexagram.block_codes(index, lines, blocks)
    expected = [
        [ref_index(ref_lines(i, lines)[j * g : (j + 1) * g]) for j in range(blocks)] for i in range(2**lines)
    ]
    assert codes.tolist() == expected
    assert torch.equal(hexagram.blocks_to_index(codes, lines), index)


@pytest.mark.parametrize("lines", [4, 6, 8])
def test_relations_against_reference_and_are_commuting_involutions(lines: int) -> None:
    index = torch.arange(2**lines)
    zong, cuo, cuozong = (
        hexagram.zong(index, lines),
        hexagram.cuo(index, lines),
        hexagram.cuozong(index, lines),
    )
    assert zong.tolist() == [ref_index(ref_lines(i, lines)[::-1]) for i in range(2**lines)]
    assert cuo.tolist() == [ref_index([1 - b for b in ref_lines(i, lines)]) for i in range(2**lines)]
    assert cuozong.tolist() == [
        ref_index([1 - b for b in ref_lines(i, lines)][::-1]) for i in range(2**lines)
    ]
    for relation in (hexagram.zong, hexagram.cuo, hexagram.cuozong):
        assert torch.equal(relation(relation(index, lines), lines), index)  # involution
    assert torch.equal(hexagram.zong(cuo, lines), hexagram.cuo(zong, lines))  # they commute
    assert not torch.equal(cuo, index)  # cuo fixes nothing


@pytest.mark.parametrize(("lines", "count"), [(2, 2), (4, 6), (6, 20), (12, 1056)])
def test_relation_groups_are_the_orbits(lines: int, count: int) -> None:
    groups = hexagram.relation_groups(lines)
    assert len(groups) == count == (2**lines + 2 * 2 ** (lines // 2)) // 4  # Burnside
    members = sorted(h for group in groups for h in group)
    assert members == list(range(2**lines))  # a partition
    for group in groups[:50]:
        as_tensor = torch.tensor(group)
        for relation in (hexagram.zong, hexagram.cuo, hexagram.cuozong):
            assert set(relation(as_tensor, lines).tolist()) == set(group)  # closed under every relation
        assert len(group) in (2, 4)


def test_the_qian_and_kun_hexagrams_form_one_group() -> None:
    groups = hexagram.relation_groups(6)
    assert groups[0] == (0, 63)  # all yin and all yang: each other's cuo, each its own zong


@pytest.mark.parametrize("bad", [0, -1, 63, 2.0, True])
def test_bad_lines_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="lines"):
        hexagram.index_to_lines(torch.arange(4), bad)  # type: ignore[arg-type]


def test_blocks_must_divide_lines() -> None:
    with pytest.raises(ValueError, match="blocks"):
        hexagram.block_codes(torch.arange(4), 6, 4)


def _ref_contrastive(a: np.ndarray, b: np.ndarray, cosine: bool, tau: float) -> float:
    if cosine:
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
    logits = a @ b.T / tau

    def ce(m: np.ndarray) -> float:
        m = m - m.max(axis=1, keepdims=True)
        logp = m - np.log(np.exp(m).sum(axis=1, keepdims=True))
        return float(-np.mean(np.diag(logp)))

    return 0.5 * (ce(logits) + ce(logits.T))


@pytest.mark.parametrize(
    ("similarity", "tau"), [("cosine", 0.1), ("cosine", 1.0), ("dot", 1.0), ("dot", 0.5)]
)
def test_symmetric_contrastive_against_numpy(similarity: str, tau: float) -> None:
    a, b = torch.randn(9, 5, dtype=torch.float64), torch.randn(9, 5, dtype=torch.float64)
    got = symmetric_contrastive(a, b, similarity=similarity, temperature=tau)  # type: ignore[arg-type]
    assert float(got) == pytest.approx(_ref_contrastive(a.numpy(), b.numpy(), similarity == "cosine", tau))


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_a_batch_of_pairs_is_each_pair_alone(similarity: Similarity) -> None:
    a, b = torch.randn(5, 9, 4, dtype=torch.float64), torch.randn(5, 9, 4, dtype=torch.float64)
    a.requires_grad_(True)
    got = symmetric_contrastive(a, b, similarity=similarity, temperature=0.3)
    alone = [
        symmetric_contrastive(x, y, similarity=similarity, temperature=0.3) for x, y in zip(a, b, strict=True)
    ]
    assert got.shape == (5,)
    torch.testing.assert_close(got, torch.stack(alone))
    (grad,) = torch.autograd.grad(got.sum(), a)
    (expected,) = torch.autograd.grad(torch.stack(alone).sum(), a)
    torch.testing.assert_close(grad, expected)
    with pytest.raises(ValueError, match=r"\[P, M, D\]"):
        symmetric_contrastive(a[0, 0], b[0, 0])


def _autograd_contrastive(a: torch.Tensor, b: torch.Tensor, similarity: str, tau: float) -> torch.Tensor:
    """The term as plain autograd composes it (``F.normalize``, a product, two ``F.cross_entropy``)."""
    if similarity == "cosine":
        a, b = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
    logits = a @ b.transpose(-1, -2) / tau
    target = torch.arange(a.shape[-2])
    ce = torch.nn.functional.cross_entropy
    per_pair = [0.5 * (ce(s, target) + ce(s.T, target)) for s in logits.reshape(-1, *logits.shape[-2:])]
    return torch.stack(per_pair).reshape(logits.shape[:-2])


@pytest.mark.parametrize("tau", [0.4, 0.01])  # cosine logits: one shifted exp, or logsumexp beyond its range
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_contrastive_gradient_matches_autograd_and_finite_differences(
    similarity: Similarity, tau: float
) -> None:
    torch.manual_seed(0)
    a = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        a[1, 2] = 0.0  # a zero row: F.normalize's floor
    weights = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    got = symmetric_contrastive(a, b, similarity=similarity, temperature=tau)
    expected = _autograd_contrastive(a, b, similarity, tau)
    torch.testing.assert_close(got, expected)
    grads = torch.autograd.grad((got * weights).sum(), (a, b))
    ref = torch.autograd.grad((expected * weights).sum(), (a, b))
    for g, r in zip(grads, ref, strict=True):
        torch.testing.assert_close(g, r)
    a2, b2 = a.detach()[0].clone().requires_grad_(True), b.detach()[0].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x, y: symmetric_contrastive(x, y, similarity=similarity, temperature=tau), (a2, b2)
    )
    # One input without a gradient: only the other's is computed.
    (only_b,) = torch.autograd.grad(symmetric_contrastive(a.detach(), b, similarity=similarity).sum(), (b,))
    assert only_b.shape == b.shape


def test_cosine_contrastive_is_bounded() -> None:
    a = torch.randn(16, 4) * 1e6
    loss = symmetric_contrastive(a, -a, similarity="cosine", temperature=0.1)
    assert float(loss) <= 2 / 0.1 + np.log(16) + 1e-4
