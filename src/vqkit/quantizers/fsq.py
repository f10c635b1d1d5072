"""Finite scalar quantization: ``FSQ`` and its residual form, and the pieces every scalar quantizer shares.

* ``FSQ``: finite scalar quantization (Mentzer et al., arXiv 2309.15505). No codebook parameters and no losses;
  the gradient passes through the bound (``tanh``) by straight-through rounding. Residual FSQ scales stage ``i``'s
  input by ``(levels - 1) ** i`` so later stages resolve finer residuals (as the FSQ residual form in
  vector-quantize-pytorch and IVQ's R-FSQ baseline).

When ``dim`` differs from the number of scalar channels (``len(levels)``, or an LFQ's ``bits``), learned linear
maps project in and out (``channel_projections``); decoding applies the out projection. ``vqkit.quantizers.scalar``
holds the sign quantizers (LFQ) and re-exports these names.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vqkit._validate import check_int_list, check_positive_int
from vqkit.functional import fsq as fsq_math
from vqkit.quantizers.base import Quantizer, split_rate, straight_through
from vqkit.quantizers.code_table import uses_table
from vqkit.quantizers.composite import ResidualQuantizer
from vqkit.registry import register_quantizer
from vqkit.types import Layout, QuantizerOutput

MAX_INDEX_BITS = 62  # codes are int64 indices


def channel_projections(dim: int, channels: int) -> tuple[nn.Module, nn.Module]:
    if dim == channels:
        return nn.Identity(), nn.Identity()
    return nn.Linear(dim, channels), nn.Linear(channels, dim)


def fsq_levels(bits: int) -> list[int]:
    """Levels with ``prod = 2^bits``: fours, and one eight for an odd rate (a lone two for one bit).

    Two levels are avoided: FSQ's bound maps 0 to 0, which for ``L = 2`` puts the only decision threshold at
    ``z = -atanh(0.999) ≈ -3.8``, far in the tail of the input, so nearly every value lands on one digit.
    """
    if bits == 1:
        return [2]
    return [4] * ((bits - 3) // 2) + [8] if bits % 2 else [4] * (bits // 2)


def equal_stages(bits: int) -> list[int]:
    """Residual scalar stages share their levels: two stages of ``R/2`` bits, or one for an odd rate."""
    parts = split_rate(bits)
    return parts if len(set(parts)) == 1 else [bits]


def projection_parameters(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def straight_through_if_grad(hard: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """``straight_through(hard, surrogate)``, or ``hard`` itself where no gradient is asked for (the same value:
    two passes over the channels saved in every eval forward)."""
    return straight_through(hard, surrogate) if surrogate.requires_grad and torch.is_grad_enabled() else hard


class ChannelQuantizer(Quantizer):
    """A quantizer of the channels ``h = project_in(z)`` (FSQ and the sign quantizers): subclasses implement
    ``_quantize_channels(h)`` and ``_encode_channels(h)``.

    **The NaN/Inf check reads the channels** (``checks_own_channels``): ``forward`` and ``encode`` reach
    ``_quantize_items`` / ``_encode_at``, which check ``h`` instead of the input ``[N, D]``. A NaN or Inf in any
    input entry reaches every channel of a linear map (and ``h`` is the input itself without a projection),
    and the channels are ``d / D`` of the input to read: 1/16 at D=64 and 8 bits, where reading the input took
    15% of an eval forward. Stages inside a composite (``_quantize``, ``_encode``) are not checked again, and a
    masked batch's padded rows are not checked at all (they are ignored). A subclass with its own ``_quantize``
    or ``_encode`` (latent quantization) has its input checked, as every quantizer."""

    checks_own_channels = True
    project_in: nn.Module
    project_out: nn.Module

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_quantize" in vars(cls) or "_encode" in vars(cls):
            cls.checks_own_channels = False

    @abstractmethod
    def _quantize_channels(self, h: torch.Tensor) -> QuantizerOutput:
        """``_quantize`` of the projected channels ``h`` ``[N, d]``."""

    @abstractmethod
    def _encode_channels(self, h: torch.Tensor) -> torch.Tensor:
        """``_encode`` of the projected channels ``h`` ``[N, d]``."""

    @abstractmethod
    def _code_values(self, index: torch.Tensor) -> torch.Tensor:
        """The channel values ``[N, d]`` (compute dtype) of codes ``index`` ``[N]``."""

    def _every_code_value(self, device: torch.device) -> torch.Tensor:
        """``_code_values`` of every code in order, ``[K, d]``: a constant of the settings, which subclasses
        cache (rebuilding it was a dozen small kernels, 10% of an 8-bit eval forward at D = 64)."""
        return self._code_values(torch.arange(self.alphabet_sizes[0], device=device))

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self._values_out(codes[:, 0])

    def _values_out(self, index: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """``project_out`` of the values of codes ``index`` ``[N]`` (``values`` ``[N, d]``: the same, when at
        hand), for ``decode`` and a forward with no gradient to the channels.

        Through a table of every code's output where ``vqkit.quantizers.code_table.uses_table`` says so
        (``N >= 4 K``, ``K <= CODE_TABLE_MAX``); a training forward's straight-through output keeps the matmul
        (its value equal to rounding)."""
        if self._tabled(index.shape[0]):
            return self._table_out(index)
        return self.project_out(self._code_values(index) if values is None else values)

    def _table_out(self, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` ``[N]`` of the table of every code's output (``_values_out`` where ``_tabled``)."""
        return self.project_out(self._every_code_value(index.device)).index_select(0, index)

    def _tabled(self, n: int) -> bool:
        """Whether ``_values_out`` of ``n`` codes gathers from the table (and never reads their values)."""
        return uses_table(self.project_out, self.alphabet_sizes[0], n)

    def _project(self, z: torch.Tensor, *, check: bool, forward: bool) -> torch.Tensor:
        """``project_in(z)``, NaN/Inf-checked when ``check``; ``forward``: for the training forward."""
        h = self.project_in(z)
        if check:
            self.check_finite(h)
        return h

    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        return self._quantize_channels(self._project(z, check=False, forward=True))

    def _encode(self, z: torch.Tensor) -> torch.Tensor:
        return self._encode_channels(self._project(z, check=False, forward=False))

    def _quantize_items(
        self, z: torch.Tensor, lead: torch.Size, rows: torch.Tensor | None = None
    ) -> QuantizerOutput:
        if not self.checks_own_channels:
            return super()._quantize_items(z, lead, rows)
        return self._quantize_channels(self._project(z, check=True, forward=True))

    def _encode_at(self, v: torch.Tensor, lead: torch.Size, num_quantizers: int) -> torch.Tensor:
        if not self.checks_own_channels:
            return super()._encode_at(v, lead, num_quantizers)
        return self._encode_channels(self._project(v, check=True, forward=False))


@register_quantizer("fsq")
class FSQ(ChannelQuantizer):
    """Finite scalar quantization: ``[..., D]`` -> one code ``[..., 1]`` in ``[0, prod(levels))``.

    Args:
        dim: D.
        levels: values per channel, e.g. ``[8, 5, 5, 5]`` (each >= 2).
    """

    _levels: torch.Tensor
    _place: torch.Tensor

    def __init__(
        self,
        dim: int,
        levels: Sequence[int] = (8, 5, 5, 5),
        *,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
    ) -> None:
        super().__init__(dim, layout=layout, allow_nonfinite=allow_nonfinite)
        self.levels = check_int_list("levels", levels, minimum=2)
        if sum(math.log2(v) for v in self.levels) > MAX_INDEX_BITS:
            raise ValueError(f"levels: prod(levels) must stay below 2^{MAX_INDEX_BITS}, got {self.levels}")
        self.register_buffer("_levels", torch.tensor(self.levels, dtype=torch.long), persistent=False)
        self.register_buffer("_place", fsq_math.basis(self._levels), persistent=False)
        self.project_in, self.project_out = channel_projections(dim, len(self.levels))
        self._float_index = math.prod(self.levels) <= fsq_math.EXACT_FLOAT_INDEX
        self._reps = max(1, fsq_math.WIDE // len(self.levels))
        self._apply(lambda t: t)  # builds the cached constants

    @classmethod
    def at_rate(cls, dim: int, bits: int) -> dict[str, Any] | None:
        return {"levels": fsq_levels(bits)}

    @property
    def alphabet_sizes(self) -> tuple[int, ...]:
        return (math.prod(self.levels),)

    @property
    def num_codebook_parameters(self) -> int:
        return projection_parameters(self.project_in, self.project_out)

    def _constants(self, h: torch.Tensor) -> fsq_math.Constants:
        """The hot path's constants for the channels ``h`` ``[..., d]``: float32 ones kept on the module (a plain
        attribute, so a cast never rounds them; ``_apply`` rebuilds them), others made here."""
        # Compiled or exported code takes rows of one vector: no branch on the batch size (and inductor fuses).
        wide = not torch.compiler.is_compiling() and (h.numel() // h.shape[-1]) % self._reps == 0
        reps = self._reps if wide else 1
        cached = self._cached[reps]
        if cached.place.dtype == h.dtype and cached.place.device == h.device:
            return cached
        return fsq_math.constants(self._levels, h, reps, self._place)

    def _apply(self, fn: Any, recurse: bool = True) -> FSQ:
        super()._apply(fn, recurse)
        self._dtype = self.compute_dtype
        like = self._place.new_empty(0, dtype=torch.float32)
        self._cached = {r: fsq_math.constants(self._levels, like, r, self._place) for r in (1, self._reps)}
        return self

    def _index(self, digits: torch.Tensor, c: fsq_math.Constants) -> torch.Tensor:
        """Float digits ``[N, d]`` -> codes ``[N, 1]``."""
        if self._float_index:
            return fsq_math.float_index(digits, c.place)[:, None]
        return fsq_math.digits_to_index(digits, self._levels, self._place)[:, None]

    def _quantize_channels(self, h: torch.Tensor) -> QuantizerOutput:
        c = self._constants(h)
        bounded = None
        if h.requires_grad and torch.is_grad_enabled():
            bounded = fsq_math.bound(h, self._levels, cached=c)
            digits = fsq_math.rounded_digits(bounded, c)
        else:  # no autograd: the bound and the rounding in place, in one buffer
            digits = fsq_math.bounded_digits(h, c)
        codes = self._index(digits, c)
        if bounded is None and self._tabled(codes.shape[0]):
            return QuantizerOutput(quantized=self._table_out(codes[:, 0]), codes=codes, losses={})
        # The values in place, exactly as _decode computes them ((digits - half) / half).
        hard = (
            fsq_math.digit_values_(digits, c)
            if digits.dtype == self._dtype
            else self._code_values(codes[:, 0])
        )
        if bounded is None:
            return QuantizerOutput(quantized=self._values_out(codes[:, 0], hard), codes=codes, losses={})
        hard = straight_through(hard, fsq_math.scaled(bounded, c))
        return QuantizerOutput(quantized=self.project_out(hard), codes=codes, losses={})

    def _encode_channels(self, h: torch.Tensor) -> torch.Tensor:
        c = self._constants(h)
        return self._index(fsq_math.bounded_digits(h, c), c)

    def _code_values(self, index: torch.Tensor) -> torch.Tensor:
        digits = fsq_math.index_to_digits(index, self._levels, self._place)
        return fsq_math.digits_to_values(digits, self._levels, self.compute_dtype)

    def _every_code_value(self, device: torch.device) -> torch.Tensor:
        return fsq_math.every_code_value(tuple(self.levels), self.compute_dtype, device)


@register_quantizer("residual_fsq")
class ResidualFSQ(ResidualQuantizer):
    """Residual FSQ: ``num_quantizers`` FSQ stages of ``levels``; stage ``i`` sees the residual times
    ``(levels - 1) ** i``. Projects ``dim -> len(levels)`` once, around all stages, when they differ.
    ``dropout``: quantizer dropout over the stages (``ResidualQuantizer``)."""

    def __init__(
        self,
        dim: int,
        levels: Sequence[int] = (8, 5, 5, 5),
        num_quantizers: int = 4,
        *,
        dropout: float = 0.0,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
    ) -> None:
        lv = check_int_list("levels", levels, minimum=2)
        n = check_positive_int("num_quantizers", num_quantizers)
        self.levels, self.num_quantizers = lv, n
        scales = torch.stack([(torch.tensor(lv, dtype=torch.float32) - 1) ** -i for i in range(n)])
        stages = [FSQ(len(lv), lv) for _ in range(n)]
        # Each stage's own estimator (through its tanh bound), not one identity step: see ResidualQuantizer.
        super().__init__(
            dim,
            stages,
            stage_scales=scales,
            gradient="stages",
            dropout=dropout,
            project=dim != len(lv),
            layout=layout,
            allow_nonfinite=allow_nonfinite,
        )

    @classmethod
    def at_rate(cls, dim: int, bits: int) -> dict[str, Any] | None:
        parts = equal_stages(bits)
        return {"levels": fsq_levels(parts[0]), "num_quantizers": len(parts)}
