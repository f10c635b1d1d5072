"""``vqkit.functional.block_search``: IVQ's residual block search against a plain level-by-level reference, and
the fused loss pair (``vq_loss_pair``, ``block_code_sums``) against autograd on the per-level form."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqkit.functional.block_search import (
    binary_test,
    block_code_sums,
    block_lookup,
    block_search,
    leading_binary_run,
    residual_block_search,
    vq_loss_pair,
)
from vqkit.functional.estimators import straight_through


def _levels(layout: list[tuple[int, int]], dim: int, per_block: bool) -> list[tuple[torch.Tensor, int]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(blocks if per_block else 1, k, dim // blocks, generator=g), blocks)
        for k, blocks in layout
    ]


def _reference(z: torch.Tensor, levels: list[tuple[torch.Tensor, int]], distance: str) -> list[torch.Tensor]:
    """Level by level, block by block, with ``torch.cdist`` / cosine scores and ``argmin`` (ties to the first)."""
    residual, found = z, []
    for books, blocks in levels:
        chunks = residual.reshape(z.shape[0], blocks, -1)
        codes = []
        for j in range(blocks):
            book = books[j if books.shape[0] > 1 else 0]
            if distance == "cosine":
                scores = (
                    -torch.nn.functional.normalize(chunks[:, j], dim=-1)
                    @ torch.nn.functional.normalize(book, dim=-1).T
                )
            else:
                scores = torch.cdist(chunks[:, j].double(), book.double())
            codes.append(scores.argmin(dim=1))
        c = torch.stack(codes, dim=1)
        found.append(c)
        residual = residual - torch.stack(
            [books[j if books.shape[0] > 1 else 0][c[:, j]] for j in range(blocks)], 1
        ).reshape(z.shape[0], -1)
    return found


LAYOUTS = {
    "yin-yang": [(2, 6)] * 4,
    "bottom-up": [(2, 6), (4, 3), (8, 2), (64, 1)],
    "top-down": [(64, 1), (8, 2), (4, 3), (2, 6)],
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("per_block", [False, True])
@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_fast_search_equals_the_reference_away_from_ties(layout: str, per_block: bool, distance: str) -> None:
    levels = _levels(LAYOUTS[layout], 24, per_block)
    z = torch.randn(3000, 24)
    fast = residual_block_search(z, levels, distance)  # type: ignore[arg-type]
    plain = residual_block_search(z, levels, distance, fast=False)  # type: ignore[arg-type]
    reference = _reference(z, levels, distance)
    for a, b, c in zip(fast, plain, reference, strict=True):
        assert a.shape == b.shape == c.shape and a.dtype == torch.long
        # Different rounding may flip a code only within rounding of a tie; once flipped, later levels differ.
        assert float((a != c).any(1).float().mean()) < 2e-3
        assert float((b != c).any(1).float().mean()) < 2e-3


def test_binary_run_is_used_for_leading_two_code_levels() -> None:
    assert leading_binary_run(_levels(LAYOUTS["yin-yang"], 24, False)) == 4
    assert leading_binary_run(_levels(LAYOUTS["bottom-up"], 24, False)) == 1
    assert leading_binary_run(_levels(LAYOUTS["top-down"], 24, False)) == 0


def test_two_code_test_is_the_nearest_code_with_ties_to_code_zero() -> None:
    books = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])
    w, threshold = binary_test(books, "l2")
    assert torch.equal(w, torch.tensor([[-2.0, 0.0]])) and float(threshold) == 0.0
    x = torch.tensor([[0.5, 3.0], [-0.5, 1.0], [0.0, 7.0]])
    assert block_search(x, books, 1, "l2").tolist() == [[0], [1], [0]]  # the tie (x = 0) goes to code 0


def test_lookup_is_the_concatenation_of_each_block_code() -> None:
    books = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)  # per-block: 2 books of 3 codes
    codes = torch.tensor([[2, 0], [1, 1]])
    expected = torch.stack([torch.cat([books[0, 2], books[1, 0]]), torch.cat([books[0, 1], books[1, 1]])])
    assert torch.equal(block_lookup(codes, books), expected)


# ---------------------------------------------------------------------------------------------- the loss pair
@pytest.mark.parametrize(
    ("books", "codes", "blocks"), [(1, 2, 4), (2, 2, 2), (4, 2, 4), (1, 16, 2), (2, 8, 2)]
)
def test_block_code_sums_against_a_loop(books: int, codes: int, blocks: int) -> None:
    g = torch.Generator().manual_seed(0)
    n, d = 50, 3
    vectors = torch.randn(n, blocks * d, generator=g, dtype=torch.float64)
    assign = torch.randint(codes, (n, blocks), generator=g)
    expected = torch.zeros(books, codes, d, dtype=torch.float64)
    for row in range(n):
        for j in range(blocks):
            expected[j if books > 1 else 0, assign[row, j]] += vectors[row, j * d : (j + 1) * d]
    torch.testing.assert_close(block_code_sums(vectors, assign, books, codes), expected)


def _plain_levels(
    h: torch.Tensor, found: list[torch.Tensor], books: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The per-level autograd form ``vq_loss_pair`` replaces: lookups, detached residuals, two ``mse_loss`` per
    level averaged over the levels, the straight-through estimator on the sum."""
    residual, total, commitment, codebook = h, torch.zeros_like(h), [], []
    for codes, book in zip(found, books, strict=True):
        q = block_lookup(codes, book)
        commitment.append(F.mse_loss(residual, q.detach()))
        codebook.append(F.mse_loss(q, residual.detach()))
        residual, total = residual - q.detach(), total + q.detach()
    return straight_through(total, h), torch.stack(commitment).mean(), torch.stack(codebook).mean()


def _pair_statistics(
    h: torch.Tensor, found: list[torch.Tensor], books: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """``vq_loss_pair``'s inputs written from their definitions: the sum, the residual sum, the level losses and
    the per-code sums of what each level left."""
    with torch.no_grad():
        residual, total, residual_sum, losses, sums = h, torch.zeros_like(h), torch.zeros_like(h), [], []
        for codes, book in zip(found, books, strict=True):
            q = block_lookup(codes, book)
            residual, total = residual - q, total + q
            residual_sum += residual
            losses.append(residual.square().mean())
            sums.append(block_code_sums(residual, codes, book.shape[0], book.shape[1]))
    return total, residual_sum, torch.stack(losses), sums


@pytest.mark.parametrize(
    ("layout", "per_block"), [("yin-yang", False), ("bottom-up", True), ("top-down", False)]
)
@pytest.mark.parametrize("outputs", ["all", "losses only"])
def test_vq_loss_pair_has_the_values_and_gradients_of_the_per_level_form(
    layout: str, per_block: bool, outputs: str
) -> None:
    levels = _levels(LAYOUTS[layout], 24, per_block)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 24, generator=g, dtype=torch.float64)
    books = [b.double().requires_grad_(True) for b, _ in levels]
    found = residual_block_search(
        x, [(b, blocks) for b, (_, blocks) in zip(books, levels, strict=True)], "l2"
    )
    upstream = torch.randn(40, 24, generator=g, dtype=torch.float64)
    results = []
    for fused in (False, True):
        h = x.clone().requires_grad_(True)
        if fused:
            total, residual_sum, losses, sums = _pair_statistics(h, found, books)
            out = vq_loss_pair(h, total, residual_sum, losses, books, sums)
        else:
            out = _plain_levels(h, found, books)
        quantized, commitment, codebook = out
        objective = 0.25 * commitment + 1.5 * codebook
        if outputs == "all":
            objective = objective + (quantized * upstream).sum()
        grads = torch.autograd.grad(objective, [h, *books])
        results.append((quantized.detach(), commitment.detach(), codebook.detach(), grads))
    (q0, c0, b0, g0), (q1, c1, b1, g1) = results
    assert torch.equal(q0, q1)
    torch.testing.assert_close(c1, c0)
    torch.testing.assert_close(b1, b0)
    for plain_grad, fused_grad in zip(g0, g1, strict=True):
        torch.testing.assert_close(fused_grad, plain_grad)


def test_vq_loss_pair_without_input_or_codebook_gradients() -> None:
    book = torch.randn(1, 2, 3, dtype=torch.float64)
    x = torch.randn(10, 6, dtype=torch.float64, requires_grad=True)
    found = residual_block_search(x, [(book, 2)], "l2")
    total, residual_sum, losses, sums = _pair_statistics(x, found, [book])
    _, commitment, codebook = vq_loss_pair(x, total, residual_sum, losses, [book], [None])
    (grad,) = torch.autograd.grad(commitment + codebook, [x])
    torch.testing.assert_close(grad, 2 * residual_sum / x.numel())
    trainable = book.clone().requires_grad_(True)
    _, _, codebook = vq_loss_pair(x.detach(), total, None, losses, [trainable], sums)
    (grad,) = torch.autograd.grad(codebook, [trainable])
    torch.testing.assert_close(grad, -2 * sums[0] / x.numel())
