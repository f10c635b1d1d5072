"""Exact nearest-code search: the one kernel every codebook lookup in vqkit goes through.

Squared L2 uses the expansion ``|x|^2 - 2 x C^T + |C|^2``: the ``-2 x C^T + |C|^2`` part is a single fused
``addmm`` against cached code norms (``|x|^2`` does not change the argmin and is added to the winning
distances only). Cosine matching is a matmul of l2-normalized vectors. The input is processed in row chunks
sized so that one chunk of scores stays under ``max_chunk_bytes``: the full ``N x K`` matrix is never formed,
peak extra memory is bounded whatever ``N`` and ``K`` are, and the chunk stays cache-resident for the
reduction that follows the matmul. No one-hot matrix is ever built.

The kernel also serves the opposite query (for each code, its nearest input: CVQ anchors) by swapping
the roles of the two sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vqkit.types import Distance

DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
"""Scores per chunk: 4 MiB keeps a chunk in L2/L3 cache on CPUs and is plenty of parallel work on GPUs."""


@dataclass
class SearchResult:
    """Nearest codes and their distances.

    Attributes:
        codes: ``[N]`` (``k=1``) or ``[N, k]`` int64, nearest first.
        distances: same shape, float32: squared L2 distance, or cosine distance ``1 - cos`` for ``"cosine"``.
    """

    codes: torch.Tensor
    distances: torch.Tensor


def squared_norms(vectors: torch.Tensor) -> torch.Tensor:
    """``[K, D] -> [K]`` squared l2 norms (cache these for a codebook that does not change between calls)."""
    return vectors.pow(2).sum(dim=-1)


def _chunk_rows(num_rows: int, num_codes: int, max_chunk_bytes: int, element_size: int) -> int:
    return max(1, min(num_rows, max_chunk_bytes // max(1, num_codes * element_size)))


@torch.no_grad()
def nearest_code(
    x: torch.Tensor,
    codebook: torch.Tensor,
    *,
    distance: Distance = "l2",
    k: int = 1,
    codebook_sqnorm: torch.Tensor | None = None,
    max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> SearchResult:
    """Exact k-nearest codes for each row of ``x``.

    Args:
        x: ``[N, D]`` queries.
        codebook: ``[K, D]`` codes (same dtype and device as ``x``).
        distance: ``"l2"`` (squared Euclidean) or ``"cosine"``.
        k: number of nearest codes to return (``1 <= k <= K``).
        codebook_sqnorm: optional cached ``squared_norms(codebook)`` for ``"l2"``.
        max_chunk_bytes: bound on the scores held at once; peak extra memory is about this plus the output.

    Returns:
        ``SearchResult`` with ``codes`` / ``distances`` of shape ``[N]`` when ``k == 1`` else ``[N, k]``.
    """
    if x.dim() != 2 or codebook.dim() != 2 or x.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"nearest_code: expected x [N, D] and codebook [K, D] with equal D, "
            f"got x {tuple(x.shape)} and codebook {tuple(codebook.shape)}"
        )
    num_codes = codebook.shape[0]
    if not 1 <= k <= num_codes:
        raise ValueError(f"nearest_code: k must be in [1, {num_codes}] (the number of codes), got {k}")
    n = x.shape[0]
    shape = (n,) if k == 1 else (n, k)
    codes = torch.empty(shape, dtype=torch.long, device=x.device)
    dists = torch.empty(shape, dtype=x.dtype, device=x.device)
    rows = _chunk_rows(n, num_codes, max_chunk_bytes, x.element_size())
    scores = x.new_empty((rows, num_codes))
    cosine = distance == "cosine"
    if cosine:
        codebook_t = F.normalize(codebook, dim=-1).t()
        bias = None
    else:
        codebook_t = codebook.t()
        bias = squared_norms(codebook) if codebook_sqnorm is None else codebook_sqnorm
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        chunk = x[start:stop]
        out = scores[: stop - start]
        if cosine:
            # Maximize cosine == minimize its negation: fold the sign into the matmul.
            torch.mm(F.normalize(chunk, dim=-1), codebook_t, out=out).neg_()
        else:
            torch.addmm(bias, chunk, codebook_t, alpha=-2.0, out=out)
        if k == 1:
            torch.min(out, dim=1, out=(dists[start:stop], codes[start:stop]))
        else:
            torch.topk(out, k, dim=1, largest=False, sorted=True, out=(dists[start:stop], codes[start:stop]))
    if cosine:
        dists.add_(1.0)
    else:
        x_sqnorm = squared_norms(x)
        dists.add_(x_sqnorm if k == 1 else x_sqnorm[:, None]).clamp_(min=0.0)
    return SearchResult(codes=codes, distances=dists)


@torch.no_grad()
def pairwise_distances(x: torch.Tensor, codebook: torch.Tensor, distance: Distance = "l2") -> torch.Tensor:
    """Dense ``[N, K]`` distances (squared L2 or ``1 - cos``). For small problems and tests only."""
    if distance == "cosine":
        return 1.0 - F.normalize(x, dim=-1) @ F.normalize(codebook, dim=-1).t()
    d = squared_norms(x)[:, None] - 2.0 * x @ codebook.t() + squared_norms(codebook)[None, :]
    return d.clamp_(min=0.0)
