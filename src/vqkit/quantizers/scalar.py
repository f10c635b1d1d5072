"""Sign quantizers with implicit codebooks: ``LFQ`` and ``SignQuantizer`` (shared with BSQ).

* ``LFQ``: lookup-free quantization (MAGVIT-v2, arXiv 2310.05737): sign codes, a commitment loss and the entropy
  penalty ``entropy = E[H(q(z))] - diversity * H(E[q(z)])`` (see ``vqkit.functional.lfq``). Residual LFQ is
  ``vqkit.quantizers.residual_lfq``. ``SignQuantizer`` holds what LFQ shares with BSQ (``vqkit.quantizers.bsq``):
  the sign channels, their projections and the first-batch data init of the in-projection.

FSQ and residual FSQ live in ``vqkit.quantizers.fsq`` (with the helpers the scalar quantizers share) and are
re-exported here.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import MutableMapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vqkit import distributed
from vqkit._validate import check_bool, check_choice, check_positive_int, check_range
from vqkit.functional import lfq as lfq_math
from vqkit.quantizers.base import straight_through
from vqkit.quantizers.fsq import (
    FSQ,
    MAX_INDEX_BITS,
    ChannelQuantizer,
    ResidualFSQ,
    channel_projections,
    fsq_levels,
    projection_parameters,
    straight_through_if_grad,
)
from vqkit.registry import register_quantizer
from vqkit.types import Layout, QuantizerOutput, terms_unless_grad

__all__ = [
    "FSQ",
    "LFQ",
    "MAX_INDEX_BITS",
    "ResidualFSQ",
    "SignQuantizer",
    "channel_projections",
    "fsq_levels",
    "straight_through_if_grad",
]


class SignQuantizer(ChannelQuantizer):
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
        # Index weights in the compute dtype: a plain attribute (a buffer would change compute_dtype), _apply's.
        self._weights = lfq_math.bit_weights(self.bits, dtype=self.compute_dtype)
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
        return projection_parameters(self.project_in, self.project_out)

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

    def _apply(self, fn: Any, recurse: bool = True) -> SignQuantizer:
        super()._apply(fn, recurse)
        self._weights = lfq_math.bit_weights(self.bits, self.initialized.device, self.compute_dtype)
        return self

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # A state dict saved before the data init existed holds a trained projection: it counts as initialized.
        state_dict.setdefault(prefix + "initialized", torch.tensor(True))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._known_initialized = False

    def _project(self, z: torch.Tensor, *, check: bool, forward: bool) -> torch.Tensor:
        """The sign channels ``[N, bits]`` of ``z``, after the data init in a training forward (on the checked
        input: the init reads it before the projection does)."""
        if forward and self.training and self.needs_warm_start:
            if check:
                self.check_finite(z)
            self.warm_start(z)
        return super()._project(z, check=check, forward=forward)

    def _signs(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes ``[N, 1]`` and values ``±code_scale`` ``[N, bits]`` (of the compute dtype: ``_weights``'s) of the
        signs of ``h`` (``lfq.sign_codes``)."""
        weights = self._weights
        index, hard = lfq_math.sign_codes(
            h, self.code_scale, weights.dtype, weights if weights.device == h.device else None
        )
        return index[:, None], hard

    def _encode_channels(self, h: torch.Tensor) -> torch.Tensor:
        return self._signs(h)[0]

    def _code_values(self, index: torch.Tensor) -> torch.Tensor:
        bits = lfq_math.index_to_bits(index, self.bits)
        return lfq_math.bits_to_values(bits, self.code_scale, self.compute_dtype)

    def _every_code_value(self, device: torch.device) -> torch.Tensor:
        return lfq_math.every_code_value(self.bits, self.code_scale, self.compute_dtype, device)

    def _values_out_if_no_grad(
        self, codes: torch.Tensor, hard: torch.Tensor, h: torch.Tensor
    ) -> torch.Tensor:
        """The output of codes ``[N, 1]`` with values ``hard`` of channels ``h``: straight through the
        out-projection when ``h`` takes a gradient, else ``_values_out`` (the same path as ``decode``)."""
        if h.requires_grad and torch.is_grad_enabled():
            return self.project_out(straight_through(hard, h))
        return self._values_out(codes[:, 0], hard)


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

    def _losses(self, h: torch.Tensor, hard: torch.Tensor) -> MutableMapping[str, torch.Tensor]:
        """``commitment`` of the channels ``h`` ``[N, bits]`` to their values ``hard``; ``entropy`` in training.
        ``[G, N, bits]``: ``G`` codes with these settings at once (residual levels), each term their mean.
        Deferred to the first read without a gradient (``terms_unless_grad``)."""
        training = self.training
        # Without a projection ``h`` is a view of the caller's input, which may change before a deferred read.
        eager = (torch.is_grad_enabled() and h.requires_grad) or self.input_linear() is None
        return terms_unless_grad(eager, lambda: self._loss_terms(h, hard, training), self._loss_names)

    @property
    def _loss_names(self) -> tuple[str, ...]:
        return ("commitment", "entropy") if self.training else ("commitment",)

    def _loss_terms(self, h: torch.Tensor, hard: torch.Tensor, training: bool) -> dict[str, torch.Tensor]:
        losses = {"commitment": F.mse_loss(h, hard)}
        if training:
            per_sample, codebook = lfq_math.entropy_terms(
                h, scale=self.scale, temperature=self.temperature, mode=self.entropy_mode
            )
            entropy = per_sample - self.diversity * codebook
            losses["entropy"] = entropy if h.dim() == 2 else entropy.mean()
        return losses

    @property
    def _loss_settings(self) -> tuple[Any, ...]:
        return self.training, self.scale, self.temperature, self.diversity, self.entropy_mode

    def _quantize_channels(self, h: torch.Tensor) -> QuantizerOutput:
        codes, hard = self._signs(h)
        out = self._values_out_if_no_grad(codes, hard, h)
        return QuantizerOutput(quantized=out, codes=codes, losses=self._losses(h, hard))
