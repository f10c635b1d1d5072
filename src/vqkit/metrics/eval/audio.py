"""Audio reconstruction metrics, accumulated over batches of clips in [-1, 1].

Spectral metrics use vqkit's torch STFT / mel / chroma (``vqkit.functional.spectral``, matching librosa). With
``n`` the STFT size of ``stft_size(sample_rate)`` (the power of two nearest 46 ms: 1024 at 16-24 kHz, 2048 at
44.1/48 kHz), Hann window, hop ``n / 4``, centred frames, ``X`` the reference's STFT and ``Y`` the
reconstruction's, ``t`` frames and ``f`` bins:

* ``lsd``: log-spectral distance in dB, ``mean_t sqrt(mean_f (10 log10((|X|² + ε) / (|Y|² + ε)))²)``, ε = 1e-8.
  Audio super-resolution papers (ssr_eval, NU-Wave, AudioSR) and, by its magnitudes, the IVQ paper's table use
  the same formula without the factor 10 (log10 of power); divide ``lsd`` by 10 to compare with them.
* ``mel_distance``: ``mean |ln(M_X + 1e-5) - ln(M_Y + 1e-5)|`` over 80 Slaney mel bands and frames, with
  ``M = mel @ |STFT|`` (vqkit's ``log_mel``).
* ``stft_distance``: multi-resolution STFT distance (Parallel WaveGAN, arXiv:1910.11480), the mean over STFT sizes
  512, 1024, 2048 (hop size / 4) of spectral convergence ``|(|X| - |Y|)|_F / |X|_F`` plus
  ``mean |log10(max(|X|, 1e-5)) - log10(max(|Y|, 1e-5))|``: ``vqkit.functional.stft_distance``, the codec's
  training loss with log10 for ln and one value per clip.
* ``si_sdr``: scale-invariant SDR in dB (Le Roux et al., arXiv:1811.02508) on zero-mean signals,
  ``10 log10(|a x|² / |a x - y|²)`` with ``a = <y, x> / |x|²`` (machine-epsilon guards as torchmetrics).
* ``stoi``: STOI (Taal et al., 2011) by ``pystoi`` (it resamples to 10 kHz itself). Silent references, and clips
  with fewer than 30 non-silent frames (pystoi then returns 1e-5), are left out and counted in ``stoi_failures``.
* ``pesq``: PESQ MOS-LQO by ``pesq`` (ITU-T P.862): wide-band (P.862.2) at 16 kHz, narrow-band at 8 kHz; other
  rates are resampled (polyphase, scipy) to 16 kHz wide-band, or to 8 kHz narrow-band below 8 kHz, and ``notes``
  says so. Clips PESQ rejects (silence: "no utterances", too short) are left out and counted in
  ``pesq_failures``.
* ``chroma_similarity``: the IVQ paper's CS: mean over frames of the cosine similarity of the 12-bin chroma
  vectors ``chroma @ |STFT|²`` (librosa's ``chroma_stft`` filters, STFT size ``chroma_size``: the power of two
  nearest 93 ms, librosa's 2048 at 22.05 kHz). Frames where the reference is silent (chroma power 60 dB under its
  loudest frame) are left out: they have no pitch class.
* ``spec_psnr``, ``spec_ssim``: PSNR and SSIM of the log-mel spectrograms as images, as audioldm_eval (whose
  metric set the IVQ paper's table matches) computes them; the paper gives no normalization, this one is ours.
  Each spectrogram is ``20 log10(M + 1e-10)`` dB, both are floored at the reference's peak minus
  80 dB and mapped to ``(S - floor) / 80`` (the reference spans [0, 1]); PSNR uses peak 1 (= 80 dB; capped at
  100 dB), SSIM the image SSIM (11×11 Gaussian window, σ 1.5; NaN and left out for clips under 11 frames).

``kld`` is not implemented. The IVQ paper does not define it; its metric set (KLD, FAD, FD, LSD, PSNR, SSIM)
matches audioldm_eval's, whose KL divergence compares the AudioSet-label posteriors of a PANNs CNN14 classifier on
the two clips. That needs the classifier's weights, which cannot be fetched offline, and it is not a function
of the spectra alone.
"""

from __future__ import annotations

import math
import warnings
from math import gcd
from typing import Any

import torch

from vqkit._validate import check_int
from vqkit.functional.spectral import chroma_filterbank, magnitude_stft, mel_filterbank
from vqkit.functional.stft_distance import multi_resolution_stft_distance
from vqkit.metrics.eval._running import RunningMeans
from vqkit.metrics.eval.image import ssim as image_ssim

LSD_EPS = 1e-8
MEL_EPS = 1e-5
N_MELS = 80
STFT_RESOLUTIONS = (512, 1024, 2048)
STFT_LOG_FLOOR = 1e-5
STFT_NORM_FLOOR = 1e-12
SPEC_DYNAMIC_RANGE_DB = 80.0
CHROMA_SILENCE = 1e-6  # a frame whose chroma (power) norm is 60 dB under the loudest frame's is silent
PSNR_CAP_DB = 100.0


def _nearest_pow2(seconds: float, sample_rate: int) -> int:
    return max(64, 2 ** round(math.log2(seconds * sample_rate)))


def stft_size(sample_rate: int) -> int:
    """STFT size of the LSD / mel / spectrogram metrics: the power of two nearest 46 ms (at least 64)."""
    return _nearest_pow2(0.046, sample_rate)


def chroma_size(sample_rate: int) -> int:
    """STFT size of the chroma similarity: the power of two nearest 93 ms (librosa's 2048 at 22.05 kHz)."""
    return _nearest_pow2(0.093, sample_rate)


def pesq_plan(sample_rate: int) -> tuple[int, str]:
    """``(rate, mode)`` PESQ runs at for clips at ``sample_rate``: ``(16000, "wb")`` or ``(8000, "nb")``."""
    return (8000, "nb") if sample_rate <= 8000 else (16000, "wb")


def _pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError(
            f"x, x_hat: expected two [B, T] tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return x.float(), y.float()


def log_spectral_distance(x: torch.Tensor, x_hat: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Per-clip LSD in dB ``[B]`` of ``[B, T]`` clips (see the module docstring)."""
    x, x_hat = _pair(x, x_hat)
    return _lsd(magnitude_stft(x, n_fft).double(), magnitude_stft(x_hat, n_fft).double())


def _lsd(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    diff = 10.0 * torch.log10((sx.square() + LSD_EPS) / (sy.square() + LSD_EPS))
    return diff.square().mean(dim=-2).sqrt().mean(dim=-1)


def stft_distance(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Per-clip multi-resolution STFT distance ``[B]``: ``multi_resolution_stft_distance`` with the metric's
    parameters (see the module docstring: log10, floors 1e-5 and 1e-12, float64, norms per clip)."""
    x, x_hat = _pair(x, x_hat)
    return multi_resolution_stft_distance(
        x_hat,
        x,
        STFT_RESOLUTIONS,
        log_base=10.0,
        log_floor=STFT_LOG_FLOOR,
        norm_floor=STFT_NORM_FLOOR,
        per_item=True,
        dtype=torch.float64,
    )


def si_sdr(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Per-clip scale-invariant SDR in dB ``[B]`` of the estimate ``x_hat`` against the reference ``x``."""
    x, x_hat = _pair(x, x_hat)
    ref = x.double() - x.double().mean(dim=-1, keepdim=True)
    est = x_hat.double() - x_hat.double().mean(dim=-1, keepdim=True)
    eps = torch.finfo(torch.float64).eps
    alpha = ((est * ref).sum(-1, keepdim=True) + eps) / (ref.square().sum(-1, keepdim=True) + eps)
    target = alpha * ref
    noise = est - target
    return 10.0 * torch.log10((target.square().sum(-1) + eps) / (noise.square().sum(-1) + eps))


def chroma_similarity(x: torch.Tensor, x_hat: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Per-clip mean cosine similarity of chroma vectors over the reference's non-silent frames ``[B]`` (NaN for a
    silent reference)."""
    x, x_hat = _pair(x, x_hat)
    n = chroma_size(sample_rate)
    bank = chroma_filterbank(sample_rate, n).to(x.device).double()
    cx = bank @ magnitude_stft(x, n).double().square()  # [B, 12, frames]
    cy = bank @ magnitude_stft(x_hat, n).double().square()
    nx, ny = cx.norm(dim=-2), cy.norm(dim=-2)
    cos = (cx * cy).sum(dim=-2) / (nx * ny).clamp(min=1e-30)
    voiced = nx > CHROMA_SILENCE * nx.amax(dim=-1, keepdim=True)  # all False for a silent reference
    count = voiced.sum(-1)
    sums = (cos * voiced).sum(-1)
    return torch.where(count > 0, sums / count.clamp(min=1), torch.full_like(sums, math.nan))


def _mel_magnitude(spec: torch.Tensor, sample_rate: int, n_fft: int) -> torch.Tensor:
    bank = mel_filterbank(sample_rate, n_fft, N_MELS).to(spec.device).double()
    return bank @ spec.double()


def _spectrogram_image(mel: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
    db = 20.0 * torch.log10(mel + 1e-10)
    floor = peak - SPEC_DYNAMIC_RANGE_DB
    return (torch.maximum(db, floor) - floor) / SPEC_DYNAMIC_RANGE_DB


def spectrogram_scores(x: torch.Tensor, x_hat: torch.Tensor, sample_rate: int) -> dict[str, torch.Tensor]:
    """``lsd``, ``mel_distance``, ``spec_psnr``, ``spec_ssim`` per clip (``[B]`` each) from one STFT pass of
    size ``stft_size(sample_rate)``."""
    x, x_hat = _pair(x, x_hat)
    n = stft_size(sample_rate)
    sx, sy = magnitude_stft(x, n).double(), magnitude_stft(x_hat, n).double()
    lsd = _lsd(sx, sy)
    mx, my = _mel_magnitude(sx, sample_rate, n), _mel_magnitude(sy, sample_rate, n)
    mel = ((mx + MEL_EPS).log() - (my + MEL_EPS).log()).abs().mean(dim=(-2, -1))
    peak = (20.0 * torch.log10(mx + 1e-10)).amax(dim=(-2, -1), keepdim=True)
    ix, iy = _spectrogram_image(mx, peak), _spectrogram_image(my, peak)
    err = (ix - iy).square().mean(dim=(-2, -1))
    spec_psnr = -10.0 * torch.log10(err.clamp(min=10 ** (-PSNR_CAP_DB / 10)))
    spec_ssim = image_ssim(ix.unsqueeze(1), iy.unsqueeze(1), sigma=1.5)
    return {"lsd": lsd, "mel_distance": mel, "spec_psnr": spec_psnr, "spec_ssim": spec_ssim}


def _check_audio(name: str, t: Any) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        kind = f"{t.dtype} tensor" if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name}: expected a float tensor [B, 1, T] or [B, T] in [-1, 1], got a {kind}")
    if t.dim() == 3 and t.shape[1] == 1:
        t = t[:, 0]
    if t.dim() != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"{name}: expected shape [B, 1, T] or [B, T] (mono), got {tuple(t.shape)}")
    low, high = float(t.min()), float(t.max())
    if not (low >= -1.0 and high <= 1.0):  # also false for NaN
        raise ValueError(
            f"{name}: expected finite values in [-1, 1] (clamp decoder outputs first), got values in [{low}, {high}]"
        )
    return t


class AudioMetrics:
    """Reconstruction metrics over many batches of mono clips at ``sample_rate``.

    ``compute()`` returns means over every clip seen since the last ``reset()``: ``lsd``, ``mel_distance``,
    ``stft_distance``, ``si_sdr``, ``chroma_similarity``, ``spec_psnr``, ``spec_ssim``, and, when enabled,
    ``stoi`` / ``stoi_failures`` and ``pesq`` / ``pesq_failures`` (clips a metric cannot score are left out of
    its mean and counted). The module docstring gives every formula. ``notes`` records the PESQ mode and rate.

    Args:
        sample_rate: clip sample rate in Hz.
        stoi: compute STOI (``pystoi``; ``pip install 'vqkit[audio]'``).
        pesq: compute PESQ (``pesq``; ``pip install 'vqkit[audio]'``).

    Example:
        >>> a = AudioMetrics(16000)
        >>> for x in loader: a.update(x, model(x).reconstruction.clamp(-1, 1))
        >>> a.compute()["pesq"]
    """

    def __init__(self, sample_rate: int, *, stoi: bool = True, pesq: bool = True) -> None:
        self.sample_rate = check_int(
            "sample_rate", sample_rate, minimum=1000, expected="an integer rate in Hz (>= 1000)"
        )
        self._stoi: Any = None
        self._pesq: Any = None
        self.notes: dict[str, str] = {}
        if stoi:
            try:
                from pystoi import stoi as stoi_fn
            except ImportError as err:
                raise ImportError(f"STOI needs pystoi: pip install 'vqkit[audio]' ({err})") from err
            self._stoi = stoi_fn
            self.notes["stoi"] = f"pystoi (classic STOI; resampled from {sample_rate} Hz to 10 kHz by pystoi)"
        if pesq:
            try:
                import pesq as pesq_module
                import scipy.signal  # noqa: F401  (resampling)
            except ImportError as err:
                raise ImportError(f"PESQ needs pesq and scipy: pip install 'vqkit[audio]' ({err})") from err
            self._pesq = pesq_module
            rate, mode = pesq_plan(sample_rate)
            band = "wide-band (P.862.2)" if mode == "wb" else "narrow-band (P.862)"
            resampled = f", resampled from {sample_rate} Hz" if rate != sample_rate else ""
            self.notes["pesq"] = f"{band} at {rate} Hz{resampled}"
        self._means = RunningMeans()
        self._failures = {"stoi": 0, "pesq": 0}

    def reset(self) -> None:
        self._means.reset()
        self._failures = {"stoi": 0, "pesq": 0}

    @torch.no_grad()
    def update(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        """Add a batch: references ``x`` and reconstructions ``x_hat``, ``[B, 1, T]`` or ``[B, T]`` in [-1, 1]."""
        x, x_hat = _check_audio("x", x), _check_audio("x_hat", x_hat)
        if x.shape != x_hat.shape:
            raise ValueError(f"x_hat: expected the shape of x {tuple(x.shape)}, got {tuple(x_hat.shape)}")
        x, x_hat = x.detach().float().cpu(), x_hat.detach().float().cpu()
        for name, values in spectrogram_scores(x, x_hat, self.sample_rate).items():
            self._means.add(name, values)
        self._means.add("stft_distance", stft_distance(x, x_hat))
        self._means.add("si_sdr", si_sdr(x, x_hat))
        self._means.add("chroma_similarity", chroma_similarity(x, x_hat, self.sample_rate))
        ref, est = x.double().numpy(), x_hat.double().numpy()
        if self._stoi is not None:
            self._means.add(
                "stoi", torch.tensor([self._stoi_one(r, e) for r, e in zip(ref, est, strict=True)])
            )
        if self._pesq is not None:
            self._means.add(
                "pesq", torch.tensor([self._pesq_one(r, e) for r, e in zip(ref, est, strict=True)])
            )

    def _stoi_one(self, ref: Any, est: Any) -> float:
        if not (abs(ref).max() > 0):  # a silent reference has no speech to be intelligible
            self._failures["stoi"] += 1
            return math.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "Not enough STFT frames": detected below
            value = float(self._stoi(ref, est, self.sample_rate, extended=False))
        if value == 1e-5 or not math.isfinite(value):
            self._failures["stoi"] += 1
            return math.nan
        return value

    def _pesq_one(self, ref: Any, est: Any) -> float:
        rate, mode = pesq_plan(self.sample_rate)
        if rate != self.sample_rate:
            from scipy.signal import resample_poly

            g = gcd(rate, self.sample_rate)
            ref = resample_poly(ref, rate // g, self.sample_rate // g)
            est = resample_poly(est, rate // g, self.sample_rate // g)
        if not (abs(ref).max() > 0):  # pesq divides by the peak; a silent reference has no utterances
            self._failures["pesq"] += 1
            return math.nan
        try:
            return float(self._pesq.pesq(rate, ref, est, mode))
        except self._pesq.PesqError:
            self._failures["pesq"] += 1
            return math.nan

    def compute(self) -> dict[str, float]:
        """Means over the clips seen (see the class docstring for the keys).

        Raises:
            ValueError: nothing was added.
        """
        if not self._means.count("si_sdr"):
            raise ValueError("update: expected at least one batch before compute(), got none")
        names = [
            "lsd",
            "mel_distance",
            "stft_distance",
            "si_sdr",
            "chroma_similarity",
            "spec_psnr",
            "spec_ssim",
        ]
        out = {name: self._means.mean(name) for name in names}
        for name, enabled in (("stoi", self._stoi), ("pesq", self._pesq)):
            if enabled is not None:
                out[name] = self._means.mean(name)
                out[f"{name}_failures"] = float(self._failures[name])
        return out
