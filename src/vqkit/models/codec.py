"""``seanet_codec``: Encodec's SEANet encoder and decoder with any registered quantizer at the latent rate.

Défossez et al., "High Fidelity Neural Audio Compression" (Encodec), arXiv 2210.13438; the architecture is in
``vqkit.models.seanet``. The IVQ audio model (OpenReview Y3cUZ8fNnu) is this codec with ``latent_dim=96``,
``n_filters=64``, ``ratios=[8, 5, 4, 4]`` at 32 kHz and an IVQ in the middle.

**Lengths.** The latent has one frame per ``hop = prod(ratios)`` samples (320: 50 frames/s at 16 kHz).
``forward``, ``encode`` and ``embed`` right-pad an input of ``T`` samples with zeros to ``frames * hop``,
``frames = ceil(T / hop)``, and ``forward`` crops the reconstruction back to ``T``. ``decode(codes)`` returns
``frames * hop`` samples; ``decode(codes, length=T)`` crops to ``T`` and is then exactly
``forward(x).reconstruction`` in eval mode.

**Losses** (unweighted; default weights in ``DEFAULT_LOSS_WEIGHTS``): ``l1`` = mean |x - x_hat| (Encodec's
time-domain term, weight 0.1 as in Encodec and the IVQ solver), ``stft`` = multi-resolution STFT loss (spectral
convergence + log-magnitude L1 over ``stft_sizes``, weight 1), ``mel`` = L1 of log-mel spectrograms (weight 1).
Encodec's adversarial and feature-matching terms need the optional ``MultiScaleSTFTDiscriminator``
(``vqkit.models.discriminator``), which the trainer owns; the loss balancer is not reimplemented.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F

from vqkit._validate import check_bool, check_choice, check_nonnegative_int, check_positive_int
from vqkit.models.base import QuantizerSpec, check_float_input
from vqkit.models.framed import FramedAudio
from vqkit.models.losses import mel_l1_loss, multi_resolution_stft_loss
from vqkit.models.registry import register_model
from vqkit.models.seanet import (
    NORMS,
    PAD_MODES,
    Norm,
    PadMode,
    SEANetConfig,
    SEANetDecoder,
    SEANetEncoder,
    check_ratios,
)

DEFAULT_LOSS_WEIGHTS: Mapping[str, float] = MappingProxyType({"l1": 0.1, "stft": 1.0, "mel": 1.0})


@register_model("seanet_codec")
class SEANetCodec(FramedAudio):
    """SEANet codec: ``[B, channels, T]`` -> codes ``[B, ceil(T / hop), C]`` -> ``[B, channels, T]``.

    Args:
        quantizer: ``{"name", "kwargs"}`` of the quantizer (``dim``, ``layout`` and, for quantizers that take
            it, ``spatial_dims=1`` are set by the model).
        channels: audio channels.
        sample_rate: Hz; used by the mel loss and as the default of the rate methods.
        latent_dim: D, the encoder's output channels (Encodec's ``dimension``: 128; the IVQ audio model: 96).
        n_filters: base width (32); the widths double at each of the ``len(ratios)`` strided stages.
        ratios: decoder upsampling ratios (Encodec's order, ``[8, 5, 4, 2]``); the encoder uses them reversed.
        n_residual_layers, kernel_size, last_kernel_size, residual_kernel_size, dilation_base, compress, lstm:
            Encodec's SEANet options (1, 7, 7, 3, 2, 2, 2).
        true_skip: identity shortcuts in the residual units (audiocraft, IVQ); ``False``: 1x1 conv (Encodec).
        causal: causal convolutions (all padding on the left).
        pad_mode: ``"constant"`` (zeros; audiocraft, IVQ) or ``"reflect"`` (Encodec).
        norm: ``"weight_norm"`` or ``"none"``.
        stft_sizes: FFT sizes of the multi-resolution STFT loss.
        mel_n_fft, n_mels: the mel loss's FFT size (hop ``mel_n_fft / 4``) and mel bands.
        loss_weights: over ``{"l1": 0.1, "stft": 1.0, "mel": 1.0}``.
    """

    layout = "channels_first"
    latent_rank = 1
    default_loss_weights = DEFAULT_LOSS_WEIGHTS

    def __init__(
        self,
        *,
        quantizer: QuantizerSpec,
        channels: int = 1,
        sample_rate: int = 16000,
        latent_dim: int = 128,
        n_filters: int = 32,
        ratios: Sequence[int] = (8, 5, 4, 2),
        n_residual_layers: int = 1,
        kernel_size: int = 7,
        last_kernel_size: int = 7,
        residual_kernel_size: int = 3,
        dilation_base: int = 2,
        compress: int = 2,
        lstm: int = 2,
        true_skip: bool = True,
        causal: bool = False,
        pad_mode: PadMode = "constant",
        norm: Norm = "weight_norm",
        stft_sizes: Sequence[int] = (512, 1024, 2048),
        mel_n_fft: int = 1024,
        n_mels: int = 80,
        loss_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(quantizer=quantizer, latent_dim=latent_dim, loss_weights=loss_weights)
        check_nonnegative_int("n_residual_layers", n_residual_layers)
        check_nonnegative_int("lstm", lstm)
        check_bool("true_skip", true_skip)
        check_bool("causal", causal)
        self.cfg = SEANetConfig(
            channels=check_positive_int("channels", channels),
            dimension=self.latent_dim,
            n_filters=check_positive_int("n_filters", n_filters),
            ratios=check_ratios(ratios),
            n_residual_layers=n_residual_layers,
            kernel_size=check_positive_int("kernel_size", kernel_size),
            last_kernel_size=check_positive_int("last_kernel_size", last_kernel_size),
            residual_kernel_size=check_positive_int("residual_kernel_size", residual_kernel_size),
            dilation_base=check_positive_int("dilation_base", dilation_base),
            compress=check_positive_int("compress", compress),
            lstm=lstm,
            true_skip=true_skip,
            causal=causal,
            pad_mode=check_choice("pad_mode", pad_mode, PAD_MODES),  # type: ignore[arg-type]
            norm=check_choice("norm", norm, NORMS),  # type: ignore[arg-type]
        )
        self.sample_rate = check_positive_int("sample_rate", sample_rate)
        if isinstance(stft_sizes, (str, bytes)) or not isinstance(stft_sizes, Sequence) or not stft_sizes:
            raise ValueError(f"stft_sizes: expected a non-empty list of FFT sizes >= 2, got {stft_sizes!r}")
        self.stft_sizes = [int(n) for n in stft_sizes]
        if any(n < 2 for n in self.stft_sizes):
            raise ValueError(f"stft_sizes: expected FFT sizes >= 2, got {list(stft_sizes)!r}")
        self.mel_n_fft = check_positive_int("mel_n_fft", mel_n_fft)
        self.n_mels = check_positive_int("n_mels", n_mels)
        self.encoder = SEANetEncoder(self.cfg)
        self.decoder = SEANetDecoder(self.cfg)

    # ------------------------------------------------------------------ lengths and rates
    @property
    def hop_length(self) -> int:
        """Samples per latent frame: ``prod(ratios)``."""
        return self.cfg.hop_length

    @property
    def audio_channels(self) -> int:
        return self.cfg.channels

    # ------------------------------------------------------------------ tokenizer hooks
    def _check_input(self, x: torch.Tensor) -> None:
        check_float_input(x)
        if x.dim() != 3 or x.shape[1] != self.cfg.channels or x.shape[2] < 1:
            raise ValueError(
                f"x: expected [B, {self.cfg.channels}, T] (channels) with T >= 1, got {tuple(x.shape)}"
            )

    def _finish(self, y: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        return y if x is None else y[..., : x.shape[-1]]

    def reconstruction_losses(self, x_hat: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        weights, losses = self.loss_weights, {}
        if weights["l1"] > 0:
            losses["l1"] = F.l1_loss(x_hat.float(), x.float())
        if weights["stft"] > 0:
            losses["stft"] = multi_resolution_stft_loss(x_hat, x, self.stft_sizes)
        if weights["mel"] > 0:
            losses["mel"] = mel_l1_loss(x_hat, x, self.sample_rate, n_fft=self.mel_n_fft, n_mels=self.n_mels)
        return losses

    def _arch_config(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "channels": cfg.channels,
            "sample_rate": self.sample_rate,
            "latent_dim": self.latent_dim,
            "n_filters": cfg.n_filters,
            "ratios": list(cfg.ratios),
            "n_residual_layers": cfg.n_residual_layers,
            "kernel_size": cfg.kernel_size,
            "last_kernel_size": cfg.last_kernel_size,
            "residual_kernel_size": cfg.residual_kernel_size,
            "dilation_base": cfg.dilation_base,
            "compress": cfg.compress,
            "lstm": cfg.lstm,
            "true_skip": cfg.true_skip,
            "causal": cfg.causal,
            "pad_mode": cfg.pad_mode,
            "norm": cfg.norm,
            "stft_sizes": list(self.stft_sizes),
            "mel_n_fft": self.mel_n_fft,
            "n_mels": self.n_mels,
        }
