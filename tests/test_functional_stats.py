"""vqkit.functional.stats: the one scatter-add code count, per column with offsets, and its users agree."""

from __future__ import annotations

import pytest
import torch

from vqkit.functional.sharing import segment_usage
from vqkit.functional.stats import code_counts, column_code_counts
from vqkit.metrics import CodebookUsage


def _codes(n: int = 500, columns: int = 3, k: int = 7) -> torch.Tensor:
    return torch.randint(0, k, (n, columns), generator=torch.Generator().manual_seed(0))


def test_column_counts_are_the_per_column_code_counts() -> None:
    codes = _codes()
    counts = column_code_counts(codes, 7)
    assert counts.shape == (3, 7) and counts.dtype == torch.float64
    expected = torch.stack([code_counts(codes[:, j], 7) for j in range(3)])
    assert torch.equal(counts, expected)
    assert torch.equal(counts.sum(1), torch.full((3,), 500.0, dtype=torch.float64))
    assert column_code_counts(codes, 9, torch.float32).shape == (3, 9)  # a wider row: unused codes stay 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_binary_column_counts_are_the_per_column_code_counts(dtype: torch.dtype) -> None:
    codes = _codes(k=2)  # two codes: a column sum instead of the scatter-add
    counts = column_code_counts(codes, 2, dtype)
    assert counts.dtype == dtype
    assert torch.equal(counts, torch.stack([code_counts(codes[:, j], 2, dtype) for j in range(3)]))
    assert torch.equal(column_code_counts(codes[:0], 2), torch.zeros(3, 2, dtype=torch.float64))


def test_segment_usage_and_codebook_usage_count_the_same_table() -> None:
    codes = _codes()
    usage = CodebookUsage([7, 7, 7])
    usage.update(codes[:200])
    usage.update(codes[200:])
    assert torch.equal(usage.counts, segment_usage(codes, 7))
    assert torch.equal(segment_usage(codes, 7), column_code_counts(codes, 7))
