"""Residual search over levels of block codebooks (IVQ's search), as pure functions of the codebook tensors.

A **level** is ``(books, blocks)``: ``books`` ``[P, K, d]`` holds ``P`` codebooks of ``K`` codes of ``d`` dims
(``P = 1``: one codebook shared by every block; ``P = blocks``: one per block), and a vector ``[D = blocks *
d]`` is cut into ``blocks`` contiguous chunks, each matched against its codebook. Levels are residual: level
``k`` quantizes what levels ``< k`` left. ``residual_block_search`` is the reference procedure; it is what
``vqkit.quantizers.IVQ`` runs in ``forward`` and ``encode``, so their codes agree bit for bit.

**The binary run.** With two codes per codebook the nearest-code test of a block is one dot product against
``w = c1 - c0``: code 1 iff ``x . w > (|c1|^2 - |c0|^2) / 2`` (ties to code 0, like ``nearest_code``). For a
leading run of two-code levels with equal blocks (all of IVQ's yin-yang layout) the residuals need not be formed:
with ``r_k = x - sum_{i<k} q_i``, level ``k``'s test ``r_k . w_k > t_k`` is ``x . w_k - sum_{i<k} q_i . w_k >
t_k``, and ``q_i . w_k`` is one of two precomputed numbers per block. The run costs one ``[N * blocks, d] x [d,
R]`` product and a few ``[N, blocks]`` operations: the residual search, with different rounding only at exact
ties. ``tests/test_functional_block_search.py`` compares it with the plain level-by-level search.

**The loss pair without autograd's per-level graph.** ``vq_loss_pair`` gives a residual lookup's training
outputs (the straight-through sum and the VQ-VAE pair averaged over levels) from statistics the forward pass
computes anyway: the sum of the levels' residuals and each level's per-code sums of what it left
(``block_code_sums``). Its gradients are the closed forms of the per-level ``mse_loss`` pair and the lookup's
backward, so the backward is one pass over ``[N, D]`` and no embedding backward (the same gradients to float
rounding; the tests compare them with autograd on the plain form).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F

from vqkit.functional.estimators import estimate
from vqkit.functional.search import nearest_code
from vqkit.types import Distance

Level = tuple[torch.Tensor, int]
"""``(books [P, K, d], blocks)``: one level's codebooks and how many blocks a vector is cut into."""

CPU_CHUNK_BYTES = 1 << 21
"""On CPU the rows go through all levels in chunks of about this size: the residual stays in cache across
levels, which matters because a two-code level is a handful of memory passes and almost no arithmetic."""


SUM_BY_PRODUCT = 4
"""``block_code_sums`` with at most this many codes in all uses a one-hot matrix product, with more a scatter-add."""


def block_lookup(codes: torch.Tensor, books: torch.Tensor) -> torch.Tensor:
    """``[N, blocks]`` block codes -> ``[N, blocks * d]`` vectors (differentiable w.r.t. ``books``)."""
    p, k, d = books.shape
    if p == 1:
        return F.embedding(codes, books[0]).reshape(codes.shape[0], -1)
    offsets = torch.arange(p, device=codes.device) * k
    return F.embedding(codes + offsets, books.reshape(p * k, d)).reshape(codes.shape[0], -1)


def binary_test(books: torch.Tensor, distance: Distance) -> tuple[torch.Tensor, torch.Tensor]:
    """For two-code ``books`` ``[P, 2, d]``: normals ``w = c1 - c0`` ``[P, d]`` and thresholds ``[P]``;
    code 1 iff ``x . w > threshold`` (cosine compares directions: both codes normalized, threshold 0)."""
    if distance == "cosine":
        books = F.normalize(books, dim=-1)
        return books[:, 1] - books[:, 0], books.new_zeros(books.shape[0])
    norms = books.square().sum(-1)
    return books[:, 1] - books[:, 0], 0.5 * (norms[:, 1] - norms[:, 0])


def block_search(r: torch.Tensor, books: torch.Tensor, blocks: int, distance: Distance) -> torch.Tensor:
    """Each block's nearest code: ``r`` ``[N, blocks * d]`` -> ``[N, blocks]`` int64."""
    n, (p, k, d) = r.shape[0], books.shape
    chunks = r.reshape(n, blocks, d)
    if k == 2:
        w, threshold = binary_test(books, distance)
        scores = chunks @ w[0] if p == 1 else torch.einsum("nbd,bd->nb", chunks, w)
        return (scores > threshold).long()
    if p == 1:
        return nearest_code(chunks.reshape(-1, d), books[0], distance=distance).codes.reshape(n, blocks)
    found = [nearest_code(chunks[:, j], books[j], distance=distance).codes for j in range(p)]
    return torch.stack(found, dim=1)


def leading_binary_run(levels: Sequence[Level]) -> int:
    """How many leading levels have two codes per codebook and level 0's blocks and codebooks."""
    first_books, first_blocks = levels[0]
    run = 0
    for books, blocks in levels:
        if books.shape[1] != 2 or blocks != first_blocks or books.shape[0] != first_books.shape[0]:
            break
        run += 1
    return run


def binary_run_tables(
    levels: Sequence[Level], distance: Distance
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For a run of ``R`` two-code levels with ``P`` codebooks each:

    * ``normals`` ``[P, d, R]``: level ``k``'s half-space normal ``w_k = c_{k,1} - c_{k,0}``;
    * ``thresholds`` ``[R, P]``: level ``k``'s threshold plus ``sum_{i<k} c_{i,0} . w_k`` (what the earlier
      levels subtract from its score when they pick code 0);
    * ``steps`` ``[R, R, P]``: ``steps[i, k] = (c_{i,1} - c_{i,0}) . w_k`` for ``i < k`` (else 0), the extra
      amount when level ``i`` picks code 1.
    """
    tests = [binary_test(books, distance) for books, _ in levels]
    normals = torch.stack([w for w, _ in tests], dim=-1)  # [P, d, R]
    codes = torch.stack([books for books, _ in levels])  # [R(i), P, 2, d]
    run = len(levels)
    later = torch.ones(run, run, dtype=codes.dtype, device=codes.device).triu(1)  # [i, k]: 1 where i < k
    base = torch.einsum("ipd,pdk->ikp", codes[:, :, 0], normals) * later[..., None]  # [i, k, P]
    thresholds = torch.stack([t for _, t in tests]) + base.sum(0)  # [R(k), P]
    steps = torch.einsum("ipd,pdk->ikp", codes[:, :, 1] - codes[:, :, 0], normals) * later[..., None]
    return normals, thresholds, steps


def binary_run(
    x: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor, torch.Tensor], blocks: int
) -> list[torch.Tensor]:
    """The binary run on rows ``x`` ``[n, blocks * d]``: bits ``[n, blocks]`` (float 0/1) per level."""
    normals, thresholds, steps = tables
    d = normals.shape[1]
    chunks = x.reshape(x.shape[0], blocks, d)
    if normals.shape[0] == 1:  # shared codebooks: one matrix product for every block of every level
        scores = (chunks.reshape(-1, d) @ normals[0]).T.reshape(-1, x.shape[0], blocks)
    else:
        scores = torch.einsum("nbd,bdr->rnb", chunks, normals)
    bits: list[torch.Tensor] = []
    for k in range(scores.shape[0]):
        score = scores[k]
        for i, earlier in enumerate(bits):
            score = torch.addcmul(score, earlier, steps[i, k], value=-1.0)
        bits.append((score > thresholds[k]).to(score.dtype))
    return bits


@torch.no_grad()
def residual_block_search(
    z: torch.Tensor, levels: Sequence[Level], distance: Distance, *, fast: bool = True
) -> list[torch.Tensor]:
    """Every level's block codes ``[N, blocks]`` int64 for ``z`` ``[N, D]``: the nearest code of each block of
    each level's residual. ``fast=False`` is the plain level-by-level search (the reference); ``fast`` uses the
    binary run for the leading two-code levels and, on CPU, row chunks that stay in cache."""
    books_detached = [(books.detach(), blocks) for books, blocks in levels]
    run = leading_binary_run(books_detached) if fast else 0
    tables = binary_run_tables(books_detached[:run], distance) if run else None
    if torch.compiler.is_compiling():  # one traceable pass over all rows (the chunk loop fixes N in Python)
        return _search_rows(z, books_detached, tables, distance)
    rows = max(z.shape[0], 1)
    if fast and z.device.type == "cpu":
        rows = max(1, CPU_CHUNK_BYTES // (z.element_size() * z.shape[1]))
    pieces: list[list[torch.Tensor]] = [[] for _ in levels]
    for start in range(0, max(z.shape[0], 1), rows):
        found = _search_rows(z[start : start + rows], books_detached, tables, distance)
        for piece, codes in zip(pieces, found, strict=True):
            piece.append(codes)
    return [torch.cat(piece) for piece in pieces]


def _search_rows(
    chunk: torch.Tensor,
    levels: Sequence[Level],
    tables: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    distance: Distance,
) -> list[torch.Tensor]:
    """Every level's block codes for the rows ``chunk``: the binary run (``tables``) for the leading two-code
    levels, then level by level on the explicit residual."""
    found = [b.long() for b in binary_run(chunk, tables, levels[0][1])] if tables is not None else []
    residual = chunk
    if len(found) < len(levels):
        for (books, _), codes in zip(levels, found, strict=False):
            residual = residual - block_lookup(codes, books)
    for books, blocks in levels[len(found) :]:
        found.append(block_search(residual, books, blocks, distance))
        if len(found) < len(levels):
            residual = residual - block_lookup(found[-1], books)
    return found


def block_code_sums(vectors: torch.Tensor, codes: torch.Tensor, books: int, num_codes: int) -> torch.Tensor:
    """Per-code sums of the blocks of ``vectors`` ``[N, blocks * d]`` by their codes ``[N, blocks]``:
    ``[books, num_codes, d]``, block ``j`` counted in codebook ``j`` (``books = blocks``) or all in one
    (``books = 1``)."""
    n, blocks = codes.shape
    d = vectors.shape[1] // blocks
    if num_codes == 2:
        # Two codes (IVQ's binary lines): code 1's sum is one product with the codes as weights and code 0's is
        # the rest, one read of the rows with no one-hot matrix (which took 1.6x the time on CPU).
        weights, chunks = codes.to(vectors.dtype), vectors.reshape(n, blocks, d)
        if books == 1:
            ones = (weights.reshape(1, -1) @ chunks.reshape(n * blocks, d)).reshape(1, d)
            every = chunks.reshape(n * blocks, d).sum(0, keepdim=True)
        else:
            ones, every = torch.einsum("nb,nbd->bd", weights, chunks), chunks.sum(0)
        return torch.stack([every - ones, ones], dim=1)
    index = codes if books == 1 else codes + torch.arange(blocks, device=codes.device) * num_codes
    index, rows, bins = index.reshape(-1), vectors.reshape(n * blocks, d), books * num_codes
    if bins <= SUM_BY_PRODUCT:
        # A scatter-add into a few rows runs serially on CPU (1.3 ms for 65,536 blocks into 2 codes, against
        # 0.3 ms for this product; from 16 codes on the scatter-add is the faster).
        onehot = rows.new_zeros(bins, index.shape[0]).scatter_(0, index[None], 1.0)
        return (onehot @ rows).view(books, num_codes, d)
    return rows.new_zeros(bins, d).index_add_(0, index, rows).view(books, num_codes, d)


class _LossPair(torch.autograd.Function):
    """Autograd of ``vq_loss_pair``: the forward returns what the caller computed, the backward the closed forms."""

    @staticmethod
    def forward(
        ctx: Any,
        h: torch.Tensor,
        total: torch.Tensor,
        residual_sum: torch.Tensor | None,
        level_losses: torch.Tensor,
        *books_and_sums: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        levels = len(books_and_sums) // 2
        ctx.set_materialize_grads(
            False
        )  # an unused output (``quantized`` under the rotation trick) costs nothing
        ctx.levels, ctx.scale = levels, 2.0 / (max(h.numel(), 1) * levels)
        ctx.save_for_backward(residual_sum, *books_and_sums[levels:])
        value = level_losses.mean()
        outputs = (total, value, value.clone())
        # Each output requires a gradient only if its own target does, as the per-level form's would.
        needs = ctx.needs_input_grad
        targets = (needs[0], needs[0], any(needs[4 : 4 + levels]))
        frozen = [out for out, needed in zip(outputs, targets, strict=True) if not needed]
        if frozen:
            ctx.mark_non_differentiable(*frozen)
        return outputs

    @staticmethod
    def backward(
        ctx: Any,
        grad_total: torch.Tensor | None,
        grad_commitment: torch.Tensor | None,
        grad_codebook: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, ...]:
        residual_sum, *sums = ctx.saved_tensors
        levels, scale, needs = ctx.levels, ctx.scale, ctx.needs_input_grad
        grad_h = grad_total if needs[0] else None
        if grad_commitment is not None and residual_sum is not None and needs[0]:
            # d/dh of mean_i mean((r_i - sg q_i)^2): the levels' residuals r_{i+1} = r_i - q_i, summed, scaled.
            coef = grad_commitment * scale
            grad_h = residual_sum * coef if grad_h is None else torch.addcmul(grad_h, residual_sum, coef)
        grad_books: list[torch.Tensor | None] = [None] * levels
        if grad_codebook is not None:
            # d/dc of mean_i mean((sg r_i - q_i)^2): minus what the level left of its blocks, per code, scaled.
            coef = grad_codebook * -scale
            for i, code_sums in enumerate(sums):
                if code_sums is not None and needs[4 + i]:
                    grad_books[i] = code_sums * coef
        return (grad_h, None, None, None, *grad_books, *([None] * levels))


def vq_loss_pair(
    h: torch.Tensor,
    total: torch.Tensor,
    residual_sum: torch.Tensor | None,
    level_losses: torch.Tensor,
    books: Sequence[torch.Tensor],
    code_sums: Sequence[torch.Tensor | None],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training outputs of ``L`` residual levels of lookups into ``books``, from their forward statistics.

    Level ``i`` quantizes ``r_i`` (``r_0 = h``) to ``q_i`` (rows of ``books[i]``) and leaves ``r_{i+1} = r_i - q_i``.

    Args:
        h: ``[..., D]`` the input (the gradient's target).
        total: ``[..., D]`` ``sum_i q_i`` (no gradient): the quantized value.
        residual_sum: ``[..., D]`` ``sum_i r_{i+1}`` (``None`` when ``h`` needs no gradient).
        level_losses: ``[L]`` each level's ``mean((r_i - q_i)^2)``.
        books: each level's codebook tensor (any shape; the gradient's target).
        code_sums: per level, ``[books[i].shape]``: the sum of ``r_{i+1}``'s blocks over the blocks that each
            code quantized (``block_code_sums``; ``None`` when that codebook needs no gradient).

    Returns:
        ``(quantized, commitment, codebook)``: ``quantized`` has ``total``'s value and the straight-through
        gradient to ``h``; ``commitment`` and ``codebook`` both have the value ``mean(level_losses)``, the first
        with the gradient of ``mean_i mean((r_i - sg q_i)^2)`` to ``h`` only, the second with that of
        ``mean_i mean((sg r_i - q_i)^2)`` to ``books`` only: the VQ-VAE pair of every level, averaged.
    """
    out = _LossPair.apply(h, total, residual_sum, level_losses, *books, *code_sums)
    return cast(tuple[torch.Tensor, torch.Tensor, torch.Tensor], out)


class LevelStep(NamedTuple):
    """What one level of ``residual_walk`` returns for its input ``r_i``."""

    q: torch.Tensor
    """``[N, D]`` the level's looked-up codes."""
    blocks: torch.Tensor
    """``[N, P]`` its block codes (one column for a plain VQ level), for ``block_code_sums``."""
    num_books: int
    """``P`` of ``block_code_sums``: 1 for one codebook shared by the blocks, else one per block."""
    num_codes: int
    """Codes per codebook."""
    book_grad: bool
    """Whether the level's codebook takes a gradient (its per-code sums are needed)."""


class Walk(NamedTuple):
    """``vq_loss_pair``'s statistics from ``residual_walk``."""

    total: torch.Tensor
    residual_sum: torch.Tensor | None
    losses: torch.Tensor
    code_sums: list[torch.Tensor | None]


def residual_walk(
    h: torch.Tensor, levels: Sequence[Callable[[torch.Tensor], LevelStep]], *, grad: bool
) -> Walk:
    """One pass down a residual of ``h`` ``[N, D]``: each of ``levels`` is called on its input ``r_i`` (it
    searches, looks up and updates its own codebook there) and ``r_{i+1} = r_i - q_i`` follows, with
    ``vq_loss_pair``'s statistics: ``sum_i q_i``, ``sum_i r_{i+1}`` (``grad`` and ``h`` requires grad), each
    level's ``mean(r_{i+1}^2)`` and per-code sums of ``r_{i+1}``. The residual is one buffer updated in place
    where nobody else holds it (not ``r_0``, the caller's input, nor ``r_1``, which starts the residual sum);
    a level must not keep its input past its call. Residual VQ's and IVQ's one-pass forwards both walk here."""
    input_grad = grad and h.requires_grad
    residual, total, residual_sum = h.detach(), None, None
    losses, code_sums = [], []
    for i, level in enumerate(levels):
        step = level(residual)
        residual = residual - step.q if i == 0 or (i == 1 and input_grad) else residual.sub_(step.q)
        total = step.q if total is None else total.add_(step.q)
        flat = residual.reshape(-1)
        losses.append(torch.dot(flat, flat) / max(flat.numel(), 1))
        wanted = grad and step.book_grad
        code_sums.append(
            block_code_sums(residual, step.blocks, step.num_books, step.num_codes) if wanted else None
        )
        if input_grad:
            residual_sum = residual if residual_sum is None else residual_sum.add_(residual)
    assert total is not None, "residual_walk: expected at least one level"
    return Walk(total, residual_sum, torch.stack(losses), code_sums)


def level_outputs(
    h: torch.Tensor,
    total: torch.Tensor,
    residual_sum: torch.Tensor | None,
    level_losses: torch.Tensor,
    books: Sequence[torch.Tensor],
    code_sums: Sequence[torch.Tensor | None],
    *,
    rotation: bool = False,
    codebook_term: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(quantized, losses)`` of a one-pass residual or block forward from its statistics (``vq_loss_pair``'s
    arguments): with autograd, ``vq_loss_pair``; without, ``total`` and one value for both terms (as ``vq_losses``
    without autograd). ``rotation``: the rotation trick onto ``h`` instead of the straight-through estimator;
    ``codebook_term``: whether the losses hold ``codebook`` (gradient-trained codebooks)."""
    if torch.is_grad_enabled():
        quantized, commitment, codebook = vq_loss_pair(h, total, residual_sum, level_losses, books, code_sums)
    else:
        quantized, commitment = total, level_losses.mean()
        codebook = commitment
    if rotation:
        quantized = estimate(total, h, "rotation")
    losses = {"commitment": commitment}
    if codebook_term:
        losses["codebook"] = codebook
    return quantized, losses
