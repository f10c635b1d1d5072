"""The quantizer contract shared by every vqkit quantizer.

Subclasses work on flat float32 vectors ``[N, D]`` and implement four things:

* ``alphabet_sizes``: the size of each code's alphabet (one entry per code of a vector);
* ``_quantize(z)``: the training/eval forward on ``[N, D]`` returning a flat ``QuantizerOutput`` whose
  ``quantized`` **value equals** ``_decode(codes)`` exactly (use ``straight_through``);
* ``_encode(z)``: codes ``[N, C]`` without side effects;
* ``_decode(codes)``: ``[N, C] -> [N, D]`` from the effective codebook.

The base class does everything else once: layout conversion (and the ``_adapt`` hook for quantizers that read
neighbouring positions, LooC's interpolation), input validation, float32 compute with autocast off (outputs
return in the input dtype), batch usage metrics, rate accounting and the JSON config.

A leaf of the package: no registry, no other quantizer; saving and loading are ``vqkit.hub``'s mixin and ``vqkit.io``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import MutableMapping
from typing import Any, ClassVar

import torch
from torch import nn

from vqkit._validate import check_choice, check_codes_in_range, check_positive_int
from vqkit.distributed import ProcessGroup
from vqkit.functional.estimators import straight_through
from vqkit.functional.numerics import all_finite, fp32_compute
from vqkit.functional.stats import usage_metrics
from vqkit.hub import PretrainedMixin
from vqkit.quantizers.config import constructor_config
from vqkit.quantizers.masking import masked_forward, real_rows
from vqkit.quantizers.precision import Float32State
from vqkit.types import LAYOUTS, Layout, QuantizerOutput, merge_into

__all__ = ["Quantizer", "SingleCodebookQuantizer", "split_rate", "straight_through"]


def split_rate(bits: int) -> list[int]:
    """Two parts of ``bits`` (larger first), or one when ``bits`` is 1: the levels or groups of a two-part
    quantizer at a given rate."""
    return [bits] if bits < 2 else [bits - bits // 2, bits // 2]


class Quantizer(Float32State, PretrainedMixin, ABC):
    """Base class of every quantizer.

    Args:
        dim: D, the size of each input vector.
        layout: ``"channels_last"`` for ``[..., D]`` input, ``"channels_first"`` for ``[B, D, *spatial]``
            (``[B, D, T]``, ``[B, D, H, W]``).
        allow_nonfinite: skip the NaN/Inf input check (it costs one device sync per call).

    Attributes:
        process_group: the group codebook statistics are all-reduced over; ``None`` is the default group,
            looked up at each call. Set it with ``set_process_group``.

    **Config convention** (scikit-learn's): every constructor parameter is stored on the instance under its
    own name (a ``**name`` parameter as a dict or options dataclass under ``name``), so ``to_config`` reads the
    arguments back from the class's own signature and nothing is captured behind the reader's back. A subclass
    that adds a parameter stores it too; the contract test checks every registered class.
    """

    registry_name: ClassVar[str]
    """Set on the class by ``@register_quantizer`` (absent on unregistered classes, subclasses included)."""

    shared_codes: ClassVar[bool] = False
    """One code per cell of the grid, stored at each of the cell's positions (``multiscale_vq``): the rate counts
    it once per cell, and ``_quantize_items`` / ``_encode_at`` / ``_decode_at`` read the grid."""

    checks_own_channels: ClassVar[bool] = False  # FSQ, LFQ: check_finite on their projected channels instead

    def __init__(self, dim: int, *, layout: Layout = "channels_last", allow_nonfinite: bool = False) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.layout: Layout = check_choice("layout", layout, LAYOUTS)  # type: ignore[assignment]
        self.allow_nonfinite = bool(allow_nonfinite)
        self.process_group: ProcessGroup | None = None

    # ------------------------------------------------------------------ subclass interface
    @property
    @abstractmethod
    def alphabet_sizes(self) -> tuple[int, ...]:
        """Size of each code's alphabet, one entry per code of a vector."""

    @abstractmethod
    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        """``[N, D]`` float32 -> flat output (codes ``[N, C]``); may update codebook state when training."""

    @abstractmethod
    def _encode(self, z: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` float32 -> codes ``[N, C]`` int64, without side effects."""

    @abstractmethod
    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``[N, C]`` int64 -> ``[N, D]`` float32 from the effective codebook."""

    def _adapt(self, z: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        """Layout adapter: the vectors ``_quantize`` / ``_encode`` see, from the flat ``[N, D]`` input at the
        positions ``lead`` (``(B, *spatial)``). The identity for every quantizer that treats positions
        independently; LooC's extrapolation-by-interpolation reads the grid here."""
        return z

    def quantize_codes(self, z: torch.Tensor, codes: torch.Tensor | None) -> QuantizerOutput:
        """The training forward of ``z`` ``[N, D]`` with the codes ``[N, C]`` chosen by a composite's joint (or
        beam) search, whose value is ``_decode(codes)``; ``None`` means the quantizer's own codes
        (``_quantize``). Quantizers whose codes are a function of the input alone accept only ``None``."""
        if codes is not None:
            raise TypeError(f"{type(self).__name__} cannot be given codes: its codes follow from the input")
        return self._quantize(z)

    @property
    def own_gradient_paths(self) -> tuple[str, ...]:
        """What trains only by this quantizer's own output gradient (residual composites refuse such stages)."""
        out = getattr(self, "project_out", None)
        trained = isinstance(out, nn.Module) and any(True for _ in out.parameters())
        return ("its own out projection",) if trained else ()

    @property
    def needs_warm_start(self) -> bool:
        """Whether ``warm_start`` still has work: a codebook waiting for its first batch (``init="kmeans"``)."""
        return False

    def warm_start(self, z: torch.Tensor) -> None:
        """First-batch, data-dependent initialization from ``z`` ``[N, D]`` (k-means of a ``"kmeans"``
        codebook; gathered over ranks, so call it on every rank); nothing once done or for other quantizers."""

    def init_codebook(self, vectors: torch.Tensor) -> None:
        """Initialize the codebook(s) by k-means on ``vectors`` ``[N, D]`` (e.g. a pretrained encoder's outputs:
        the pretrain-then-finetune recipe). Quantizers without a learned codebook raise ``TypeError``."""
        raise TypeError(f"{type(self).__name__} has no codebook to initialize from data")

    @classmethod
    def at_rate(cls, dim: int, bits: int) -> dict[str, Any] | None:
        """Keyword arguments that make this class spend exactly ``bits`` bits per vector at ``dim`` (what
        ``vqkit.rates`` and ``vqkit bench`` use to compare methods at equal rate); ``None`` when it cannot."""
        return None

    @property
    def loss_weights(self) -> dict[str, float]:
        """Configured weight of each loss name (the terms themselves are returned unweighted)."""
        return {}

    @property
    def shares_codebook(self) -> bool:
        """Whether every code position indexes one and the same codebook (LooC; shared-codebook RVQ)."""
        return False

    @property
    def num_codebook_parameters(self) -> int:
        """Number of stored scalars that define the codebook (learned or frozen), projections included."""
        return 0

    def search_cost(self) -> tuple[int, int] | None:
        """``(multiply-adds, candidate code vectors)`` per input vector of an exhaustive nearest-code search,
        summed over code positions (the matmul a search stands for in ``benchmarks/``); ``None`` for an
        implicit codebook (FSQ, LFQ), which has no search."""
        return None

    # ------------------------------------------------------------------ rate accounting
    @property
    def codes_per_vector(self) -> int:
        return len(self.alphabet_sizes)

    @property
    def bits_per_vector(self) -> float:
        """Nominal rate: the sum over codes of log2 of each code's alphabet size."""
        return float(sum(math.log2(k) for k in self.alphabet_sizes))

    # ------------------------------------------------------------------ levels (bitrate choice)
    @property
    def num_levels(self) -> int:
        """Residual levels a code can be cut after (1 for every quantizer that is not residual)."""
        return 1

    def level_widths(self) -> tuple[int, ...]:
        """Code columns of the first ``k`` levels, for ``k = 1 .. num_levels``: the prefixes ``decode`` takes."""
        return (self.codes_per_vector,)

    def bits_per_vector_at(self, num_quantizers: int) -> float:
        """Nominal rate of the codes of the first ``num_quantizers`` levels (``encode(x, num_quantizers=k)``)."""
        width = self.level_widths()[self.check_levels(num_quantizers) - 1]
        return float(sum(math.log2(k) for k in self.alphabet_sizes[:width]))

    def check_levels(self, num_quantizers: int, name: str = "num_quantizers") -> int:
        """``num_quantizers`` if it is a level count of this quantizer (1 to ``num_levels``); errors call the
        argument ``name`` (a CLI passes its flag)."""
        if isinstance(num_quantizers, bool) or not isinstance(num_quantizers, int):
            raise TypeError(f"{name}: expected an int, got {type(num_quantizers).__name__}")
        if not 1 <= num_quantizers <= self.num_levels:
            raise ValueError(
                f"{name}: expected 1 to {self.num_levels} (the levels of {type(self).__name__}), "
                f"got {num_quantizers}"
            )
        return num_quantizers

    def _encode_levels(self, z: torch.Tensor, num_quantizers: int) -> torch.Tensor:
        """Codes of the first ``num_quantizers`` levels ``[N, level_widths()[k - 1]]``; residual quantizers
        override it (one level: the full codes)."""
        return self._encode(z)

    def _encode_at(self, v: torch.Tensor, lead: torch.Size, num_quantizers: int) -> torch.Tensor:
        """``encode``'s codes of the first ``num_quantizers`` levels of the rows ``v`` at the positions ``lead``."""
        k = num_quantizers
        return self._encode(v) if k == self.num_levels else self._encode_levels(v, k)

    def _decode_at(self, codes: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        """``decode``'s vectors of ``codes`` ``[N, c]`` at the positions ``lead`` (a grid quantizer reads it)."""
        return self._decode(codes)

    def _encode_beam(self, z: torch.Tensor, num_quantizers: int, beam_size: int) -> torch.Tensor:
        """Beam-search codes; only residual quantizers have levels to search jointly."""
        raise TypeError(
            f"beam_size: {type(self).__name__} is not a residual quantizer; beam search needs levels"
        )

    def _quantize_items(
        self, z: torch.Tensor, lead: torch.Size, rows: torch.Tensor | None = None
    ) -> QuantizerOutput:
        """The training forward knowing the positions' shape ``lead`` (and, for a masked batch, which ``rows`` of
        them ``z`` holds): quantizer dropout draws one level count per item. The default is ``_quantize``."""
        return self._quantize(z)

    @property
    def codebook_label(self) -> str:
        """The codebook size as the papers write it: codes per vector × alphabet, e.g. ``"1×4096"``, ``"4×64"``
        (``"64+128"`` when the alphabets differ). The constructor argument ``codebook_size`` stays an int."""
        sizes = self.alphabet_sizes
        if len(set(sizes)) == 1:
            return f"{len(sizes)}×{sizes[0]}"
        return "+".join(str(s) for s in sizes)

    # ------------------------------------------------------------------ public API
    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None) -> QuantizerOutput:
        """Quantize ``x`` (``[..., D]`` or ``[B, D, *S]`` by ``layout``). See ``QuantizerOutput``.

        ``mask``: a bool tensor of ``x``'s positions (``[...]`` / ``[B, *S]``), True for real ones; padded ones
        add nothing to losses, statistics or metrics (``vqkit.quantizers.masking``)."""
        z, lead = self.flatten_vectors(x)
        rows = None if mask is None else real_rows(mask.to(z.device), lead)
        with fp32_compute(z.device):
            v = self._adapt(z.to(self.compute_dtype), lead)
            flat = self._quantize_items(v, lead) if rows is None else masked_forward(self, v, lead, *rows)
        return self._output(flat, x.dtype, lead, None if rows is None else rows[0])

    @torch.no_grad()
    def encode(
        self, x: torch.Tensor, *, num_quantizers: int | None = None, beam_size: int = 1
    ) -> torch.Tensor:
        """Codes of ``x``: ``[..., C]`` int64 (``[B, *S, C]`` for channels-first input). No state changes.

        ``num_quantizers=k`` keeps the first ``k`` residual levels (bitrate choice; ``bits_per_vector_at(k)``):
        ``[..., level_widths()[k - 1]]``, which ``decode`` takes as they are. ``beam_size > 1``: residual
        quantizers search with a beam (``vqkit.quantizers.beam``)."""
        k = self.num_levels if num_quantizers is None else self.check_levels(num_quantizers)
        z, lead = self.flatten_vectors(x)
        with fp32_compute(z.device):
            v = self._adapt(z.to(self.compute_dtype), lead)
            codes = self._encode_beam(v, k, beam_size) if beam_size != 1 else self._encode_at(v, lead, k)
        return codes.reshape(*lead, codes.shape[-1])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Vectors for ``codes`` ``[..., C]``: ``[..., D]`` (``[B, D, *S]`` for channels-first), float32."""
        if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point or codes.dtype == torch.bool:
            got = codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise TypeError(f"codes: expected an integer tensor, got {got}")
        widths = self.level_widths()
        c = codes.shape[-1] if codes.dim() >= 1 else -1
        if c not in widths:
            expected = f"[..., {widths[-1]}] (codes_per_vector={widths[-1]})"
            if len(widths) > 1:
                expected += f", or the first levels' codes [..., w] for w in {list(widths[:-1])}"
            raise ValueError(f"codes: expected shape {expected}, got {tuple(codes.shape)}")
        flat = codes.reshape(-1, c).long()
        check_codes_in_range(flat, self.alphabet_sizes[:c])
        with fp32_compute(flat.device):
            out = self._decode_at(flat, codes.shape[:-1])
        return self._unflatten(out, codes.shape[:-1])

    def set_process_group(self, group: ProcessGroup | None) -> None:
        """Sync codebook statistics over ``group`` (``None``: the default group, looked up at call time)."""
        for module in self.modules():
            if isinstance(module, Quantizer) or hasattr(module, "process_group"):
                setattr(module, "process_group", group)  # noqa: B010  (typed as Module attribute)

    # ------------------------------------------------------------------ config
    def to_config(self) -> dict[str, Any]:
        """``{"name": registry name, "kwargs": constructor arguments}`` (JSON types only);
        ``vqkit.quantizer_from_config`` rebuilds it.

        Raises:
            TypeError: the class is not registered itself (a subclass does not inherit its parent's name), or an
                argument is not stored under its name, or is not a JSON value (a composite of given modules).
        """
        return constructor_config(self)

    # ------------------------------------------------------------------ helpers
    def flatten_vectors(self, x: torch.Tensor, name: str = "x") -> tuple[torch.Tensor, torch.Size]:
        """Validate ``x`` (type, layout, size ``dim``, finite) and flatten it: ``([N, D], lead)`` where ``lead``
        is the shape of the vector positions (``(B, *S)`` for channels-first input)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if not x.dtype.is_floating_point:
            raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
        shape = tuple(x.shape)
        if self.layout == "channels_first":
            if x.dim() < 2:
                raise ValueError(f"{name}: layout='channels_first' expects [B, D, *spatial], got {shape}")
            x = x.movedim(1, -1)
        if x.dim() < 1 or x.shape[-1] != self.dim:
            axis = "dim 1" if self.layout == "channels_first" else "the last dim"
            raise ValueError(
                f"{name}: expected size dim={self.dim} on {axis} (layout={self.layout!r}), got shape {shape}"
            )
        if not self.checks_own_channels:
            self.check_finite(x, name)
        return x.reshape(-1, self.dim), x.shape[:-1]

    def check_finite(self, x: torch.Tensor, name: str = "x") -> None:
        """Refuse NaN or Inf in ``x`` unless ``allow_nonfinite``: a host read, so eager mode only (no graph break)."""
        if not self.allow_nonfinite and x.numel() and not torch.compiler.is_compiling() and not all_finite(x):
            raise ValueError(f"{name}: contains NaN or Inf (pass allow_nonfinite=True to skip this check)")

    def _output(
        self, flat: QuantizerOutput, dtype: torch.dtype, lead: torch.Size, real: torch.Tensor | None = None
    ) -> QuantizerOutput:
        """The public result from a flat one: input dtype and shape, usage metrics (of the ``real`` rows when
        a mask is given; computed when first read, see ``LazyScalars``), loss weights."""
        codes = flat.codes if real is None else flat.codes.index_select(0, real)
        metrics, positions = self._usage_metrics(codes)
        merge_into(metrics, flat.metrics)  # the quantizer's own deferred entries stay deferred
        merge_into(positions, flat.position_metrics)
        return QuantizerOutput(
            quantized=self._unflatten(flat.quantized.to(dtype), lead),
            codes=flat.codes.reshape(*lead, self.codes_per_vector),
            losses=flat.losses,
            metrics=metrics,
            loss_weights=self.loss_weights,
            position_metrics=positions,
        )

    def _unflatten(self, flat: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        out = flat.reshape(*lead, self.dim)
        return out.movedim(-1, 1) if self.layout == "channels_first" else out

    def _usage_metrics(
        self, codes: torch.Tensor
    ) -> tuple[MutableMapping[str, torch.Tensor], MutableMapping[str, torch.Tensor]]:
        """``(scalars, per position)`` of ``codes`` ``[N, C]``: ``functional.stats.usage_metrics``."""
        return usage_metrics(codes, self.alphabet_sizes)


class SingleCodebookQuantizer(Quantizer):
    """A quantizer with one code per vector from ``codebook_size`` codes and the VQ-VAE loss pair
    (``codebook`` weight 1, ``commitment`` weight ``beta``). Subclasses set ``codebook_size`` and ``beta``."""

    codebook_size: int
    beta: float

    @classmethod
    def at_rate(cls, dim: int, bits: int) -> dict[str, Any] | None:
        """One codebook of ``2 ** bits`` codes."""
        return {"codebook_size": 2**bits}

    @property
    def alphabet_sizes(self) -> tuple[int, ...]:
        return (self.codebook_size,)

    @property
    def loss_weights(self) -> dict[str, float]:
        return {"commitment": self.beta, "codebook": 1.0}
