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
from vqkit.quantizers.fsq import ChannelQuantizer
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

    def _grid_digits(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N, C]`` -> each channel's nearest grid index (ties to the lower index) as floats of ``h``'s dtype,
        and its distance ``|h - v|``, both ``[N, C]``.

        A running minimum over the grid's ``W`` columns, ``|h - v_w|`` against the best so far, taking column
        ``w`` only where it is strictly closer: the first minimum, as ``argmin`` of the ``[N, C, W]`` distances,
        from the same floats (that argmin along a short axis took 0.56 ms of a 2.3 ms eval forward,
        16,384 x 4 x 4). Column ``w`` exceeds every earlier index, so taking it is a ``maximum`` with
        ``w * closer``. A channel's unused columns are ``+inf``, never closer. The steps run on a 64-wide view of
        the channels, as FSQ's (``vqkit.functional.fsq.Constants``)."""
        grid = self.values.detach().masked_fill(~self._valid, float("inf"))  # [C, W]
        c = grid.shape[0]
        reps = max(1, fsq_math.WIDE // c)
        if torch.compiler.is_compiling() or h.shape[0] % reps or not h.is_contiguous():
            reps = 1
        rows = h.view(-1, reps * c)
        columns = grid.t().repeat(1, reps)  # [W, reps C]: column w of every channel, tiled along a row
        best = (rows - columns[0]).abs_()
        digits = torch.zeros_like(rows)
        gap, closer = torch.empty_like(rows), torch.empty_like(rows)
        for w in range(1, columns.shape[0]):
            torch.sub(rows, columns[w], out=gap).abs_()
            torch.lt(gap, best, out=closer)  # 0 / 1 as floats
            torch.minimum(best, gap, out=best)
            torch.maximum(digits, closer.mul_(w), out=digits)
        return digits.view(h.shape), best.view(h.shape)

    def _codes(self, digits: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Float digits ``[N, C]`` -> codes ``[N, 1]`` (FSQ's packing)."""
        return self._index(digits, self._constants(h))

    def _values(self, digits: torch.Tensor) -> torch.Tensor:
        """``[N, C]`` grid indices -> their values ``[N, C]`` (differentiable w.r.t. the grid)."""
        return torch.gather(self.values.expand(digits.shape[0], -1, -1), 2, digits[:, :, None])[:, :, 0]

    def _code_values(self, index: torch.Tensor) -> torch.Tensor:
        return self._values(fsq_math.index_to_digits(index, self._levels, self._place))

    def _every_code_value(self, device: torch.device) -> torch.Tensor:
        # The grid is learned: ChannelQuantizer's, built from the grid as it is, not FSQ's kept constant.
        return ChannelQuantizer._every_code_value(self, device)

    # The channels, not the input, are NaN/Inf-checked (``ChannelQuantizer``); decoding is ChannelQuantizer's,
    # from ``_code_values`` (the code table from N >= 4K codes).
    def _quantize_channels(self, h: torch.Tensor) -> QuantizerOutput:
        digits, gaps = self._grid_digits(h.detach())
        codes = self._codes(digits, h)
        if torch.is_grad_enabled() and (h.requires_grad or self.values.requires_grad):
            q = self._values(digits.long())
            quantized = self.project_out(straight_through(q, h))
            return QuantizerOutput(quantized=quantized, codes=codes, losses=vq_losses(h, q))
        # No gradient: both terms are the mean squared distance to the nearest value, already at hand.
        commitment = gaps.square().mean()
        if self._tabled(codes.shape[0]):
            quantized = self._table_out(codes[:, 0])
        else:
            quantized = self.project_out(self._values(digits.long()))
        return QuantizerOutput(
            quantized=quantized,
            codes=codes,
            losses={"commitment": commitment, "codebook": commitment},
        )

    def _encode_channels(self, h: torch.Tensor) -> torch.Tensor:
        return self._codes(self._grid_digits(h)[0], h)
