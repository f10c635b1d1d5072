"""Effective and coded bits of a quantizer whose codes are shared by the cells of a grid (``shared_codes``:
``multiscale_vq``), counted once per cell.

Such a quantizer stores the code of each scale's cell at every position of the cell, so per-position counts
(``CodebookUsage``'s effective bits, a per-position range coder) count a coarse cell's one symbol at each of
its positions and overstate the information: on a 7x7 map the per-position codes of the demo's multi-scale VQ
came to 401 coded bits per item against 366 real ones. Here every scale's compact token map
(``scale_codes``) is counted, and coded, once per cell: effective bits per vector = ``sum_k H_k * cells_k /
positions`` (``H_k``: the entropy of scale ``k``'s tokens), and the coded size is the sum of the scales' coded
token maps, each under a prior fitted on the other half of the items (``HeldOutCodedRate``'s cross-fitting).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from vqkit.functional.stats import entropy_bits


class CellRates:
    """Accumulates per-position codes ``[B, *S, c]`` of a ``shared_codes`` quantizer batch by batch.

    Args:
        quantizer: the quantizer (its ``scale_codes`` gives each scale's token map, its ``alphabet_sizes`` the
            alphabets).
        scales: how many scales the codes hold (a prefix when evaluating fewer levels).
        coded_rate: builds the coded-size accumulator of one token stream from its alphabet sizes (``None``
            when entropy coding is unavailable or not wanted).
    """

    def __init__(self, quantizer: Any, scales: int, coded_rate: Callable[[tuple[int, ...]], Any]) -> None:
        self.quantizer = quantizer
        self.sizes = tuple(int(k) for k in quantizer.alphabet_sizes[:scales])
        self.counts = [torch.zeros(k, dtype=torch.float64) for k in self.sizes]
        self.coded = [coded_rate((k,)) for k in self.sizes]
        self.positions = 0
        self.items = 0

    def update(self, codes: torch.Tensor) -> None:
        tokens = self.quantizer.scale_codes(codes)
        for k, token_map in enumerate(tokens):
            flat = token_map.reshape(token_map.shape[0], -1, 1)  # [B, cells, 1]: one symbol per cell
            self.counts[k] += torch.bincount(flat.flatten().cpu(), minlength=self.sizes[k]).double()
            if self.coded[k] is not None:
                self.coded[k].update(flat)
        self.positions += math.prod(codes.shape[:-1])
        self.items += codes.shape[0]

    def compute(self) -> dict[str, float]:
        """``codebook/effective_bits`` (per vector), and ``codebook/coded_bits`` (per vector) with
        ``coded_bits_per_item`` when every scale was coded."""
        if self.positions == 0:
            return {}
        entropy = sum(float(entropy_bits(c)) * float(c.sum()) for c in self.counts)
        out = {"codebook/effective_bits": entropy / self.positions}
        coded = [c.compute() if c is not None else {} for c in self.coded]
        if coded and all(coded):
            per_item = sum(part["coded_bits_per_item"] for part in coded)
            out["coded_bits_per_item"] = per_item
            out["codebook/coded_bits"] = per_item * self.items / self.positions
        return out
