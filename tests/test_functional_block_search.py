"""``vqkit.functional.block_search``: IVQ's residual block search against a plain level-by-level reference."""

from __future__ import annotations

import pytest
import torch

from vqkit.functional.block_search import (
    binary_test,
    block_lookup,
    block_search,
    leading_binary_run,
    residual_block_search,
)


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
