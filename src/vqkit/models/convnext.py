"""The 1-D ConvNeXt stack of the spectral codec (Vocos' backbone: Siuzdak, arXiv 2306.00814, after ConvNeXt, Liu
et al., arXiv 2201.03545), and the reshapes between STFT frames and latent frames.

* ``ConvNeXtBlock``: ``x + gamma * pw2(gelu(pw1(norm(dwconv(x)))))`` on ``[B, C, frames]``; ``gamma`` is the layer
  scale, initialized to ``1 / blocks`` as in Vocos.
* ``ConvNeXtStack``: input conv (kernel 3), LayerNorm, the blocks, LayerNorm, a 1x1 conv to the output channels.
* ``stack_frames`` / ``unstack_frames``: ``group`` consecutive frames as one vector of ``group * F`` channels, and
  back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvNeXtBlock(nn.Module):
    """``x + gamma * pw2(gelu(pw1(norm(dwconv(x)))))`` on ``[B, C, frames]`` (Vocos' 1-D ConvNeXt block)."""

    def __init__(self, dim: int, kernel_size: int, expansion: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, expansion * dim)
        self.pw2 = nn.Linear(expansion * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.dwconv(x).transpose(1, 2))
        h = self.pw2(F.gelu(self.pw1(h))) * self.gamma
        return x + h.transpose(1, 2)


class ConvNeXtStack(nn.Module):
    """``in_dim`` -> conv ``kernel_size`` -> LayerNorm -> ``blocks`` ConvNeXt blocks -> LayerNorm -> ``out_dim``."""

    def __init__(
        self, in_dim: int, hidden: int, out_dim: int, blocks: int, kernel_size: int, expansion: int
    ) -> None:
        super().__init__()
        # A kernel of 3 on the input: the stacked spectra (``frames_per_latent * bins`` channels) make this the
        # widest layer, and the blocks' depthwise kernels see the context.
        self.embed = nn.Conv1d(in_dim, hidden, 3, padding=1)
        self.norm_in = nn.LayerNorm(hidden)
        scale = 1.0 / max(blocks, 1)  # Vocos' layer-scale init: 1 / number of blocks
        self.blocks = nn.ModuleList(
            [ConvNeXtBlock(hidden, kernel_size, expansion, scale) for _ in range(blocks)]
        )
        self.norm_out = nn.LayerNorm(hidden)
        self.head = nn.Conv1d(hidden, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm_in(self.embed(x).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm_out(h.transpose(1, 2)).transpose(1, 2))


def stack_frames(spec: torch.Tensor, group: int) -> torch.Tensor:
    """``[B, F, group * n]`` -> ``[B, F * group, n]``: channel ``f * group + k`` of frame ``j`` is bin ``f`` of
    input frame ``group * j + k``."""
    b, bins, frames = spec.shape
    return (
        spec.reshape(b, bins, frames // group, group)
        .transpose(2, 3)
        .reshape(b, bins * group, frames // group)
    )


def unstack_frames(h: torch.Tensor, group: int) -> torch.Tensor:
    """The inverse of ``stack_frames``: ``[B, F * group, n]`` -> ``[B, F, group * n]``."""
    b, channels, n = h.shape
    return h.reshape(b, channels // group, group, n).transpose(2, 3).reshape(b, channels // group, n * group)
