"""Padding masks: ``q(x, mask=m)`` quantizes only the real positions (``m`` True) of a padded batch.

The real vectors go through the training forward alone, so every statistic sees them only: losses, EMA sums and
counts, k-means init on the first batch, dead-code restarts, CVQ anchors, usage metrics. A padded batch
therefore gives what its real vectors give processed on their own (the tests check it bit for bit). Padded
positions still get codes: the nearest codes of whatever values they hold (``encode``'s, no side effects), and
``quantized`` there is their decoded value with no gradient. Selecting the real rows costs one device sync.

Quantizers that read neighbouring positions (LooC with ``scale > 1``) interpolate over the padded grid before
the selection: their real vectors' neighbours may be padding.
"""

from __future__ import annotations

from typing import Protocol

import torch

from vqkit.types import QuantizerOutput


class Quantizer(Protocol):
    """What the masked forward calls of ``vqkit.quantizers.base.Quantizer`` (typed here: that module imports
    this one)."""

    def _quantize_items(
        self, z: torch.Tensor, lead: torch.Size, rows: torch.Tensor | None = None
    ) -> QuantizerOutput: ...

    def _encode(self, z: torch.Tensor) -> torch.Tensor: ...

    def _decode(self, codes: torch.Tensor) -> torch.Tensor: ...


def real_rows(mask: torch.Tensor, lead: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """``(real, padded)`` row indices of the flat vectors, from ``mask`` of the positions' shape ``lead``."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"mask: expected a bool tensor (True = real position), got {got}")
    if tuple(mask.shape) != tuple(lead):
        raise ValueError(
            f"mask: expected the shape of x's positions {tuple(lead)} (x without its channel axis), "
            f"got {tuple(mask.shape)}"
        )
    flat = mask.reshape(-1)
    return flat.nonzero().squeeze(1), flat.logical_not().nonzero().squeeze(1)


def masked_forward(
    quantizer: Quantizer,
    v: torch.Tensor,
    lead: torch.Size,
    real: torch.Tensor,
    padded: torch.Tensor,
) -> QuantizerOutput:
    """The training forward of the real rows of ``v`` ``[N, ...]``, spread back over all ``N`` rows."""
    out = quantizer._quantize_items(v.index_select(0, real), lead, real)
    with torch.no_grad():
        pad_codes = quantizer._encode(v.index_select(0, padded))
        pad_values = quantizer._decode(pad_codes).to(out.quantized.dtype)
    n = v.shape[0]
    quantized = out.quantized.new_zeros((n, out.quantized.shape[1]))
    quantized = quantized.index_copy(0, real, out.quantized).index_copy(0, padded, pad_values)
    codes = out.codes.new_zeros((n, out.codes.shape[1]))
    codes = codes.index_copy(0, real, out.codes).index_copy(0, padded, pad_codes.to(codes.dtype))
    # No real vector on this rank: its terms are means over nothing; zeros keep the sum of ranks' losses defined.
    losses = (
        out.losses
        if real.numel()
        else {name: value.nan_to_num(0.0) * 0.0 for name, value in out.losses.items()}
    )
    return QuantizerOutput(
        quantized=quantized,
        codes=codes,
        losses=losses,
        metrics=out.metrics,
        position_metrics=out.position_metrics,
    )
