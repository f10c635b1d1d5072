"""``ResidualLFQ``: residual lookup-free quantization, ``num_quantizers`` LFQ stages whose scale halves at each
level (``vqkit.quantizers.scalar.LFQ``; the residual form of vector-quantize-pytorch's ``ResidualLFQ``).

The levels run in one pass on the projected channels (values taken from the signs, the levels' losses in one
batched pass). An eval forward or ``decode`` of ``N >= 4K`` joint codes (``K = 2^(bits x levels) <= 4096``, and
``D >= 128``) gathers rows of a table of every joint code's output (``vqkit.quantizers.code_table``) instead of
the out-projection's narrow matmul: the table's rows are the levels' kept value grids (``every_code_value``)
summed by broadcasting, in level order, the same floats as the forward's sum.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import torch

from vqkit._validate import check_positive_int
from vqkit.quantizers.code_table import uses_table
from vqkit.quantizers.composite import ResidualQuantizer
from vqkit.quantizers.fsq import equal_stages, straight_through_if_grad
from vqkit.quantizers.scalar import LFQ
from vqkit.registry import register_quantizer
from vqkit.types import Layout, QuantizerOutput, terms_unless_grad

__all__ = ["ResidualLFQ"]

TABLE_MIN_DIM = 128
"""The narrowest output decoded through the joint table (``ResidualLFQ._tabled``)."""


@register_quantizer("residual_lfq")
class ResidualLFQ(ResidualQuantizer):
    """Residual LFQ: ``num_quantizers`` LFQ stages of ``bits``; stage ``i`` codes are ``±2^-i``.

    Args:
        dim: D.
        bits: sign channels per stage.
        num_quantizers: stages.
        dropout: quantizer dropout over the stages (``ResidualQuantizer``).
        **lfq_kwargs: every stage's ``LFQ`` options (``temperature``, ``diversity``, ``beta``,
            ``entropy_weight``, ``entropy_mode``), as ``residual_vq`` hands its options to each ``VQ``.
    """

    stage_class: ClassVar[type[LFQ]] = LFQ

    def __init__(
        self,
        dim: int,
        bits: int = 6,
        num_quantizers: int = 4,
        *,
        dropout: float = 0.0,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
        **lfq_kwargs: Any,
    ) -> None:
        b = check_positive_int("bits", bits)
        n = check_positive_int("num_quantizers", num_quantizers)
        stages = [LFQ(b, b, **lfq_kwargs) for _ in range(n)]
        self.bits, self.num_quantizers, self.lfq_kwargs = b, n, dict(lfq_kwargs)
        scales = torch.tensor([2.0**-i for i in range(n)])
        super().__init__(
            dim,
            stages,
            stage_scales=scales,
            project=dim != b,
            dropout=dropout,
            layout=layout,
            allow_nonfinite=allow_nonfinite,
        )

    @classmethod
    def at_rate(cls, dim: int, bits: int) -> dict[str, Any] | None:
        parts = equal_stages(bits)
        return {"bits": parts[0], "num_quantizers": len(parts)}

    def _levels_of(
        self, h: torch.Tensor, num_levels: int | None = None
    ) -> Iterator[tuple[LFQ, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(stage, its input, codes, values ±1, its share of the sum)`` of the first ``num_levels`` levels of
        the greedy search: ``ResidualQuantizer``'s loop with each level's values taken from its signs (not decoded
        back from its codes) and no stage output built but the values."""
        residual, stages = h, self.stage_list[: num_levels or self.num_levels]
        for i, (stage, scale) in enumerate(zip(stages, self.stage_scales, strict=False)):
            assert isinstance(stage, LFQ)
            x = self._stage_in(residual, scale)
            codes, hard = stage._signs(x)
            q = self._stage_out(hard, scale)
            if i < len(stages) - 1:  # the last residual is never read
                residual = residual - q
            yield stage, x, codes, hard, q

    @torch.no_grad()
    def search(self, h: torch.Tensor, num_levels: int | None = None) -> list[torch.Tensor]:
        return [codes for _, _, codes, _, _ in self._levels_of(h, num_levels)]

    # The NaN/Inf check reads the projected channels, as ChannelQuantizer's (the input under quantizer dropout).
    checks_own_channels = True

    def _checked(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project_in(z)
        self.check_finite(h)
        return h

    def _quantize_items(
        self, z: torch.Tensor, lead: torch.Size, rows: torch.Tensor | None = None
    ) -> QuantizerOutput:
        if self.training and self.dropout > 0:
            self.check_finite(z)
            return super()._quantize_items(z, lead, rows)
        return self._quantize_channels(self._checked(z))

    def _encode_at(self, v: torch.Tensor, lead: torch.Size, num_quantizers: int) -> torch.Tensor:
        return torch.cat(self.search(self._checked(v), num_quantizers), dim=1)

    def _encode_beam(self, z: torch.Tensor, num_quantizers: int, beam_size: int) -> torch.Tensor:
        self.check_finite(z)
        return super()._encode_beam(z, num_quantizers, beam_size)

    def _quantize_levels(self, z: torch.Tensor, levels: torch.Tensor | None) -> QuantizerOutput:
        if levels is not None:  # quantizer dropout: the general loop
            return super()._quantize_levels(z, levels)
        return self._quantize_channels(self.project_in(z))

    def _quantize_channels(self, h: torch.Tensor) -> QuantizerOutput:
        """The training forward of the projected channels ``h``: every level from ``_levels_of``, and the levels'
        losses in one pass when their settings agree (as built: ``LFQ._losses`` of ``[levels, N, bits]``)."""
        total, codes, inputs, values = None, [], [], []
        for _, x, level_codes, hard, q in self._levels_of(h):
            codes.append(level_codes)
            inputs.append(x)
            values.append(hard)
            total = q if total is None else total + q
        assert total is not None
        codes_all = torch.cat(codes, dim=1)
        needs_grad = torch.is_grad_enabled() and h.requires_grad
        if not needs_grad and self._tabled(codes_all):
            quantized = self._table_out(codes_all)  # decode's path: the same floats
        else:
            quantized = self.project_out(straight_through_if_grad(total, h))
        stages = [stage for stage in self.stage_list if isinstance(stage, LFQ)]
        training = self.training

        def terms() -> dict[str, torch.Tensor]:
            if len({stage._loss_settings for stage in stages}) == 1:
                return stages[0]._loss_terms(torch.stack(inputs), torch.stack(values), training)
            parts = [s._loss_terms(x, v, training) for s, x, v in zip(stages, inputs, values, strict=True)]
            return {name: torch.stack([part[name] for part in parts]).mean() for name in parts[0]}

        losses = terms_unless_grad(needs_grad, terms, stages[0]._loss_names)
        return QuantizerOutput(quantized=quantized, codes=codes_all, losses=losses)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self._table_out(codes) if self._tabled(codes) else super()._decode(codes)

    def _tabled(self, codes: torch.Tensor) -> bool:
        """Whether the codes ``[N, levels]`` (all levels or a prefix) decode through the joint table: the
        code-table rule, and an output at least ``TABLE_MIN_DIM`` wide (the table's build, a few small kernels
        per level, outweighs the narrower matmul's cost: at D = 64, 8 bits the eval forward took 1.04 times as
        long through the table, at D = 256 0.90; grouped residual LFQ's 16-wide groups 1.2)."""
        k = 2 ** (self.bits * codes.shape[1])
        return self.dim >= TABLE_MIN_DIM and uses_table(self.project_out, k, codes.shape[0])

    def _table_out(self, codes: torch.Tensor) -> torch.Tensor:
        """``project_out`` of the summed values of ``codes`` ``[N, l]``, rows gathered from the table of every
        joint code of the first ``l`` levels (level 0 the least significant ``bits``-digit)."""
        levels, width = codes.shape[1], 2**self.bits
        total: torch.Tensor | None = None
        for i, (stage, scale) in enumerate(zip(self.stage_list[:levels], self.stage_scales, strict=False)):
            assert isinstance(stage, LFQ)
            shape = [1] * levels + [self.bits]
            shape[levels - 1 - i] = width  # level i's code is digit i of the row
            part = self._stage_out(stage._every_code_value(codes.device), scale).view(shape)
            total = part if total is None else total + part  # in level order, as the forward sums
        assert total is not None
        index = codes[:, 0]
        for i in range(1, levels):
            index = torch.add(index, codes[:, i], alpha=width**i)
        return self.project_out(total.reshape(-1, self.bits)).index_select(0, index)
