"""Batches as a function of the step: the deterministic sample stream of training, and in-order evaluation.

The training stream is the concatenation of per-epoch permutations drawn from ``(seed, epoch)``; global step
``s`` takes items ``[s * B, (s + 1) * B)`` of it and rank ``r`` of ``W`` takes every ``W``-th of those. Nothing
here depends on what ran before, so a resumed run sees exactly the batches an uninterrupted one would have seen,
and ``W`` ranks together see the batch one process would.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import torch


# A batch reads one epoch's permutation, or the end of one and the start of the next: two are enough.
@functools.lru_cache(maxsize=2)
def _epoch_permutation(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def stream_indices(start: int, count: int, num_items: int, seed: int) -> torch.Tensor:
    """Items ``[start, start + count)`` of the endless stream of per-epoch permutations of ``num_items``."""
    out: list[int] = []
    position = start
    while len(out) < count:
        epoch, offset = divmod(position, num_items)
        perm = _epoch_permutation(num_items, seed, epoch)
        take = perm[offset : offset + count - len(out)]
        out.extend(take.tolist())
        position += len(take)
    return torch.tensor(out, dtype=torch.long)


def rank_share(indices: torch.Tensor, rank: int, size: int) -> torch.Tensor:
    """Rank ``rank``'s part of a global batch: every ``size``-th index, starting at its own."""
    return indices[rank::size]


def collate(dataset: Any, indices: torch.Tensor) -> torch.Tensor:
    """The items at ``indices``, stacked into one batch."""
    return torch.stack([dataset[int(i)] for i in indices])


def step_batch(dataset: Any, step: int, batch_size: int, seed: int, rank: int, size: int) -> torch.Tensor:
    """This rank's share of training step ``step``'s global batch of ``batch_size`` items."""
    indices = stream_indices(step * batch_size, batch_size, len(dataset), seed)
    return collate(dataset, rank_share(indices, rank, size))


def batches(dataset: Any, batch_size: int, limit: int | None = None) -> Iterator[torch.Tensor]:
    """The dataset (or its first ``limit`` items) in order, in batches: evaluation and k-means init."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for start in range(0, n, batch_size):
        yield collate(dataset, torch.arange(start, min(start + batch_size, n)))
