"""A linear map whose CPU backward takes the fast layout for a narrow input (an out projection).

A quantizer's projections are narrow: FSQ, LFQ and BSQ map ``D`` channels to the 4-18 they round, factorized VQ
to 8, and back. On CPU, torch 2.13's BLAS runs ``a @ b`` with a row-major right operand ``b`` of fewer than 16
columns several times slower than the same product written ``(b^T a^T)^T``. The out projection's backward has
two such products; for ``N = 16384`` vectors, ``D = 64``, 4 channels, one thread
(``benchmarks/bench_projections.py``):

* the input gradient ``[N, 64] @ [64, 4]``: 0.61 ms as autograd writes it, 0.24 ms transposed;
* the weight gradient ``[64, N] @ [N, 4]``: 0.85 ms, transposed 0.14 ms (6x; 8x at ``D = 256``).

The forward (``x W^T``, whose right operand is a transposed view) is already fast, and so is the in projection's
backward. ``mm`` applies the rule; ``linear`` is ``F.linear`` with ``mm`` in its backward (the same values up to
the last bit: only the operands' roles in the BLAS call change). Off CPU, under ``torch.compile``, in ONNX
export and under autocast it is ``F.linear`` itself (cuBLAS and inductor choose layouts on their own).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NARROW = 16
"""A row-major right operand with fewer columns than this takes the transposed product (measured: at 16 the two
layouts cost about the same)."""


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for 2-D ``a [M, K]``, ``b [K, P]``: ``(b^T a^T)^T`` (returned contiguous) when ``b`` is row-major
    and narrow (``P < NARROW``)."""
    if b.shape[1] < NARROW and b.stride(1) == 1 and b.shape[0] > 1:
        return (b.t() @ a.t()).t().contiguous()
    return a @ b


class _Linear(torch.autograd.Function):
    """``x W^T + b`` for ``x [N, in]`` with ``mm`` in both backward products."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None  # type: ignore[attr-defined]
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors  # type: ignore[attr-defined]
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        grad_x = mm(grad, weight) if needs[0] else None
        grad_w = mm(grad.t(), x) if needs[1] else None
        grad_b = grad.sum(0) if ctx.has_bias and needs[2] else None  # type: ignore[attr-defined]
        return grad_x, grad_w, grad_b


def _plain(x: torch.Tensor) -> bool:
    return (
        x.device.type != "cpu"
        or torch.compiler.is_compiling()
        or torch.onnx.is_in_onnx_export()
        or torch.is_autocast_enabled("cpu")
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for ``x [..., in]``, ``weight [out, in]`` (module docstring)."""
    narrow = weight.shape[1] < NARROW
    grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if not (narrow and grad) or _plain(x) or x.dtype != weight.dtype:
        return F.linear(x, weight, bias)
    y = _Linear.apply(x.reshape(-1, x.shape[-1]), weight, bias)
    return y.view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (the same parameters and state dict) computed by ``linear``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
