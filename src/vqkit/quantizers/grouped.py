"""Grouped residual quantization (registry: ``grouped_residual``, ``grouped_residual_vq``, ``grouped_residual_fsq``,
``grouped_residual_lfq``).

HiFi-Codec's group-residual VQ (GRVQ; Yang et al., arXiv 2305.02765): the ``D`` channels are cut into ``G``
contiguous groups of ``D / G``, and each group has its own residual quantizer of ``L`` levels. The groups are
independent (a product of residual quantizers), so each level's search is ``G`` times smaller than one residual
quantizer's over all ``D`` channels. vector-quantize-pytorch's ``GroupedResidualVQ`` / ``GroupedResidualFSQ`` /
``GroupedResidualLFQ`` are the same construction.

**Codes are level-major**: ``[..., L * G]`` (for one code per level) ordered ``(level 0: group 0 .. G-1), (level 1:
...)``, so the first ``k`` levels of every group are a prefix of the codes. That is what makes the residual
machinery carry over: quantizer dropout (one ``k`` per item for all groups, so an item's rate is ``k`` levels),
``encode(x, num_quantizers=k)`` and prefix ``decode``, and ``encode(x, beam_size=B)`` (each group's own beam).
Deviation from vector-quantize-pytorch, which returns codes ``[G, ..., L]`` group-major: one flat layout serves
every vqkit consumer (token files, rates, per-position usage) unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, cast

import torch

from vqkit._validate import check_divisible, check_positive_int, check_range
from vqkit.quantizers.composite import ResidualQuantizer, StageSpec, _SplitComposite, combine
from vqkit.quantizers.dropout import draw_levels
from vqkit.quantizers.residual import ResidualVQ
from vqkit.quantizers.residual_lfq import ResidualLFQ
from vqkit.quantizers.scalar import ResidualFSQ
from vqkit.registry import register_quantizer
from vqkit.types import Layout, QuantizerOutput


@register_quantizer("grouped_residual")
class GroupedResidualQuantizer(_SplitComposite):
    """``G`` residual quantizers side by side: group ``g`` quantizes channels ``[g D/G, (g+1) D/G)``.

    Args:
        dim: D.
        stages: the groups, residual quantizers (modules or configs) with the same number of levels and codes
            per level; their dims sum to ``dim``. Their own ``dropout`` must be 0: the grouped quantizer draws
            one ``k`` per item for all groups.
        dropout: quantizer dropout over the levels (``vqkit.quantizers.dropout``), the same levels in every group.

    Input ``[..., D]``; codes ``[..., L * C_l * G]`` level-major (module docstring).
    """

    def __init__(
        self,
        dim: int,
        stages: Sequence[StageSpec],
        *,
        dropout: float = 0.0,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
    ) -> None:
        super().__init__(dim, layout=layout, allow_nonfinite=allow_nonfinite)
        self._set_stages(stages)
        self.dropout = check_range("dropout", dropout, 0.0, 1.0)
        groups = self.groups
        if not all(isinstance(g, ResidualQuantizer) for g in groups):
            raise ValueError(
                f"stages: expected residual quantizers, got {[type(g).__name__ for g in groups]}"
            )
        if sum(g.dim for g in groups) != dim:
            raise ValueError(f"stages: group dims {[g.dim for g in groups]} must sum to dim={dim}")
        if len({g.level_widths() for g in groups}) > 1:
            raise ValueError(
                f"stages: expected groups with the same levels, got code widths {[g.level_widths() for g in groups]}"
            )
        if any(g.dropout > 0 for g in groups):
            raise ValueError(
                "stages: a group has its own dropout; set dropout on the grouped quantizer instead"
            )

    @property
    def groups(self) -> list[ResidualQuantizer]:
        return cast(list[ResidualQuantizer], self.stage_list)

    # ------------------------------------------------------------------ levels and code layout
    @property
    def num_levels(self) -> int:
        return self.groups[0].num_levels

    def level_widths(self) -> tuple[int, ...]:
        return tuple(width * len(self.groups) for width in self.groups[0].level_widths())

    @property
    def alphabet_sizes(self) -> tuple[int, ...]:
        sizes = [g.alphabet_sizes for g in self.groups]
        return tuple(size for g, cols in self._order(self.num_levels) for size in sizes[g][cols])

    def _order(self, num_levels: int) -> list[tuple[int, slice]]:
        """The level-major order of the first ``num_levels`` levels: ``(group, its columns of the level)``."""
        starts = (0, *self.groups[0].level_widths())
        return [
            (g, slice(starts[level], starts[level + 1]))
            for level in range(num_levels)
            for g in range(len(self.groups))
        ]

    def _prefix_levels(self, width: int, widths: tuple[int, ...], name: str) -> int:
        if width not in widths:
            raise ValueError(
                f"{name}: expected a prefix of {widths[-1]} codes per vector ({widths}), got {width}"
            )
        return widths.index(width) + 1

    def _interleave(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Each group's codes of its first ``k`` levels ``[N, w_k]`` -> level-major ``[N, G * w_k]``."""
        group_widths = self.groups[0].level_widths()
        k = self._prefix_levels(parts[0].shape[1], group_widths, "codes")
        widths = group_widths[:k]
        # w codes a level in every group: one stack, not G k slices concatenated.
        if widths == tuple(widths[0] * (i + 1) for i in range(k)):
            n, w = parts[0].shape[0], widths[0]
            return torch.stack([p.reshape(n, k, w) for p in parts], dim=2).view(n, -1)
        return torch.cat([parts[g][:, cols] for g, cols in self._order(k)], dim=1)

    def _split_codes(self, codes: torch.Tensor) -> list[torch.Tensor]:
        """Level-major codes of the first ``k`` levels -> each group's ``[N, w_k]``."""
        k = self._prefix_levels(codes.shape[1], self.level_widths(), "codes")
        parts: list[list[torch.Tensor]] = [[] for _ in self.groups]
        start = 0
        for g, cols in self._order(k):
            width = cols.stop - cols.start
            parts[g].append(codes[:, start : start + width])
            start += width
        return [torch.cat(p, dim=1) for p in parts]

    # ------------------------------------------------------------------ contract
    def _quantize_items(
        self, z: torch.Tensor, lead: torch.Size, rows: torch.Tensor | None = None
    ) -> QuantizerOutput:
        levels = None
        if self.training and self.dropout > 0:
            levels = draw_levels(lead, rows, self.num_levels, self.dropout, z.device)
        return self._quantize_levels(z, levels)

    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        return self._quantize_levels(z, None)

    def _quantize_levels(self, z: torch.Tensor, levels: torch.Tensor | None) -> QuantizerOutput:
        outputs = [
            g._quantize_levels(part, levels) for g, part in zip(self.groups, self._split(z), strict=True)
        ]
        codes = self._interleave([o.codes for o in outputs])
        return combine(torch.cat([o.quantized for o in outputs], dim=-1), outputs, codes)

    def _encode(self, z: torch.Tensor) -> torch.Tensor:
        return self._interleave(
            [g._encode(part) for g, part in zip(self.groups, self._split(z), strict=True)]
        )

    def _encode_levels(self, z: torch.Tensor, num_quantizers: int) -> torch.Tensor:
        parts = self._split(z)
        return self._interleave(
            [g._encode_levels(p, num_quantizers) for g, p in zip(self.groups, parts, strict=True)]
        )

    def _encode_beam(self, z: torch.Tensor, num_quantizers: int, beam_size: int) -> torch.Tensor:
        parts = self._split(z)
        return self._interleave(
            [g._encode_beam(p, num_quantizers, beam_size) for g, p in zip(self.groups, parts, strict=True)]
        )

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        parts = self._split_codes(codes)
        return torch.cat([g._decode(p) for g, p in zip(self.groups, parts, strict=True)], dim=-1)


def _group_rate(residual: type[ResidualQuantizer], dim: int, bits: int, groups: int) -> dict[str, Any] | None:
    """``groups`` groups of ``bits / groups`` bits each, by the residual class's own rule."""
    if dim % groups or bits % groups:
        return None
    per_group = residual.at_rate(dim // groups, bits // groups)
    return None if per_group is None else {"num_groups": groups, **per_group}


class _GroupedOf(GroupedResidualQuantizer):
    """``num_groups`` groups of one residual class (``residual_class``), built from ``**residual_kwargs``."""

    residual_class: ClassVar[type[ResidualQuantizer]]
    stage_class: ClassVar[type[ResidualQuantizer]]
    """What ``**residual_kwargs`` configure (``vqkit.rates.accepts`` reads it)."""

    def __init__(
        self,
        dim: int,
        num_groups: int = 2,
        *,
        dropout: float = 0.0,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
        **residual_kwargs: Any,
    ) -> None:
        check_positive_int("num_groups", num_groups)
        check_divisible("dim", check_positive_int("dim", dim), "num_groups", num_groups)
        self.num_groups = num_groups
        self.residual_kwargs = dict(residual_kwargs)
        groups = [self.residual_class(dim // num_groups, **residual_kwargs) for _ in range(num_groups)]
        super().__init__(dim, groups, dropout=dropout, layout=layout, allow_nonfinite=allow_nonfinite)

    @classmethod
    def at_rate(cls, dim: int, bits: int) -> dict[str, Any] | None:
        """Two groups of ``R/2`` bits, each by its residual class's rule (``None`` for an odd ``R`` or ``D``)."""
        return _group_rate(cls.residual_class, dim, bits, 2)


@register_quantizer("grouped_residual_vq")
class GroupedResidualVQ(_GroupedOf):
    """Grouped residual VQ (HiFi-Codec GRVQ): ``num_groups`` ``ResidualVQ`` of ``dim / num_groups`` channels;
    ``**residual_kwargs`` are ``ResidualVQ``'s (``codebook_size``, ``num_quantizers``, ``codebook_dim``,
    ``shared_codebook``, ``update``, ``init``, ...)."""

    residual_class = ResidualVQ
    stage_class = ResidualVQ


@register_quantizer("grouped_residual_fsq")
class GroupedResidualFSQ(_GroupedOf):
    """Grouped residual FSQ: ``num_groups`` ``ResidualFSQ`` (``levels``, ``num_quantizers``)."""

    residual_class = ResidualFSQ
    stage_class = ResidualFSQ


@register_quantizer("grouped_residual_lfq")
class GroupedResidualLFQ(_GroupedOf):
    """Grouped residual LFQ: ``num_groups`` ``ResidualLFQ`` (``bits``, ``num_quantizers``, ...)."""

    residual_class = ResidualLFQ
    stage_class = ResidualLFQ
