"""Numerics helpers of the quantizer contract: autocast off for codebook math, a one-pass finiteness check."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def all_finite(x: torch.Tensor) -> bool:
    """One reduction pass: ``aminmax`` propagates NaN and an infinity is an extreme (16x faster on CPU than
    ``isfinite(x).all()``, which materializes a mask; still one device sync)."""
    # The two extremes read as Python floats: ``isfinite`` and ``all`` on a two-entry tensor were four more
    # kernel calls, a tenth of an 8-bit LFQ eval forward at D = 64.
    return all(math.isfinite(v) for v in torch.stack(torch.aminmax(x)).tolist())


@contextmanager
def fp32_compute(device: torch.device) -> Iterator[None]:
    """Disable autocast for the enclosed code (distances and codebook updates must run in float32); nothing to
    do, and nothing built, when autocast is off (an ``autocast`` object per call was 2-3% of a small forward)."""
    try:
        enabled = torch.is_autocast_enabled(device.type)
    except RuntimeError:  # a device type without autocast support
        enabled = False
    if not enabled:
        yield
        return
    with torch.autocast(device_type=device.type, enabled=False):
        yield


LOGIT_FLOOR = -40.0
"""``floored_logits`` keeps every logit within this of its row's largest."""


def floored_logits(logits: torch.Tensor, floor: float = LOGIT_FLOOR) -> torch.Tensor:
    """``logits`` ``[..., K]`` shifted by each row's largest (detached: a softmax does not change) and raised to
    at least ``floor``, for a softmax over many codes at a small temperature.

    Why: most codes then sit thousands below the largest; ``exp`` of such values (in the softmax and inside its
    backward) takes torch's slow path on CPU, and the products with their subnormal probabilities slow every
    matmul of the backward that reads them (Intel Xeon, 16,384 x 256 codes: VQ's usage-entropy step took 5x as
    long without the floor). A probability under ``e^floor`` (``e^-40`` is ``4e-18``) changes no sum beyond
    float rounding; those entries get no gradient, where theirs was that small."""
    return (logits - logits.amax(-1, keepdim=True).detach()).clamp(min=floor)
