"""The multi-resolution STFT distance (Yamamoto, Song, Kim, "Parallel WaveGAN", arXiv 1910.11480, section 2.3).

For each FFT size ``n`` (hop ``n / 4``, Hann window of ``n``; ``vqkit.functional.spectral.magnitude_stft``),
with ``X = |STFT(x)|`` and ``Y = |STFT(x_hat)|``:

* spectral convergence ``|| X - Y ||_F / max(|| X ||_F, norm_floor)``;
* log-magnitude L1 ``mean | log_b(max(X, log_floor)) - log_b(max(Y, log_floor)) |``;

and the distance is the mean over the sizes of their sum. One implementation serves two callers, which differ
only in these parameters:

* the codec's training loss (``vqkit.models.losses.multi_resolution_stft_loss``): natural log, both floors
  1e-7, float32, one value for the whole batch (the norms run over every clip at once), differentiable;
* the evaluation metric (``vqkit.metrics.eval.audio.stft_distance``): log10, magnitude floor 1e-5, norm floor
  1e-12, float64, one value per clip.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from vqkit.functional.spectral import magnitude_stft

_LOGS: dict[float, Callable[[torch.Tensor], torch.Tensor]] = {
    math.e: torch.log,
    10.0: torch.log10,
    2.0: torch.log2,
}

Dims = tuple[int, ...] | None


def _log(base: float) -> Callable[[torch.Tensor], torch.Tensor]:
    if base in _LOGS:  # the exact torch kernel, so a base-e or base-10 caller gets the same bits as before
        return _LOGS[base]
    if not base > 0 or base == 1:
        raise ValueError(f"log_base: expected a positive number other than 1, got {base!r}")
    scale = math.log(base)
    return lambda t: torch.log(t) / scale


def spectral_convergence(
    mag_hat: torch.Tensor, mag: torch.Tensor, norm_floor: float = 1e-7, dim: Dims = None
) -> torch.Tensor:
    """``|| mag - mag_hat || / max(|| mag ||, norm_floor)``, the Frobenius norms over ``dim`` (``None``: all)."""
    error = torch.linalg.vector_norm(mag - mag_hat, dim=dim)
    return error / torch.linalg.vector_norm(mag, dim=dim).clamp(min=norm_floor)


def log_magnitude_l1(
    mag_hat: torch.Tensor,
    mag: torch.Tensor,
    log_floor: float = 1e-7,
    dim: Dims = None,
    log_base: float = math.e,
) -> torch.Tensor:
    """``mean | log_b(max(mag, log_floor)) - log_b(max(mag_hat, log_floor)) |`` over ``dim`` (``None``: all)."""
    log = _log(log_base)
    return (log(mag.clamp(min=log_floor)) - log(mag_hat.clamp(min=log_floor))).abs().mean(dim=dim)


def multi_resolution_stft_distance(
    x_hat: torch.Tensor,
    x: torch.Tensor,
    fft_sizes: Sequence[int] = (512, 1024, 2048),
    *,
    log_base: float = math.e,
    log_floor: float = 1e-7,
    norm_floor: float = 1e-7,
    per_item: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Mean over ``fft_sizes`` of spectral convergence plus log-magnitude L1 (see the module docstring).

    Args:
        x_hat: the estimate ``[..., T]``.
        x: the reference, the shape of ``x_hat``.
        fft_sizes: the resolutions.
        log_base: base of the log-magnitude term (``math.e`` or 10).
        log_floor: floor of the magnitudes before the log.
        norm_floor: floor of the reference's norm in the convergence term.
        per_item: one value per leading index (``[...]``, norms over each item's spectrogram) instead of one
            for the whole input (a scalar, norms over everything at once).
        dtype: the precision of the magnitudes and of both terms.

    Returns:
        ``[]`` or ``[...]`` (``per_item``), exactly 0 where ``x_hat`` equals ``x``.
    """
    if x_hat.shape != x.shape:
        raise ValueError(f"x_hat: expected the shape of x {tuple(x.shape)}, got {tuple(x_hat.shape)}")
    if not fft_sizes:
        raise ValueError("fft_sizes: expected at least one FFT size, got none")
    dim: Dims = (-2, -1) if per_item else None
    terms = []
    for n_fft in fft_sizes:
        mag, mag_hat = magnitude_stft(x, n_fft).to(dtype), magnitude_stft(x_hat, n_fft).to(dtype)
        convergence = spectral_convergence(mag_hat, mag, norm_floor, dim)
        terms.append(convergence + log_magnitude_l1(mag_hat, mag, log_floor, dim, log_base))
    return torch.stack(terms).mean(dim=0)
