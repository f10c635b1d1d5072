"""Optional adversarial training for the codec: Encodec's multi-scale STFT discriminator and its losses.

Défossez et al., "High Fidelity Neural Audio Compression" (Encodec), arXiv 2210.13438, section 3.4; reference code
facebookresearch/encodec ``msstftd.py`` (reimplemented, no code copied). Off by default: a trainer builds one
when its config says ``adversarial: true``; the tokenizer models never own or call it.

Each scale (``n_fft`` 1024, 2048, 512 with hop ``n_fft / 4``) takes the complex STFT (Hann window of ``n_fft``,
no centring, scaled by ``1 / sqrt(sum(window^2))`` like torchaudio's ``normalized=True``), stacks real and
imaginary parts as ``2 * channels`` input channels laid out ``[B, 2C, frames, freq]``, and applies::

    Conv2d(2C -> F, (3, 9))                                    # no weight norm (as the reference)
    3 x Conv2d(F -> F, (3, 9), stride (1, 2), dilation (d, 1)) for d in (1, 2, 4)
    Conv2d(F -> F, (3, 3))
    each followed by LeakyReLU(0.2) and recorded as a feature map, then Conv2d(F -> 1, (3, 3)): the logits

with ``F = filters`` (32) and weight norm on every conv but the first.

Losses (Encodec, eq. 2-4; hinge form): ``discriminator_hinge_loss`` = mean over scales of
``mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat)))``; ``generator_hinge_loss`` = mean over scales of
``mean(relu(1 - D(x_hat)))``; ``feature_matching_loss`` = mean over scales and layers of
``mean|f(x) - f(x_hat)| / mean|f(x)|`` with the real features detached.

Deviation: ``filters_scale`` (always 1 in Encodec's configs) and the configurable activation are not offered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from vqkit._validate import check_positive_int
from vqkit.models.base import check_float_input


@dataclass
class DiscriminatorOutput:
    """``logits``: one ``[B, 1, frames', freq']`` tensor per scale; ``features``: per scale, the 5 feature maps."""

    logits: list[torch.Tensor]
    features: list[list[torch.Tensor]]


class STFTDiscriminator(nn.Module):
    """One scale of the MS-STFT discriminator: ``[B, C, T] -> logits, feature maps`` (``T >= n_fft``)."""

    def __init__(
        self, filters: int = 32, in_channels: int = 1, n_fft: int = 1024, hop_length: int = 256
    ) -> None:
        super().__init__()
        self.n_fft = check_positive_int("n_fft", n_fft)
        self.hop_length = check_positive_int("hop_length", hop_length)
        f = check_positive_int("filters", filters)
        kernel, square = (3, 9), (3, 3)
        self.convs = nn.ModuleList([nn.Conv2d(2 * in_channels, f, kernel, padding=_same(kernel))])
        for d in (1, 2, 4):
            conv = nn.Conv2d(f, f, kernel, stride=(1, 2), dilation=(d, 1), padding=_same(kernel, (d, 1)))
            self.convs.append(weight_norm(conv))
        self.convs.append(weight_norm(nn.Conv2d(f, f, square, padding=_same(square))))
        self.conv_post = weight_norm(nn.Conv2d(f, 1, square, padding=_same(square)))
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    window: torch.Tensor

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T] -> [B, 2C, frames, n_fft // 2 + 1]``: real and imaginary parts, window-normalized."""
        b, c, t = x.shape
        if t < self.n_fft:
            raise ValueError(f"x: expected at least n_fft={self.n_fft} samples, got T={t}")
        window = self.window.to(dtype=torch.float32)
        spec = torch.stft(
            x.reshape(b * c, t).float(),
            self.n_fft,
            hop_length=self.hop_length,
            window=window,
            center=False,
            return_complex=True,
        )
        spec = spec / window.pow(2).sum().sqrt()
        spec = spec.reshape(b, c, *spec.shape[-2:])
        return torch.cat([spec.real, spec.imag], dim=1).transpose(2, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        z = self.spectrogram(x)
        features = []
        for conv in self.convs:
            z = F.leaky_relu(conv(z), 0.2)
            features.append(z)
        return self.conv_post(z), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """Encodec's MS-STFT discriminator: ``[B, C, T]`` -> ``DiscriminatorOutput`` over ``n_ffts`` scales.

    Args:
        filters: conv width (32 in Encodec and the IVQ solver).
        in_channels: audio channels.
        n_ffts: FFT size of each scale (window = ``n_fft``).
        hop_lengths: hop of each scale (default ``n_fft / 4``).
    """

    def __init__(
        self,
        filters: int = 32,
        in_channels: int = 1,
        n_ffts: Sequence[int] = (1024, 2048, 512),
        hop_lengths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        hops = [n // 4 for n in n_ffts] if hop_lengths is None else list(hop_lengths)
        if not n_ffts or len(hops) != len(n_ffts):
            raise ValueError(
                f"hop_lengths: expected one hop per FFT size {list(n_ffts)}, got {hop_lengths!r}"
            )
        self.discriminators = nn.ModuleList(
            STFTDiscriminator(filters, in_channels, n, h) for n, h in zip(n_ffts, hops, strict=True)
        )

    def forward(self, x: torch.Tensor) -> DiscriminatorOutput:
        check_float_input(x)
        if x.dim() != 3:
            raise ValueError(f"x: expected [B, C, T], got {tuple(x.shape)}")
        logits, features = [], []
        for disc in self.discriminators:
            logit, feats = disc(x)
            logits.append(logit)
            features.append(feats)
        return DiscriminatorOutput(logits, features)


def _same(kernel: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    return ((kernel[0] - 1) * dilation[0] // 2, (kernel[1] - 1) * dilation[1] // 2)


def discriminator_hinge_loss(real: Sequence[torch.Tensor], fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over scales of ``mean(relu(1 - real)) + mean(relu(1 + fake))`` (pass ``fake`` from a detached
    reconstruction when training the discriminator)."""
    terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake, strict=True)]
    return torch.stack(terms).mean()


def generator_hinge_loss(fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over scales of ``mean(relu(1 - fake))``: the codec's adversarial term."""
    return torch.stack([F.relu(1 - f).mean() for f in fake]).mean()


def feature_matching_loss(
    real: Sequence[Sequence[torch.Tensor]], fake: Sequence[Sequence[torch.Tensor]], eps: float = 1e-8
) -> torch.Tensor:
    """Mean over scales and layers of ``mean|real - fake| / mean|real|`` (real features detached)."""
    terms = []
    for real_maps, fake_maps in zip(real, fake, strict=True):
        for r, f in zip(real_maps, fake_maps, strict=True):
            r = r.detach()
            terms.append((r - f).abs().mean() / r.abs().mean().clamp(min=eps))
    return torch.stack(terms).mean()
