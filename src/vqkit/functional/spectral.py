"""Spectral features in pure torch, shared by the audio losses and metrics (no torchaudio, no librosa).

* ``magnitude_stft``: ``|STFT|`` with a Hann window, centred frames (reflect padding), ``[..., T] -> [..., F, frames]``.
* ``mel_filterbank``: triangular filters on the Slaney mel scale with Slaney area normalization, the defaults of
  ``librosa.filters.mel`` (``htk=False, norm="slaney"``), ``[n_mels, n_fft // 2 + 1]``.
* ``chroma_filterbank``: 12 pitch-class filters over STFT bins, built as ``librosa.filters.chroma`` (its defaults).
* ``log_mel``: ``log(mel @ |STFT| + eps)``.
"""

from __future__ import annotations

import functools
import math

import torch

_MIN_LOG_HZ = 1000.0
_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """Slaney mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    hz = torch.as_tensor(hz, dtype=torch.float64)
    linear = hz * 3.0 / 200.0
    log = 15.0 + torch.log(hz.clamp(min=1e-10) / _MIN_LOG_HZ) / _LOG_STEP
    return torch.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    mel = torch.as_tensor(mel, dtype=torch.float64)
    linear = mel * 200.0 / 3.0
    log = _MIN_LOG_HZ * torch.exp(_LOG_STEP * (mel - 15.0))
    return torch.where(mel >= 15.0, log, linear)


@functools.lru_cache(maxsize=32)
def _mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    bins = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(
        torch.linspace(
            float(hz_to_mel(torch.tensor(f_min))), float(hz_to_mel(torch.tensor(f_max))), n_mels + 2
        )
    )
    widths = edges.diff()
    ramps = edges[:, None] - bins[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0.0)
    weights = weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]  # Slaney: equal area per filter
    return weights.float()


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """``[n_mels, n_fft // 2 + 1]`` float32 mel filters (librosa's defaults: Slaney scale and area norm)."""
    if n_mels < 1 or n_fft < 2 or sample_rate < 1:
        raise ValueError(f"mel_filterbank: expected positive sizes, got {sample_rate=}, {n_fft=}, {n_mels=}")
    top = sample_rate / 2.0 if f_max is None else float(f_max)
    return _mel_filterbank(int(sample_rate), int(n_fft), int(n_mels), float(f_min), top).clone()


@functools.lru_cache(maxsize=32)
def _chroma_filterbank(
    sample_rate: int, n_fft: int, tuning: float, center_octave: float, octave_width: float
) -> torch.Tensor:
    # librosa.filters.chroma's construction: every FFT bin (over the full [0, sr) range, then cropped) gets a
    # Gaussian bump around each pitch class, as wide as the bin is in semitones (at least one), columns
    # l2-normalized, weighted by a Gaussian over octaves, and rolled so that row 0 is C.
    freqs = torch.arange(1, n_fft, dtype=torch.float64) * (sample_rate / n_fft)
    a440 = 440.0 * 2.0 ** (tuning / 12.0)
    bins = 12.0 * torch.log2(freqs / (a440 / 16.0))
    bins = torch.cat([bins[:1] - 1.5 * 12.0, bins])
    widths = torch.cat([bins.diff().clamp(min=1.0), torch.ones(1, dtype=torch.float64)])
    distance = bins[None, :] - torch.arange(12, dtype=torch.float64)[:, None]
    distance = torch.remainder(distance + 6.0 + 120.0, 12.0) - 6.0
    weights = torch.exp(-0.5 * (2.0 * distance / widths[None, :]) ** 2)
    weights = weights / weights.norm(dim=0, keepdim=True).clamp(min=1e-12)
    if octave_width > 0:
        weights = weights * torch.exp(-0.5 * ((bins / 12.0 - center_octave) / octave_width) ** 2)[None, :]
    weights = torch.roll(weights, -3, dims=0)
    return weights[:, : n_fft // 2 + 1].float().contiguous()


def chroma_filterbank(
    sample_rate: int, n_fft: int, tuning: float = 0.0, center_octave: float = 5.0, octave_width: float = 2.0
) -> torch.Tensor:
    """``[12, n_fft // 2 + 1]`` pitch-class filters (C, C#, ..., B) over STFT bins, as ``librosa.filters.chroma``
    with its defaults (octave weighting centred on octave 5, width 2; ``octave_width=0`` turns it off)."""
    return _chroma_filterbank(
        int(sample_rate), int(n_fft), float(tuning), float(center_octave), float(octave_width)
    ).clone()


def magnitude_stft(
    x: torch.Tensor, n_fft: int, hop_length: int | None = None, win_length: int | None = None
) -> torch.Tensor:
    """``|STFT(x)|``: ``[..., T] -> [..., n_fft // 2 + 1, frames]`` (Hann window, centred, reflect padding;
    inputs shorter than ``n_fft // 2 + 1`` are zero-padded first so reflect padding is defined)."""
    hop = hop_length or n_fft // 4
    win = win_length or n_fft
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1]).float()
    if flat.shape[-1] <= n_fft // 2:
        flat = torch.nn.functional.pad(flat, (0, n_fft // 2 + 1 - flat.shape[-1]))
    window = torch.hann_window(win, device=flat.device, dtype=flat.dtype)
    spec = torch.stft(
        flat,
        n_fft,
        hop_length=hop,
        win_length=win,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    return spec.abs().reshape(*lead, spec.shape[-2], spec.shape[-1])


def log_mel(
    x: torch.Tensor,
    sample_rate: int,
    n_fft: int = 1024,
    hop_length: int | None = None,
    n_mels: int = 80,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``[..., T] -> [..., n_mels, frames]``: ``log(mel @ |STFT| + eps)``."""
    spec = magnitude_stft(x, n_fft, hop_length)
    bank = mel_filterbank(sample_rate, n_fft, n_mels).to(spec.device)
    return torch.log(torch.matmul(bank, spec) + eps)
