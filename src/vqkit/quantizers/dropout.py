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

import math
from collections.abc import Callable

import torch

from vqkit.types import QuantizerOutput

NOT_CODED = -1
"""The code of a level a vector did not use (quantizer dropout); ``decode`` refuses it."""


def draw_levels(
    lead: torch.Size, rows: torch.Tensor | None, num_levels: int, p: float, device: torch.device
) -> torch.Tensor:
    """``[N]`` how many levels each vector uses: per item, ``k ~ U{1..L}`` with probability ``p``, else ``L``.

    ``lead`` is the shape of the input's positions; ``rows`` the positions the vectors are (a masked batch's
    real ones), or ``None`` for all of them."""
    num_vectors = math.prod(lead)
    num_items = int(lead[0]) if len(lead) > 1 else num_vectors
    dropped = torch.rand(num_items, device=device) < p
    k = torch.where(dropped, torch.randint(1, num_levels + 1, (num_items,), device=device), num_levels)
    per_item = torch.arange(num_items, device=device).repeat_interleave(num_vectors // max(num_items, 1))
    levels = k[per_item]
    return levels if rows is None else levels.index_select(0, rows)


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
