"""Quantizer dropout for residual quantizers (SoundStream, arXiv 2107.03312, §3.3; DAC, arXiv 2306.06546).

In training, with probability ``p`` per item, an item uses only its first ``k`` levels, ``k`` uniform in
``[1, L]``; the other items use all ``L``. One model then serves every bitrate: ``encode(x, num_quantizers=k)``
keeps ``k`` levels and ``decode`` takes any prefix. A level an item dropped sees none of that item's vectors:
no loss, no codebook statistics (EMA, counts, restarts, k-means), and its codes are ``-1`` ("not coded") in
the training output, which usage metrics skip.

An item is what the input's first axis indexes (``B`` of ``[B, T, D]`` or ``[B, D, H, W]``); for flat ``[N, D]``
input every vector is an item. Levels are drawn from torch's global generator, so seeded runs and resumed runs
(the harness checkpoints the generator) repeat them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vqkit.types import QuantizerOutput

NOT_CODED = -1
"""The code of a level a vector did not use (quantizer dropout); ``decode`` refuses it."""


def draw_levels(items: torch.Tensor, num_items: int, num_levels: int, p: float) -> torch.Tensor:
    """``[N]`` how many levels each vector uses: per item (``items`` ``[N]``, of ``num_items``),
    ``k ~ U{1..L}`` with probability ``p``, else ``L``."""
    device = items.device
    dropped = torch.rand(num_items, device=device) < p
    k = torch.where(dropped, torch.randint(1, num_levels + 1, (num_items,), device=device), num_levels)
    return k[items]


def on_rows(
    run: Callable[[torch.Tensor, torch.Tensor | None], QuantizerOutput],
    x: torch.Tensor,
    codes: torch.Tensor | None,
    rows: torch.Tensor,
) -> QuantizerOutput:
    """``run(x[rows], codes[rows])`` spread back to all ``N`` rows: zeros in ``quantized`` and ``NOT_CODED`` codes
    elsewhere. The stage runs even on no rows (its collectives must run on every rank); its losses are then
    dropped, as a mean over no vectors is undefined."""
    out = run(x.index_select(0, rows), None if codes is None else codes.index_select(0, rows))
    quantized = x.new_zeros((x.shape[0], out.quantized.shape[1])).index_copy(0, rows, out.quantized)
    full = torch.full((x.shape[0], out.codes.shape[1]), NOT_CODED, dtype=out.codes.dtype, device=x.device)
    return QuantizerOutput(
        quantized=quantized,
        codes=full.index_copy(0, rows, out.codes),
        losses=out.losses if rows.numel() else {},
        metrics=out.metrics,
    )
