"""``image_vqvae``: the convolutional VQ-VAE of CVQ-VAE and LooC, with any registered quantizer.

The architecture is the one in CVQ-VAE's ``modules.py`` (Zheng & Vedaldi, "Online Clustered Codebook", ICCV
2023, arXiv 2307.15139), which LooC reuses unchanged (Li, Wong, Han, WACV 2026, arXiv 2601.00222); both follow
the VQ-VAE of van den Oord et al. (arXiv 1711.00937). With ``downsample=4`` (the default):

* encoder: conv4x4/s2 (in -> hidden/2) -> ReLU -> conv4x4/s2 (hidden/2 -> hidden) -> ReLU -> conv3x3 ->
  residual stack -> conv1x1 (hidden -> latent_dim), the ``_pre_vq_conv``;
* decoder: conv3x3 (latent_dim -> hidden) -> residual stack -> convT4x4/s2 (hidden -> hidden/2) -> ReLU ->
  convT4x4/s2 (hidden/2 -> in), no output activation (``output="sigmoid"`` adds one);
* residual stack: ``num_res_layers`` blocks ``x + conv1x1(ReLU(conv3x3(ReLU(x))))`` (3x3 to ``res_hidden``,
  1x1 back to ``hidden``), then a ReLU.

``downsample=2`` keeps one strided stage: conv4x4/s2 (in -> hidden) -> ReLU -> conv3x3 -> ..., and the decoder
ends with one convT4x4/s2 (hidden -> in) (for 8x8 digits -> 4x4 latents).

Deviation: the reference residual block starts with ``nn.ReLU(inplace=True)``, which also rectifies the tensor
the skip adds (its blocks compute ``relu(x) + f(relu(x))``); here the skip carries ``x`` unchanged, as the
VQ-VAE paper draws it. The reference divides the MSE by the training pixels' variance; here that is the ``mse``
weight (``loss_weights={"mse": 1 / variance}``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vqkit._validate import check_choice, check_int, check_nonnegative_int, check_positive_int
from vqkit.models.base import MSETokenizer, QuantizerSpec, check_float_input
from vqkit.models.registry import register_model

Output = Literal["linear", "sigmoid"]
OUTPUTS = ("linear", "sigmoid")
DOWNSAMPLES = (2, 4)


class ResidualStack(nn.Module):
    """``layers`` blocks ``x + conv1x1(ReLU(conv3x3(ReLU(x))))``, then a ReLU. ``[B, C, H, W]`` in and out."""

    def __init__(self, channels: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(),
                nn.Conv2d(channels, hidden, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(hidden, channels, kernel_size=1),
            )
            for _ in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return F.relu(x)


def _strided(
    conv: type[nn.Conv2d | nn.ConvTranspose2d], cin: int, cout: int, hidden: int, down: int
) -> list[nn.Module]:
    """The 4x4 stride-2 stage(s) from ``cin`` to ``cout`` channels: one for ``down=2``; two for ``down=4``,
    through ``hidden / 2`` channels with a ReLU between. ``conv``: ``Conv2d`` (encoder), ``ConvTranspose2d``
    (decoder)."""
    if down == 2:
        return [conv(cin, cout, kernel_size=4, stride=2, padding=1)]
    return [
        conv(cin, hidden // 2, kernel_size=4, stride=2, padding=1),
        nn.ReLU(),
        conv(hidden // 2, cout, kernel_size=4, stride=2, padding=1),
    ]


def _encoder(
    in_channels: int, hidden: int, res_hidden: int, layers: int, latent: int, down: int
) -> nn.Module:
    return nn.Sequential(
        *_strided(nn.Conv2d, in_channels, hidden, hidden, down),
        nn.ReLU(),
        nn.Conv2d(hidden, hidden, kernel_size=3, padding=1),
        ResidualStack(hidden, res_hidden, layers),
        nn.Conv2d(hidden, latent, kernel_size=1),
    )


def _decoder(
    in_channels: int, hidden: int, res_hidden: int, layers: int, latent: int, down: int, output: Output
) -> nn.Module:
    head = _strided(nn.ConvTranspose2d, hidden, in_channels, hidden, down)
    return nn.Sequential(
        nn.Conv2d(latent, hidden, kernel_size=3, padding=1),
        ResidualStack(hidden, res_hidden, layers),
        *head,
        *([nn.Sigmoid()] if output == "sigmoid" else []),
    )


@register_model("image_vqvae")
class ImageVQVAE(MSETokenizer):
    """Convolutional VQ-VAE: ``[B, in_channels, H, W]`` -> codes ``[B, H/f, W/f, C]`` -> ``[B, in_channels, H, W]``.

    Args:
        quantizer: ``{"name", "kwargs"}`` of the quantizer (``dim`` and ``layout`` are set by the model).
        in_channels: image channels.
        hidden: width of the conv trunk (128 in CVQ/LooC; even for ``downsample=4``).
        res_hidden: width inside the residual blocks (32).
        num_res_layers: residual blocks per stack (2).
        latent_dim: D, channels of the latent map the quantizer sees (64 in CVQ; 128 in LooC).
        downsample: f, 2 or 4: H and W of the input must be multiples of it.
        output: ``"linear"`` (the reference: unconstrained) or ``"sigmoid"`` (for targets in [0, 1]).
        loss_weights: ``{"mse": 1.0}`` by default.
        encoder_hidden: the encoder trunk's width when it differs from the decoder's (``None``: ``hidden``;
            even for ``downsample=4``). The collapse study (arXiv 2411.16550, Fig. 4b) narrows the encoder's
            downsampling channels alone, 64 -> 2, to show embeddings collapse.
    """

    modality = "image"
    layout = "channels_first"
    latent_rank = 2

    def __init__(
        self,
        *,
        quantizer: QuantizerSpec,
        in_channels: int = 1,
        hidden: int = 128,
        res_hidden: int = 32,
        num_res_layers: int = 2,
        latent_dim: int = 64,
        downsample: int = 4,
        output: Output = "linear",
        loss_weights: Mapping[str, float] | None = None,
        encoder_hidden: int | None = None,
    ) -> None:
        super().__init__(quantizer=quantizer, latent_dim=latent_dim, loss_weights=loss_weights)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.hidden = check_positive_int("hidden", hidden)
        self.res_hidden = check_positive_int("res_hidden", res_hidden)
        self.num_res_layers = check_nonnegative_int("num_res_layers", num_res_layers)
        self.downsample = check_int("downsample", downsample, choices=DOWNSAMPLES)
        self.encoder_hidden = (
            self.hidden if encoder_hidden is None else check_positive_int("encoder_hidden", encoder_hidden)
        )
        for name, width in (("hidden", self.hidden), ("encoder_hidden", self.encoder_hidden)):
            if self.downsample == 4 and width % 2:
                raise ValueError(
                    f"{name}: expected an even width with downsample=4 ({name}/2 channels), got {width}"
                )
        self.output: Output = check_choice("output", output, OUTPUTS)  # type: ignore[assignment]
        rest = (self.res_hidden, num_res_layers, self.latent_dim, self.downsample)
        self.encoder = _encoder(self.in_channels, self.encoder_hidden, *rest)
        self.decoder = _decoder(self.in_channels, self.hidden, *rest, self.output)

    def _check_input(self, x: torch.Tensor) -> None:
        check_float_input(x)
        f = self.downsample
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected [B, {self.in_channels}, H, W] (in_channels), got {tuple(x.shape)}")
        if x.shape[2] % f or x.shape[3] % f:
            raise ValueError(
                f"x: expected height and width divisible by downsample={f}, got H={x.shape[2]}, W={x.shape[3]}"
            )

    def latent_shape(self, item_shape: Sequence[int]) -> tuple[int, ...]:
        """``(H / f, W / f)`` for an item ``(C, H, W)`` or ``(H, W)``."""
        shape = tuple(int(s) for s in item_shape)
        ok = len(shape) in (2, 3) and (len(shape) == 2 or shape[0] == self.in_channels)
        if not ok:
            raise ValueError(f"item_shape: expected ({self.in_channels}, H, W) or (H, W), got {shape}")
        h, w = shape[-2:]
        f = self.downsample
        if h % f or w % f:
            raise ValueError(
                f"item_shape: expected height and width divisible by downsample={f}, got {shape}"
            )
        return (h // f, w // f)

    def _arch_config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "hidden": self.hidden,
            "res_hidden": self.res_hidden,
            "num_res_layers": self.num_res_layers,
            "latent_dim": self.latent_dim,
            "downsample": self.downsample,
            "output": self.output,
            **({"encoder_hidden": self.encoder_hidden} if self.encoder_hidden != self.hidden else {}),
        }
