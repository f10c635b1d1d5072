"""Audio metrics: zero distance for identical clips, monotone in the noise level, numpy oracles for LSD and
SI-SDR, STOI / PESQ on a synthetic voiced signal, failure counting on silence, accumulation, argument errors."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from vqkit.metrics.eval.audio import (
    AudioMetrics,
    chroma_similarity,
    log_spectral_distance,
    pesq_plan,
    si_sdr,
    stft_size,
)

SR = 16000


def _voiced(seed: int, seconds: float = 2.5, sample_rate: int = SR) -> torch.Tensor:
    """A speech-like clip: a gliding pulse train through vowel formants, four syllables a second, with pauses."""
    rng = np.random.default_rng(seed)
    n = int(sample_rate * seconds)
    t = np.arange(n) / sample_rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t + seed) + 10 * np.sin(2 * np.pi * 3.1 * t)
    source = (np.sin(2 * np.pi * np.cumsum(f0) / sample_rate) > 0.95) - 0.05 + 0.02 * rng.standard_normal(n)
    vowels = [(700, 1200, 2500), (300, 2300, 3000), (500, 900, 2400), (400, 1900, 2600)]
    out, seg = np.zeros(n), sample_rate // 4
    for k, start in enumerate(range(0, n, seg)):
        y = source[start : start + seg]
        for f in vowels[(k + seed) % 4]:
            r, th = np.exp(-np.pi * 80 / sample_rate), 2 * np.pi * f / sample_rate
            y = lfilter([1 - r], [1, -2 * r * np.cos(th), r * r], y)
        out[start : start + seg] = y
    out *= np.sin(np.pi * t * 4) ** 2 * (np.sin(2 * np.pi * 0.5 * t) > -0.7)
    return torch.tensor(0.5 * out / np.abs(out).max(), dtype=torch.float32)


@pytest.fixture(scope="module")
def clips() -> torch.Tensor:
    return torch.stack([_voiced(0), _voiced(1)])


def _noisy(x: torch.Tensor, sigma: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def _scores(x: torch.Tensor, y: torch.Tensor, **kwargs: bool) -> dict[str, float]:
    m = AudioMetrics(SR, **kwargs)
    m.update(x, y)
    return m.compute()


def test_identical_clips_score_perfectly(clips: torch.Tensor) -> None:
    out = _scores(clips, clips)
    assert out["lsd"] == out["mel_distance"] == out["stft_distance"] == 0.0
    assert out["chroma_similarity"] == pytest.approx(1.0, abs=1e-12)
    assert out["spec_psnr"] == 100.0 and out["spec_ssim"] == pytest.approx(1.0, abs=1e-12)
    assert out["si_sdr"] > 150 and out["stoi"] == pytest.approx(1.0, abs=1e-9) and out["pesq"] > 4.5
    assert out["stoi_failures"] == out["pesq_failures"] == 0.0


def test_every_metric_degrades_with_noise(clips: torch.Tensor) -> None:
    runs = [_scores(clips, _noisy(clips, s)) for s in (0.001, 0.01, 0.05)]
    for key in ("lsd", "mel_distance", "stft_distance"):
        values = [r[key] for r in runs]
        assert values == sorted(values) and values[0] > 0, key
    for key in ("si_sdr", "chroma_similarity", "spec_psnr", "spec_ssim", "stoi", "pesq"):
        values = [r[key] for r in runs]
        assert values == sorted(values, reverse=True) and values[0] > values[-1], key
    assert all(0.0 <= r["stoi"] <= 1.0 and 1.0 <= r["pesq"] <= 4.65 for r in runs)
    assert all(0.0 <= r["chroma_similarity"] <= 1.0 and r["spec_ssim"] <= 1.0 for r in runs)


def _np_stft_power(x: np.ndarray, n: int) -> np.ndarray:
    hop = n // 4
    padded = np.pad(x, n // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)  # periodic Hann
    frames = np.stack([padded[i : i + n] * window for i in range(0, len(padded) - n + 1, hop)])
    return np.abs(np.fft.rfft(frames, axis=-1)) ** 2  # [frames, bins]


def test_lsd_matches_its_numpy_definition(clips: torch.Tensor) -> None:
    y = _noisy(clips, 0.01)
    n = stft_size(SR)
    assert n == 1024
    expected = []
    for a, b in zip(clips.double().numpy(), y.double().numpy(), strict=True):
        d = 10 * np.log10((_np_stft_power(a, n) + 1e-8) / (_np_stft_power(b, n) + 1e-8))
        expected.append(np.sqrt((d**2).mean(axis=1)).mean())
    assert log_spectral_distance(clips, y, n).tolist() == pytest.approx(expected, rel=1e-4)


def test_si_sdr_matches_numpy_and_ignores_gain() -> None:
    g = torch.Generator().manual_seed(2)
    ref = torch.randn(3, 4000, generator=g).double()
    est = 0.7 * ref + 0.2 * torch.randn(3, 4000, generator=g).double()
    expected = []
    for r, e in zip(ref.numpy(), est.numpy(), strict=True):
        r, e = r - r.mean(), e - e.mean()
        target = (e @ r) / (r @ r) * r
        expected.append(10 * np.log10((target @ target) / ((e - target) @ (e - target))))
    assert si_sdr(ref, est).tolist() == pytest.approx(expected, rel=1e-9)
    assert si_sdr(ref, 0.25 * est).tolist() == pytest.approx(expected, rel=1e-9)


def test_chroma_similarity_is_about_pitch_class() -> None:
    t = torch.arange(SR) / SR

    def tone(hz: float, gain: float = 0.5) -> torch.Tensor:
        return (gain * torch.sin(2 * math.pi * hz * t)).unsqueeze(0)

    a440 = tone(440.0)
    assert float(chroma_similarity(a440, tone(440.0, 0.1), SR)) == pytest.approx(1.0, abs=1e-9)  # gain-free
    assert float(chroma_similarity(a440, tone(880.0), SR)) > 0.9  # an octave up: the same pitch class
    assert float(chroma_similarity(a440, tone(261.63), SR)) < 0.2  # C against A
    assert math.isnan(float(chroma_similarity(torch.zeros(1, SR), a440, SR)))  # no pitch in silence


def test_silence_and_short_clips_are_counted_not_crashed(clips: torch.Tensor) -> None:
    m = AudioMetrics(SR)
    m.update(torch.zeros(1, SR), torch.zeros(1, SR))  # PESQ: no utterances; STOI: nothing to hear
    m.update(clips[:1], _noisy(clips[:1], 0.01))
    m.update(clips[:1, :1600], clips[:1, :1600])  # 0.1 s: too short for PESQ, STOI and an 11-frame SSIM
    out = m.compute()
    assert out["pesq_failures"] == 2.0 and out["stoi_failures"] == 2.0
    assert 1.0 <= out["pesq"] <= 4.65 and 0.0 < out["stoi"] < 1.0
    assert math.isfinite(out["spec_ssim"]) and math.isfinite(out["chroma_similarity"])


def test_two_batches_equal_one_batch_of_both(clips: torch.Tensor) -> None:
    y = _noisy(clips, 0.01)
    one, two = AudioMetrics(SR), AudioMetrics(SR)
    one.update(clips, y)
    two.update(clips[:1].unsqueeze(1), y[:1].unsqueeze(1))  # [B, 1, T] and [B, T] are the same clips
    two.update(clips[1:], y[1:])
    a, b = one.compute(), two.compute()
    assert a.keys() == b.keys()
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-6), key
    two.reset()
    with pytest.raises(ValueError, match="update: expected at least one batch"):
        two.compute()


def test_pesq_rate_and_mode_follow_the_sample_rate() -> None:
    assert pesq_plan(16000) == (16000, "wb") and pesq_plan(8000) == (8000, "nb")
    assert (
        pesq_plan(22050) == (16000, "wb")
        and pesq_plan(44100) == (16000, "wb")
        and pesq_plan(6000) == (8000, "nb")
    )
    assert AudioMetrics(22050).notes["pesq"] == "wide-band (P.862.2) at 16000 Hz, resampled from 22050 Hz"
    assert AudioMetrics(8000).notes["pesq"] == "narrow-band (P.862) at 8000 Hz"
    x = _voiced(0, 2.0, 22050).unsqueeze(0)
    m = AudioMetrics(22050, stoi=False)
    m.update(x, _noisy(x, 0.005))
    result = m.compute()
    assert "stoi" not in result and 1.0 <= result["pesq"] <= 4.65 and result["pesq_failures"] == 0.0


@pytest.mark.parametrize(
    ("x", "x_hat", "match"),
    [
        (
            torch.zeros(2, 2, 100),
            torch.zeros(2, 2, 100),
            r"x: expected shape \[B, 1, T\] or \[B, T\] \(mono\)",
        ),
        (torch.zeros(2, 100), torch.full((2, 100), 1.5), r"x_hat: expected finite values in \[-1, 1\]"),
        (torch.zeros(2, 100), torch.zeros(2, 90), r"x_hat: expected the shape of x \(2, 100\)"),
        (torch.zeros(2, 100, dtype=torch.int16), torch.zeros(2, 100), "x: expected a float tensor"),
    ],
)
def test_update_errors_name_the_argument(x: torch.Tensor, x_hat: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AudioMetrics(SR, stoi=False, pesq=False).update(x, x_hat)


def test_constructor_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="sample_rate: expected an integer rate in Hz"):
        AudioMetrics(16000.0)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "pystoi", None)
    with pytest.raises(ImportError, match=r"STOI needs pystoi: pip install 'vqkit\[audio\]'"):
        AudioMetrics(SR)
    monkeypatch.setitem(sys.modules, "pesq", None)
    with pytest.raises(ImportError, match=r"PESQ needs pesq and scipy: pip install 'vqkit\[audio\]'"):
        AudioMetrics(SR, stoi=False)
    assert "pesq" not in AudioMetrics(SR, stoi=False, pesq=False).notes
