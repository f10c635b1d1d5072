"""``FramedAudio``: what every audio tokenizer with one latent frame per ``hop_length`` samples shares.

Lengths (``num_frames``: ``ceil(T / hop)``), right-padding to whole frames (``_prepare``), the quantizer's mask of
real frames (``latent_mask``), rates (``frame_rate``, ``codes_per_second``, ``bitrate_kbps``), the item shape
(``latent_shape``) and ``decode(codes, length=T)``. Subclasses (``SEANetCodec``, ``SpectralCodec``) give
``hop_length``, ``sample_rate`` and ``audio_channels``.
"""

from __future__ import annotations

import operator
from abc import abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F

from vqkit.models.base import Modality, Tokenizer


class FramedAudio(Tokenizer):
    """A ``Tokenizer`` of audio ``[B, channels, T]`` with ``ceil(T / hop)`` latent frames (module docstring)."""

    modality: ClassVar[Modality] = "audio"
    sample_rate: int

    @property
    @abstractmethod
    def hop_length(self) -> int:
        """Samples per latent frame."""

    @property
    def audio_channels(self) -> int:
        """Channels of the audio (1 unless a subclass says otherwise)."""
        return 1

    def num_frames(self, length: int) -> int:
        """Latent frames for ``length`` samples: ``ceil(length / hop)``."""
        return -(-int(length) // self.hop_length)

    def frame_rate(self, sample_rate: float | None = None) -> float:
        """Latent frames per second: ``sample_rate / hop`` (50 at 16 kHz with hop 320)."""
        return float(sample_rate or self.sample_rate) / self.hop_length

    def codes_per_second(self, sample_rate: float | None = None) -> float:
        """Integer codes (tokens) per second: ``frame_rate * quantizer.codes_per_vector``."""
        return self.frame_rate(sample_rate) * self.quantizer.codes_per_vector

    def bitrate_kbps(self, sample_rate: float | None = None, num_quantizers: int | None = None) -> float:
        """Nominal bitrate: ``frame_rate * quantizer.bits_per_vector / 1000`` (of the first ``num_quantizers``
        residual levels when given: the rates one model trained with quantizer dropout serves)."""
        q = self.quantizer
        bits = q.bits_per_vector if num_quantizers is None else q.bits_per_vector_at(num_quantizers)
        return self.frame_rate(sample_rate) * bits / 1000.0

    def latent_shape(self, item_shape: Sequence[int]) -> tuple[int, ...]:
        """``(ceil(T / hop),)`` for an item ``(channels, T)`` or ``(T,)``."""
        shape = tuple(int(s) for s in item_shape)
        channels = self.audio_channels
        ok = len(shape) in (1, 2) and (len(shape) == 1 or shape[0] == channels) and shape[-1] > 0
        if not ok:
            raise ValueError(f"item_shape: expected ({channels}, T) or (T,) with T >= 1, got {shape}")
        return (self.num_frames(shape[-1]),)

    def latent_mask(self, lengths: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """``[B, frames]``: a frame is real when it starts before the item's end (``ceil(length / hop)``
        frames per item)."""
        if not isinstance(lengths, torch.Tensor) or lengths.dim() != 1 or lengths.shape[0] != latent.shape[0]:
            got = tuple(lengths.shape) if isinstance(lengths, torch.Tensor) else type(lengths).__name__
            raise ValueError(
                f"lengths: expected a [B] tensor of sample counts for B={latent.shape[0]}, got {got}"
            )
        frames = -(-lengths.to(latent.device).long() // self.hop_length)
        return torch.arange(latent.shape[-1], device=latent.device)[None, :] < frames[:, None]

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.num_frames(x.shape[-1]) * self.hop_length - x.shape[-1]
        return F.pad(x, (0, pad)) if pad else x

    def decode(self, codes: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Audio from codes ``[B, frames, C]``: ``[B, channels, frames * hop]``, or ``[B, channels, length]``
        when ``length`` (the original sample count, ``ceil(length / hop) == frames``) is given."""
        y = super().decode(codes)
        if length is None:
            return y
        frames = codes.shape[1]
        try:
            samples = operator.index(length)
        except TypeError:
            samples = -1
        if samples < 1 or self.num_frames(samples) != frames:
            raise ValueError(
                f"length: expected a sample count in [{(frames - 1) * self.hop_length + 1}, "
                f"{frames * self.hop_length}] ({frames} frames of hop {self.hop_length}), got {length!r}"
            )
        return y[..., :samples]
