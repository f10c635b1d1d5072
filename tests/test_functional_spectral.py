"""Spectral features against values computed once with librosa 0.11.0 (``librosa.filters.mel``,
``librosa.filters.chroma``, ``melspectrogram(power=1, pad_mode="reflect")``); librosa is not a dependency."""

from __future__ import annotations

import math

import pytest
import torch

from vqkit.functional.spectral import (
    chroma_filterbank,
    hz_to_mel,
    log_mel,
    magnitude_stft,
    mel_filterbank,
    mel_to_hz,
)


def test_mel_filterbank_matches_librosa() -> None:
    bank = mel_filterbank(16000, 512, 40).double()
    assert bank.shape == (40, 257)
    assert float(bank.sum()) == pytest.approx(1.2793331146240234, rel=1e-6)
    assert bank.sum(1)[[0, 10, 39]].tolist() == pytest.approx(
        [0.03127547726035118, 0.032724279910326004, 0.03198153153061867], rel=1e-6
    )
    assert bank.argmax(1)[[0, 10, 39]].tolist() == [2, 26, 237]
    assert float(bank[10].max()) == pytest.approx(0.012996009550988674, rel=1e-6)


def test_chroma_filterbank_matches_librosa() -> None:
    bank = chroma_filterbank(22050, 2048).double()
    assert bank.shape == (12, 1025)
    assert bank.sum(1)[[0, 5, 11]].tolist() == pytest.approx(
        [57.19880676269531, 53.08320999145508, 55.87617874145508], rel=1e-6
    )
    assert bank.argmax(1).tolist() == [97, 103, 109, 58, 61, 65, 69, 73, 77, 82, 87, 92]


def _tones(sample_rate: int = 16000) -> torch.Tensor:
    t = torch.arange(sample_rate, dtype=torch.float64) / sample_rate
    return (torch.sin(2 * math.pi * 440 * t) + 0.5 * torch.sin(2 * math.pi * 1000 * t)).float()


def test_log_mel_matches_librosa() -> None:
    features = log_mel(_tones(), 16000, n_fft=512, hop_length=128, n_mels=40)
    assert features.shape == (40, 126)
    assert float(features.mean()) == pytest.approx(-8.787909507751465, abs=1e-3)  # librosa ran in float64
    assert int(features.exp().mean(1).argmax()) == 5


def test_chroma_of_a_440_hz_tone_is_a() -> None:
    spec = magnitude_stft(_tones(), 2048, 512) ** 2
    chroma = chroma_filterbank(16000, 2048) @ spec
    assert int(chroma.mean(1).argmax()) == 9  # A (librosa.feature.chroma_stft agrees)


def test_mel_scale_round_trip_and_batch_shapes() -> None:
    hz = torch.tensor([0.0, 200.0, 999.0, 1000.0, 4000.0, 8000.0], dtype=torch.float64)
    torch.testing.assert_close(mel_to_hz(hz_to_mel(hz)), hz)
    x = torch.randn(2, 3, 4000)
    assert magnitude_stft(x, 256, 64).shape == (2, 3, 129, 63)
    assert magnitude_stft(torch.randn(50), 256).shape[-2] == 129  # shorter than the window: padded


def test_mel_filterbank_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="n_mels"):
        mel_filterbank(16000, 512, 0)
