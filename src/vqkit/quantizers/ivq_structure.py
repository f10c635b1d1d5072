"""IVQ's structure terms (``vqkit.quantizers.ivq``'s module docstring defines them): every pair of hexagram tables
the terms compare, gathered in one lookup, and every pair in one batched contrastive pass.

**One gather for every table.** Each row of a level's hexagram table is its blocks' code vectors side by side, and
each table a term compares is a level's table on some hexagrams (``rows`` or their related hexagrams), possibly
flipped (the zong term's ``f``). So every table is rows of one **unit bank**: the codebooks of all levels cut into
units of ``u`` dims (``u``: the narrowest block width, which every level's width is a multiple of), followed by
the same units reversed. A table is ``D / u`` units side by side; reversing its feature axis (``zong_flip=
"features"``) reverses the unit order and takes each unit from the reversed half; reversing the block order
(``"blocks"``) reverses the order of the blocks' runs of units. The index of every unit of every table (a
``StructurePlan``) is integer arithmetic on the hexagrams, cached when the terms see every hexagram; the tables of
one step are then one embedding lookup of the bank (one autograd node where a lookup, index and flip per table and
level were two dozen: the tables are small, so the step's cost was the operations' overhead).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from vqkit.functional import hexagram
from vqkit.functional.hexagram import ZongFlip
from vqkit.quantizers.ivq_level import IVQLevel
from vqkit.utils.constants import cached_constant

_RELATED = {"zong": hexagram.zong, "cuo": hexagram.cuo, "cuozong": hexagram.cuozong}


class Layout(NamedTuple):
    """What fixes the unit bank's rows: per level ``(blocks, codebooks, codes per codebook)``, and ``D``."""

    levels: tuple[tuple[int, int, int], ...]
    dim: int

    @property
    def unit(self) -> int:
        """The unit width: ``D`` over the least common multiple of the levels' block counts."""
        return self.dim // math.lcm(*(blocks for blocks, _, _ in self.levels))

    def units_per_block(self, level: int) -> int:
        return self.dim // self.levels[level][0] // self.unit

    def start(self, level: int) -> int:
        """The bank row of level ``level``'s first unit (``len(levels)``: where the reversed half starts)."""
        return sum(
            books * codes * self.units_per_block(i) for i, (_, books, codes) in enumerate(self.levels[:level])
        )

    @property
    def bank_rows(self) -> int:
        """Units of all codebooks (the reversed half starts here)."""
        return self.start(len(self.levels))


class StructurePlan(NamedTuple):
    """The pairs of one step's structure terms as rows of the unit bank."""

    terms: tuple[str, ...]
    """Each pair's term, each term's pairs adjacent."""
    units: torch.Tensor
    """``[2, P, M, D / u]``: the units of pair ``p``'s two tables (side 0 is ``a``, side 1 is ``b``)."""


def layout_of(levels: Sequence[IVQLevel]) -> Layout:
    return Layout(tuple((lv.blocks, len(lv.codebook_list), lv.num_codes) for lv in levels), levels[0].dim)


def unit_bank(levels: Sequence[IVQLevel], layout: Layout, *, reversed_units: bool) -> torch.Tensor:
    """Every codebook's codes cut into units ``[S, u]`` in level, codebook, code order (differentiable), followed
    by the same units reversed when ``reversed_units`` (``[2S, u]``)."""
    bank = torch.cat([lv.books().reshape(-1, layout.unit) for lv in levels])
    return torch.cat([bank, bank.flip(-1)]) if reversed_units else bank


def _table_units(layout: Layout, lines: int, level: int, hexagrams: torch.Tensor) -> torch.Tensor:
    """The bank units of level ``level``'s table on ``hexagrams`` ``[M]``: ``[M, blocks, units per block]``."""
    blocks, books, codes = layout.levels[level]
    per_block, device = layout.units_per_block(level), hexagrams.device
    code = hexagram.block_codes(hexagrams, lines, blocks)  # [M, blocks]
    if books > 1:  # block j's codes are in codebook j
        code = code + torch.arange(blocks, device=device) * codes
    return layout.start(level) + code[..., None] * per_block + torch.arange(per_block, device=device)


def _flipped(units: torch.Tensor, layout: Layout, flip: ZongFlip) -> torch.Tensor:
    """The units of ``hexagram.zong_flip`` of a table ``[M, blocks, k]``: the block order reversed, and with
    ``"features"`` the units inside each block too, from the reversed half of the bank."""
    if flip == "features":
        return units.flip(-2, -1) + layout.bank_rows
    return units.flip(-2)


class Terms(NamedTuple):
    """Which pairs the terms compare (``IVQ``'s settings of the terms whose weight is positive)."""

    hierarchy: bool
    relation_terms: tuple[str, ...]
    relation_levels: tuple[int, ...]
    zong_flip: ZongFlip


def make_plan(layout: Layout, lines: int, rows: torch.Tensor, terms: Terms) -> StructurePlan:
    """The pairs the terms compare on hexagrams ``rows`` ``[M]``, term by term: ``hierarchy`` (each pair of levels
    ``a < b``) when asked, then each of ``relation_terms`` on each of ``relation_levels`` (``zong``: ``f`` of the
    table on the zong hexagrams against the table; ``cuo`` and ``cuozong``: the table against the table on the
    related hexagrams)."""
    tables = [_table_units(layout, lines, i, rows) for i in range(len(layout.levels))]
    names: list[str] = []
    sides: list[tuple[torch.Tensor, torch.Tensor]] = []
    if terms.hierarchy and len(tables) > 1:
        for i, j in itertools.combinations(range(len(tables)), 2):
            names.append("hierarchy")
            sides.append((tables[i], tables[j]))
    for term in terms.relation_terms:
        related_rows = _RELATED[term](rows, lines)
        for level in terms.relation_levels:
            related = _table_units(layout, lines, level, related_rows)
            names.append(term)
            if term == "zong":
                sides.append((_flipped(related, layout, terms.zong_flip), tables[level]))
            else:
                sides.append((tables[level], related))
    m, width = rows.shape[0], layout.dim // layout.unit
    units = torch.stack(
        [torch.stack([t.reshape(m, width) for t in side]) for side in zip(*sides, strict=True)]
    )
    return StructurePlan(tuple(names), units)


@cached_constant(maxsize=128)
def full_plan(layout: Layout, lines: int, terms: Terms, device: torch.device) -> StructurePlan:
    """``make_plan`` on every hexagram, made once per configuration and device."""
    return make_plan(layout, lines, torch.arange(2**lines, device=device), terms)


def structure_losses(
    plan: StructurePlan,
    bank: torch.Tensor,
    dim: int,
    contrastive: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """``hierarchy`` (the sum over its pairs), ``zong``, ``cuo`` (negated) and ``cuozong`` (means over their
    levels) from one lookup of ``bank`` for every table of ``plan`` and one ``contrastive`` call on all pairs
    (``[P, M, D] -> [P]``)."""
    if not plan.terms:
        return {}
    _, pairs, m, _ = plan.units.shape
    tables = F.embedding(plan.units, bank).reshape(2, pairs, m, dim)
    values = contrastive(tables[0], tables[1])
    losses: dict[str, torch.Tensor] = {}
    start = 0
    for term, group in itertools.groupby(plan.terms):  # each term's pairs are adjacent
        count = len(list(group))
        part = values[start : start + count]
        start += count
        losses[term] = part.sum() if term == "hierarchy" else -part.mean() if term == "cuo" else part.mean()
    return losses
