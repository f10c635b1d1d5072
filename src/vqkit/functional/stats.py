"""Code statistics: utilization, perplexity and entropy of code assignments.

Perplexity is ``2 ** H`` with ``H`` the entropy (bits) of the empirical code distribution: ``K`` for uniform
use of ``K`` codes, 1 for a collapsed codebook. Utilization is the share of the alphabet used at least once.
"""

from __future__ import annotations

import functools
from collections.abc import MutableMapping, Sequence

import torch

from vqkit.types import Deferred, LazyScalars, tracing

DENSE_COUNT_LIMIT = 1 << 22
"""Alphabets up to this size are counted densely; larger implicit codebooks (FSQ, LFQ) by the runs of the sorted
codes, which costs O(N log N) and nothing proportional to the alphabet."""


def dense_count(num_codes: int, n: int) -> bool:
    """Whether ``n`` codes over ``num_codes`` are counted densely: an alphabet within ``DENSE_COUNT_LIMIT`` and at
    most ``4 n`` (or 4096) codes. Past that the alphabet-sized table costs more than sorting the codes: 2^16
    codes of a 16-bit FSQ took 4x its eval forward on 1,024 vectors."""
    return num_codes <= min(DENSE_COUNT_LIMIT, max(4 * n, 4096))


def code_counts(codes: torch.Tensor, num_codes: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``[N]`` integer codes in ``[0, K)`` -> ``[K]`` counts (dense).

    A scatter-add rather than ``torch.bincount``: on CUDA ``bincount`` reads the maximum code back to the host
    to size its output, a device sync on every training step.
    """
    flat = codes.reshape(-1)
    counts = torch.zeros(num_codes, dtype=dtype, device=flat.device)
    return counts.index_add_(0, flat, torch.ones(flat.shape, dtype=dtype, device=flat.device))


def column_code_counts(
    codes: torch.Tensor, num_codes: int, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """``[N, C]`` integer codes, column ``j`` in ``[0, num_codes)`` -> ``[C, num_codes]`` counts per column.

    One ``code_counts`` over ``C * num_codes`` bins: column ``j``'s codes are offset by ``j * num_codes``. A code
    outside ``[0, num_codes)`` would land in another column's row, so callers check the range first.
    """
    c = codes.shape[-1]
    if num_codes == 2:  # binary codes (IVQ's lines): a column sum, not a serial scatter-add into two bins
        ones = codes.reshape(-1, c).sum(0, dtype=dtype)
        return torch.stack([codes.numel() // max(c, 1) - ones, ones], dim=1)
    offsets = torch.arange(c, device=codes.device) * num_codes
    return code_counts(codes.long() + offsets, c * num_codes, dtype).view(c, num_codes)


def entropy_bits(counts: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of the distribution proportional to ``counts`` along the last axis (zeros allowed).
    ``[..., K] -> [...]``."""
    counts = counts.to(torch.float64)
    p = counts / counts.sum(-1, keepdim=True).clamp(min=1e-12)
    return -(p * torch.log2(p.clamp(min=1e-300))).sum(-1)


@torch.no_grad()
def batch_usage(codes: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Utilization and perplexity of one set of codes ``[N]`` over an alphabet of ``num_codes``. Negative codes
    mark vectors a level did not code (quantizer dropout) and are not counted."""
    flat = codes.reshape(-1)
    coded = (flat >= 0).to(torch.float64)
    if dense_count(num_codes, flat.numel()):
        counts = torch.zeros(num_codes, dtype=torch.float64, device=flat.device)
        counts.index_add_(0, flat.clamp(min=0), coded)
        used = (counts > 0).sum()
    else:
        # Runs of the sorted codes instead of torch.unique: the same counts (in at most N bins, zeros included),
        # without unique's data-dependent output size, which on CUDA reads a value back to the host.
        ordered = flat.sort().values
        starts = torch.ones_like(ordered, dtype=torch.bool)
        starts[1:] = ordered[1:] != ordered[:-1]
        runs = starts.cumsum(0) - 1
        counts = torch.zeros(flat.numel(), dtype=torch.float64, device=flat.device)
        counts.index_add_(0, runs, (ordered >= 0).to(torch.float64))
        used = (counts > 0).sum().to(torch.float64)
    utilization = used.to(torch.float32) / float(num_codes)
    perplexity = torch.exp2(entropy_bits(counts)).to(torch.float32)
    return utilization, perplexity


@torch.no_grad()
def column_usage(codes: torch.Tensor, sizes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_usage`` of every column of ``codes`` ``[N, C]`` (column ``j`` over ``sizes[j]`` codes): utilization
    and perplexity ``[C]`` (float32). Columns that share one densely counted alphabet take one count table: each
    column's row has a bin for ``NOT_CODED`` (-1) first, and the perplexity is ``exp(log T - sum c log c / T)``
    over the counts ``c`` (``T`` their sum): a residual quantizer's metrics cost what one column's do, a third
    of the kernels of a ``batch_usage`` per column."""
    c, k = codes.shape[1], sizes[0]
    if any(size != k for size in sizes) or not dense_count(c * (k + 1), codes.shape[0]):
        usage = [batch_usage(codes[:, j], size) for j, size in enumerate(sizes)]
        return torch.stack([u for u, _ in usage]), torch.stack([p for _, p in usage])
    # Column-major bins, the offsets added along rows ([N, C] + [C] broadcasts over C-wide rows: 5x slower).
    offsets = torch.arange(1, c * (k + 1), k + 1, device=codes.device)[:, None]
    bins = (codes.t().contiguous() + offsets).reshape(-1)
    one = torch.ones((), dtype=torch.float64, device=codes.device)
    table = torch.zeros(c * (k + 1), dtype=torch.float64, device=codes.device)
    counts = table.index_add_(0, bins, one.expand(bins.shape)).view(c, k + 1)[:, 1:]
    total = counts.sum(1).clamp(min=1.0)
    entropy = total.log() - torch.special.xlogy(counts, counts).sum(1) / total
    return torch.count_nonzero(counts, dim=1).to(torch.float32) / k, entropy.exp().to(torch.float32)


def usage_metrics(
    codes: torch.Tensor, sizes: Sequence[int]
) -> tuple[MutableMapping[str, torch.Tensor], MutableMapping[str, torch.Tensor]]:
    """A forward's usage metrics of ``codes`` ``[N, C]`` (column ``j`` over ``sizes[j]`` codes): ``(scalars,
    per position)``, the scalars ``utilization`` and ``perplexity`` as means over the ``C`` columns and, for
    ``C > 1``, the ``[C]`` values under the same names (``column_usage``).

    Both are ``LazyScalars`` computed on first read from one count table: a forward whose metrics nobody reads
    (an inference loop, a trainer between logging steps) does not count its codes. While a graph is traced
    (``vqkit.types.tracing``) they are plain dicts computed now, so the graph stays whole.
    """
    sizes = tuple(sizes)
    names = {"utilization": "utilization", "perplexity": "perplexity"}
    positions = (
        {"utilization": "position/utilization", "perplexity": "position/perplexity"}
        if codes.shape[1] > 1
        else {}
    )
    if tracing():
        values = _usage(codes, sizes)
        return {n: values[k] for n, k in names.items()}, {n: values[k] for n, k in positions.items()}
    # A copy: ``out.codes`` is a view of these, and a caller may write pad ids into it before reading.
    source = Deferred(functools.partial(_usage, codes.clone(), sizes))
    scalars, per_position = LazyScalars(), LazyScalars()
    scalars.defer(source, names)
    per_position.defer(source, positions)
    return scalars, per_position


def _usage(codes: torch.Tensor, sizes: tuple[int, ...]) -> dict[str, torch.Tensor]:
    utils, perps = column_usage(codes, sizes)
    return {
        "utilization": utils.mean(),
        "perplexity": perps.mean(),
        "position/utilization": utils,
        "position/perplexity": perps,
    }
