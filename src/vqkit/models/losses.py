"""Reconstruction losses of the audio codec, on ``vqkit.functional.spectral`` (pure torch).

* ``multi_resolution_stft_loss``: for each FFT size, spectral convergence ``|| |S(x)| - |S(x_hat)| ||_F /
  || |S(x)| ||_F`` plus the log-magnitude L1 ``mean | log|S(x)| - log|S(x_hat)| |``, averaged over the
  resolutions (Yamamoto, Song, Kim, "Parallel WaveGAN", arXiv 1910.11480, section 2.3; hop ``n_fft / 4``,
  Hann window of ``n_fft``). The distance is ``vqkit.functional.stft_distance``'s, which the evaluation
  metric shares (with log10 and per-clip norms).
* ``mel_l1_loss``: ``mean | log_mel(x) - log_mel(x_hat) |`` (the spectral term of Encodec, arXiv 2210.13438,
  section 3.4, at one scale and with the log-mel L1 only).
* ``l1`` is ``mean |x - x_hat|`` (Encodec's time-domain term).

All inputs are ``[..., T]``; the losses are scalars, computed in float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from vqkit.functional.spectral import log_mel
from vqkit.functional.stft_distance import multi_resolution_stft_distance


def multi_resolution_stft_loss(
    x_hat: torch.Tensor, x: torch.Tensor, fft_sizes: Sequence[int] = (512, 1024, 2048), eps: float = 1e-7
) -> torch.Tensor:
    """Mean over ``fft_sizes`` of spectral convergence + log-magnitude L1 (hop ``n / 4``, window ``n``).

    ``vqkit.functional.stft_distance.multi_resolution_stft_distance`` with the training parameters: natural
    log, float32, norms over the whole batch.

    Args:
        x_hat: reconstruction ``[..., T]``.
        x: target ``[..., T]`` (same shape).
        fft_sizes: the resolutions.
        eps: floor of the magnitudes (log) and of the target's norm (convergence).

    Returns:
        A scalar, exactly 0 when ``x_hat`` equals ``x``.
    """
    return multi_resolution_stft_distance(
        x_hat.float(), x.float(), fft_sizes, log_base=math.e, log_floor=eps, norm_floor=eps
    )


def mel_l1_loss(
    x_hat: torch.Tensor,
    x: torch.Tensor,
    sample_rate: int,
    n_fft: int = 1024,
    n_mels: int = 80,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``mean | log(mel(x) + eps) - log(mel(x_hat) + eps) |`` with hop ``n_fft / 4`` (Slaney mel filters)."""
    if x_hat.shape != x.shape:
        raise ValueError(f"x_hat: expected the shape of x {tuple(x.shape)}, got {tuple(x_hat.shape)}")
    target = log_mel(x.float(), sample_rate, n_fft=n_fft, n_mels=n_mels, eps=eps)
    return (target - log_mel(x_hat.float(), sample_rate, n_fft=n_fft, n_mels=n_mels, eps=eps)).abs().mean()
