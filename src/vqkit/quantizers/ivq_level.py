"""One level of IVQ (``vqkit.quantizers.ivq``): block codebooks whose codes compose a hexagram index.

A level with ``blocks`` blocks splits its ``[N, D]`` input into ``blocks`` contiguous chunks of ``D / blocks``
dims and matches each against a codebook of ``2 ** (L / blocks)`` codes, by default one codebook shared by the
blocks (``codebooks="per_block"``: one each). The blocks' codes concatenate into one hexagram index in
``[0, 2**L)`` (``vqkit.functional.hexagram``). The search is ``vqkit.functional.block_search``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from vqkit._validate import check_choice, is_int
from vqkit.functional import hexagram
from vqkit.functional.block_search import (
    LevelStep,
    block_lookup,
    block_search,
    residual_walk,
)
from vqkit.functional.stats import column_code_counts
from vqkit.quantizers.base import Quantizer, straight_through
from vqkit.quantizers.codebook import Codebook, CodebookOptions
from vqkit.types import QuantizerOutput

Codebooks = Literal["shared", "per_block"]
PRESETS = ("yin-yang", "bottom-up", "top-down")


def resolve_levels(levels: str | Sequence[Sequence[int]], lines: int) -> tuple[tuple[int, int], ...]:
    """A preset name or a list of ``(codes per codebook, blocks)`` -> validated ``((codes, blocks), ...)``."""
    if isinstance(levels, str):
        check_choice("levels", levels, PRESETS)
        if levels == "yin-yang":
            return ((2, lines),) * 4
        sizes = [g for g in range(1, lines + 1) if lines % g == 0]  # lines per block, fine to coarse
        pairs = tuple((2**g, lines // g) for g in sizes)
        return pairs if levels == "bottom-up" else pairs[::-1]
    if not isinstance(levels, (list, tuple)) or not levels:
        raise ValueError(
            f"levels: expected one of {list(PRESETS)} or a list of (codes, blocks), got {levels!r}"
        )
    out = []
    for level in levels:
        ok = isinstance(level, (list, tuple)) and len(level) == 2
        ok = ok and all(is_int(v) and v > 0 for v in level)
        if not ok or lines % level[1] or level[0] != 2 ** (lines // level[1]):
            raise ValueError(
                f"levels: each level is (codes, blocks) with blocks dividing lines={lines} and "
                f"codes = 2 ** (lines / blocks), got {level!r}"
            )
        out.append((int(level[0]), int(level[1])))
    return tuple(out)


class IVQLevel(Quantizer):
    """One IVQ level: ``[N, D]`` -> one hexagram index ``[N, 1]`` in ``[0, 2**L)``.

    Args:
        dim: D (a multiple of ``blocks``).
        lines: L.
        blocks: how many blocks a vector is cut into (a divisor of ``L``).
        codebooks: ``"shared"`` (one codebook for every block) or ``"per_block"``.
        options: the codebooks' strategies and constants.
    """

    def __init__(
        self, dim: int, lines: int, blocks: int, *, codebooks: Codebooks, options: CodebookOptions
    ) -> None:
        super().__init__(dim)
        self.lines, self.blocks = lines, blocks
        self.num_codes = 2 ** (lines // blocks)
        self.sub_dim = dim // blocks
        count = blocks if codebooks == "per_block" else 1
        self.codebooks = nn.ModuleList(Codebook(self.num_codes, self.sub_dim, options) for _ in range(count))

    @property
    def codebook_list(self) -> list[Codebook]:
        return cast(list[Codebook], list(self.codebooks))

    @property
    def options(self) -> CodebookOptions:
        return self.codebook_list[0].options

    @property
    def alphabet_sizes(self) -> tuple[int, ...]:
        return (2**self.lines,)

    @property
    def num_codebook_parameters(self) -> int:
        return sum(cb.weight.numel() for cb in self.codebook_list)

    def search_cost(self) -> tuple[int, int] | None:
        return self.blocks * self.num_codes * self.sub_dim, self.blocks * self.num_codes

    def books(self) -> torch.Tensor:
        """The codebooks as one tensor ``[P, K, d]`` (differentiable; ``P`` is 1 when shared)."""
        return torch.stack([cb.vectors for cb in self.codebook_list])

    # ------------------------------------------------------------------ search and lookup
    def _parts(self, r: torch.Tensor) -> list[torch.Tensor]:
        """The vectors each codebook sees: all blocks ``[N * blocks, d]`` (shared) or block ``j`` ``[N, d]``."""
        chunks = r.reshape(r.shape[0], self.blocks, self.sub_dim)
        if len(self.codebooks) == 1:
            return [chunks.reshape(-1, self.sub_dim)]
        return list(chunks.unbind(1))

    def block_codes(self, r: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` -> each block's nearest code ``[N, blocks]``."""
        return block_search(r.detach(), self.books().detach(), self.blocks, self.options.distance)

    def lookup(self, block_codes: torch.Tensor) -> torch.Tensor:
        """``[N, blocks]`` -> ``[N, D]``, differentiable w.r.t. the codebooks (the same values in every path)."""
        return block_lookup(block_codes, self.books())

    def lookup_index(self, index: torch.Tensor, block_codes: torch.Tensor) -> torch.Tensor:
        """``lookup(block_codes)`` for hexagrams ``index`` ``[N]`` (their ``block_codes`` ``[N, blocks]``), without
        a gradient: from ``N >= 2**L`` rows of the hexagram table (one ``D``-wide row per vector instead of
        ``blocks`` narrow ones, half the time on CPU); the same floats either way."""
        if index.shape[0] < 2**self.lines or torch.is_grad_enabled():
            return self.lookup(block_codes).detach()
        return F.embedding(index, self.hexagram_table())

    def hexagram_table(self, hexagrams: torch.Tensor | None = None) -> torch.Tensor:
        """What each hexagram decodes to at this level: ``[2**L, D]`` (or ``[M, D]`` for ``hexagrams`` ``[M]``)."""
        if hexagrams is None:
            hexagrams = torch.arange(2**self.lines, device=self.codebook_list[0].weight.device)
        return self.lookup(hexagram.block_codes(hexagrams, self.lines, self.blocks))

    # ------------------------------------------------------------------ contract
    @property
    def needs_warm_start(self) -> bool:
        return self.options.init == "kmeans" and not all(cb.is_initialized() for cb in self.codebook_list)

    def warm_start(self, r: torch.Tensor) -> None:
        """k-means init of codebooks not yet initialized (``init="kmeans"``) from this level's residual."""
        for cb, part in zip(self.codebook_list, self._parts(r.detach()), strict=True):
            cb.warm_start(part)

    def quantize_codes(self, r: torch.Tensor, codes: torch.Tensor | None) -> QuantizerOutput:
        """The training forward for hexagram ``codes`` ``[N, 1]`` (from IVQ's joint search; ``None``: this
        level's nearest codes): losses, straight-through output, codebook statistics."""
        if codes is None:
            if self.training:
                self.warm_start(r)
            blocks = self.block_codes(r)
        else:
            blocks = hexagram.block_codes(codes[:, 0], self.lines, self.blocks)
        q = self.lookup(blocks)
        losses = self.codebook_list[0].losses(r, q)
        return QuantizerOutput(
            quantized=straight_through(q, r),
            codes=hexagram.blocks_to_index(blocks, self.lines)[:, None],
            losses=losses,
            metrics={"codebook_utilization": self.observe(r, blocks)},
        )

    def observe(self, r: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        """After the lookup of ``blocks`` ``[N, blocks]`` for this level's input ``r`` ``[N, D]``: in training the
        codebooks' statistics and update rules; returns the share of each codebook's codes the batch used (a
        shared codebook sees every block's codes), averaged over the codebooks."""
        count = len(self.codebooks)
        per_book = blocks if count > 1 else blocks.reshape(-1, 1)
        counts = column_code_counts(per_book, self.num_codes, torch.float32)  # [P, K]: one count serves both
        used = (counts > 0).float().mean()
        if self.training:
            per_codebook = [blocks.reshape(-1)] if count == 1 else list(blocks.unbind(1))
            for cb, part, c, n in zip(self.codebook_list, self._parts(r), per_codebook, counts, strict=True):
                cb.update(part, c, counts=n)
        return used

    def _quantize(self, r: torch.Tensor) -> QuantizerOutput:
        return self.quantize_codes(r, None)

    def _encode(self, r: torch.Tensor) -> torch.Tensor:
        return hexagram.blocks_to_index(self.block_codes(r), self.lines)[:, None]

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.lookup(hexagram.block_codes(codes[:, 0], self.lines, self.blocks))

    @torch.no_grad()
    def init_codebook(self, vectors: torch.Tensor) -> None:
        for cb, part in zip(self.codebook_list, self._parts(vectors), strict=True):
            cb.initialize_from(part, force=True)


@dataclass
class LevelStatistics:
    """What ``level_statistics`` computes in one pass down the levels (see ``block_search.vq_loss_pair``)."""

    total: torch.Tensor
    """``[N, D]`` the levels' looked-up codes summed in level order: exactly ``IVQ._decode`` of the codes."""
    residual_sum: torch.Tensor | None
    """``[N, D]`` the sum of what each level left, ``sum_i r_{i+1}`` (``None`` without a gradient to the input)."""
    losses: torch.Tensor
    """``[L]`` each level's ``mean((r_i - q_i)^2)``."""
    code_sums: list[torch.Tensor | None]
    """Per level ``[P, K, d]``: ``r_{i+1}``'s blocks summed by code (``None`` without a codebook gradient)."""
    codes: list[torch.Tensor]
    """Per level ``[N, 1]`` hexagram indices."""
    used: torch.Tensor
    """``[L]`` each level's ``codebook_utilization``."""


@torch.no_grad()
def level_statistics(
    levels: Sequence[IVQLevel], h: torch.Tensor, found: Sequence[torch.Tensor], *, grad: bool
) -> LevelStatistics:
    """One pass of the residual lookup down ``levels`` for their block codes ``found`` (``[N, blocks]`` each,
    ``block_search.residual_walk``): each level's codebook update and metric (``IVQLevel.observe``, on its own
    input ``r_i``, as the per-level forward), and the statistics of the loss pair. ``grad``: whether the
    caller records gradients."""
    codes: list[torch.Tensor] = []
    used: list[torch.Tensor] = []

    def level(lv: IVQLevel, blocks: torch.Tensor) -> Callable[[torch.Tensor], LevelStep]:
        def step(residual: torch.Tensor) -> LevelStep:
            index = hexagram.blocks_to_index(blocks, lv.lines)
            q = lv.lookup_index(index, blocks)
            used.append(lv.observe(residual, blocks))
            codes.append(index[:, None])
            book_grad = any(cb.weight.requires_grad for cb in lv.codebook_list)
            return LevelStep(q, blocks, len(lv.codebooks), lv.num_codes, book_grad)

        return step

    walk = residual_walk(h, [level(lv, b) for lv, b in zip(levels, found, strict=True)], grad=grad)
    return LevelStatistics(
        walk.total, walk.residual_sum, walk.losses, walk.code_sums, codes, torch.stack(used)
    )
