"""Hexagram arithmetic for IVQ: lines, block codes, and the zong / cuo / cuo-zong relations.

Vocabulary (``docs/ivq.md``): a hexagram is ``L`` binary lines (yin = 0, yang = 1); its index is the lines read
as a binary number, **first line most significant**, so line ``i`` is bit ``L - 1 - i`` of the index. A level
with ``blocks`` blocks splits the lines into ``blocks`` groups of ``g = L // blocks`` consecutive lines; block
``j`` covers lines ``j*g .. j*g + g - 1`` and its code is those lines read the same way. So the hexagram index is
the blocks' codes concatenated in order (block 0 most significant), and a ``2**g``-code codebook per block
composes ``2**L`` hexagrams.

Relations (IVQ paper, section 3.2.3): zong reverses the line order, cuo flips every line, cuo-zong does both.
With the identity they form the Klein four-group acting on hexagrams; its orbits are the paper's "relational
groups" (20 for ``L = 6``).

All functions are pure and work on int64 tensors of any shape.
"""

from __future__ import annotations

from typing import Literal

import torch

from vqkit._validate import check_choice, check_int, is_int

ZongFlip = Literal["features", "blocks"]
ZONG_FLIPS: tuple[ZongFlip, ...] = ("features", "blocks")


def _check_lines(lines: int) -> int:
    return check_int("lines", lines, minimum=1, maximum=62, expected="an int in [1, 62]")


def _check_blocks(lines: int, blocks: int) -> int:
    if not is_int(blocks) or blocks < 1 or lines % blocks:
        raise ValueError(f"blocks: expected a positive divisor of lines={lines}, got {blocks!r}")
    return blocks


def index_to_lines(index: torch.Tensor, lines: int) -> torch.Tensor:
    """``[...]`` hexagram indices -> ``[..., L]`` lines in {0, 1} (int64), first line first."""
    shifts = torch.arange(_check_lines(lines) - 1, -1, -1, device=index.device)
    return (index.long()[..., None] >> shifts) & 1


def lines_to_index(bits: torch.Tensor) -> torch.Tensor:
    """``[..., L]`` lines in {0, 1} -> ``[...]`` hexagram indices (first line most significant)."""
    lines = _check_lines(bits.shape[-1])
    weights = torch.ones(1, dtype=torch.long, device=bits.device) << torch.arange(
        lines - 1, -1, -1, device=bits.device
    )
    return (bits.long() * weights).sum(-1)


def block_codes(index: torch.Tensor, lines: int, blocks: int) -> torch.Tensor:
    """``[...]`` hexagram indices -> ``[..., blocks]`` block codes in ``[0, 2**(L / blocks))``."""
    g = _check_lines(lines) // _check_blocks(lines, blocks)
    # Place values as constants and floor division rather than bit shifts: the same integers, and operations
    # every exporter (ONNX) has.
    place = torch.tensor([1 << (g * j) for j in range(blocks - 1, -1, -1)], device=index.device)
    return torch.remainder(torch.div(index.long()[..., None], place, rounding_mode="floor"), 1 << g)


def blocks_to_index(codes: torch.Tensor, lines: int) -> torch.Tensor:
    """``[..., blocks]`` block codes -> ``[...]`` hexagram indices (block 0 most significant)."""
    blocks = _check_blocks(_check_lines(lines), codes.shape[-1])
    g = lines // blocks
    place = torch.tensor([1 << (g * j) for j in range(blocks - 1, -1, -1)], device=codes.device)
    return (codes.long() * place).sum(-1)


def zong(index: torch.Tensor, lines: int) -> torch.Tensor:
    """The zong (inverted) hexagram: the line order reversed."""
    return lines_to_index(index_to_lines(index, lines).flip(-1))


def cuo(index: torch.Tensor, lines: int) -> torch.Tensor:
    """The cuo (opposite) hexagram: every line negated."""
    return index.long() ^ ((1 << _check_lines(lines)) - 1)


def cuozong(index: torch.Tensor, lines: int) -> torch.Tensor:
    """The cuo-zong hexagram: negated and reversed (the two commute)."""
    return cuo(zong(index, lines), lines)


def zong_flip(table: torch.Tensor, blocks: int, flip: ZongFlip = "features") -> torch.Tensor:
    """The flip ``f`` of IVQ's zong term on a hexagram table ``[M, D]`` of a level with ``blocks`` blocks.

    ``"features"`` reverses the whole feature axis (the authors' code): the block order *and* the ``D / blocks``
    dims inside each block. ``"blocks"`` reverses the block order only. Row ``h`` of ``f(H[zong(h)])`` is then,
    with ``c_j`` block ``j``'s code of ``h``, ``rev(k)`` the code of ``k``'s lines reversed and ``C_j`` block
    ``j``'s codebook: ``concat_j rev_dims(C_(B-1-j)[rev(c_j)])`` (``"features"``) or ``concat_j
    C_(B-1-j)[rev(c_j)]`` (``"blocks"``). The zong term aligns it with ``H[h] = concat_j C_j[c_j]``, so
    ``"features"`` ties each code to its own reversed dims (one-line blocks, shared codebook: palindromic codes),
    and ``"blocks"`` ties nothing for one-line blocks and a shared codebook (the relation holds exactly) and
    otherwise code ``k`` of codebook ``j`` to code ``rev(k)`` of codebook ``B - 1 - j``."""
    check_choice("flip", flip, ZONG_FLIPS)
    if table.dim() != 2 or not is_int(blocks) or blocks < 1 or table.shape[1] % blocks:
        raise ValueError(
            f"table, blocks: expected a [M, D] table and blocks dividing D, got {tuple(table.shape)}, {blocks!r}"
        )
    if flip == "features":
        return table.flip(-1)
    rows, dim = table.shape
    return table.reshape(rows, blocks, dim // blocks).flip(1).reshape(rows, dim)


def relation_groups(lines: int) -> list[tuple[int, ...]]:
    """The orbits of {identity, zong, cuo, cuo-zong} on the ``2**L`` hexagrams, each sorted, ordered by their
    smallest member. By Burnside's lemma there are ``(2**L + 2 * 2**(L/2)) / 4`` for even ``L`` (20 for L = 6,
    6 for L = 4, 1056 for L = 12): zong fixes the ``2**(L/2)`` palindromes, cuo-zong as many, cuo none."""
    all_index = torch.arange(1 << _check_lines(lines))
    images = torch.stack(
        [all_index, zong(all_index, lines), cuo(all_index, lines), cuozong(all_index, lines)]
    )
    smallest = images.min(dim=0).values.tolist()
    groups: dict[int, list[int]] = {}
    for hexagram, root in enumerate(smallest):
        groups.setdefault(root, []).append(hexagram)
    return [tuple(members) for _, members in sorted(groups.items())]
