"""Gradient estimators through the quantization step: the value is the code, exactly; only the gradient differs.

* ``"ste"``: the straight-through estimator (Bengio et al. 2013; VQ-VAE): the gradient reaches the input
  unchanged.
* ``"rotation"``: the rotation trick (Fifty et al., "Restructuring Vector Quantization with the Rotation
  Trick", arXiv 2410.06424). The code ``q`` is written as a rotation and rescaling of the input ``e``,
  ``q = lambda R e`` with ``lambda = |q| / |e|`` and ``R`` the rotation taking ``e``'s direction onto ``q``'s,
  ``R = I - 2 r r^T + 2 q_hat e_hat^T`` with ``r = (e_hat + q_hat) / |e_hat + q_hat|`` (the paper's Eq. 4), and
  ``lambda`` and ``R`` are treated as constants. The gradient reaching ``e`` is then ``lambda R^T g``: it keeps
  the angle between the gradient and the code, so inputs in one Voronoi cell get different updates.

Both return ``hard.detach() + (s - s.detach())`` for their surrogate ``s``, whose value is exactly ``hard``
(``s - s`` is exactly 0 for finite ``s``), so ``decode(encode(x)) == forward(x).quantized`` holds bit for bit
whatever the estimator. Deviation from the paper: where the input or the code has (near) zero norm the rotation
is undefined, and the estimator falls back to the straight-through gradient for those rows.
"""

from __future__ import annotations

from typing import Literal

import torch

Gradient = Literal["ste", "rotation"]
GRADIENTS: tuple[str, ...] = ("ste", "rotation")

_TINY = 1e-12
"""Norms at or below this (squared norms below its square) count as zero: the rotation falls back to the STE."""


class _StraightThrough(torch.autograd.Function):
    """A copy of ``hard`` whose gradient goes to ``surrogate`` unchanged: one pass over ``[N, D]`` forward (the
    copy) and none backward, where ``hard.detach() + (s - s.detach())`` takes two passes and two more in
    backward. The value is ``hard`` itself, bit for bit."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, hard: torch.Tensor, surrogate: torch.Tensor, fresh: bool
    ) -> torch.Tensor:
        return hard.detach() if fresh else hard.detach().clone()

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[None, torch.Tensor, None]:
        return None, grad, None


def straight_through(hard: torch.Tensor, surrogate: torch.Tensor, *, fresh: bool = False) -> torch.Tensor:
    """Value of ``hard``, gradient of ``surrogate``: ``hard.detach() + (surrogate - surrogate.detach())``.

    Unlike ``surrogate + (hard - surrogate).detach()`` the value is *exactly* ``hard`` (``s - s`` is exactly 0
    for finite ``s``), which is what makes ``decode(encode(x)) == forward(x).quantized`` hold bit for bit.
    In eager autograd it is ``_StraightThrough`` (the same value and gradient in fewer passes); compiled or
    exported code keeps the formula (inductor fuses it; exporters need no Python function).

    ``fresh``: ``hard`` is a new tensor the caller keeps nowhere else (a lookup's output), so the result may
    share its storage instead of copying it (one ``[N, D]`` copy less; an in-place edit of the result then
    also edits ``hard``).
    """
    if torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export() or hard.shape != surrogate.shape:
        return hard.detach() + (surrogate - surrogate.detach())
    if not (torch.is_grad_enabled() and surrogate.requires_grad):
        return hard.detach()  # no gradient to route: the value alone (two passes over [N, D] saved)
    return _StraightThrough.apply(hard, surrogate, fresh)


def rotated(e: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``lambda R e`` with ``lambda`` and ``R`` from detached ``e`` and ``q`` (``[..., d]`` each): equal to ``q``
    up to rounding, with the rotation trick's gradient ``lambda R^T g`` with respect to ``e``. Rows where ``e``
    or ``q`` is (near) zero return ``e`` (the straight-through gradient)."""
    e_sg, q_sg = e.detach(), q.detach()
    e_norm = e_sg.norm(dim=-1, keepdim=True)
    q_norm = q_sg.norm(dim=-1, keepdim=True)
    defined = (e_norm > _TINY) & (q_norm > _TINY)
    e_hat = e_sg / e_norm.clamp(min=_TINY)
    q_hat = q_sg / q_norm.clamp(min=_TINY)
    r = e_hat + q_hat
    r = r / r.norm(dim=-1, keepdim=True).clamp(min=_TINY)  # e_hat = -q_hat: r = 0 and R e = -e (a half turn)
    # R e without forming R: e - 2 (r . e) r + 2 (e_hat . e) q_hat, with r, e_hat, q_hat constants.
    turned = e - 2.0 * (e * r).sum(-1, keepdim=True) * r + 2.0 * (e * e_hat).sum(-1, keepdim=True) * q_hat
    scale = q_norm / e_norm.clamp(min=_TINY)
    return torch.where(defined, scale * turned, e)


def estimate(hard: torch.Tensor, e: torch.Tensor, gradient: Gradient) -> torch.Tensor:
    """The quantized value ``hard`` with the gradient ``gradient`` gives w.r.t. the input ``e`` (same shape)."""
    if gradient == "rotation":
        return straight_through(hard, rotated(e, hard))
    return straight_through(hard, e)
