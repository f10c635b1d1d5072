"""vqkit.functional.stft_distance: one multi-resolution STFT distance behind the codec loss and the metric."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vqkit.functional.spectral import magnitude_stft
from vqkit.functional.stft_distance import log_magnitude_l1, multi_resolution_stft_distance
from vqkit.metrics.eval.audio import stft_distance
from vqkit.models.losses import multi_resolution_stft_loss


def _pair(batch: int = 3, length: int = 3000) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, length, generator=g) * torch.linspace(0.1, 1.0, batch)[:, None]
    return x, x + 0.05 * torch.randn(batch, length, generator=g)


def _reference(x: np.ndarray, y: np.ndarray, sizes: tuple[int, ...], log: str, floor: float) -> float:
    """The Parallel WaveGAN formula written out in float64 numpy on the same magnitudes."""
    total = 0.0
    for n in sizes:
        mx = magnitude_stft(torch.from_numpy(x), n).double().numpy()
        my = magnitude_stft(torch.from_numpy(y), n).double().numpy()
        logf = np.log if log == "e" else np.log10
        convergence = np.sqrt(((mx - my) ** 2).sum()) / max(np.sqrt((mx**2).sum()), 1e-12)
        total += convergence + np.abs(logf(np.maximum(mx, floor)) - logf(np.maximum(my, floor))).mean()
    return total / len(sizes)


def test_the_training_loss_is_the_pooled_natural_log_distance() -> None:
    x, y = _pair()
    loss = multi_resolution_stft_loss(y, x, (64, 256))
    assert loss.dim() == 0 and loss.dtype == torch.float32
    expected = _reference(x.numpy(), y.numpy(), (64, 256), "e", 1e-7)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    same = multi_resolution_stft_distance(y, x, (64, 256), log_base=math.e, log_floor=1e-7, norm_floor=1e-7)
    assert torch.equal(loss, same)


def test_the_metric_is_the_per_clip_log10_distance() -> None:
    x, y = _pair()
    per_clip = stft_distance(x, y)
    assert per_clip.shape == (3,) and per_clip.dtype == torch.float64
    for b in range(3):
        expected = _reference(x[b].numpy(), y[b].numpy(), (512, 1024, 2048), "10", 1e-5)
        assert float(per_clip[b]) == pytest.approx(expected, rel=1e-12)


def test_per_item_rows_are_the_pooled_distance_of_each_item() -> None:
    x, y = _pair()
    rows = multi_resolution_stft_distance(y, x, (128,), per_item=True, dtype=torch.float64)
    for b in range(3):
        alone = multi_resolution_stft_distance(y[b : b + 1], x[b : b + 1], (128,), dtype=torch.float64)
        assert float(rows[b]) == pytest.approx(float(alone), rel=1e-12)


def test_the_log_base_only_scales_the_log_term() -> None:
    x, y = _pair()
    mx, my = magnitude_stft(x, 256).double(), magnitude_stft(y, 256).double()
    natural = log_magnitude_l1(my, mx, 1e-5)
    assert float(log_magnitude_l1(my, mx, 1e-5, log_base=10.0)) == pytest.approx(
        float(natural) / math.log(10)
    )
    assert float(log_magnitude_l1(my, mx, 1e-5, log_base=3.0)) == pytest.approx(float(natural) / math.log(3))


def test_identical_inputs_are_at_distance_zero_and_errors_name_the_argument() -> None:
    x, _ = _pair()
    assert float(multi_resolution_stft_distance(x, x)) == 0.0
    assert torch.equal(stft_distance(x, x), torch.zeros(3, dtype=torch.float64))
    assert torch.equal(
        stft_distance(torch.zeros_like(x), torch.zeros_like(x)), torch.zeros(3, dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="x_hat: expected the shape of x"):
        multi_resolution_stft_distance(x[:, :100], x)
    with pytest.raises(ValueError, match="fft_sizes: expected at least one FFT size"):
        multi_resolution_stft_distance(x, x, ())
    with pytest.raises(ValueError, match="log_base: expected a positive number other than 1, got 1"):
        multi_resolution_stft_distance(x, x, log_base=1)
