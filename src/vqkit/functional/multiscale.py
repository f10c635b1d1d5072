"""The pure math of multi-scale residual quantization (VAR, Tian et al., arXiv 2404.02905; ``multiscale_vq``).

A scale of *factor* ``f`` cuts each grid axis of ``size`` positions into ``n = max(1, size // f)`` cells, a
partition: position ``p`` lies in cell ``p * n // size`` (cells of ``size / n`` positions when ``n`` divides
``size``, else of ``floor`` and ``ceil`` of it; never more cells than ``size / f`` unless ``size < f``). On
such a partition:

* ``pool_cells``: the mean over each cell (VAR's ``F.interpolate(mode="area")`` when ``n`` divides ``size``);
* ``cell_values`` / ``expand_cells``: one value per cell read at its first position, and each cell's value
  written to all its positions (the per-position storage of per-cell codes, and its inverse);
* ``upsample_cells``: the cell grid back to the positions, a product with ``interpolation_matrix`` per axis:
  ``"cubic"`` (VAR's bicubic, ``align_corners=False``; on sequences the same kernel along the one axis),
  ``"linear"`` (bilinear / linear) or ``"nearest"`` (each position takes its own cell's value: ``expand_cells``);
* ``residual_conv``: VAR's ``Phi``, ``(1 - r) h + r conv(h)`` with a 3 (or 3x3) "same" convolution;
* ``phi_index``: which of ``P`` shared convolutions a scale uses (VAR's ``PhiPartiallyShared`` ticks).

Shapes: ``[..., *S]`` with the grid in the last ``len(S)`` axes (``[M, D, *S]`` for maps of ``D`` channels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from vqkit.utils.constants import cached_constant

Upsample = Literal["cubic", "linear", "nearest"]
UPSAMPLES: tuple[str, ...] = ("cubic", "linear", "nearest")


def cell_count(size: int, factor: int) -> int:
    """Cells of about ``factor`` positions on an axis of ``size``: ``max(1, size // factor)``."""
    return max(1, size // factor)


def cell_grid(size: Sequence[int], factor: int) -> tuple[int, ...]:
    """The cell grid of a scale of ``factor`` on the grid ``size`` (one ``cell_count`` per axis)."""
    return tuple(cell_count(s, factor) for s in size)


def cell_index(size: int, cells: int, device: torch.device | None = None) -> torch.Tensor:
    """``[size]`` int64: the cell of each position, ``p * cells // size``."""
    return torch.arange(size, device=device) * cells // size


def cell_starts(size: int, cells: int, device: torch.device | None = None) -> torch.Tensor:
    """``[cells]`` int64: the first position of each cell, ``ceil(i * size / cells)``."""
    return (torch.arange(cells, device=device) * size + cells - 1) // cells


def _grid_axes(x: torch.Tensor, rank: int) -> range:
    if x.dim() < rank:
        raise ValueError(f"x: expected at least {rank} dims (the grid), got shape {tuple(x.shape)}")
    return range(x.dim() - rank, x.dim())


def pool_cells(x: torch.Tensor, cells: Sequence[int]) -> torch.Tensor:
    """Mean of ``x`` ``[..., *S]`` over each cell: ``[..., *cells]``, axis by axis as a product with the
    averaging matrix (deterministic on every device, unlike a scatter-add)."""
    for dim, n in zip(_grid_axes(x, len(cells)), cells, strict=True):
        size = x.shape[dim]
        if n == size:
            continue
        weights = _pool_matrix(size, n, x.device, x.dtype)
        x = (x.movedim(dim, -1) @ weights).movedim(-1, dim)
    return x


# Building a ``[cells, size]`` matrix took as long as the product with it on CPU: each is made once per shape.
@cached_constant()
def _pool_matrix(size: int, cells: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``[size, cells]``: the mean of each cell's positions."""
    member = cell_index(size, cells, device)[:, None] == torch.arange(cells, device=device)[None, :]
    weights = member.to(dtype)
    return weights / weights.sum(0)


@cached_constant()
def _resample_matrix(
    cells: int, size: int, mode: Upsample, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    return interpolation_matrix(cells, size, mode, device).to(dtype)


def expand_cells(t: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Each cell's value at every one of its positions: ``[..., *cells] -> [..., *size]`` (any dtype)."""
    for dim, s in zip(_grid_axes(t, len(size)), size, strict=True):
        if t.shape[dim] != s:
            t = t.index_select(dim, cell_index(s, t.shape[dim], t.device))
    return t


def cell_values(x: torch.Tensor, cells: Sequence[int]) -> torch.Tensor:
    """The value at each cell's first position: ``[..., *S] -> [..., *cells]`` (the inverse of
    ``expand_cells`` on values that are constant over cells; other positions are not read)."""
    for dim, n in zip(_grid_axes(x, len(cells)), cells, strict=True):
        if x.shape[dim] != n:
            x = x.index_select(dim, cell_starts(x.shape[dim], n, x.device))
    return x


def _cubic(t: torch.Tensor, a: float = -0.75) -> list[torch.Tensor]:
    """Keys' cubic convolution weights (``a = -0.75``, torch's bicubic) of the taps at offsets -1, 0, 1, 2."""
    near = [((a + 2) * s - (a + 3)) * s * s + 1 for s in (t, 1 - t)]
    far = [((a * s - 5 * a) * s + 8 * a) * s - 4 * a for s in (t + 1, 2 - t)]
    return [far[0], near[0], near[1], far[1]]


def interpolation_matrix(
    cells: int, size: int, mode: Upsample, device: torch.device | None = None
) -> torch.Tensor:
    """``[cells, size]`` float64: column ``p`` holds the weights of the cells that position ``p`` reads, so that
    ``values @ matrix`` resamples an axis of ``cells`` samples to ``size`` (``align_corners=False``; taps past
    the border clamped, as torch's ``interpolate``; ``"linear"`` clamps its source coordinate at 0 too)."""
    p = torch.arange(size, dtype=torch.float64, device=device)
    source = (p + 0.5) * (cells / size) - 0.5
    if mode == "nearest":
        return (
            cell_index(size, cells, device)[None, :] == torch.arange(cells, device=device)[:, None]
        ).double()
    if mode == "linear":
        source = source.clamp(min=0.0)
    first = source.floor()
    t = source - first
    offsets, weights = ((0, 1), [1 - t, t]) if mode == "linear" else ((-1, 0, 1, 2), _cubic(t))
    rows = torch.arange(cells, device=device)[:, None]
    matrix = torch.zeros(cells, size, dtype=torch.float64, device=device)
    for offset, weight in zip(offsets, weights, strict=True):  # a dense sum in a fixed order: deterministic
        tap = (first.long() + offset).clamp(0, cells - 1)
        matrix = matrix + (rows == tap[None, :]).double() * weight[None, :]
    return matrix


def upsample_cells(x: torch.Tensor, size: Sequence[int], mode: Upsample) -> torch.Tensor:
    """``[..., *cells] -> [..., *size]`` (the grid in the last ``len(size)`` axes), axis by axis: ``"cubic"``
    (VAR's bicubic on images, the same kernel along a sequence), ``"linear"`` or ``"nearest"`` (each position
    its own cell's value). A product with ``interpolation_matrix`` rather than ``F.interpolate``: the same
    weights, but one operation that a compiled graph (whose decompositions round otherwise) and an exported
    one compute as eager mode does. The identity where the grids are equal."""
    for dim, s in zip(_grid_axes(x, len(size)), size, strict=True):
        n = x.shape[dim]
        if n == s:
            continue
        if mode == "nearest":
            x = x.index_select(dim, cell_index(s, n, x.device))
            continue
        matrix = _resample_matrix(n, s, mode, x.device, x.dtype)
        x = (x.movedim(dim, -1) @ matrix).movedim(-1, dim)
    return x


def residual_conv(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ratio: float) -> torch.Tensor:
    """VAR's ``Phi``: ``(1 - ratio) h + ratio conv(h)`` for ``h`` ``[B, C, T]`` (``weight`` ``[C, C, 3]``) or
    ``[B, C, H, W]`` (``weight`` ``[C, C, 3, 3]``), zero-padded to keep the grid."""
    conv = F.conv1d if h.dim() == 3 else F.conv2d
    return h * (1.0 - ratio) + conv(h, weight, bias, padding=1) * ratio


def phi_index(scale: int, num_scales: int, num_phis: int) -> int:
    """The convolution scale ``scale`` (of ``num_scales``, coarse first) uses among ``num_phis``, by VAR's rule:
    the nearest of ``num_phis`` ticks spread over [0, 1] (``linspace(1/(3P), 1 - 1/(3P), P)`` for ``P = 4``,
    ``linspace(1/(2P), 1 - 1/(2P), P)`` otherwise) to ``scale / (num_scales - 1)``, the first on a tie.

    Computed with the float operations of ``numpy.linspace`` and ``argmin``, so ties fall as in VAR (its 10
    scales share ``[0, 0, 1, 1, 1, 2, 2, 3, 3, 3]``). One scale uses convolution 0."""
    if num_phis == 1 or num_scales == 1:
        return 0
    margin = 1 / 3 / num_phis if num_phis == 4 else 1 / 2 / num_phis
    start, stop = margin, 1 - margin
    step = (stop - start) / (num_phis - 1)
    ticks = [i * step + start for i in range(num_phis - 1)] + [stop]
    at = scale / (num_scales - 1)
    gaps = [abs(t - at) for t in ticks]
    return gaps.index(min(gaps))


def scale_grids(size: Sequence[int], factors: Sequence[int]) -> list[tuple[int, ...]]:
    """The cell grid of each scale (``factors``, coarse first) on the grid ``size``."""
    return [cell_grid(size, f) for f in factors]


def tokens_of_codes(codes: torch.Tensor, factors: Sequence[int], rank: int) -> list[torch.Tensor]:
    """Per-position codes ``[..., *S, c]`` (grid in the ``rank`` axes before the last) -> the ``c`` token maps
    ``[..., *cells_k]``, each cell read at its first position."""
    size = codes.shape[-1 - rank : -1]
    grids = scale_grids(size, factors)
    return [cell_values(codes[..., k], grids[k]) for k in range(codes.shape[-1])]


def codes_of_tokens(tokens: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
    """Token maps ``[..., *cells_k]`` -> per-position codes ``[..., *size, len(tokens)]`` (``expand_cells``)."""
    return torch.stack([expand_cells(t, size) for t in tokens], dim=-1)
