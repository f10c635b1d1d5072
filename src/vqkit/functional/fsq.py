"""Finite scalar quantization math (Mentzer et al., "Finite Scalar Quantization: VQ-VAE Made Simple",
arXiv 2309.15505).

Each channel ``i`` is bounded to ``levels[i]`` integer values and rounded; the codes of a vector are its digits,
packed into one index in a mixed-radix system (the first channel is the least significant digit).
The bound follows the paper's reference: ``tanh(z + shift) * half_l - offset`` with ``shift = atanh(offset /
half_l)`` so that 0 maps to 0 for odd and even level counts (the notebook writes ``tan``; ``atanh`` is the
correct inverse and is what we pin with tests). It is computed as ``sigmoid(2 (z + shift)) * 2 half_l - (half_l +
offset)``, the same function (``tanh u = 2 sigmoid(2u) - 1``; values agree to float rounding): torch's float32
CPU ``tanh`` took 134 us on 65,536 values where ``sigmoid`` took 14 us (one thread, AVX-512).

The hot path keeps its per-channel ``Constants`` on the quantizer, takes the digits as floats of the input's dtype
(``bounded_digits``: exact integers, in one buffer, on a 64-wide view of the channels) and packs them with one
matrix-vector product (``float_index``), exact while ``prod(levels)`` fits the mantissa.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from vqkit.utils.constants import cached_constant

EXACT_FLOAT_INDEX = 1 << 24
"""Alphabets up to this size pack float digits exactly in float32 (float64: up to ``2^53``)."""

WIDE = 64
"""Row width the hot path's per-channel constants are tiled to (``Constants``)."""


class Constants(NamedTuple):
    """The hot path's per-channel constants in one dtype and device, tiled ``reps`` times (``[reps d]``):
    ``bound``'s sigmoid form ``sigmoid(2 z + shift2) * scale - drop`` (module docstring) and ``half_width``; the
    place values ``[d]``.

    The elementwise steps run on ``[N, d]`` seen as ``[N / reps, reps d]`` rows (``wide``): CPU kernels
    vectorize along a row, and a row of 4 or 8 channels cost 7x the time per element of a 64-wide one (a
    [16384, 4] add of a [4] vector took 28 us, the same add on its [1024, 64] view 4 us)."""

    shift2: torch.Tensor
    scale: torch.Tensor
    drop: torch.Tensor
    half: torch.Tensor
    place: torch.Tensor
    reps: int


def _levels(levels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return levels.to(device=like.device, dtype=like.dtype)


def bound_constants(
    levels: torch.Tensor, like: torch.Tensor, eps: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(shift, half_l, offset)`` ``[d]`` of ``bound`` in ``like``'s dtype and device."""
    lv = _levels(levels, like)
    half_l = (lv - 1) * (1 + eps) / 2
    offset = torch.where(torch.remainder(lv, 2) == 0, 0.5, 0.0).to(like.dtype)
    return torch.atanh(offset / half_l), half_l, offset


def constants(
    levels: torch.Tensor, like: torch.Tensor, reps: int = 1, place: torch.Tensor | None = None
) -> Constants:
    """``Constants`` of ``levels`` in ``like``'s dtype and device, for rows of ``reps`` vectors; ``place``: a cached
    ``basis(levels)``."""
    shift2, scale, drop = _sigmoid_form(*bound_constants(levels, like))
    half = half_width(levels).to(like)
    place = (basis(levels) if place is None else place).to(like)
    return Constants(
        shift2.repeat(reps), scale.repeat(reps), drop.repeat(reps), half.repeat(reps), place, reps
    )


def _sigmoid_form(
    shift: torch.Tensor, half_l: torch.Tensor, offset: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``tanh(z + shift) half_l - offset = sigmoid(2 z + shift2) scale - drop``: ``(shift2, scale, drop)``."""
    return 2 * shift, 2 * half_l, half_l + offset


def wide(h: torch.Tensor, reps: int) -> torch.Tensor:
    """``[..., d] -> [M / reps, reps d]`` for ``M`` vectors (``reps`` divides ``M``; a view of a contiguous ``h``)."""
    return h.reshape(-1, reps * h.shape[-1])


def bound(
    z: torch.Tensor, levels: torch.Tensor, eps: float = 1e-3, cached: Constants | None = None
) -> torch.Tensor:
    """Squash ``z`` ``[..., d]`` so that rounding yields ``levels[i]`` integer values per channel; ``cached``:
    ``constants(levels, z, reps)`` (the same values; ``reps`` must divide the number of vectors)."""
    if cached is None:
        shift2, scale, drop = _sigmoid_form(*bound_constants(levels, z, eps))
        return torch.sigmoid(torch.add(shift2, z, alpha=2)) * scale - drop
    c = cached
    return (torch.sigmoid(torch.add(c.shift2, wide(z, c.reps), alpha=2)) * c.scale - c.drop).view(z.shape)


def bounded_digits(z: torch.Tensor, c: Constants) -> torch.Tensor:
    """Digits ``[..., d]`` in ``[0, levels)`` of ``round(bound(z))`` as floats of ``z``'s dtype (no autograd): the
    values of ``values_to_digits(round(bound(z)))``, computed in place in one buffer."""
    rows = torch.add(c.shift2, wide(z.detach(), c.reps), alpha=2)
    return rows.sigmoid_().mul_(c.scale).sub_(c.drop).round_().add_(c.half).view(z.shape)


def rounded_digits(bounded: torch.Tensor, c: Constants) -> torch.Tensor:
    """``bounded_digits`` of an already bounded ``[..., d]`` (a new tensor, no autograd)."""
    return wide(bounded.detach(), c.reps).round().add_(c.half).view(bounded.shape)


def scaled(bounded: torch.Tensor, c: Constants) -> torch.Tensor:
    """``bounded / half_width`` ``[..., d]``: the values ``[-1, 1]`` before rounding (FSQ's surrogate)."""
    return (wide(bounded, c.reps) / c.half).view(bounded.shape)


def digit_values_(digits: torch.Tensor, c: Constants) -> torch.Tensor:
    """Float digits ``[..., d]`` -> their values ``[-1, 1]``, in place: ``digits_to_values``'s arithmetic."""
    return wide(digits, c.reps).sub_(c.half).div_(c.half).view(digits.shape)


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


@cached_constant()
def every_code_value(levels: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The normalized values ``[prod(levels), d]`` of every index in order (``digits_to_values`` of
    ``index_to_digits``), made once per arguments; not to be written to."""
    lv = torch.tensor(levels, dtype=torch.long, device=device)
    index = torch.arange(math.prod(levels), device=device)
    return digits_to_values(index_to_digits(index, lv), lv, dtype)


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


def float_index(digits: torch.Tensor, place: torch.Tensor) -> torch.Tensor:
    """``digits_to_index`` of float digits ``[..., d]`` (``bounded_digits``) with ``place`` in their dtype: one
    matrix-vector product, exact when ``prod(levels) <= EXACT_FLOAT_INDEX`` (every partial sum is an integer the float32
    mantissa holds), several times faster on CPU than the int64 multiply and sum."""
    return (digits @ place).long()


def index_to_digits(
    index: torch.Tensor, levels: torch.Tensor, place: torch.Tensor | None = None
) -> torch.Tensor:
    """Index ``[...]`` -> digits ``[..., d]``; inverse of ``digits_to_index``."""
    lv = levels.long().to(index.device)
    place = basis(levels) if place is None else place
    return torch.remainder(torch.div(index[..., None], place.to(index.device), rounding_mode="floor"), lv)
