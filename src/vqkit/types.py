"""Shared types: the one result every quantizer returns, and the layout vocabulary.

Axis legend used across vqkit docstrings:
    B batch, N vectors (flattened positions), D vector dimension (``dim``), K codes in a codebook,
    C codes per vector (``codes_per_vector``), T time, H/W height/width.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch

Layout = Literal["channels_last", "channels_first"]
"""``channels_last``: ``(..., D)``. ``channels_first``: ``(B, D, *spatial)``, e.g. ``(B, D, T)``, ``(B, D, H, W)``."""

Distance = Literal["l2", "cosine"]
"""Nearest-code matching: squared Euclidean, or cosine similarity (both sides l2-normalized for the lookup)."""

LAYOUTS: tuple[str, ...] = ("channels_last", "channels_first")


@dataclass
class QuantizerOutput:
    """What ``Quantizer.forward`` returns, for every quantizer.

    Attributes:
        quantized: same shape and dtype as the input; the value equals ``decode(codes)`` and the gradient
            reaches the input by a straight-through (or the quantizer's own) estimator.
        codes: integer codes, ``[..., C]`` where ``...`` are the input's vector positions (for
            ``channels_first`` input ``(B, D, *S)`` that is ``(B, *S, C)``).
        losses: named, **unweighted** scalar terms (e.g. ``commitment``, ``codebook``, ``entropy``).
        metrics: detached 0-dim scalars for logging, about the whole quantizer: at least ``utilization`` and
            ``perplexity`` of this batch (the means over code positions), plus the quantizer's own diagnostics.
        position_metrics: detached 1-D tensors, one value per code position ``j < C`` (``utilization``,
            ``perplexity``), and per stage for composites (``stage/<name>``, one value per stage); empty when
            ``C = 1`` and there are no stages. Kept apart from ``metrics`` so consumers never parse names.
        loss_weights: the quantizer's configured weight for each loss name (e.g. ``beta`` for ``commitment``);
            ``loss`` uses them. Weights live in configuration, the terms stay unweighted.
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    loss_weights: dict[str, float] = field(default_factory=dict)
    position_metrics: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def loss(self) -> torch.Tensor:
        """The weighted sum of ``losses`` with ``loss_weights`` (weight 1 for an unnamed term)."""
        return self.weighted_loss(self.loss_weights)

    def weighted_loss(self, weights: Mapping[str, float]) -> torch.Tensor:
        """Sum of ``weights[name] * losses[name]``; names missing from ``weights`` get weight 1."""
        return weighted_sum(self.losses, weights, like=self.quantized)


def weighted_sum(
    losses: Mapping[str, torch.Tensor], weights: Mapping[str, float], *, like: torch.Tensor
) -> torch.Tensor:
    """``sum(weights[name] * losses[name])`` as a float32 scalar on ``like``'s device; a name without a weight
    gets weight 1. The one place unweighted named terms meet their configured weights."""
    total = like.new_zeros((), dtype=torch.float32)
    for name, value in losses.items():
        total = total + float(weights.get(name, 1.0)) * value
    return total
