"""IVQ's structure terms (``vqkit.quantizers.ivq``'s module docstring defines them): the pairs of hexagram tables
each term compares, and every pair in one batched contrastive pass."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence

import torch

from vqkit.functional import hexagram
from vqkit.functional.hexagram import ZongFlip
from vqkit.quantizers.ivq_level import IVQLevel

Pair = tuple[str, torch.Tensor, torch.Tensor]
"""``(term, a, b)``: one contrastive pair of tables ``[M, D]`` of a structure term."""

_RELATED = {"zong": hexagram.zong, "cuo": hexagram.cuo, "cuozong": hexagram.cuozong}


# Constants of the full tables, made once per device (a dozen small integer kernels per term and level on every
# training step otherwise), as normal tensors even when first asked under ``inference_mode``: the cache serves
# later training steps too.
@functools.lru_cache(maxsize=128)
def _all_block_codes(lines: int, blocks: int, device: torch.device) -> torch.Tensor:
    """Every hexagram's block codes ``[2**L, blocks]``."""
    with torch.inference_mode(False):
        return hexagram.block_codes(torch.arange(2**lines, device=device), lines, blocks)


@functools.lru_cache(maxsize=128)
def _all_related(term: str, lines: int, device: torch.device) -> torch.Tensor:
    """Every hexagram's related hexagram under ``term`` ``[2**L]``."""
    with torch.inference_mode(False):
        return _RELATED[term](torch.arange(2**lines, device=device), lines)


def structure_pairs(
    levels: Sequence[IVQLevel],
    rows: torch.Tensor,
    *,
    lines: int,
    hierarchy: bool,
    relation_terms: Sequence[str],
    relation_levels: Sequence[int],
    zong_flip: ZongFlip,
) -> list[Pair]:
    """Every pair the terms compare on hexagrams ``rows`` ``[M]``, term by term: ``hierarchy`` (each pair of
    levels ``a < b``) when asked, then each of ``relation_terms`` on each of ``relation_levels``. Each level's
    table is looked up once; with every hexagram in ``rows`` (an ``arange``) a related row is a row of it."""
    tables: dict[int, torch.Tensor] = {}
    full = rows.shape[0] == 2**lines

    def table(index: int) -> torch.Tensor:
        if index not in tables:
            level = levels[index]
            tables[index] = (
                level.lookup(_all_block_codes(lines, level.blocks, rows.device))
                if full
                else level.hexagram_table(rows)
            )
        return tables[index]

    pairs: list[Pair] = []
    if hierarchy and len(levels) > 1:
        n = len(levels)
        pairs += [("hierarchy", table(i), table(j)) for i in range(n) for j in range(i + 1, n)]
    for term in relation_terms:
        related_rows = _all_related(term, lines, rows.device) if full else _RELATED[term](rows, lines)
        for index in relation_levels:
            level = levels[index]
            related = table(index)[related_rows] if full else level.hexagram_table(related_rows)
            if term == "zong":
                pairs.append((term, hexagram.zong_flip(related, level.blocks, zong_flip), table(index)))
            else:
                pairs.append((term, table(index), related))
    return pairs


def structure_losses(
    pairs: Sequence[Pair], contrastive: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``hierarchy`` (the sum over its pairs), ``zong``, ``cuo`` (negated) and ``cuozong`` (means over their
    levels) from one ``contrastive`` call on all ``pairs`` stacked (``[P, M, D] -> [P]``), instead of one call
    per pair: the tables are small, and a call per pair was mostly per-call overhead."""
    if not pairs:
        return {}
    values = contrastive(torch.stack([a for _, a, _ in pairs]), torch.stack([b for _, _, b in pairs]))
    losses: dict[str, torch.Tensor] = {}
    start = 0
    for term, group in itertools.groupby(name for name, _, _ in pairs):  # each term's pairs are adjacent
        count = len(list(group))
        part = values[start : start + count]
        start += count
        losses[term] = part.sum() if term == "hierarchy" else -part.mean() if term == "cuo" else part.mean()
    return losses
