"""The SEANet encoder and decoder of Encodec, reimplemented (no code copied).

Défossez, Copet, Synnaeve, Adi, "High Fidelity Neural Audio Compression" (Encodec), arXiv 2210.13438; reference
code facebookresearch/encodec (``modules/seanet.py``, ``conv.py``, ``lstm.py``) and audiocraft's copy of it. SEANet
is from Tagliasacchi et al., arXiv 2009.02095; the residual-branch compression from Demucs v3.

Encoder (``[B, channels, T] -> [B, dimension, T / hop]``, ``hop = prod(ratios)``)::

    SConv1d(channels -> n_filters, kernel_size)
    for r in reversed(ratios):              # (2, 4, 5, 8) for ratios (8, 5, 4, 2): the encoder reverses them
        n_residual_layers x ResnetBlock(C, dilation = dilation_base ** j)
        ELU, SConv1d(C -> 2C, kernel 2r, stride r)
    SLSTM(C, lstm layers, skip), ELU, SConv1d(C -> dimension, last_kernel_size)

Decoder (mirror image): ``SConv1d(dimension -> C, kernel_size)``, SLSTM, then for ``r`` in ``ratios``: ELU,
``SConvTranspose1d(C -> C/2, kernel 2r, stride r)``, the residual blocks; finally ELU and
``SConv1d(n_filters -> channels, last_kernel_size)``, no output activation.

* ``ResnetBlock(dim)``: ``shortcut(x) + [ELU, SConv1d(dim -> dim/compress, residual_kernel_size, dilation), ELU,
  SConv1d(dim/compress -> dim, 1)](x)``; the shortcut is the identity with ``true_skip`` (audiocraft's default,
  which the IVQ audio model uses), else a 1x1 ``SConv1d`` (Encodec's default).
* ``SConv1d``: a conv with "same" padding of ``(k - 1) * dilation - (stride - 1)`` samples, all on the left when
  ``causal``, else split with the extra sample on the left; plus right padding so the last window is full
  (``ceil(T / stride)`` frames). ``pad_mode`` ``"constant"`` (zeros; audiocraft) or ``"reflect"`` (Encodec; an
  input shorter than the padding is zero-extended first, as Encodec's ``pad1d``).
* ``SConvTranspose1d``: a transposed conv trimmed by ``k - stride`` samples (on the right when causal, else split
  with the extra sample on the left), so ``T`` frames give ``T * stride`` samples.
* ``SLSTM``: ``lstm(x) + x`` over time.
* ``norm="weight_norm"`` on every conv (``torch.nn.utils.parametrizations.weight_norm``, ``dim=0`` as Encodec).

Deviations: only ``"weight_norm"`` and ``"none"`` are offered (Encodec also has spectral, layer and group norms);
the activation is always ELU(1.0); the decoder has no optional final activation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from vqkit._validate import check_int_list

PadMode = Literal["constant", "reflect"]
PAD_MODES = ("constant", "reflect")
Norm = Literal["weight_norm", "none"]
NORMS = ("weight_norm", "none")


@dataclass(frozen=True)
class SEANetConfig:
    """Hyperparameters shared by ``SEANetEncoder`` and ``SEANetDecoder`` (Encodec's names and defaults, except
    ``true_skip`` and ``pad_mode``, which follow audiocraft as the IVQ audio model does)."""

    channels: int = 1
    dimension: int = 128
    n_filters: int = 32
    ratios: tuple[int, ...] = field(default=(8, 5, 4, 2))
    n_residual_layers: int = 1
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2
    lstm: int = 2
    true_skip: bool = True
    causal: bool = False
    pad_mode: PadMode = "constant"
    norm: Norm = "weight_norm"

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)


def pad1d(x: torch.Tensor, left: int, right: int, mode: PadMode) -> torch.Tensor:
    """Pad the last axis; ``"reflect"`` on an input no longer than the padding zero-extends it first."""
    if mode != "reflect":
        return F.pad(x, (left, right))
    extra = max(0, max(left, right) - x.shape[-1] + 1)
    if extra:
        x = F.pad(x, (0, extra))
    padded = F.pad(x, (left, right), mode="reflect")
    return padded[..., : padded.shape[-1] - extra]


def extra_padding(length: int, kernel: int, stride: int, padding_total: int) -> int:
    """Right padding that makes the last window of a strided conv full (Encodec's ``get_extra_padding``)."""
    frames = -(-(length - kernel + padding_total) // stride) + 1  # ceil((L - k + P) / s) + 1
    return max(0, (frames - 1) * stride + kernel - padding_total - length)


def _norm(module: nn.Module, norm: Norm) -> nn.Module:
    return weight_norm(module) if norm == "weight_norm" else module


def _sconv(
    cfg: SEANetConfig, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1
) -> SConv1d:
    return SConv1d(
        cin, cout, kernel, stride, dilation, causal=cfg.causal, pad_mode=cfg.pad_mode, norm=cfg.norm
    )


class SConv1d(nn.Module):
    """``Conv1d`` with Encodec's padding (see the module docstring). ``[B, C_in, T] -> [B, C_out, ceil(T / s)]``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        *,
        causal: bool = False,
        pad_mode: PadMode = "constant",
        norm: Norm = "weight_norm",
    ) -> None:
        super().__init__()
        conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation)
        self.conv = _norm(conv, norm)
        self.kernel = (kernel_size - 1) * dilation + 1
        self.stride = stride
        self.causal = causal
        self.pad_mode: PadMode = pad_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.kernel - self.stride
        extra = extra_padding(x.shape[-1], self.kernel, self.stride, total)
        if self.causal:
            x = pad1d(x, total, extra, self.pad_mode)
        else:
            right = total // 2
            x = pad1d(x, total - right, right + extra, self.pad_mode)
        out: torch.Tensor = self.conv(x)
        return out


class SConvTranspose1d(nn.Module):
    """``ConvTranspose1d`` trimmed to ``T * stride`` samples. ``[B, C_in, T] -> [B, C_out, T * stride]``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        causal: bool = False,
        norm: Norm = "weight_norm",
    ) -> None:
        super().__init__()
        self.convtr = _norm(nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride), norm)
        total = kernel_size - stride
        self.trim_right = total if causal else total // 2
        self.trim_left = total - self.trim_right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.convtr(x)
        return y[..., self.trim_left : y.shape[-1] - self.trim_right]


class SLSTM(nn.Module):
    """``num_layers`` LSTM over time with a skip: ``[B, C, T] -> [B, C, T]``, ``lstm(x) + x``."""

    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x.permute(2, 0, 1)
        y, _ = self.lstm(seq)
        return (y + seq).permute(1, 2, 0)


class ResnetBlock(nn.Module):
    """SEANet residual unit: ``shortcut(x) + [ELU, conv k (dilated), ELU, conv 1](x)`` at ``dim / compress``."""

    def __init__(self, dim: int, dilation: int, cfg: SEANetConfig) -> None:
        super().__init__()
        hidden = max(1, dim // cfg.compress)
        self.block = nn.Sequential(
            nn.ELU(),
            _sconv(cfg, dim, hidden, cfg.residual_kernel_size, dilation=dilation),
            nn.ELU(),
            _sconv(cfg, hidden, dim, 1),
        )
        self.shortcut: nn.Module = nn.Identity() if cfg.true_skip else _sconv(cfg, dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.shortcut(x) + self.block(x)
        return out


class _Stack(nn.Module):
    """A SEANet encoder or decoder: its layers run in order (``model``), and the hop it spans."""

    def __init__(self, layers: list[nn.Module], hop_length: int) -> None:
        super().__init__()
        self.model = nn.Sequential(*layers)
        self.hop_length = hop_length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)
        return out


class SEANetEncoder(_Stack):
    """``[B, channels, T] -> [B, dimension, ceil(T / hop)]`` (see the module docstring)."""

    def __init__(self, cfg: SEANetConfig) -> None:
        width = cfg.n_filters
        layers: list[nn.Module] = [_sconv(cfg, cfg.channels, width, cfg.kernel_size)]
        for ratio in reversed(cfg.ratios):
            layers += [ResnetBlock(width, cfg.dilation_base**j, cfg) for j in range(cfg.n_residual_layers)]
            layers += [nn.ELU(), _sconv(cfg, width, 2 * width, 2 * ratio, ratio)]
            width *= 2
        if cfg.lstm:
            layers.append(SLSTM(width, cfg.lstm))
        layers += [nn.ELU(), _sconv(cfg, width, cfg.dimension, cfg.last_kernel_size)]
        super().__init__(layers, cfg.hop_length)


class SEANetDecoder(_Stack):
    """``[B, dimension, frames] -> [B, channels, frames * hop]`` (see the module docstring)."""

    def __init__(self, cfg: SEANetConfig) -> None:
        width = cfg.n_filters * 2 ** len(cfg.ratios)
        layers: list[nn.Module] = [_sconv(cfg, cfg.dimension, width, cfg.kernel_size)]
        if cfg.lstm:
            layers.append(SLSTM(width, cfg.lstm))
        for ratio in cfg.ratios:
            layers += [
                nn.ELU(),
                SConvTranspose1d(width, width // 2, 2 * ratio, ratio, causal=cfg.causal, norm=cfg.norm),
            ]
            width //= 2
            layers += [ResnetBlock(width, cfg.dilation_base**j, cfg) for j in range(cfg.n_residual_layers)]
        layers += [nn.ELU(), _sconv(cfg, width, cfg.channels, cfg.last_kernel_size)]
        super().__init__(layers, cfg.hop_length)


def check_ratios(ratios: Sequence[int]) -> tuple[int, ...]:
    """``ratios`` as a tuple: a non-empty sequence (list, tuple, ...) of integers >= 1."""
    is_sequence = isinstance(ratios, Sequence) and not isinstance(ratios, (str, bytes))
    return tuple(check_int_list("ratios", list(ratios) if is_sequence else ratios, minimum=1, scalar=False))
