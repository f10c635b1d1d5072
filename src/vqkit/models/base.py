"""The tokenizer contract: an encoder, any registered quantizer, a decoder, and their reconstruction losses.

``Tokenizer`` is the base of every model in ``vqkit.models``. A subclass builds ``encoder`` (input ->
``[B, D, *latent]`` or ``[B, D]``) and ``decoder`` (the reverse), names its reconstruction terms and their
default weights, and says how an input item maps to the latent grid. The base class does the rest once:
the quantizer from the registry (``dim`` and ``layout`` filled in by the model), ``forward`` / ``encode`` /
``decode`` with an exact round trip, ``forward_unquantized`` (the pretrain stage of pretrain-then-finetune),
``embed`` (the encoder output, for k-means init and plots), rate accounting and the JSON config.

Models are registered by name (``register_model``) and built from a plain dict by ``build_model``; the dict is
what ``to_config`` returns and what ``save_tokenizer`` writes into ``config.json``.

Axis legend: B batch, D latent dimension (``latent_dim``), C codes per latent vector
(``quantizer.codes_per_vector``), ``*latent`` the latent grid (``(h, w)`` images, ``(frames,)`` audio,
``()`` vectors).
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

import vqkit.quantizers  # noqa: F401  (registers the quantizers)
from vqkit._validate import check_nonnegative_number, check_positive_int
from vqkit.hub import PretrainedMixin
from vqkit.quantizers.base import Quantizer
from vqkit.registry import create_quantizer, list_quantizers, quantizer_class
from vqkit.types import Layout, QuantizerOutput, weighted_sum

Modality = Literal["image", "audio", "vector"]

QuantizerSpec = Mapping[str, Any] | str
"""``{"name": registry name, "kwargs": {...}}`` (``kwargs`` optional), or just the registry name."""


@dataclass
class TokenizerOutput:
    """What ``Tokenizer.forward`` returns.

    Attributes:
        reconstruction: ``x_hat``, the input's shape.
        quantizer: the quantizer's output on the latent (``codes`` ``[B, *latent, C]``, its own unweighted
            losses and weights, usage metrics). After ``forward_unquantized`` it is the identity: ``quantized``
            is the encoder output, ``codes`` has ``C = 0``, no losses and no metrics.
        losses: the model's reconstruction terms, **unweighted** (e.g. ``mse``; audio ``l1``, ``stft``, ``mel``).
        loss_weights: the configured weight of each reconstruction term.
        latent: the encoder output the quantizer saw (``embed(x)``, ``[B, D, *latent]`` or ``[B, D]``), so
            diagnostics of the embeddings need no second encoder pass.
    """

    reconstruction: torch.Tensor
    quantizer: QuantizerOutput
    losses: dict[str, torch.Tensor]
    loss_weights: dict[str, float]
    latent: torch.Tensor | None = None

    @property
    def codes(self) -> torch.Tensor:
        """``quantizer.codes``: ``[B, *latent, C]`` int64."""
        return self.quantizer.codes

    @property
    def reconstruction_loss(self) -> torch.Tensor:
        """Sum of ``loss_weights[name] * losses[name]`` (weight 1 for a name without one)."""
        return weighted_sum(self.losses, self.loss_weights, like=self.reconstruction)

    @property
    def loss(self) -> torch.Tensor:
        """The training objective: weighted reconstruction terms plus ``quantizer.loss`` (its weighted terms)."""
        return self.reconstruction_loss + self.quantizer.loss


class Tokenizer(nn.Module, PretrainedMixin, ABC):
    """Base class of the tokenizer models: ``encoder -> quantizer -> decoder``.

    Args:
        quantizer: ``{"name": ..., "kwargs": {...}}`` for ``vqkit.create_quantizer``; the model fills in
            ``dim=latent_dim`` and ``layout`` (and ``spatial_dims`` for quantizers that take it). Giving one of
            them with a different value is an error.
        latent_dim: D, the encoder's output channels and the quantizer's ``dim``.
        loss_weights: weights of the reconstruction terms, merged over the model's defaults; a term whose
            weight is 0 is not computed.

    Subclasses set ``encoder`` and ``decoder`` and implement ``_check_input``, ``latent_shape``,
    ``reconstruction_losses`` and ``_arch_config``; ``_prepare`` / ``_finish`` adjust the input before the
    encoder and the decoder output (e.g. padding and cropping audio).
    """

    registry_name: ClassVar[str] = ""
    modality: ClassVar[Modality]
    layout: ClassVar[Layout] = "channels_first"
    default_loss_weights: ClassVar[Mapping[str, float]] = MappingProxyType({})
    latent_rank: ClassVar[int] = 0
    """Number of latent grid axes: 2 images, 1 audio, 0 vectors."""

    encoder: nn.Module
    decoder: nn.Module
    quantizer: Quantizer

    def __init__(
        self,
        *,
        quantizer: QuantizerSpec,
        latent_dim: int,
        loss_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        filled: dict[str, Any] = {"dim": self.latent_dim, "layout": self.layout}
        if self.latent_rank:
            filled["spatial_dims"] = self.latent_rank
        self.quantizer, self._quantizer_config = quantizer_for_model(quantizer, filled)
        self.loss_weights = _resolve_weights(loss_weights, self.default_loss_weights)

    # ------------------------------------------------------------------ subclass interface
    @abstractmethod
    def _check_input(self, x: torch.Tensor) -> None:
        """Raise ``TypeError`` / ``ValueError`` naming ``x`` if it is not a valid input batch."""

    @abstractmethod
    def latent_shape(self, item_shape: Sequence[int]) -> tuple[int, ...]:
        """The latent grid (the codes' spatial shape, without B and C) of one input item of ``item_shape``."""

    @abstractmethod
    def reconstruction_losses(self, x_hat: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The unweighted reconstruction terms whose configured weight is positive."""

    @abstractmethod
    def _arch_config(self) -> dict[str, Any]:
        """The constructor arguments other than ``quantizer`` and ``loss_weights``, as JSON types."""

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's input for a validated batch ``x`` (default: ``x`` itself)."""
        return x

    def _finish(self, y: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        """The reconstruction from the decoder output ``y``; ``x`` is the input when there is one."""
        return y

    # ------------------------------------------------------------------ public API
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder output before quantization: ``[B, D, *latent]`` (``[B, D]`` for vector models).

        It is in the quantizer's layout, so ``vqkit.kmeans_init_from_encoder(model.quantizer, model.embed,
        batches)`` initializes the codebook from a pretrained encoder.
        """
        self._check_input(x)
        z: torch.Tensor = self.encoder(self._prepare(x))
        return z

    def forward(
        self, x: torch.Tensor, *, quantize: bool = True, lengths: torch.Tensor | None = None
    ) -> TokenizerOutput:
        """Encode, quantize, decode; the reconstruction terms are computed against ``x``.

        ``quantize=False`` is ``forward_unquantized(x)``; through ``forward`` it also runs under a
        ``DistributedDataParallel`` wrapper (``ddp(x, quantize=False)``), whose gradient sync hooks ``forward``.
        ``lengths`` ``[B]`` (audio models): each item's real length in samples in a zero-padded batch; latent
        frames past it are masked out of the quantizer (``Quantizer.forward(mask=)``) and samples past it are
        zeroed in both ``x`` and the reconstruction before the reconstruction terms.
        """
        if not quantize:
            return self.forward_unquantized(x)
        z = self.embed(x)
        mask = None if lengths is None else self.latent_mask(lengths, z)
        quantized = self.quantizer(z, mask=mask)
        x_hat = self._finish(self.decoder(quantized.quantized.contiguous()), x)
        target, recon = (x, x_hat) if lengths is None else self._zero_padding(x, x_hat, lengths)
        return TokenizerOutput(
            x_hat, quantized, self.reconstruction_losses(recon, target), dict(self.loss_weights), latent=z
        )

    def latent_mask(self, lengths: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """The quantizer's mask (``[B, *latent]``, True = real) for items of ``lengths``; audio models only."""
        raise TypeError(
            f"lengths: {type(self).__name__} is a {self.modality} model; only audio models take lengths"
        )

    def _zero_padding(
        self, x: torch.Tensor, x_hat: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keep = torch.arange(x.shape[-1], device=x.device) < lengths.to(x.device)[:, None]  # [B, T]
        keep = keep.reshape(x.shape[0], *([1] * (x.dim() - 2)), x.shape[-1]).to(x.dtype)
        return x * keep, x_hat * keep

    def forward_unquantized(self, x: torch.Tensor) -> TokenizerOutput:
        """Encoder -> decoder with the quantizer skipped (the pretrain stage of pretrain-then-finetune).

        ``quantizer`` in the result is the identity: ``quantized`` is the encoder output, ``codes`` is empty
        (``[B, *latent, 0]``), no losses, no metrics; ``loss`` is then the weighted reconstruction terms.
        """
        z = self.embed(x)
        x_hat = self._finish(self.decoder(z), x)
        lead = (z.shape[0], *z.shape[2:]) if self.layout == "channels_first" else z.shape[:-1]
        identity = QuantizerOutput(
            quantized=z, codes=torch.empty((*lead, 0), dtype=torch.long, device=z.device)
        )
        return TokenizerOutput(
            x_hat, identity, self.reconstruction_losses(x_hat, x), dict(self.loss_weights), latent=z
        )

    @torch.no_grad()
    def forward_levels(self, x: torch.Tensor, num_quantizers: int) -> TokenizerOutput:
        """The reconstruction from the first ``num_quantizers`` residual levels: ``decode(encode(x,
        num_quantizers=k))`` with its reconstruction terms (no gradient; the quantizer's losses are not
        computed), for evaluating each rate of a model trained with quantizer dropout."""
        z = self.embed(x)
        codes = self.quantizer.encode(z, num_quantizers=num_quantizers)
        quantized = QuantizerOutput(quantized=self.quantizer.decode(codes).to(z.dtype), codes=codes)
        x_hat = self._finish(self.decoder(quantized.quantized.contiguous()), x)
        return TokenizerOutput(
            x_hat, quantized, self.reconstruction_losses(x_hat, x), dict(self.loss_weights), latent=z
        )

    @torch.no_grad()
    def encode(self, x: torch.Tensor, *, num_quantizers: int | None = None) -> torch.Tensor:
        """Codes of ``x``: ``[B, *latent, C]`` int64; ``num_quantizers=k`` keeps the first ``k`` residual
        levels, ``[B, *latent, quantizer.level_widths()[k - 1]]``, which ``decode`` takes as they are.

        No gradient and no state changes (the quantizer's ``encode``; the encoders have no train-mode
        behaviour), so the codes are those of ``forward`` in eval under ``torch.no_grad()`` (with grad enabled,
        CPU convolutions may pick another kernel and differ in the last bit, which can flip a near-tie)."""
        return self.quantizer.encode(self.embed(x), num_quantizers=num_quantizers)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``x_hat`` from ``codes`` ``[B, *latent, C]``; in eval mode exactly ``forward(x).reconstruction``
        for ``codes = encode(x)`` (bit for bit: the quantizer's ``decode`` equals its ``quantized``)."""
        expected = 2 + self.latent_rank
        if isinstance(codes, torch.Tensor) and codes.dim() != expected:
            raise ValueError(
                f"codes: expected {expected} dims [B, *latent ({self.latent_rank} dims), C], "
                f"got shape {tuple(codes.shape)}"
            )
        return self._finish(self.decoder(self.quantizer.decode(codes).contiguous()), None)

    # ------------------------------------------------------------------ rates
    def bits_per_item(self, item_shape: Sequence[int], num_quantizers: int | None = None) -> float:
        """Nominal bits for one item: ``prod(latent_shape(item_shape)) * quantizer.bits_per_vector`` (of the
        first ``num_quantizers`` levels when given); for codes shared by a grid's cells (multi-scale VQ) the
        exact count of the cells on this latent grid (``bits_per_map``)."""
        q = self.quantizer
        if q.shared_codes:
            bits_per_map = getattr(q, "bits_per_map")  # noqa: B009  (a grid quantizer's own method)
            return float(bits_per_map(self.latent_shape(item_shape), num_quantizers))
        bits = q.bits_per_vector if num_quantizers is None else q.bits_per_vector_at(num_quantizers)
        return math.prod(self.latent_shape(item_shape)) * bits

    def codes_per_item(self, item_shape: Sequence[int]) -> int:
        """Integer codes (tokens) for one item: ``prod(latent_shape) * quantizer.codes_per_vector``."""
        return math.prod(self.latent_shape(item_shape)) * self.quantizer.codes_per_vector

    # ------------------------------------------------------------------ config
    def quantizer_config(self) -> dict[str, Any]:
        """``{"name", "kwargs"}`` of the quantizer without the keys the model fills in (``dim``, ``layout``...)."""
        return {"name": self._quantizer_config["name"], "kwargs": dict(self._quantizer_config["kwargs"])}

    def to_config(self) -> dict[str, Any]:
        """JSON dict with ``name``, the architecture, ``quantizer`` and ``loss_weights``; ``build_model`` of it
        rebuilds the same architecture (fresh weights)."""
        return {
            "name": self.registry_name,
            **self._arch_config(),
            "quantizer": self.quantizer_config(),
            "loss_weights": dict(self.loss_weights),
        }

    def extra_repr(self) -> str:
        return f"modality={self.modality!r}, latent_dim={self.latent_dim}"


class MSETokenizer(Tokenizer, ABC):
    """A tokenizer whose one reconstruction term is ``mse`` (default weight 1): the image and vector models."""

    default_loss_weights: ClassVar[Mapping[str, float]] = MappingProxyType({"mse": 1.0})

    def reconstruction_losses(self, x_hat: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.loss_weights["mse"] == 0:
            return {}
        return {"mse": F.mse_loss(x_hat.float(), x.float())}


# ---------------------------------------------------------------------- quantizer from config
def quantizer_for_model(spec: QuantizerSpec, filled: Mapping[str, Any]) -> tuple[Quantizer, dict[str, Any]]:
    """Build the quantizer of ``spec`` with the model's ``filled`` keyword arguments.

    ``filled`` keys the quantizer class does not take (e.g. ``spatial_dims``) are left out. Returns the
    quantizer and its config as stored by the model: the registry name and the constructor's resolved
    arguments (defaults pinned, so a saved model rebuilds the same quantizer) without the filled keys.
    """
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise ValueError(f"quantizer: expected {{'name': <registry name>, 'kwargs': {{...}}}}, got {spec!r}")
    extra = sorted(set(spec) - {"name", "kwargs"})
    if extra:
        raise ValueError(
            f"quantizer: unknown key {extra[0]!r} (expected 'name' and 'kwargs'; quantizer options go in 'kwargs')"
        )
    name = spec["name"]
    kwargs = spec.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"quantizer.kwargs: expected a dict, got {kwargs!r}")
    if name not in list_quantizers():
        raise ValueError(
            f"quantizer.name: unknown quantizer {name!r}; registered: {', '.join(list_quantizers())}"
        )
    accepted = inspect.signature(quantizer_class(name)).parameters
    used = {key: value for key, value in filled.items() if key in accepted or key in ("dim", "layout")}
    for key, value in used.items():
        if key in kwargs and kwargs[key] != value:
            raise ValueError(
                f"quantizer.kwargs.{key}: the model sets {key}={value!r}, got {key}={kwargs[key]!r} "
                f"(leave {key!r} out of the quantizer kwargs)"
            )
    quantizer = create_quantizer(name, **{**kwargs, **used})
    try:
        resolved = quantizer.to_config()["kwargs"]
    except TypeError:  # a quantizer without a JSON config: keep what the user gave
        resolved = dict(kwargs)
    stored = {key: value for key, value in resolved.items() if key not in used}
    return quantizer, {"name": name, "kwargs": stored}


def _resolve_weights(given: Mapping[str, float] | None, defaults: Mapping[str, float]) -> dict[str, float]:
    weights = dict(defaults)
    if given is None:
        return weights
    if not isinstance(given, Mapping):
        raise ValueError(f"loss_weights: expected a dict of term -> weight, got {given!r}")
    for name, value in given.items():
        if name not in defaults:
            raise ValueError(f"loss_weights: unknown term {name!r}; this model's terms: {sorted(defaults)}")
        weights[name] = check_nonnegative_number(f"loss_weights.{name}", value)
    return weights


def check_float_input(x: Any, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    return x
