"""The VQ-VAE loss pair (van den Oord et al., arXiv 1711.00937) from one difference.

``commitment = mean |z - sg(q)|^2`` moves the encoder, ``codebook = mean |sg(z) - q|^2`` moves a gradient-trained
codebook: one value, two gradient paths. Two ``mse_loss`` calls take two passes over ``[N, d]`` forward and
four backward (each subtracts again and scales); ``loss_pair`` keeps the one difference ``z - q`` and scales it
for both gradients: one pass forward (the difference and its square sum) and one per gradient backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _LossPair(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, z: torch.Tensor, q: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        diff = z - q
        value = diff.square().mean()
        ctx.save_for_backward(diff)
        return value, value.clone()

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, g_commitment: torch.Tensor, g_codebook: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        (diff,) = ctx.saved_tensors  # type: ignore[attr-defined]
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        scale = 2.0 / max(diff.numel(), 1)
        grad_z = diff * (g_commitment * scale) if needs[0] else None
        grad_q = diff * (g_codebook * -scale) if needs[1] else None
        return grad_z, grad_q


def loss_pair(z: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(commitment, codebook)`` of inputs ``z`` and their codes ``q`` (``[N, d]`` each, same dtype): the values
    and gradients of ``(F.mse_loss(z, q.detach()), F.mse_loss(q, z.detach()))``. Compiled or exported code takes
    those two calls (inductor fuses them; exporters need no Python function)."""
    if torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export() or z.shape != q.shape:
        return F.mse_loss(z, q.detach()), F.mse_loss(q, z.detach())
    commitment, codebook = _LossPair.apply(z, q)
    return commitment, codebook
