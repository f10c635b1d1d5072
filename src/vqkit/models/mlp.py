"""``mlp_vqvae``: an MLP autoencoder around any registered quantizer, for vector data (``vqkit.data.synthetic``).

Encoder: ``Linear(in_dim, hidden[0]) -> ReLU -> ... -> Linear(hidden[-1], latent_dim)``; decoder: the mirror
image, ``Linear(latent_dim, hidden[-1]) -> ReLU -> ... -> Linear(hidden[0], in_dim)``, no output activation.
The quantizer sees ``[B, latent_dim]`` (``layout="channels_last"``), so codes are ``[B, C]`` and the latent grid
is ``()``: one latent vector per item. ``hidden=[]`` gives linear maps (the toy autoencoder of the README).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vqkit._validate import check_positive_int
from vqkit.models.base import MSETokenizer, QuantizerSpec, check_float_input
from vqkit.models.registry import register_model


def _mlp(widths: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


def _widths(name: str, widths: Any) -> list[int]:
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise ValueError(f"{name}: expected a list of positive integers, got {widths!r}")
    return [check_positive_int(name, w) for w in widths]


@register_model("mlp_vqvae")
class MLPVQVAE(MSETokenizer):
    """MLP VQ-VAE: ``[B, in_dim]`` -> codes ``[B, C]`` -> ``[B, in_dim]``.

    Args:
        quantizer: ``{"name", "kwargs"}`` of the quantizer (``dim`` and ``layout`` are set by the model).
        in_dim: size of each input vector.
        hidden: widths of the hidden layers of the encoder (the decoder uses them reversed).
        latent_dim: D, the quantizer's ``dim``.
        encoder_hidden: the encoder's widths when they differ from the decoder's (``None``: ``hidden``). The
            collapse study's embeddings-collapse experiment (arXiv 2411.16550, Fig. 5) narrows the encoder alone
            (hidden size 32 -> 4) and keeps the decoder.
        loss_weights: ``{"mse": 1.0}`` by default.
    """

    modality = "vector"
    layout = "channels_last"
    latent_rank = 0

    def __init__(
        self,
        *,
        quantizer: QuantizerSpec,
        in_dim: int = 32,
        hidden: Sequence[int] = (256, 256),
        latent_dim: int = 16,
        encoder_hidden: Sequence[int] | None = None,
        loss_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(quantizer=quantizer, latent_dim=latent_dim, loss_weights=loss_weights)
        self.in_dim = check_positive_int("in_dim", in_dim)
        self.hidden = _widths("hidden", hidden)
        self.encoder_hidden = (
            self.hidden if encoder_hidden is None else _widths("encoder_hidden", encoder_hidden)
        )
        self.encoder = _mlp([self.in_dim, *self.encoder_hidden, self.latent_dim])
        self.decoder = _mlp([self.latent_dim, *reversed(self.hidden), self.in_dim])

    def _check_input(self, x: torch.Tensor) -> None:
        check_float_input(x)
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"x: expected [B, {self.in_dim}] (in_dim), got {tuple(x.shape)}")

    def latent_shape(self, item_shape: Sequence[int]) -> tuple[int, ...]:
        """``()`` for an item ``(in_dim,)``: one latent vector."""
        shape = tuple(int(s) for s in item_shape)
        if shape != (self.in_dim,):
            raise ValueError(f"item_shape: expected ({self.in_dim},), got {shape}")
        return ()

    def _arch_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "in_dim": self.in_dim,
            "hidden": list(self.hidden),
            "latent_dim": self.latent_dim,
        }
        if self.encoder_hidden != self.hidden:
            config["encoder_hidden"] = list(self.encoder_hidden)
        return config
