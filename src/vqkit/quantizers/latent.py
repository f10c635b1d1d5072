"""``LatentQuantizer``: learnable per-dimension value grids (latent quantization; Hsu, Dorrell, Whittington, Wu
and Finn, "Disentanglement via Latent Quantization", NeurIPS 2023, arXiv 2305.18378).

Each of ``C = len(levels)`` channels has its own grid of ``levels[c]`` learnable scalar values, initialized evenly
on ``[-1, 1]``; a channel is quantized to its nearest grid value, and a vector's code is its channels' grid
indices in the mixed radix of FSQ (``vqkit.functional.fsq``), one code in ``[0, prod(levels))``. Where FSQ's grid
is fixed, this one moves: ``codebook = |sg[h] - q|^2`` trains the values and ``commitment = |h - sg[q]|^2``
(weight ``beta``) pulls the input towards them, the VQ-VAE pair applied per channel. When ``dim`` differs from
``C``, learned linear maps project in and out, as FSQ's.

Deviations, each deliberate: the paper bounds nothing and weight-decays the latents; here the input is used as it
is (the model's regularization is the caller's), and the grid keeps its values' order free (a value may pass its
neighbour; codes stay indices into the grid, so decoding is unaffected).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vqkit._validate import check_range
from vqkit.functional import fsq as fsq_math
from vqkit.functional.estimators import straight_through
from vqkit.quantizers.codebook import vq_losses
from vqkit.quantizers.scalar import FSQ
from vqkit.registry import register_quantizer
from vqkit.types import Layout, QuantizerOutput


@register_quantizer("latent_quantize")
class LatentQuantizer(FSQ):
    """Latent quantization: ``[..., D]`` -> one code ``[..., 1]`` in ``[0, prod(levels))``; FSQ's levels,
    projections, rate and code packing, with a learned grid in place of FSQ's fixed one.

    Args:
        dim: D.
        levels: grid values per channel, e.g. ``[8, 5, 5, 5]`` (each >= 2).
        beta: weight of ``commitment`` (the paper: 0.1).
        layout, allow_nonfinite: see ``Quantizer``.
    """

    _valid: torch.Tensor

    def __init__(
        self,
        dim: int,
        levels: Sequence[int] = (8, 5, 5, 5),
        *,
        beta: float = 0.1,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
    ) -> None:
        super().__init__(dim, levels, layout=layout, allow_nonfinite=allow_nonfinite)
        self.beta = check_range("beta", beta, 0.0, float("inf"))
        width = max(self.levels)
        grid = torch.stack([F.pad(torch.linspace(-1.0, 1.0, n), (0, width - n)) for n in self.levels])
        self.values = nn.Parameter(grid)  # [C, max(levels)]; entries past a channel's count are unused
        valid = torch.arange(width)[None, :] < torch.tensor(self.levels)[:, None]
        self.register_buffer("_valid", valid, persistent=False)

    @property
    def loss_weights(self) -> dict[str, float]:
        return {"commitment": self.beta, "codebook": 1.0}

    @property
    def num_codebook_parameters(self) -> int:
        return (
            super().num_codebook_parameters + self.values.numel()
        )  # the grid, padded to the longest channel

    def search_cost(self) -> tuple[int, int] | None:
        return sum(self.levels), sum(self.levels)

    def _grid_digits(self, h: torch.Tensor) -> torch.Tensor:
        """``[N, C]`` -> each channel's nearest grid index ``[N, C]`` (ties to the lower index)."""
        gaps = (h[:, :, None] - self.values.detach()[None]).abs()
        return gaps.masked_fill(~self._valid, float("inf")).argmin(dim=-1)

    def _values(self, digits: torch.Tensor) -> torch.Tensor:
        """``[N, C]`` grid indices -> their values ``[N, C]`` (differentiable w.r.t. the grid)."""
        return torch.gather(self.values.expand(digits.shape[0], -1, -1), 2, digits[:, :, None])[:, :, 0]

    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        h = self.project_in(z)
        digits = self._grid_digits(h.detach())
        q = self._values(digits)
        codes = fsq_math.digits_to_index(digits, self._levels, self._place)[:, None]
        return QuantizerOutput(
            quantized=self.project_out(straight_through(q, h)), codes=codes, losses=vq_losses(h, q)
        )

    def _encode(self, z: torch.Tensor) -> torch.Tensor:
        digits = self._grid_digits(self.project_in(z))
        return fsq_math.digits_to_index(digits, self._levels, self._place)[:, None]

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        digits = fsq_math.index_to_digits(codes[:, 0], self._levels, self._place)
        return self.project_out(self._values(digits))
