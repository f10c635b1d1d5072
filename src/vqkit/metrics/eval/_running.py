"""Running means over items, shared by the image and audio metrics."""

from __future__ import annotations

import math

import torch


class RunningMeans:
    """Sums and counts of per-item values by name; ``mean`` is the mean over every item added so far.

    NaN values mean "not computable for this item" (a clip too short for STOI, an image too small for MS-SSIM):
    they are left out of both the sum and the count, and ``count`` says how many items a mean covers.
    """

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def reset(self) -> None:
        self.sums.clear()
        self.counts.clear()

    def add(self, name: str, values: torch.Tensor) -> None:
        v = values.detach().reshape(-1).double().cpu()
        v = v[~v.isnan()]
        self.sums[name] = self.sums.get(name, 0.0) + float(v.sum())
        self.counts[name] = self.counts.get(name, 0) + int(v.numel())

    def count(self, name: str) -> int:
        return self.counts.get(name, 0)

    def mean(self, name: str) -> float:
        n = self.counts.get(name, 0)
        return self.sums[name] / n if n else math.nan
