"""Exact nearest-code search: the one kernel every codebook lookup in vqkit goes through.

Squared L2 uses the expansion ``|x|^2 - 2 x C^T + |C|^2``: the ``-2 x C^T + |C|^2`` part is a single fused
``addmm`` against cached code norms (``|x|^2`` does not change the argmin and is added to the winning
distances only). Cosine matching is a matmul of l2-normalized vectors. The input is processed in row chunks
sized so that one chunk of scores stays under ``max_chunk_bytes``: the full ``N x K`` matrix is never formed,
peak extra memory is bounded whatever ``N`` and ``K`` are, and the chunk stays cache-resident for the
reduction that follows the matmul. No one-hot matrix is ever built.

Two CPU-only choices (timed with 2 threads, see ``benchmarks/bench_search.py``; other devices keep whole
rows and ``torch.min``):

* For the nearest code (``k=1``) the codes are also split into blocks of ``CPU_CODE_BLOCK``, merged with a
  running minimum. A block of ``C^T`` (256 KiB at D=64) stays in cache across the rows of a chunk. With the
  whole codebook (16 MiB at K=65536) in one matmul, a 4 MiB chunk is only 16 rows, and every chunk streams
  the codebook from memory: the search ran 3x slower at K=65536.
* ``torch.min(dim=1)`` with indices is a scalar loop on CPU and cost about as much as the matmul before it;
  ``amin``, comparisons and ``amax`` are vectorized. ``_row_min_`` finds the first minimum of each row in four
  such passes over the tile (minimum, equality marks, marks weighted by reversed position, maximum), with
  ``torch.min``'s value, index and tie rule. Against ``torch.min`` inside the best of groups of 64 scores (the
  scheme before it, which had made K=1024 1.4x faster) the search is 1.2-1.4x faster at K=64 to 256 (at
  K=256 it now takes 1.1-1.15x the matmul's time) and level from K=1024 (1 and 2 threads, N=16384, D=64).

The kernel also serves the opposite query (for each code, its nearest input: CVQ anchors) by swapping
the roles of the two sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vqkit.types import Distance

DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
"""Scores per chunk on CPU: 4 MiB keeps a chunk in L2/L3 cache for the reduction after the matmul."""

ACCELERATOR_CHUNK_BYTES = 256 * 1024 * 1024
"""Scores per chunk on GPUs and other accelerators: few, large kernels. With 4 MiB chunks an H100 spent 11x the
time of the bare matmul at N=16384, K=1024 launching small kernels; 256 MiB still bounds peak extra memory
far below the 16 GiB of a full 65536 x 65536 score matrix."""


def default_chunk_bytes(device: torch.device) -> int:
    """The score-chunk budget used when ``max_chunk_bytes`` is not given."""
    return DEFAULT_CHUNK_BYTES if device.type == "cpu" else ACCELERATOR_CHUNK_BYTES


CPU_CODE_BLOCK = 1024
"""Codes per block on CPU for ``k=1`` (see the module docstring). At D=64, blocks of 1024 and 2048 codes
were the fastest of 256 to 8192 at K=65536; at K=1024, blocks of 512 or 256 were slower than one."""

_GROUP = 64
"""Rows per ``amin`` group in ``_column_min``: long enough for ``amin`` to vectorize, short enough that the
scalar ``torch.min`` inside the winning group stays cheap (64 was the fastest of 8 to 256 for the row-wise
version of the same scheme at K=1024)."""

_EQ_MIN_WIDTH = 64
"""Fewest codes in a block for ``_row_min_``'s vectorized passes; under it ``torch.min``: at 64 to 256 codes the
four passes were 1.2-1.4x faster than its scalar loop at 1 and 2 threads, at 32 and 48 between 0.6x and 1.35x
from run to run."""


@dataclass
class SearchResult:
    """Nearest codes and their distances.

    Attributes:
        codes: ``[N]`` (``k=1``) or ``[N, k]`` int64, nearest first.
        distances: same shape, float32: squared L2 distance, or cosine distance ``1 - cos`` for ``"cosine"``.
        code_rows: with ``nearest_rows=True``, ``[K]`` int64: for each code, the first row of ``x`` nearest to it
            (what ``nearest_code(codebook, x)`` returns as codes); else ``None``.
        code_distances: with ``nearest_rows=True``, ``[K]``: those rows' distances to their codes; else ``None``.
    """

    codes: torch.Tensor
    distances: torch.Tensor
    code_rows: torch.Tensor | None = None
    code_distances: torch.Tensor | None = None


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
    max_chunk_bytes: int | None = None,
    nearest_rows: bool = False,
) -> SearchResult:
    """Exact k-nearest codes for each row of ``x`` (and, with ``nearest_rows``, the nearest row for each code).

    Args:
        x: ``[N, D]`` queries.
        codebook: ``[K, D]`` codes (same dtype and device as ``x``).
        distance: ``"l2"`` (squared Euclidean) or ``"cosine"``.
        k: number of nearest codes to return (``1 <= k <= K``).
        codebook_sqnorm: optional cached ``squared_norms(codebook)`` for ``"l2"``.
        max_chunk_bytes: bound on the scores held at once; peak extra memory is about this plus the output.
            ``None``: ``default_chunk_bytes(x.device)`` (4 MiB on CPU, 256 MiB on accelerators).
        nearest_rows: also reduce every tile of scores over its rows (``k == 1`` only): ``code_rows`` /
            ``code_distances``, what a second search with the roles swapped would give, for one more reduction
            instead of a second matmul (CVQ's anchors read it every training step).

    Returns:
        ``SearchResult`` with ``codes`` / ``distances`` of shape ``[N]`` when ``k == 1`` else ``[N, k]``.
    """
    _check_query(x, codebook, k)
    if nearest_rows and k != 1:
        raise ValueError(f"nearest_code: nearest_rows=True needs k=1, got k={k}")
    if torch.compiler.is_compiling():  # torch.compile / torch.export / ONNX: one traceable graph, any N
        return _dense_search(x, codebook, distance, k, codebook_sqnorm, nearest_rows)
    return _chunked_search(x, codebook, distance, k, codebook_sqnorm, max_chunk_bytes, nearest_rows)


def _chunked_search(
    x: torch.Tensor,
    codebook: torch.Tensor,
    distance: Distance,
    k: int,
    codebook_sqnorm: torch.Tensor | None,
    max_chunk_bytes: int | None,
    nearest_rows: bool,
) -> SearchResult:
    """``nearest_code``'s eager kernel: tiles of at most ``max_chunk_bytes`` scores (module docstring)."""
    num_codes, n = codebook.shape[0], x.shape[0]
    shape = (n,) if k == 1 else (n, k)
    codes = torch.empty(shape, dtype=torch.long, device=x.device)
    dists = torch.empty(shape, dtype=x.dtype, device=x.device)
    on_cpu = x.device.type == "cpu"
    # Top-k over code blocks would need a second top-k per merge: k > 1 keeps whole rows.
    block = min(num_codes, CPU_CODE_BLOCK) if on_cpu and k == 1 else num_codes
    budget = default_chunk_bytes(x.device) if max_chunk_bytes is None else max_chunk_bytes
    rows = _chunk_rows(n, block, budget, x.element_size())
    # One flat buffer: every tile below is a contiguous view of it, also the narrower last block of codes.
    scores = x.new_empty(rows * block)
    blocked = on_cpu and k == 1  # the codes in blocks of CPU_CODE_BLOCK, merged by a running minimum
    order = _index_order(block, x) if blocked else None
    cosine = distance == "cosine"
    codebook_t, bias = _scoring_codes(codebook, cosine, codebook_sqnorm)
    x_sqnorm = None if cosine else squared_norms(x)
    columns = _Columns(num_codes, x, rows * block, x_sqnorm) if nearest_rows else None
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        chunk = F.normalize(x[start:stop], dim=-1) if cosine else x[start:stop]
        best = (dists[start:stop], codes[start:stop])
        for first in range(0, num_codes, block):
            last = min(first + block, num_codes)
            out = scores[: (stop - start) * (last - first)].view(stop - start, last - first)
            if bias is None:
                torch.mm(chunk, codebook_t[:, first:last], out=out)
            else:
                torch.addmm(bias[first:last], chunk, codebook_t[:, first:last], alpha=-2.0, out=out)
            if columns is not None:  # first: the row reduction may overwrite the tile
                columns.fold(out, start, first)
            _reduce_tile(out, first, k, best, order, blocked)
    if x_sqnorm is None:
        dists.add_(1.0)
    else:
        dists.add_(x_sqnorm if k == 1 else x_sqnorm[:, None]).clamp_(min=0.0)
    if columns is None:
        return SearchResult(codes=codes, distances=dists)
    return SearchResult(codes, dists, *columns.result(cosine))


class _Columns:
    """The running column minima of a chunked search: for each code, its nearest row so far and the distance
    (for L2 the tile plus the rows' squared norms, which do not change a row's argmin but do a column's)."""

    def __init__(self, num_codes: int, x: torch.Tensor, tile_elements: int, x_sqnorm: torch.Tensor | None):
        self.values = x.new_full((num_codes,), float("inf"))  # no rows at all: no nearest row (inf, row 0)
        self.rows = torch.zeros(num_codes, dtype=torch.long, device=x.device)
        self.x_sqnorm = x_sqnorm
        self.buffer = None if x_sqnorm is None else x.new_empty(tile_elements)

    def fold(self, tile: torch.Tensor, start: int, first: int) -> None:
        """Merge a tile of scores (rows ``start ..``, codes ``first ..``) into the running minima."""
        if self.x_sqnorm is not None and self.buffer is not None:
            shifted = self.buffer[: tile.numel()].view_as(tile)
            tile = torch.add(tile, self.x_sqnorm[start : start + tile.shape[0], None], out=shifted)
        values, rows = _column_min(tile)
        span = slice(first, first + tile.shape[1])
        if start == 0:
            self.values[span].copy_(values)
            self.rows[span].copy_(rows)
        else:
            _keep_smaller_(self.values[span], self.rows[span], values, rows.add_(start))

    def result(self, cosine: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(code_rows, code_distances)``, the distances as ``SearchResult.distances`` gives them."""
        return self.rows, self.values.add_(1.0) if cosine else self.values.clamp_(min=0.0)


def _dense_search(
    x: torch.Tensor,
    codebook: torch.Tensor,
    distance: Distance,
    k: int,
    sqnorm: torch.Tensor | None,
    nearest_rows: bool = False,
) -> SearchResult:
    """The search as one score matrix ``[N, K]`` and one reduction: what compiled and exported graphs run (the
    chunk loop depends on ``N`` in Python, which would fix the traced shape). The same scores, so the same
    codes as the chunked kernel up to the rounding of the matmul; memory is not bounded by chunks."""
    cosine = distance == "cosine"
    codebook_t, bias = _scoring_codes(codebook, cosine, sqnorm)
    queries = F.normalize(x, dim=-1) if cosine else x
    scores = queries @ codebook_t if bias is None else torch.addmm(bias, queries, codebook_t, alpha=-2.0)
    if k == 1:
        dists, codes = scores.min(dim=1)
    else:
        dists, codes = torch.topk(scores, k, dim=1, largest=False, sorted=True)
    if cosine:  # 1 - cos: the negated cosine plus one
        found = SearchResult(codes, dists + 1.0)
        columns = scores.min(dim=0) if nearest_rows else None
    else:
        x_sqnorm = squared_norms(x)
        found = SearchResult(codes, (dists + (x_sqnorm if k == 1 else x_sqnorm[:, None])).clamp(min=0.0))
        columns = (scores + x_sqnorm[:, None]).min(dim=0) if nearest_rows else None
    if columns is None:
        return found
    column_distances = columns.values + 1.0 if cosine else columns.values.clamp(min=0.0)
    return SearchResult(found.codes, found.distances, columns.indices, column_distances)


def _scoring_codes(
    codebook: torch.Tensor, cosine: bool, sqnorm: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(C^T, bias)`` so that ``bias + x C^T`` (scaled by -2 with a bias) is minimal at the nearest code."""
    if cosine:
        # Maximize cosine == minimize its negation: the sign goes into the normalized codes (exact in floats).
        return F.normalize(codebook, dim=-1).neg_().t(), None
    return codebook.t(), squared_norms(codebook) if sqnorm is None else sqnorm


def _check_query(x: torch.Tensor, codebook: torch.Tensor, k: int) -> None:
    if x.dim() != 2 or codebook.dim() != 2 or x.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"nearest_code: expected x [N, D] and codebook [K, D] with equal D, "
            f"got x {tuple(x.shape)} and codebook {tuple(codebook.shape)}"
        )
    if not 1 <= k <= codebook.shape[0]:
        raise ValueError(
            f"nearest_code: k must be in [1, {codebook.shape[0]}] (the number of codes), got {k}"
        )


def _reduce_tile(
    scores: torch.Tensor,
    first: int,
    k: int,
    best: tuple[torch.Tensor, torch.Tensor],
    order: torch.Tensor | None,
    blocks: bool,
) -> None:
    """Fold one tile of scores (codes ``first ..``) into the running result ``best`` (values, codes): top-k on
    whole rows; ``torch.min`` on whole rows off CPU (``blocks`` false); on CPU, per block of codes,
    ``_row_min_`` (it overwrites the tile; ``order``: its index weights, ``None`` where it does not apply) or
    ``torch.min`` for blocks under ``_EQ_MIN_WIDTH`` codes, merged with a running minimum."""
    if k > 1:
        torch.topk(scores, k, dim=1, largest=False, sorted=True, out=best)
        return
    if not blocks:
        torch.min(scores, dim=1, out=best)
        return
    if order is not None and scores.shape[1] >= _EQ_MIN_WIDTH:
        values, indices = _row_min_(scores, order)
    else:
        values, indices = torch.min(scores, dim=1)
    if first == 0:
        best[0].copy_(values)
        best[1].copy_(indices)
    else:
        _keep_smaller_(*best, values, indices.add_(first))


def _index_order(width: int, x: torch.Tensor) -> torch.Tensor | None:
    """``_row_min_``'s weights ``[width, ..., 1]`` for ``k=1`` searches on CPU in float32/64 over at least
    ``_EQ_MIN_WIDTH`` codes, else ``None`` (``torch.min``): in bf16/fp16 the weights past 256 are not exact."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or width < _EQ_MIN_WIDTH:
        return None
    return torch.arange(width, 0, -1, dtype=x.dtype, device=x.device)


def _row_min_(scores: torch.Tensor, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.min(scores, dim=1)`` (values, first index of the minimum) by vectorized passes, overwriting
    ``scores``: ``amin``, a 0/1 mark where a score equals its row's minimum, the marks weighted by ``order``
    (``width - j`` at column ``j``: the first minimum weighs most), ``amax``. ``torch.min`` with indices is a
    scalar loop on CPU, 1.5-3.5x slower than these four passes at 64 to 1,024 codes. A row whose scores hold a
    NaN has a NaN minimum that equals nothing: it gets index 0 (``torch.min`` would give the NaN's)."""
    width = scores.shape[1]
    values = scores.amin(dim=1)
    torch.eq(scores, values[:, None], out=scores)
    weights = scores.mul_(order[order.shape[0] - width :]).amax(dim=1)  # [width, ..., 1]
    return values, weights.neg_().add_(width).long().remainder_(width)


def _column_min(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.min(scores, dim=0)`` (first row of each column's minimum), faster on CPU, where a reduction with
    indices across rows is 20x slower than ``amin``: the minimum over groups of ``_GROUP`` rows by ``amin``, the
    first best group of each column by ``torch.min`` on ``_GROUP`` times fewer rows, the row inside it."""
    num_rows, width = scores.shape
    groups = num_rows // _GROUP
    if groups < 2 or scores.device.type != "cpu":
        return torch.min(scores, dim=0)
    body = scores[: groups * _GROUP].view(groups, _GROUP, width)
    best_group = body.amin(dim=1).argmin(dim=0)  # [width]
    columns = torch.arange(width, device=scores.device)
    values, offsets = body[best_group, :, columns].min(dim=1)  # [width, _GROUP] -> [width]
    rows = best_group.mul_(_GROUP).add_(offsets)
    if groups * _GROUP < num_rows:  # a ragged tail of rows: later, so it wins only when strictly smaller
        tail_values, tail_rows = torch.min(scores[groups * _GROUP :], dim=0)
        _keep_smaller_(values, rows, tail_values, tail_rows.add_(groups * _GROUP))
    return values, rows


def _keep_smaller_(
    values: torch.Tensor, indices: torch.Tensor, new_values: torch.Tensor, new_indices: torch.Tensor
) -> None:
    """Merge a later block into a running minimum in place, with ``torch.min``'s rules: the earlier index wins
    ties, and a NaN beats any number (the first NaN is kept)."""
    take = (new_values < values) | (new_values.isnan() & ~values.isnan())
    torch.where(take, new_values, values, out=values)
    torch.where(take, new_indices, indices, out=indices)


def pairwise_distances(x: torch.Tensor, codebook: torch.Tensor, distance: Distance = "l2") -> torch.Tensor:
    """Dense ``[N, K]`` distances of ``x`` ``[N, D]`` to ``codebook`` ``[K, D]``: squared L2 (clamped at 0) or
    ``1 - cos``, differentiable in both arguments (the soft assignments of stochastic codes and of the usage
    entropy move the input and the codes through them). It holds the whole ``N x K`` matrix (and as much again
    for autograd): the search is ``nearest_code``, which never does."""
    if distance == "cosine":
        return 1.0 - F.normalize(x, dim=-1) @ F.normalize(codebook, dim=-1).t()
    cross = torch.addmm(squared_norms(codebook), x, codebook.t(), alpha=-2.0)
    return (cross + squared_norms(x)[:, None]).clamp(min=0.0)
