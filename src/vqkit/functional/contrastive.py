"""The CLIP-style contrastive term IVQ's structure losses are built from (Radford et al., arXiv 2103.00020)."""

from __future__ import annotations

from typing import Any, Literal, cast

import torch

Similarity = Literal["cosine", "dot"]
SIMILARITIES = ("cosine", "dot")

NORM_EPS = 1e-12
"""``F.normalize``'s floor on a row's norm (a zero row stays zero)."""


def symmetric_contrastive(
    a: torch.Tensor, b: torch.Tensor, *, similarity: Similarity = "cosine", temperature: float = 1.0
) -> torch.Tensor:
    """Symmetric cross-entropy with row ``i`` of ``a`` matched to row ``i`` of ``b``: ``[M, D], [M, D] -> []``,
    or ``P`` such pairs at once, ``[P, M, D], [P, M, D] -> [P]`` (one batched pass: IVQ's structure terms are
    up to a dozen pairs of small tables, where one pass per pair is mostly per-call overhead).

    Logits are ``sim(a_i, b_j) / temperature`` with ``sim`` the cosine similarity (bounded: the loss lies in
    ``[0, 2 / temperature + log M]``) or the raw dot product (unbounded); the result is the mean of the
    row-wise and column-wise cross-entropies against the diagonal.

    The gradient is written out (``_Contrastive``): ``softmax_rows + softmax_cols - 2 I`` on the logits, then
    through the two products and the normalization; the same values and gradients as ``F.normalize``, a matmul
    and two ``F.cross_entropy`` under autograd (the tests compare them), in one autograd node instead of about
    thirty: the tables are small, so the per-operation overhead was most of the term's cost.
    """
    if a.shape != b.shape or a.dim() not in (2, 3):
        raise ValueError(
            "a, b: expected two [M, D] (or [P, M, D]) tensors of one shape, "
            f"got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    if a.dim() == 2:
        return symmetric_contrastive(a[None], b[None], similarity=similarity, temperature=temperature)[0]
    out = _Contrastive.apply(a, b, similarity == "cosine", 1.0 / temperature)
    return cast(torch.Tensor, out)


def _normalized(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x / max(|x|, eps), max(|x|, eps))`` row by row (``F.normalize``)."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(NORM_EPS)
    return x / norm, norm


def _normalize_backward(grad: torch.Tensor, unit: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """The gradient through ``_normalized`` to its input: the part of ``grad`` orthogonal to the row, over the
    norm (a row at the floor is scaled by ``1 / eps`` alone, as ``F.normalize``'s clamp gives)."""
    radial = (unit * grad).sum(-1, keepdim=True) * (norm > NORM_EPS)
    return (grad - unit * radial) / norm


SHIFT_RANGE = 80.0
"""Cosine logits lie in ``[-scale, scale]``: below ``2 scale`` of this, ``exp(logits - scale)`` cannot underflow a
whole row in float32 (its floor is about ``exp(-87)``), so the normalizers come from one shifted ``exp``."""


class _Contrastive(torch.autograd.Function):
    """``symmetric_contrastive`` on ``[P, M, D]`` pairs with its closed-form backward."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor, cosine: bool, scale: float) -> torch.Tensor:
        norms: tuple[torch.Tensor, ...] = ()
        if cosine:
            (a, norm_a), (b, norm_b) = _normalized(a), _normalized(b)
            norms = (norm_a, norm_b)
        logits = torch.matmul(a, b.transpose(-1, -2)).mul_(scale)  # [P, M(a), M(b)]
        diagonal = logits.diagonal(dim1=-2, dim2=-1).mean(-1)
        ctx.shifted = cosine and 2 * abs(scale) < SHIFT_RANGE
        if ctx.shifted:  # bounded logits: one exp serves both softmaxes, forward and backward
            exp = logits.sub_(abs(scale)).exp_()
            rows, cols = exp.sum(-1), exp.sum(-2)
            value = 0.5 * (rows.log().mean(-1) + cols.log().mean(-1)) + abs(scale) - diagonal
            saved = (exp, rows.reciprocal_(), cols.reciprocal_())
        else:
            rows, cols = logits.logsumexp(-1), logits.logsumexp(-2)  # [P, M] each
            value = 0.5 * (rows.mean(-1) + cols.mean(-1)) - diagonal
            saved = (logits, rows, cols)
        ctx.cosine, ctx.scale = cosine, scale
        ctx.save_for_backward(a, b, *saved, *norms)
        return value

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        a, b, *saved = ctx.saved_tensors
        first, rows, cols = saved[:3]
        m = first.shape[-1]
        # d value / d logits = (softmax over each row + softmax over each column) / 2M - I / M.
        if ctx.shifted:  # first = exp(logits - scale), rows and cols: 1 / its sums
            softmaxes = first * (rows[..., None] + cols[:, None, :])
        else:  # first = logits, rows and cols: their log-normalizers
            softmaxes = (first - rows[..., None]).exp_().add_((first - cols[:, None, :]).exp_())
        d_logits = softmaxes.mul_((grad * (0.5 / m))[:, None, None])
        d_logits.diagonal(dim1=-2, dim2=-1).sub_((grad / m)[:, None])
        d_logits = d_logits.mul_(ctx.scale)
        needs = ctx.needs_input_grad
        grad_a = torch.matmul(d_logits, b) if needs[0] else None
        grad_b = torch.matmul(d_logits.transpose(-1, -2), a) if needs[1] else None
        if ctx.cosine:
            norms = saved[3:]
            grad_a = None if grad_a is None else _normalize_backward(grad_a, a, norms[0])
            grad_b = None if grad_b is None else _normalize_backward(grad_b, b, norms[1])
        return grad_a, grad_b, None, None
