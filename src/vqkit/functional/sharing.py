"""Per-segment usage and code sharing of a compositional quantizer (one codebook shared by several code slots).

A compositional quantizer such as ``LooC`` writes ``C`` codes per vector, all from the same ``K`` codes: code
slot ``j`` ("segment ``j``") is the ``j``-th sub-vector of every vector. These functions measure how the shared
codebook is used across segments, as in the LooC paper's supplementary analysis (Li, Wong, Han, arXiv
2601.00222, supp. §2):

* ``segment_usage``: the ``[C, K]`` count table everything else is computed from;
* ``segment_utilization``: share of the ``K`` codes each segment uses (supp. Fig. 7, "usage of the codevectors
  for each segment");
* ``code_sharing_curve``: share of the ``K`` codes used by at least ``n`` segments, ``n = 1..C`` (supp. Fig. 8,
  "codevectors shared among at least n segments"); entry 0 is the utilization of the whole codebook;
* ``mean_code_sharing``: over the codes used at all, the mean fraction of segments that use each one (1: every
  used code serves every segment; ``1/C``: segments use disjoint codes, as separate codebooks would).

All functions are pure and vectorized (no Python loop over vectors or codes). Counting over many batches is
the caller's sum of ``segment_usage`` tables. They live in ``functional`` (not ``metrics``) because ``LooC``
reports them as per-batch metrics, and quantizers import nothing above ``functional``; ``vqkit.metrics``
re-exports them with the other code statistics.
"""

from __future__ import annotations

import torch

from vqkit._validate import check_codes_in_range, check_positive_int
from vqkit.functional.stats import code_counts, column_code_counts


@torch.no_grad()
def segment_usage(codes: torch.Tensor, num_codes: int, *, validate: bool = True) -> torch.Tensor:
    """Count how often each segment uses each code.

    Args:
        codes: ``[N, C]`` integer codes in ``[0, num_codes)`` (a ``QuantizerOutput.codes`` flattened to
            ``reshape(-1, C)``).
        num_codes: K, the size of the shared codebook.
        validate: check shape and range first (the range check costs one device sync); pass ``False`` only for
            codes known to be valid: an out-of-range code would be counted in another segment's row.

    Returns:
        ``[C, K]`` float64 counts: entry ``[j, k]`` is the number of vectors whose segment ``j`` has code ``k``.
        One scatter-add (``column_code_counts``; no ``bincount``, which syncs on CUDA to size its output).
    """
    if validate:
        check_positive_int("num_codes", num_codes)
        if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point or codes.dtype == torch.bool:
            got = codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise TypeError(f"codes: expected an integer tensor, got {got}")
        if codes.dim() != 2:
            raise ValueError(f"codes: expected shape [N, C], got {tuple(codes.shape)}")
        check_codes_in_range(codes, (num_codes,) * codes.shape[1])
    return column_code_counts(codes, num_codes)


def _check_counts(counts: torch.Tensor) -> None:
    if not isinstance(counts, torch.Tensor) or counts.dim() != 2:
        got = tuple(counts.shape) if isinstance(counts, torch.Tensor) else type(counts).__name__
        raise ValueError(f"counts: expected a [C, K] table from segment_usage, got {got}")


def _users(counts: torch.Tensor) -> torch.Tensor:
    """``[K]`` int64: how many segments use each code at least once."""
    return (counts > 0).sum(dim=0)


@torch.no_grad()
def segment_utilization(counts: torch.Tensor) -> torch.Tensor:
    """Share of the ``K`` codes each segment uses at least once: ``[C, K] -> [C]`` float32 in ``[0, 1]``.

    The LooC paper's supp. Fig. 7 (K=256, m=32 on CIFAR10: above 90% on all but 6 segments).
    """
    _check_counts(counts)
    return (counts > 0).to(torch.float32).mean(dim=1)


@torch.no_grad()
def code_sharing_curve(counts: torch.Tensor) -> torch.Tensor:
    """Share of the ``K`` codes used by at least ``n`` segments: ``[C, K] -> [C]`` float32, entry ``n - 1``.

    Non-increasing in ``n``; entry 0 is the share of the codebook used by any segment, entry ``C - 1`` the share
    used by every segment. The LooC paper's supp. Fig. 8 (K=256, m=32: every code shared by at least 26
    segments; K=1024: by at least 16).
    """
    _check_counts(counts)
    c, k = counts.shape
    histogram = code_counts(_users(counts), c + 1)  # histogram[n] = #codes used by exactly n segments
    at_least = histogram.flip(0).cumsum(0).flip(0)[1:]  # at_least[n - 1] = #codes with users >= n
    return (at_least / max(k, 1)).to(torch.float32)


@torch.no_grad()
def mean_code_sharing(counts: torch.Tensor) -> torch.Tensor:
    """Mean over the codes used at all of the fraction of segments using each: ``[C, K] -> []`` float32.

    1 when every used code is used by every segment, ``1 / C`` when each code serves a single segment (what ``C``
    separate codebooks amount to); 0 when no code is used (empty counts).
    """
    _check_counts(counts)
    c = counts.shape[0]
    users = _users(counts).to(torch.float64)
    used = users > 0
    share = (users * used).sum() / (used.sum().clamp(min=1) * max(c, 1))
    return share.to(torch.float32)
