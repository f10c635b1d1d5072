"""Finite scalar quantization math (Mentzer et al., "Finite Scalar Quantization: VQ-VAE Made Simple",
arXiv 2309.15505).

Each channel ``i`` is bounded to ``levels[i]`` integer values and rounded; the codes of a vector are its digits,
packed into one index in a mixed-radix system (the first channel is the least significant digit).
The bound follows the paper's reference: ``tanh(z + shift) * half_l - offset`` with ``shift = atanh(offset /
half_l)`` so that 0 maps to 0 for odd and even level counts (the notebook writes ``tan``; ``atanh`` is the
correct inverse and is what we pin with tests).
"""

from __future__ import annotations

import torch


def _levels(levels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return levels.to(device=like.device, dtype=like.dtype)


def bound(z: torch.Tensor, levels: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Squash ``z`` ``[..., d]`` so that rounding yields ``levels[i]`` integer values per channel."""
    lv = _levels(levels, z)
    half_l = (lv - 1) * (1 + eps) / 2
    offset = torch.where(torch.remainder(lv, 2) == 0, 0.5, 0.0).to(z.dtype)
    shift = torch.atanh(offset / half_l)
    return torch.tanh(z + shift) * half_l - offset


def half_width(levels: torch.Tensor) -> torch.Tensor:
    """``levels // 2``: the integer range is ``[-half_width, levels - 1 - half_width]``."""
    return torch.div(levels, 2, rounding_mode="floor")


def values_to_digits(rounded: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Rounded bounded values ``[..., d]`` -> digits in ``[0, levels)`` (int64)."""
    return (rounded + half_width(levels).to(rounded)).round().long()


def digits_to_values(
    digits: torch.Tensor, levels: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Digits ``[..., d]`` -> normalized values in ``[-1, 1]`` (of ``dtype``)."""
    hw = half_width(levels).to(device=digits.device, dtype=dtype)
    return (digits.to(dtype) - hw) / hw


def basis(levels: torch.Tensor) -> torch.Tensor:
    """Mixed-radix place values: ``[1, L0, L0*L1, ...]`` (int64)."""
    lv = levels.long()
    return torch.cumprod(torch.cat([lv.new_ones(1), lv[:-1]]), dim=0)


def digits_to_index(
    digits: torch.Tensor, levels: torch.Tensor, place: torch.Tensor | None = None
) -> torch.Tensor:
    """Digits ``[..., d]`` -> one index ``[...]`` in ``[0, prod(levels))``; ``place``: a cached ``basis(levels)``
    (a quantizer keeps it as a buffer: exported graphs have no integer ``cumprod``)."""
    place = basis(levels) if place is None else place
    return (digits.long() * place.to(digits.device)).sum(-1)


def index_to_digits(
    index: torch.Tensor, levels: torch.Tensor, place: torch.Tensor | None = None
) -> torch.Tensor:
    """Index ``[...]`` -> digits ``[..., d]``; inverse of ``digits_to_index``."""
    lv = levels.long().to(index.device)
    place = basis(levels) if place is None else place
    return torch.remainder(torch.div(index[..., None], place.to(index.device), rounding_mode="floor"), lv)
