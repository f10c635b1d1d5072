"""Measured coded rate of an evaluation's codes: what the range coder actually writes, not an estimate.

``HeldOutCodedRate`` collects the codes of a split batch by batch and, at the end, range-codes them under a
prior that did not see them: two-fold cross-fitting by item (a prior fitted on the even items codes the odd
ones and the other way round). The evaluation sees only its own split, and a prior fitted on the very codes it
codes would report their empirical entropy, a bound no coder reaches on new data; held-out priors report the
cross-entropy a deployed coder pays, smoothing included. The prior of one fold is fitted on half the split's
items, so on small splits the figure is slightly above what a prior from a large training set gives.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vqkit.coding.bitstream import range_encode
from vqkit.coding.prior import DEFAULT_FLOOR, CodePrior, code_rows, count_codes

MAX_CODES = 1 << 24
"""At most this many codes (vectors x positions) are kept; later items are left out of the measurement."""


class HeldOutCodedRate:
    """Accumulates codes ``[B, ..., C]`` (one batch of items per call) and measures their coded size.

    Args:
        alphabet_sizes: the quantizer's (or the evaluated prefix's) ``alphabet_sizes``.
        floor: the priors' pseudo-count (``CodePrior``).
    """

    def __init__(self, alphabet_sizes: Sequence[int], *, floor: float = DEFAULT_FLOOR) -> None:
        self.alphabet_sizes = tuple(int(k) for k in alphabet_sizes)
        self.floor = floor
        self.folds: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
        self.items = [0, 0]
        self.kept = 0

    def update(self, codes: torch.Tensor) -> None:
        if codes.ndim < 2:
            raise ValueError(f"codes: expected a batch of items [B, ..., C], got shape {tuple(codes.shape)}")
        if self.kept + codes.numel() > MAX_CODES:
            return
        self.kept += codes.numel()
        first = (self.items[0] + self.items[1]) % 2  # the fold of this batch's first item: folds alternate
        for fold in (0, 1):
            part = codes[(fold - first) % 2 :: 2]
            self.folds[fold].append(code_rows(part, self.alphabet_sizes))
            self.items[fold] += part.shape[0]

    def compute(self) -> dict[str, float]:
        """``coded_bits`` (per vector) and ``coded_bits_per_item``: the payload bits of both folds, each under
        the other's prior, over the vectors and items coded; empty when fewer than two items came."""
        if min(self.items) == 0:
            return {}
        width = len(self.alphabet_sizes)
        rows = [np.concatenate(f) if f else np.zeros((0, width), np.int64) for f in self.folds]
        priors = [
            CodePrior(count_codes(r, self.alphabet_sizes), self.alphabet_sizes, self.floor) for r in rows
        ]
        bits = 8 * (len(range_encode(rows[0], priors[1])) + len(range_encode(rows[1], priors[0])))
        vectors = rows[0].shape[0] + rows[1].shape[0]
        return {
            "coded_bits": bits / max(vectors, 1),
            "coded_bits_per_item": bits / (self.items[0] + self.items[1]),
        }
