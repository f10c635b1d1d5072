"""``MultiScaleVQ``: multi-scale residual quantization of feature maps, VAR's tokenizer quantizer.

Tian, Jiang, Yuan, Peng, Wang, "Visual Autoregressive Modeling: Scalable Image Generation via Next-Scale
Prediction", NeurIPS 2024, arXiv 2404.02905 (authors' code: FoundationVision/VAR, ``models/quant.py``).

**Scheme** (the paper's Algorithm 1; ``docs/quantizers.md`` has the details). A map ``f`` is quantized coarse
to fine with ONE codebook of ``K`` codes: from ``r = f``, for each scale ``k`` pool ``r`` over the scale's
cells (area), take each cell's nearest code, upsample the code map to the grid (``upsample``; bicubic in VAR),
apply ``phi_k(h) = (1 - phi_ratio) h + phi_ratio conv3x3(h)`` (``phi_count`` convolutions shared by VAR's rule,
``vqkit.functional.multiscale.phi_index``), then ``f_hat += h_k`` and ``r -= h_k``. The first ``k`` scales
decode to a coarser ``f_hat``: ``encode(x, num_quantizers=k)``, ``bits_per_vector_at(k)``.

**Scales are factors**: scale ``k``'s cells have ``factors[k]`` positions per axis (an axis of ``size`` has
``max(1, size // f)`` cells, a partition), so the rate is known at construction. **Codes per position**:
``codes[..., k]`` is the code of the scale-``k`` cell holding the position (stored redundantly, so the
contract's shapes and level prefixes hold); ``scale_codes`` gives the compact token maps (a next-scale model's
input), ``codes_from_scales`` their inverse. ``decode`` reads each cell at its first position and checks
nothing else (a check costs a sync per call; ``scale_codes(codes, check=True)`` does it). **Rate**:
``bits_per_vector = log2(K) * sum_k f_k ** -spatial_dims`` (each cell's code once; exact on sides that are
multiples of ``period``, else ``bits_per_map`` counts a map). **Grid**: the last ``spatial_dims`` position
axes (``[B, H, W, D]`` / ``[B, D, H, W]``; ``[B, T, D]`` for 1); axes before it index maps. Flat rows (a
composite's stage) and padding masks are refused. **Losses** (VAR's): means over scales of ``commitment = |f
- sg f_hat_k|^2`` (``beta``) and ``codebook = |sg f - f_hat_k|^2`` (1; it trains codebook and convolutions, so
it stays under ``update="ema"`` while there are convolutions); ``quantized`` is the straight-through ``f_hat``.

Deviations from the authors' code, each deliberate:

* Scales are factors of the map, not cell counts: VAR's 3, 5, 6, 10, 13 cells on 16 positions (overlapping
  ``area`` windows) have no factor; partitions keep one code per position.
* The codes of forward come from a search without autograd, then the value is recomputed from the codes with
  it (one more pass of the convolutions in training), so that ``encode`` finds the same codes bit for bit.
* Upsampling is a product with the interpolation matrix of torch's bicubic kernel (equal to ``F.interpolate``
  up to rounding; compiled and exported graphs then compute what eager mode does); on sequences the same cubic
  kernel; ``"linear"`` and ``"nearest"`` are extra options. A scale whose cells are the positions skips it.
* The codebook is vqkit's ``Codebook`` (``**codebook_options``: U(-1/K, 1/K) init and gradient updates by
  default; VAR's released code leaves ``nn.Embedding``'s N(0, 1) unless its unreleased trainer calls ``eini``);
  ``distance="cosine"`` is VAR's ``using_znorm``. ``init="kmeans"`` runs on the batch's full-resolution vectors.
* Unused shared convolutions are dropped (VAR's rule leaves one unused for 6 on 7 scales); VAR's usage EMA per
  scale (``ema_vocab_hit_SV``) is not kept: the batch usage metrics are per scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from vqkit._validate import check_choice, check_int, check_int_list, check_positive_int, check_range
from vqkit.functional import multiscale as ms
from vqkit.functional.estimators import straight_through
from vqkit.functional.multiscale import UPSAMPLES, Upsample
from vqkit.quantizers.base import Quantizer
from vqkit.quantizers.codebook import Codebook, CodebookOptions, vq_losses
from vqkit.registry import register_quantizer
from vqkit.types import Layout, QuantizerOutput

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from vqkit.quantizers.codebook import CodebookKwargs


def _flat_rows() -> TypeError:
    """What ``_quantize`` / ``_encode`` / ``_decode`` of flat rows (a composite's stage) raise: there is no grid."""
    return TypeError(
        "multiscale_vq reads the positions' grid (forward, encode, decode on maps): it cannot "
        "quantize flat [N, D] rows, e.g. as a stage of a composite"
    )


@register_quantizer("multiscale_vq")
class MultiScaleVQ(Quantizer):
    """VAR's multi-scale residual VQ: ``L = len(factors)`` scales from one codebook, codes ``[B, *S, L]``.

    Args:
        dim: D, the map's channels (VAR's ``Cvae``, 32).
        codebook_size: K, the shared codebook (VAR: 4096).
        factors: cell side of each scale in positions, coarse to fine (non-increasing); see the module docstring.
        spatial_dims: 2 (images) or 1 (sequences): how many trailing position axes form the grid.
        upsample: ``"cubic"`` (VAR), ``"linear"`` or ``"nearest"``: code maps back to the grid.
        phi_ratio: r of ``phi(h) = (1 - r) h + r conv(h)`` (VAR's ``quant_resi``, 0.5); 0: no convolutions.
        phi_count: distinct convolutions shared over the scales (VAR's ``share_quant_resi``, 4); ``None``: one
            per scale. At most the number of scales.
        beta: weight of ``commitment``.
        layout, allow_nonfinite: see ``Quantizer``.
        **codebook_options: the codebook's ``CodebookOptions`` (``init``, ``update``, ``distance``, ...).
    """

    shared_codes: ClassVar[bool] = True

    def __init__(
        self,
        dim: int,
        codebook_size: int = 4096,
        *,
        factors: Sequence[int] = (16, 8, 4, 2, 1),
        spatial_dims: int = 2,
        upsample: Upsample = "cubic",
        phi_ratio: float = 0.5,
        phi_count: int | None = 4,
        beta: float = 0.25,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
        **codebook_options: Unpack[CodebookKwargs],
    ) -> None:
        super().__init__(dim, layout=layout, allow_nonfinite=allow_nonfinite)
        self.codebook_size = check_int("codebook_size", codebook_size, minimum=2)
        self.factors = tuple(check_int_list("factors", factors, scalar=False))
        if list(self.factors) != sorted(self.factors, reverse=True):
            raise ValueError(f"factors: expected non-increasing factors (coarse first), got {list(factors)}")
        self.spatial_dims = check_int(
            "spatial_dims", spatial_dims, choices=(1, 2), expected="1 (sequences) or 2 (images)"
        )
        self.upsample: Upsample = check_choice("upsample", upsample, UPSAMPLES)  # type: ignore[assignment]
        self.phi_ratio = check_range("phi_ratio", phi_ratio, 0.0, 1.0)
        self.phi_count = None if phi_count is None else check_positive_int("phi_count", phi_count)
        self.beta = check_range("beta", beta, 0.0, float("inf"))
        self.codebook_options = CodebookOptions.resolve(codebook_options)
        self.codebook = Codebook(codebook_size, dim, self.codebook_options)
        self._phi_of_scale = self._share_phis()
        count = len(set(self._phi_of_scale))
        if count:
            shape = (count, dim, dim, *([3] * self.spatial_dims))
            self.phi_weight = nn.Parameter(torch.empty(shape))
            self.phi_bias = nn.Parameter(torch.empty(count, dim))
            self._reset_phis()

    def _share_phis(self) -> list[int]:
        """The convolution of each scale (VAR's rule; unused ones dropped, the rest numbered in order)."""
        if self.phi_ratio == 0:
            return []
        scales = len(self.factors)
        count = scales if self.phi_count is None else min(self.phi_count, scales)
        picked = [k if self.phi_count is None else ms.phi_index(k, scales, count) for k in range(scales)]
        rank = {p: i for i, p in enumerate(sorted(set(picked)))}
        return [rank[p] for p in picked]

    @torch.no_grad()
    def _reset_phis(self) -> None:
        """``nn.Conv2d``'s default init (VAR's ``Phi`` is one): Kaiming-uniform weights, uniform bias."""
        for weight, bias in zip(self.phi_weight, self.phi_bias, strict=True):
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(weight[0].numel())
            nn.init.uniform_(bias, -bound, bound)

    @classmethod
    def at_rate(cls, dim: int, bits: int) -> dict[str, Any] | None:
        """``factors=(6, 6, 6, 2, 1)`` on images (``sum f^-2 = 4/3``) with ``K = 2^(3R/4)``: ``R`` a multiple of
        4 (other rates have no integer ``log2 K`` with this schedule: ``None``). On sequences
        (``spatial_dims=1``) the same settings spend ``sum 1/f = 2`` times ``log2 K`` instead."""
        if bits % 4:
            return None
        return {"codebook_size": 2 ** (3 * bits // 4), "factors": [6, 6, 6, 2, 1]}

    # ------------------------------------------------------------------ sizes and rate
    @property
    def alphabet_sizes(self) -> tuple[int, ...]:
        return (self.codebook_size,) * len(self.factors)

    @property
    def loss_weights(self) -> dict[str, float]:
        return {"commitment": self.beta, **({"codebook": 1.0} if self._codebook_term else {})}

    @property
    def _codebook_term(self) -> bool:
        return self.codebook.update_rule.codebook_loss or bool(self._phi_of_scale)

    @property
    def num_codebook_parameters(self) -> int:
        phis = sum(p.numel() for p in (self.phi_weight, self.phi_bias)) if self._phi_of_scale else 0
        return self.codebook.weight.numel() + phis

    def search_cost(self) -> tuple[int, int] | None:
        """Per position: every scale's search shared by its cell (rounded up)."""
        share = self._cells_per_position(len(self.factors))
        return math.ceil(share * self.codebook_size * self.dim), math.ceil(share * self.codebook_size)

    def _bits(self, scales: int) -> float:
        share, k = self._cells_per_position(scales), self.codebook_size
        exact = k & (k - 1) == 0  # a power of two: rational arithmetic, so at_rate's rates are exact integers
        return float(share * (k.bit_length() - 1)) if exact else math.log2(k) * float(share)

    def _cells_per_position(self, scales: int) -> Fraction:
        return sum((Fraction(1, f**self.spatial_dims) for f in self.factors[:scales]), Fraction(0))

    @property
    def num_levels(self) -> int:
        return len(self.factors)

    def level_widths(self) -> tuple[int, ...]:
        return tuple(range(1, len(self.factors) + 1))

    @property
    def bits_per_vector(self) -> float:
        """``log2(K) * sum_k f_k ** -spatial_dims`` (see the module docstring; ``bits_per_map`` for one map)."""
        return self._bits(len(self.factors))

    def bits_per_vector_at(self, num_quantizers: int) -> float:
        return self._bits(self.check_levels(num_quantizers))

    @property
    def period(self) -> int:
        """``lcm(factors)``: on grid sides that are multiples of it every scale's cells tile exactly."""
        return math.lcm(*self.factors)

    def scale_shapes(self, size: Sequence[int]) -> list[tuple[int, ...]]:
        """The token map shape (cells per axis) of each scale on a grid of ``size``."""
        return ms.scale_grids(self._check_size(size), self.factors)

    def bits_per_map(self, size: Sequence[int], num_quantizers: int | None = None) -> float:
        """The exact bits of one map's codes on a grid of ``size`` (of its first ``num_quantizers`` scales):
        ``log2(K)`` per cell."""
        k = len(self.factors) if num_quantizers is None else self.check_levels(num_quantizers)
        return sum(math.prod(s) for s in self.scale_shapes(size)[:k]) * math.log2(self.codebook_size)

    # ------------------------------------------------------------------ token maps
    def scale_codes(self, codes: torch.Tensor, *, check: bool = False) -> list[torch.Tensor]:
        """The compact token maps of per-position ``codes`` ``[..., *S, c]`` (``c`` scales, a prefix allowed):
        ``c`` tensors ``[..., *cells_k]`` (``scale_shapes(S)``), what a next-scale model reads, coarse first.

        Each cell is read at its first position (as ``decode`` does); ``check=True`` also verifies that every
        position of a cell holds its code (a ``ValueError`` names the first scale that does not; one sync)."""
        self._check_codes(codes)
        size = tuple(codes.shape[-1 - self.spatial_dims : -1])
        tokens = ms.tokens_of_codes(codes, self.factors, self.spatial_dims)
        if check:
            again = ms.codes_of_tokens(tokens, size)
            for k in range(codes.shape[-1]):
                if not torch.equal(again[..., k], codes[..., k]):
                    raise ValueError(
                        f"codes: scale {k} (factor {self.factors[k]}) differs within a cell; multi-scale codes "
                        f"hold one code per cell at all its positions (codes_from_scales writes them)"
                    )
        return tokens

    def codes_from_scales(self, tokens: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        """Per-position codes ``[..., *size, len(tokens)]`` from token maps ``[..., *cells_k]`` (the first
        ``len(tokens)`` scales): the inverse of ``scale_codes``, and what ``decode`` takes."""
        size = self._check_size(size)
        if len(tokens) not in self.level_widths():
            raise ValueError(f"tokens: expected 1 to {len(self.factors)} token maps, got {len(tokens)}")
        lead = tuple(tokens[0].shape[: tokens[0].dim() - len(size)])
        for k, (t, cells) in enumerate(zip(tokens, self.scale_shapes(size), strict=False)):
            if tuple(t.shape) != (*lead, *cells) or t.dtype.is_floating_point:
                raise ValueError(
                    f"tokens[{k}]: expected integer token maps of shape {(*lead, *cells)} (scale {k}, factor "
                    f"{self.factors[k]}, on a grid of {size}), got {tuple(t.shape)} {t.dtype}"
                )
        return ms.codes_of_tokens([t.long() for t in tokens], size)

    def _check_codes(self, codes: torch.Tensor) -> None:
        if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point or codes.dtype == torch.bool:
            got = codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise TypeError(f"codes: expected an integer tensor, got {got}")
        if codes.dim() < self.spatial_dims + 1 or codes.shape[-1] not in self.level_widths():
            raise ValueError(
                f"codes: expected [..., *grid ({self.spatial_dims} axes), c] with c in 1 to {len(self.factors)}, "
                f"got shape {tuple(codes.shape)}"
            )

    def _check_size(self, size: Sequence[int]) -> tuple[int, ...]:
        sizes = check_int_list("size", list(size), scalar=False)
        if len(sizes) != self.spatial_dims:
            raise ValueError(f"size: expected {self.spatial_dims} grid sides (spatial_dims), got {sizes}")
        return tuple(sizes)

    # ------------------------------------------------------------------ grid layout
    def _grid_size(self, lead: torch.Size) -> tuple[int, ...]:
        """The grid of the positions ``lead``: its last ``spatial_dims`` axes (after ``B`` for channels-first)."""
        size = tuple(lead[max(0, len(lead) - self.spatial_dims) :])
        if len(lead) < self.spatial_dims + (self.layout == "channels_first") or 0 in size:
            shapes = {1: ("[..., T, D]", "[B, D, T]"), 2: ("[..., H, W, D]", "[B, D, H, W]")}
            expected = shapes[self.spatial_dims][self.layout == "channels_first"]
            raise ValueError(
                f"x: multiscale_vq pools cells of a grid of spatial_dims={self.spatial_dims} axes, so it expects "
                f"{expected} with non-empty sides (layout={self.layout!r}), got positions {tuple(lead)}"
            )
        return size

    def _adapt(self, z: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        self._grid_size(lead)  # the grid is read by _quantize_items / _encode_at: checked here, once
        return z

    def _maps(self, z: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        """Rows ``[N, D]`` at the positions ``lead`` -> maps ``[M, D, *S]``."""
        return z.reshape(-1, *self._grid_size(lead), self.dim).movedim(-1, 1)

    def _rows(self, f: torch.Tensor) -> torch.Tensor:
        return f.movedim(1, -1).reshape(-1, self.dim)

    def _position_codes(self, tokens: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        return ms.codes_of_tokens(tokens, size).reshape(-1, len(tokens))

    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        raise _flat_rows()

    def _encode(self, z: torch.Tensor) -> torch.Tensor:
        raise _flat_rows()

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        raise _flat_rows()

    def _encode_beam(self, z: torch.Tensor, num_quantizers: int, beam_size: int) -> torch.Tensor:
        raise TypeError("beam_size: multiscale_vq searches its scales greedily, as VAR; expected beam_size=1")

    # ------------------------------------------------------------------ the scales
    def _term(self, k: int, tokens: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """``h_k``: scale ``k``'s token map ``[M, *cells]`` as its contribution ``[M, D, *S]`` to ``f_hat``."""
        h = self.codebook.lookup(tokens).movedim(-1, 1)
        h = ms.upsample_cells(h, size, self.upsample)
        if not self._phi_of_scale:
            return h
        j = self._phi_of_scale[k]
        return ms.residual_conv(h, self.phi_weight[j], self.phi_bias[j], self.phi_ratio)

    def _search(self, f: torch.Tensor, scales: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The greedy coarse-to-fine search of maps ``f`` ``[M, D, *S]`` over the first ``scales`` scales:
        ``(token maps [M, *cells_k], the pooled residuals [cells, D] they quantize)``."""
        size = f.shape[2:]
        rest = f
        tokens: list[torch.Tensor] = []
        pooled: list[torch.Tensor] = []
        for k in range(scales):
            cells = ms.cell_grid(size, self.factors[k])
            rows = ms.pool_cells(rest, cells).movedim(1, -1).reshape(-1, self.dim)
            tokens.append(self.codebook.search(rows).view(f.shape[0], *cells))
            pooled.append(rows)
            if k + 1 < scales:
                rest = rest - self._term(k, tokens[k], size)
        return tokens, pooled

    def _accumulate(self, tokens: Sequence[torch.Tensor], size: Sequence[int]) -> list[torch.Tensor]:
        """``f_hat`` after each scale of ``tokens`` (the one sum ``forward`` and ``decode`` both compute)."""
        totals = [self._term(0, tokens[0], size)]
        for k in range(1, len(tokens)):
            totals.append(totals[-1] + self._term(k, tokens[k], size))
        return totals

    # ------------------------------------------------------------------ the contract, on the grid
    def _quantize_items(
        self, z: torch.Tensor, lead: torch.Size, rows: torch.Tensor | None = None
    ) -> QuantizerOutput:
        if rows is not None:
            raise ValueError("mask: multiscale_vq pools cells of whole maps, so it takes no padding mask")
        f = self._maps(z, lead)
        if self.training:
            self.codebook.warm_start(z.detach())
        with torch.no_grad():
            tokens, pooled = self._search(f, len(self.factors))
        totals = self._accumulate(tokens, f.shape[2:])
        terms = [vq_losses(f, total, codebook_term=self._codebook_term) for total in totals]
        losses = {name: torch.stack([t[name] for t in terms]).mean() for name in terms[0]}
        if self.training:
            self.codebook.update(torch.cat(pooled), torch.cat([t.reshape(-1) for t in tokens]))
        return QuantizerOutput(
            quantized=self._rows(straight_through(totals[-1], f)),
            codes=self._position_codes(tokens, f.shape[2:]),
            losses=losses,
        )

    def _encode_at(self, v: torch.Tensor, lead: torch.Size, num_quantizers: int) -> torch.Tensor:
        f = self._maps(v, lead)
        tokens, _ = self._search(f, num_quantizers)
        return self._position_codes(tokens, f.shape[2:])

    def _decode_at(self, codes: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        size = self._grid_size(lead)
        grid = codes.reshape(-1, *size, codes.shape[-1])
        tokens = self.scale_codes(grid)
        return self._rows(self._accumulate(tokens, size)[-1])

    # ------------------------------------------------------------------ codebook init
    @property
    def needs_warm_start(self) -> bool:
        return self.codebook.options.init == "kmeans" and not self.codebook.is_initialized()

    def warm_start(self, z: torch.Tensor) -> None:
        """k-means on ``z`` ``[N, D]``, the full-resolution vectors (``init="kmeans"``, first batch)."""
        self.codebook.warm_start(z.detach())

    @torch.no_grad()
    def init_codebook(self, vectors: torch.Tensor) -> None:
        """k-means (the codebook's ``kmeans_iters``, seed, distance) on ``vectors`` ``[N, D]``; gathers over ranks."""
        if vectors.dim() != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors: expected [N, {self.dim}], got {tuple(vectors.shape)}")
        self.codebook.initialize_from(vectors.to(self.compute_dtype), force=True)

    def extra_repr(self) -> str:
        phis = len(set(self._phi_of_scale))
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, factors={list(self.factors)}, spatial_dims="
            f"{self.spatial_dims}, upsample={self.upsample}, phi_ratio={self.phi_ratio}, phis={phis}"
        )
