"""``spectral_codec``: a time-frequency speech codec (log-magnitude STFT in, magnitudes out, Griffin-Lim).

Why this and not a waveform SEANet: on a CPU budget the waveform codec's quality is limited by training (a small
SEANet on 2 cores gives PESQ about 1.06 whatever the quantizer), while fast Griffin-Lim from exact STFT magnitudes
gives STOI 0.996 and PESQ 4.0 on the generated speech. So the network learns only magnitudes, with spectral
losses computed on its output directly (no waveform, no phase in the training loop), and the waveform comes
from ``vqkit.functional.griffin_lim``.

**Architecture.** Encoder: ``log max(|STFT(x)|, 1e-5)`` (``n_fft``, hop ``stft_hop``; ``n_fft // 2 + 1`` bins),
each ``frames_per_latent`` consecutive frames stacked into one vector (``vqkit.models.convnext.stack_frames``), a
kernel-3 conv to ``hidden`` channels, ``encoder_blocks`` ConvNeXt blocks (depthwise conv of ``kernel_size``,
LayerNorm, pointwise MLP of ``expansion * hidden``, GELU, layer scale: the Vocos backbone, Siuzdak, arXiv
2306.00814; ``vqkit.models.convnext``), LayerNorm and a 1x1 conv to ``latent_dim``.
Decoder: the mirror image (``decoder_blocks`` blocks) ending in a linear map to ``frames_per_latent`` frames of
log-magnitudes. With the defaults (640-point STFT, hop 160, 2 frames per latent) the latent has one
``latent_dim`` vector per 320 samples: 50 frames/s at 16 kHz. ``latent_norm="layer"`` ends the encoder with a
LayerNorm without affine parameters (each latent vector zero-mean, unit variance over its channels: a fixed
scale for a quantizer's codebook); ``"none"`` leaves the 1x1 conv's output as it is.

**Lengths.** An input of ``T`` samples is right-padded with zeros to ``frames * hop``, ``frames = ceil(T / hop)``,
``hop = stft_hop * frames_per_latent``; the STFT (zero-padded centring) then has ``frames_per_latent * frames
+ 1`` frames, of which the first ``frames_per_latent * frames`` are encoded and predicted. The decoder's last
frame is repeated to cover the padded signal, Griffin-Lim (``griffin_lim_iters`` iterations, momentum
``griffin_lim_momentum``, zero initial phase: deterministic) makes ``frames * hop`` samples, and ``forward``
crops them to ``T``. ``decode(codes)`` returns ``frames * hop`` samples, ``decode(codes, length=T)`` crops to
``T`` and is then exactly ``forward(x).reconstruction`` in eval mode. ``forward(x, lengths=)`` masks latent
frames past each item's end out of the quantizer and zeroes STFT frames whose centre is past it in both the
target and the prediction.

**Training mode.** The losses never see the waveform, so in training mode the reconstruction is the zero-phase
inverse STFT of the predicted magnitudes (``griffin_lim`` with 0 iterations: one inverse STFT instead of 64
projections per step); eval mode runs the full Griffin-Lim. The reconstruction is not a useful input to a
waveform discriminator: ``train.adversarial`` is not supported.

**Losses** (unweighted, on the predicted magnitudes ``Y`` against ``X = |STFT(x)|``; weights in
``DEFAULT_LOSS_WEIGHTS``): ``log_magnitude`` = mean ``|ln max(X, 1e-5) - ln max(Y, 1e-5)|``, ``convergence`` =
``||X - Y||_F / ||X||_F`` (the two terms of the multi-resolution STFT loss, Parallel WaveGAN arXiv 1910.11480, at
the model's one resolution), ``mel`` = mean ``|ln(M X + 1e-5) - ln(M Y + 1e-5)|`` over ``n_mels`` Slaney mel
bands. ``reconstruction_losses(x_hat, x)`` computes the same terms from the STFT of a waveform ``x_hat``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal, get_args

import torch
from torch import nn

from vqkit._validate import check_choice, check_nonnegative_int, check_positive_int, check_range
from vqkit.functional.griffin_lim import complex_stft, griffin_lim
from vqkit.functional.spectral import mel_filterbank
from vqkit.functional.stft_distance import log_magnitude_l1, spectral_convergence
from vqkit.models.base import QuantizerSpec, TokenizerOutput, check_float_input
from vqkit.models.convnext import ConvNeXtStack, stack_frames, unstack_frames
from vqkit.models.framed import FramedAudio
from vqkit.models.registry import register_model
from vqkit.types import QuantizerOutput

DEFAULT_LOSS_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"log_magnitude": 1.0, "convergence": 1.0, "mel": 1.0}
)
LatentNorm = Literal["none", "layer"]
LATENT_NORMS: tuple[str, ...] = get_args(LatentNorm)
LOG_FLOOR = 1e-5
MEL_EPS = 1e-5


class SpectralEncoder(nn.Module):
    """``[B, 1, frames * hop]`` -> ``[B, latent_dim, frames]``: log-magnitude frames, stacked, ConvNeXt."""

    def __init__(self, codec: SpectralCodec) -> None:
        super().__init__()
        self.n_fft, self.stft_hop, self.group = codec.n_fft, codec.stft_hop, codec.frames_per_latent
        bins = codec.n_fft // 2 + 1
        self.net = ConvNeXtStack(
            bins * self.group,
            codec.hidden,
            codec.latent_dim,
            codec.encoder_blocks,
            codec.kernel_size,
            codec.expansion,
        )
        self.norm = (
            nn.LayerNorm(codec.latent_dim, elementwise_affine=False) if codec.latent_norm == "layer" else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[-1] // (self.stft_hop * self.group)
        spec = complex_stft(x[:, 0].float(), self.n_fft, self.stft_hop)[..., : frames * self.group]
        logmag = torch.log(spec.abs().clamp(min=LOG_FLOOR))
        z = self.net(stack_frames(logmag, self.group))
        if self.norm is not None:
            z = self.norm(z.transpose(1, 2)).transpose(1, 2)
        return z


class SpectralDecoder(nn.Module):
    """``[B, latent_dim, frames]`` -> log-magnitudes ``[B, n_fft // 2 + 1, frames_per_latent * frames]``."""

    def __init__(self, codec: SpectralCodec) -> None:
        super().__init__()
        self.group, bins = codec.frames_per_latent, codec.n_fft // 2 + 1
        self.net = ConvNeXtStack(
            codec.latent_dim,
            codec.hidden,
            bins * self.group,
            codec.decoder_blocks,
            codec.kernel_size,
            codec.expansion,
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return unstack_frames(self.net(z), self.group)


@register_model("spectral_codec")
class SpectralCodec(FramedAudio):
    """Spectral codec: ``[B, 1, T]`` -> codes ``[B, ceil(T / hop), C]`` -> ``[B, 1, T]`` (mono).

    Args:
        quantizer: ``{"name", "kwargs"}`` of the quantizer (``dim``, ``layout`` and, for quantizers that take
            it, ``spatial_dims=1`` are set by the model).
        sample_rate: Hz; the mel loss's filters and the default of the rate methods.
        latent_dim: D, the latent channels (96: a multiple of 6, as the yin-yang IVQ needs).
        n_fft, stft_hop: the STFT (640 and 160: 40 ms Hann windows every 10 ms at 16 kHz).
        frames_per_latent: STFT frames per latent vector (2: hop ``2 * 160 = 320``, 50 latent frames/s).
        hidden, encoder_blocks, decoder_blocks, kernel_size, expansion: the ConvNeXt stacks (192, 3, 6, 7, 2:
            1.9 M parameters, 7.7 MB in float32).
        latent_norm: ``"layer"`` (default) or ``"none"``, see the module docstring.
        n_mels: bands of the mel loss.
        griffin_lim_iters, griffin_lim_momentum: the eval-mode waveform synthesis (64, 0.99).
        loss_weights: over ``{"log_magnitude": 1.0, "convergence": 1.0, "mel": 1.0}``.
    """

    layout = "channels_first"
    latent_rank = 1
    default_loss_weights = DEFAULT_LOSS_WEIGHTS
    mel_bank: torch.Tensor

    def __init__(
        self,
        *,
        quantizer: QuantizerSpec,
        sample_rate: int = 16000,
        latent_dim: int = 96,
        n_fft: int = 640,
        stft_hop: int = 160,
        frames_per_latent: int = 2,
        hidden: int = 192,
        encoder_blocks: int = 3,
        decoder_blocks: int = 6,
        kernel_size: int = 7,
        expansion: int = 2,
        latent_norm: LatentNorm = "layer",
        n_mels: int = 80,
        griffin_lim_iters: int = 64,
        griffin_lim_momentum: float = 0.99,
        loss_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(quantizer=quantizer, latent_dim=latent_dim, loss_weights=loss_weights)
        self.sample_rate = check_positive_int("sample_rate", sample_rate)
        self.n_fft = check_positive_int("n_fft", n_fft)
        if self.n_fft < 4:
            raise ValueError(f"n_fft: expected an FFT size >= 4, got {n_fft!r}")
        self.stft_hop = check_positive_int("stft_hop", stft_hop)
        if self.stft_hop > self.n_fft:
            raise ValueError(
                f"stft_hop: expected at most n_fft={self.n_fft} (frames must overlap), got {stft_hop!r}"
            )
        self.frames_per_latent = check_positive_int("frames_per_latent", frames_per_latent)
        self.hidden = check_positive_int("hidden", hidden)
        self.encoder_blocks = check_nonnegative_int("encoder_blocks", encoder_blocks)
        self.decoder_blocks = check_nonnegative_int("decoder_blocks", decoder_blocks)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        if self.kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size: expected an odd size (same-length convolutions), got {kernel_size!r}"
            )
        self.expansion = check_positive_int("expansion", expansion)
        self.latent_norm = check_choice("latent_norm", latent_norm, LATENT_NORMS)
        self.n_mels = check_positive_int("n_mels", n_mels)
        self.griffin_lim_iters = check_nonnegative_int("griffin_lim_iters", griffin_lim_iters)
        self.griffin_lim_momentum = check_range("griffin_lim_momentum", griffin_lim_momentum, 0.0, 1.0)
        self.encoder = SpectralEncoder(self)
        self.decoder = SpectralDecoder(self)
        self.register_buffer(
            "mel_bank", mel_filterbank(self.sample_rate, self.n_fft, self.n_mels), persistent=False
        )

    # ------------------------------------------------------------------ lengths and rates
    @property
    def hop_length(self) -> int:
        """Samples per latent frame: ``stft_hop * frames_per_latent``."""
        return self.stft_hop * self.frames_per_latent

    # ------------------------------------------------------------------ tokenizer hooks
    def _check_input(self, x: torch.Tensor) -> None:
        check_float_input(x)
        if x.dim() != 3 or x.shape[1] != 1 or x.shape[2] < 1:
            raise ValueError(f"x: expected mono audio [B, 1, T] with T >= 1, got {tuple(x.shape)}")

    def _finish(self, y: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        """Waveform ``[B, 1, T]`` from predicted log-magnitudes ``y`` (Griffin-Lim; zero phase in training)."""
        magnitude = self.magnitude(y)
        covering = torch.cat([magnitude, magnitude[..., -1:]], dim=-1)  # the padded signal's last centre
        iterations = 0 if self.training else self.griffin_lim_iters
        samples = (covering.shape[-1] - 1) * self.stft_hop
        wave = griffin_lim(
            covering, self.n_fft, self.stft_hop, iterations=iterations, momentum=self.griffin_lim_momentum
        )[:, None, :samples]
        return wave if x is None else wave[..., : x.shape[-1]]

    @staticmethod
    def magnitude(log_magnitude: torch.Tensor) -> torch.Tensor:
        """``exp`` of the decoder's output (capped at ``e^12`` so a wild prediction cannot overflow)."""
        return torch.exp(log_magnitude.float().clamp(max=12.0))

    def target_magnitude(self, x: torch.Tensor) -> torch.Tensor:
        """``|STFT|`` of ``x`` ``[B, 1, T]``: the frames the decoder predicts, ``[B, n_fft // 2 + 1, 2F]``."""
        padded = self._prepare(x)
        frames = self.num_frames(x.shape[-1]) * self.frames_per_latent
        return complex_stft(padded[:, 0].float(), self.n_fft, self.stft_hop)[..., :frames].abs()

    # ------------------------------------------------------------------ forward and losses
    def forward(
        self, x: torch.Tensor, *, quantize: bool = True, lengths: torch.Tensor | None = None
    ) -> TokenizerOutput:
        """Encode, quantize, decode; the losses compare the predicted magnitudes with ``|STFT(x)|``."""
        if not quantize:
            return self.forward_unquantized(x)
        z = self.embed(x)
        mask = None if lengths is None else self.latent_mask(lengths, z)
        return self._output(x, z, self.quantizer(z, mask=mask), lengths)

    def forward_unquantized(self, x: torch.Tensor) -> TokenizerOutput:
        """Encoder -> decoder with the quantizer skipped (identity ``quantizer`` output, ``C = 0``)."""
        z = self.embed(x)
        codes = torch.empty((z.shape[0], z.shape[2], 0), dtype=torch.long, device=z.device)
        return self._output(x, z, QuantizerOutput(quantized=z, codes=codes), None)

    @torch.no_grad()
    def forward_levels(self, x: torch.Tensor, num_quantizers: int) -> TokenizerOutput:
        """The reconstruction from the first ``num_quantizers`` residual levels, with its losses."""
        z = self.embed(x)
        codes = self.quantizer.encode(z, num_quantizers=num_quantizers)
        return self._output(
            x, z, QuantizerOutput(quantized=self.quantizer.decode(codes).to(z.dtype), codes=codes), None
        )

    def _output(
        self, x: torch.Tensor, z: torch.Tensor, quantized: QuantizerOutput, lengths: torch.Tensor | None
    ) -> TokenizerOutput:
        log_magnitude = self.decoder(quantized.quantized.contiguous())
        x_hat = self._finish(log_magnitude, x)
        predicted, target = self.magnitude(log_magnitude), self.target_magnitude(x)
        if lengths is not None:
            keep = self._frame_mask(lengths, x, predicted.shape[-1])
            target = self.target_magnitude(x * self._sample_mask(lengths, x)) * keep
            predicted = predicted * keep
        losses = self.spectral_losses(predicted, target)
        return TokenizerOutput(x_hat, quantized, losses, dict(self.loss_weights), latent=z)

    def _sample_mask(self, lengths: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        keep = torch.arange(x.shape[-1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
        return keep[:, None, :].to(x.dtype)

    def _frame_mask(self, lengths: torch.Tensor, x: torch.Tensor, frames: int) -> torch.Tensor:
        centres = torch.arange(frames, device=x.device) * self.stft_hop
        return (centres[None, :] < lengths.to(x.device)[:, None]).float()[:, None, :]

    def spectral_losses(self, predicted: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The unweighted terms with a positive weight, from magnitudes ``[B, bins, frames]``."""
        weights, losses = self.loss_weights, {}
        if weights["log_magnitude"] > 0:
            losses["log_magnitude"] = log_magnitude_l1(predicted, target, LOG_FLOOR)
        if weights["convergence"] > 0:
            losses["convergence"] = spectral_convergence(predicted, target, 1e-7)
        if weights["mel"] > 0:
            bank = self.mel_bank.to(predicted.device)
            mel_hat, mel = torch.log(bank @ predicted + MEL_EPS), torch.log(bank @ target + MEL_EPS)
            losses["mel"] = (mel - mel_hat).abs().mean()
        return losses

    def reconstruction_losses(self, x_hat: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The spectral terms from the STFT magnitudes of a waveform ``x_hat`` against those of ``x``."""
        if x_hat.shape != x.shape:
            raise ValueError(f"x_hat: expected the shape of x {tuple(x.shape)}, got {tuple(x_hat.shape)}")
        return self.spectral_losses(self.target_magnitude(x_hat), self.target_magnitude(x))

    def _arch_config(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "latent_dim": self.latent_dim,
            "n_fft": self.n_fft,
            "stft_hop": self.stft_hop,
            "frames_per_latent": self.frames_per_latent,
            "hidden": self.hidden,
            "encoder_blocks": self.encoder_blocks,
            "decoder_blocks": self.decoder_blocks,
            "kernel_size": self.kernel_size,
            "expansion": self.expansion,
            "latent_norm": self.latent_norm,
            "n_mels": self.n_mels,
            "griffin_lim_iters": self.griffin_lim_iters,
            "griffin_lim_momentum": self.griffin_lim_momentum,
        }
