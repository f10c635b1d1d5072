"""Scalar quantizers with implicit codebooks: ``FSQ``, ``LFQ`` and their residual forms.

* ``FSQ``: finite scalar quantization (Mentzer et al., arXiv 2309.15505). No codebook parameters and no losses;
  the gradient passes through the bound (``tanh``) by straight-through rounding. Residual FSQ scales stage ``i``'s
  input by ``(levels - 1) ** i`` so later stages resolve finer residuals (as the FSQ residual form in
  vector-quantize-pytorch and IVQ's R-FSQ baseline).
* ``LFQ``: lookup-free quantization (MAGVIT-v2, arXiv 2310.05737): sign codes, a commitment loss and the entropy
  penalty ``entropy = E[H(q(z))] - diversity * H(E[q(z)])`` (see ``vqkit.functional.lfq``). Residual LFQ halves
  the stage scale at each level. ``SignQuantizer`` holds what LFQ shares with BSQ (``vqkit.quantizers.bsq``):
  the sign channels, their projections and the first-batch data init of the in-projection.

When ``dim`` differs from the number of scalar channels (``len(levels)`` or ``bits``), learned linear maps project
in and out; decoding applies the out projection.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vqkit import distributed
from vqkit._validate import check_bool, check_choice, check_int_list, check_positive_int, check_range
from vqkit.functional import fsq as fsq_math
from vqkit.functional import lfq as lfq_math
from vqkit.quantizers.base import Quantizer, split_rate, straight_through
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


def _equal_stages(bits: int) -> list[int]:
    """Residual scalar stages share their levels: two stages of ``R/2`` bits, or one for an odd rate."""
    parts = split_rate(bits)
    return parts if len(set(parts)) == 1 else [bits]


def _projection_parameters(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


@register_quantizer("fsq")
class FSQ(Quantizer):
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

    @classmethod
    def at_rate(cls, dim: int, bits: int) -> dict[str, Any] | None:
        return {"levels": fsq_levels(bits)}

    @property
    def alphabet_sizes(self) -> tuple[int, ...]:
        return (math.prod(self.levels),)

    @property
    def num_codebook_parameters(self) -> int:
        return _projection_parameters(self.project_in, self.project_out)

    def _digits(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bounded = fsq_math.bound(h, self._levels)
        return bounded, fsq_math.values_to_digits(torch.round(bounded), self._levels)

    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        bounded, digits = self._digits(self.project_in(z))
        hard = fsq_math.digits_to_values(digits, self._levels, self.compute_dtype)
        scaled = bounded / fsq_math.half_width(self._levels).to(bounded)
        out = self.project_out(straight_through(hard, scaled))
        codes = fsq_math.digits_to_index(digits, self._levels, self._place)[:, None]
        return QuantizerOutput(quantized=out, codes=codes, losses={})

    def _encode(self, z: torch.Tensor) -> torch.Tensor:
        return fsq_math.digits_to_index(self._digits(self.project_in(z))[1], self._levels, self._place)[
            :, None
        ]

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        digits = fsq_math.index_to_digits(codes[:, 0], self._levels, self._place)
        return self.project_out(fsq_math.digits_to_values(digits, self._levels, self.compute_dtype))


class SignQuantizer(Quantizer):
    """Shared by ``LFQ`` and ``BSQ``: ``bits`` sign channels behind a learned in-projection, one code ``[..., 1]``
    in ``[0, 2**bits)`` (channel ``i`` is bit ``i``), decoded as ``±code_scale`` through the out-projection.

    **Data init** (``data_init=True``): on the first training batch the in-projection's ``nn.Linear`` is shifted
    and rescaled so that each sign channel has mean 0 and standard deviation ``init_std`` over that batch
    (gathered over ranks), a data-dependent init as ActNorm (Kingma & Dhariwal, Glow, arXiv 1807.03039). Without
    it an encoder whose outputs share an offset larger than their spread gives channels that never change sign:
    the demo's conv VQ-VAE starts with 6 of LFQ's 8 channels constant (docs/quantizers.md, ``lfq``). Nothing to
    do without a projection (``dim == bits``): there the encoder's output is the caller's to normalize.
    """

    initialized: torch.Tensor
    project_in: nn.Module
    project_out: nn.Module
    bits: int
    data_init: bool

    channel_map: ClassVar[type[nn.Module] | None] = None
    """A fixed map after the linear map in, part of ``project_in`` (BSQ's normalization onto the sphere)."""

    def _setup_sign_channels(
        self, bits: int, data_init: bool, losses: tuple[float, float, float, float]
    ) -> None:
        """Check ``bits``, ``data_init`` and the loss options ``(temperature, diversity, beta, entropy_weight)``;
        build the projections and the data-init state."""
        temperature, diversity, beta, entropy_weight = losses
        self.temperature = check_range("temperature", temperature, 0.0, float("inf"), low_open=True)
        self.diversity = check_range("diversity", diversity, 0.0, float("inf"))
        self.beta = check_range("beta", beta, 0.0, float("inf"))
        self.entropy_weight = check_range("entropy_weight", entropy_weight, 0.0, float("inf"))
        self.bits = check_positive_int("bits", bits)
        if self.bits > MAX_INDEX_BITS:
            raise ValueError(f"bits: expected at most {MAX_INDEX_BITS} (int64 codes), got {bits}")
        self.data_init = check_bool("data_init", data_init)
        linear_in, self.project_out = channel_projections(self.dim, self.bits)
        self.project_in = (
            linear_in if self.channel_map is None else nn.Sequential(linear_in, self.channel_map())
        )
        ready = not (self.data_init and self.input_linear() is not None)
        self.register_buffer("initialized", torch.tensor(ready))
        self._known_initialized = ready  # host copy: reading the buffer each step would sync with the device

    @classmethod
    def at_rate(cls, dim: int, bits: int) -> dict[str, Any] | None:
        return {"bits": bits}

    @property
    @abstractmethod
    def code_scale(self) -> float:
        """The magnitude of every code value (``±code_scale``)."""

    @property
    def init_std(self) -> float:
        """Each channel's standard deviation after the data init."""
        return self.code_scale

    def input_linear(self) -> nn.Linear | None:
        """The learned linear map of the in-projection (``None`` when ``dim == bits``)."""
        first = self.project_in[0] if isinstance(self.project_in, nn.Sequential) else self.project_in
        return first if isinstance(first, nn.Linear) else None

    @property
    def alphabet_sizes(self) -> tuple[int, ...]:
        return (2**self.bits,)

    @property
    def num_codebook_parameters(self) -> int:
        return _projection_parameters(self.project_in, self.project_out)

    @property
    def needs_warm_start(self) -> bool:
        if not self._known_initialized:
            self._known_initialized = bool(self.initialized)
        return not self._known_initialized

    @torch.no_grad()
    def warm_start(self, z: torch.Tensor) -> None:
        """The data init on ``z`` ``[N, D]`` (once; call it on every rank: the moments are all-reduced)."""
        linear = self.input_linear()
        if linear is None or not self.needs_warm_start:
            return
        h = linear(z.detach())
        # Two passes (mean, then squared deviations): E[h^2] - E[h]^2 cancels when the offset dwarfs the spread.
        total = torch.cat([h.new_full((1,), float(h.shape[0])), h.sum(0)])
        distributed.all_reduce_sum_(total, self.process_group)
        count, mean = total[0], total[1:] / total[0].clamp(min=1.0)
        squares = distributed.all_reduce_sum_((h - mean).square().sum(0), self.process_group)
        if float(count) < 2:  # no rank had two rows: wait for the next batch
            return
        gain = self.init_std / (squares / (count - 1)).sqrt().clamp(min=1e-6)
        linear.weight.mul_(gain[:, None])
        if linear.bias is not None:
            linear.bias.sub_(mean).mul_(gain)
        self.initialized.fill_(True)
        self._known_initialized = True

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # A state dict saved before the data init existed holds a trained projection: it counts as initialized.
        state_dict.setdefault(prefix + "initialized", torch.tensor(True))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._known_initialized = False

    def _channels(self, z: torch.Tensor) -> torch.Tensor:
        """The sign channels ``[N, bits]`` of ``z`` (after the data init, in training)."""
        if self.training and self.needs_warm_start:
            self.warm_start(z)
        return self.project_in(z)

    def _hard(self, h: torch.Tensor) -> torch.Tensor:
        """``±code_scale`` from the signs of ``h`` directly (the same bits as ``signs_to_index(h)``)."""
        return lfq_math.bits_to_values(h > 0, self.code_scale, self.compute_dtype)

    def _encode(self, z: torch.Tensor) -> torch.Tensor:
        return lfq_math.signs_to_index(self.project_in(z))[:, None]

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        bits = lfq_math.index_to_bits(codes[:, 0], self.bits)
        return self.project_out(lfq_math.bits_to_values(bits, self.code_scale, self.compute_dtype))


@register_quantizer("lfq")
class LFQ(SignQuantizer):
    """Lookup-free quantization: ``[..., D]`` -> one code ``[..., 1]`` in ``[0, 2**bits)``.

    Args:
        dim: D.
        bits: number of binary channels (the rate in bits per vector).
        scale: code values are ``±scale``.
        temperature: of the soft assignment in the entropy penalty.
        diversity: weight of the codebook-entropy term inside ``entropy``.
        entropy_mode: ``"auto"`` (exact up to 16 bits, factorized above), ``"exact"`` or ``"factorized"``.
        beta: weight of ``commitment``; ``entropy_weight``: weight of ``entropy`` (MAGVIT-v2 uses 0.1).
        data_init: standardize the in-projection on the first training batch (``SignQuantizer``; an addition
            to MAGVIT-v2, which assumes a normalization layer before LFQ). Off, LFQ kept 4 of 256 codes in the
            demo's conv VQ-VAE (``make demo``); on, it keeps all of them (docs/quantizers.md).
    """

    def __init__(
        self,
        dim: int,
        bits: int = 12,
        *,
        scale: float = 1.0,
        temperature: float = 0.01,
        diversity: float = 1.0,
        entropy_mode: lfq_math.EntropyMode = "auto",
        beta: float = 0.25,
        entropy_weight: float = 0.1,
        data_init: bool = True,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
    ) -> None:
        super().__init__(dim, layout=layout, allow_nonfinite=allow_nonfinite)
        self.scale = check_range("scale", scale, 0.0, float("inf"), low_open=True)
        self.entropy_mode: lfq_math.EntropyMode = check_choice(  # type: ignore[assignment]
            "entropy_mode", entropy_mode, ("auto", "exact", "factorized")
        )
        self._setup_sign_channels(bits, data_init, (temperature, diversity, beta, entropy_weight))

    @property
    def code_scale(self) -> float:
        return self.scale

    @property
    def loss_weights(self) -> dict[str, float]:
        return {"commitment": self.beta, "entropy": self.entropy_weight}

    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        h = self._channels(z)
        codes = lfq_math.signs_to_index(h)
        hard = self._hard(h)
        losses = {"commitment": F.mse_loss(h, hard)}
        if self.training:
            per_sample, codebook = lfq_math.entropy_terms(
                h, scale=self.scale, temperature=self.temperature, mode=self.entropy_mode
            )
            losses["entropy"] = per_sample - self.diversity * codebook
        out = self.project_out(straight_through(hard, h))
        return QuantizerOutput(quantized=out, codes=codes[:, None], losses=losses)


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
        parts = _equal_stages(bits)
        return {"levels": fsq_levels(parts[0]), "num_quantizers": len(parts)}


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
        parts = _equal_stages(bits)
        return {"bits": parts[0], "num_quantizers": len(parts)}
