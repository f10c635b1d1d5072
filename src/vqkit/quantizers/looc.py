"""``LooC``: compositional VQ with one low-dimensional codebook shared by every sub-vector.

Li, Wong, Han, "LooC: Effective Low-Dimensional Codebook for Compositional Vector Quantization", WACV 2026,
arXiv 2601.00222 (authors' code: Visual-AI/LooC, where the method is called "LoRC").

**Low-dimensional codebook.** One ``Codebook`` of ``K`` codes of dimension ``d* = codebook_dim``. Each vector of
``D`` channels is cut into ``m = D / d*`` contiguous chunks (the authors' ``split_type='fixed'``), and every chunk
of every vector is matched against the *same* codebook (unlike product quantization, which gives each chunk its
own). ``K = 256, d* = 4`` stores 1,024 scalars yet can write ``K ** m`` distinct vectors. Everything else is the
CVQ recipe applied to the sub-vectors, as in the authors' configs: cosine matching with the raw (unnormalized)
code returned, the CVQ anchor update (``restart="anchor"``; its usage EMA and anchors are computed over all
sub-vectors of the batch), U(-1/K, 1/K) init, ``codebook = |sg[z] - q|^2`` and ``commitment = |z - sg[q]|^2``
(means over the sub-vectors' elements) with ``beta = 0.25`` on ``commitment``. ``distance``, ``restart``,
``init``, ``update`` ... take every ``Codebook`` option.

**Extrapolation-by-interpolation** (``scale = β > 1``; the paper uses β = 2). The feature map is upsampled by
``scale`` (bilinear for images, linear for sequences, ``align_corners=False``), every interpolated vector is
quantized, and the quantized map is average-pooled back to the input grid. Concretely, for each *original*
position the ``P = scale ** spatial_dims`` interpolated vectors at its sub-pixels are regrouped into a ``[D, P]``
block (channel ``c``, sub-pixel ``p = i * scale + j``, the channel order ``c * P + p`` of ``pixel_unshuffle``),
cut into ``C = m * P`` sub-vectors of ``d*``, quantized, and merged back by the mean over ``p`` (= the authors'
``avg_pool2d(pixel_shuffle(.))``). Losses are on the upsampled sub-vectors, as in the authors' code. Two ways to
cut the ``[D, P]`` block (``split``), identical when ``scale = 1``:

* ``"channels"`` (default, the paper's reading, Fig. 2 and §3.2): at each interpolated pixel the ``D`` channels
  split into ``m`` contiguous chunks; sub-vector ``p * m + g`` is channels ``[g d*, (g + 1) d*)`` of sub-pixel
  ``p``. Every sub-vector lives in the same space as at ``scale = 1``.
* ``"unshuffle"`` (the authors' code): contiguous ``d*``-chunks of the ``pixel_unshuffle``-ed vector of ``D * P``
  values; sub-vector ``r`` is entries ``[r d*, (r + 1) d*)`` of the order ``c * P + p``. With ``scale = 2`` and
  ``d* = 4`` each sub-vector is the 2x2 upsampled patch of *one* channel, so the codebook learns spatial
  patches of single channels rather than chunks of channels.

**Rate.** A vector's codes are all the sub-vectors that decode it: ``C = m * scale ** spatial_dims`` codes, so
``bits_per_vector = C log2 K``. With ``scale = 2`` on images the decoder needs 4x the codes of ``scale = 1``
(2x on sequences): the paper's tables compare codebook sizes ``K x d*``, not rates.

**Cost.** Search, loss and anchor update run on ``N * C`` sub-vectors: ``N * P * m * K * d* = P * N * K * D``
multiply-adds, like plain VQ with ``K`` codes on the ``P``-times larger interpolated map.

**Shapes.** ``scale = 1``: any ``[..., D]`` (or ``[B, D, *S]``) input, codes ``[..., C]``. ``scale > 1`` needs the
grid: ``[B, H, W, D]`` / ``[B, D, H, W]`` (``spatial_dims=2``) or ``[B, T, D]`` / ``[B, D, T]``
(``spatial_dims=1``) by ``layout``; codes are ``[B, H, W, C]`` / ``[B, T, C]``, one group per original
position, and ``decode`` (per position) returns the input's shape. The interpolation is the base class's layout
adapter (``_adapt``): it turns the grid into ``[N, D * P]`` rows of each position's interpolated neighbours,
which ``_quantize`` / ``_encode`` take; without the grid (a composite's stage) only ``scale = 1`` works.

**Metrics** (besides per-code-slot ``utilization/j`` and ``perplexity/j``, whose means are ``utilization`` and
``perplexity``): the whole shared codebook's usage, what the paper reports as "100% usage" (Table 2):
``codebook_utilization``, the share of the ``K`` codes used by any slot in the batch, and
``codebook_perplexity``, ``2^H`` of the codes' histogram pooled over all slots; and ``code_sharing``, the mean
over used codes of the fraction of slots that use each one (``vqkit.functional.sharing`` has the per-segment
tables and the paper's supp. Fig. 8 curve). ``shares_codebook`` is True, so an evaluation's ``CodebookUsage``
(``shared_codebook=True``) reports the same over a whole split (``shared_utilization``, ...).

Deviations from the authors' code, each deliberate:

* Only the ``'fixed'`` contiguous split is offered. Their ``'random'`` split permutes channels on every forward
  and never un-permutes the output (a bug); ``'interval'`` (strided channels) is not offered.
* The extras present but off in their final configs are not implemented: the codebook similarity loss
  (``sim_loss`` / ``scale_sim_loss`` = 0), ``uniform_loss``, ``leaky_uniform_loss``, ``contras_loss``,
  ``random_skip_vq``, and the "loocV2" gates (``learnable_m_scale``, ``vq_num >= 2``).
* ``split="channels"`` (the paper's description) is the default; ``split="unshuffle"`` reproduces their code.
* CVQ anchors are the nearest sub-vector over all ranks' batches (see ``Codebook``), not per rank.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F

from vqkit._validate import check_choice, check_int, check_positive_int, check_range
from vqkit.functional.block_search import block_code_sums, vq_loss_pair
from vqkit.functional.estimators import GRADIENTS, Gradient, estimate
from vqkit.functional.sharing import code_sharing_curve, mean_code_sharing, segment_usage
from vqkit.functional.stats import entropy_bits
from vqkit.quantizers.base import Quantizer
from vqkit.quantizers.codebook import Codebook, CodebookOptions
from vqkit.registry import register_quantizer
from vqkit.types import Layout, QuantizerOutput

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from vqkit.quantizers.codebook import CodebookKwargs

Split = Literal["channels", "unshuffle"]
SPLITS = ("channels", "unshuffle")

_INTERPOLATION = {1: "linear", 2: "bilinear"}
_GRID_SHAPES = {
    (1, "channels_first"): "[B, D, T]",
    (1, "channels_last"): "[B, T, D]",
    (2, "channels_first"): "[B, D, H, W]",
    (2, "channels_last"): "[B, H, W, D]",
}


@register_quantizer("looc")
class LooC(Quantizer):
    """LooC: ``C = (dim / codebook_dim) * scale ** spatial_dims`` codes per vector from one shared codebook.

    Args:
        dim: D.
        codebook_size: K, the codes of the shared codebook (the paper: 256, down to 8).
        codebook_dim: d*, the sub-vector size; must divide ``dim`` (the paper: 4).
        beta: weight of ``commitment``.
        gradient: ``"ste"`` or ``"rotation"`` (the rotation trick, per sub-vector); the value is the same.
        scale: β of extrapolation-by-interpolation (1: off; the paper uses 2). Integer >= 1.
        spatial_dims: 2 for image maps (bilinear), 1 for sequences (linear); used only when ``scale > 1``.
        split: ``"channels"`` (the paper's reading) or ``"unshuffle"`` (the authors' code); see the module
            docstring. Identical when ``scale = 1``.
        layout, allow_nonfinite: see ``Quantizer``.
        **codebook_options: the shared codebook's strategies (``CodebookOptions``) over LooC's defaults, the
            authors' configs: ``distance="cosine"`` (raw codes returned), ``restart="anchor"`` (CVQ),
            ``init="uniform"`` U(-1/K, 1/K), ``update="grad"`` (``codebook`` loss).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int = 256,
        codebook_dim: int = 4,
        *,
        beta: float = 0.25,
        gradient: Gradient = "ste",
        scale: int = 1,
        spatial_dims: int = 2,
        split: Split = "channels",
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
        **codebook_options: Unpack[CodebookKwargs],
    ) -> None:
        super().__init__(dim, layout=layout, allow_nonfinite=allow_nonfinite)
        self.codebook_size = check_positive_int("codebook_size", codebook_size)
        self.codebook_dim = check_positive_int("codebook_dim", codebook_dim)
        if dim % codebook_dim != 0:
            raise ValueError(
                f"codebook_dim: expected a divisor of dim={dim} (sub-vectors are contiguous channel chunks), "
                f"got codebook_dim={codebook_dim} ({dim} % {codebook_dim} = {dim % codebook_dim})"
            )
        self.scale = check_positive_int("scale", scale)
        self.spatial_dims = check_int(
            "spatial_dims",
            spatial_dims,
            choices=(1, 2),
            expected="1 (sequences, [B, D, T]) or 2 (images, [B, D, H, W])",
        )
        self.split: Split = check_choice("split", split, SPLITS)  # type: ignore[assignment]
        self.beta = check_range("beta", beta, 0.0, float("inf"))
        self.gradient: Gradient = check_choice("gradient", gradient, GRADIENTS)  # type: ignore[assignment]
        self.codebook_options = CodebookOptions.resolve(codebook_options, distance="cosine", restart="anchor")
        self.codebook = Codebook(codebook_size, codebook_dim, self.codebook_options)

    @classmethod
    def at_rate(cls, dim: int, bits: int, *, scale: int = 1, spatial_dims: int = 2) -> dict[str, Any] | None:
        """Two sub-vectors of ``D/2`` dims from one shared codebook of ``2^(R/2)`` codes (``R`` even).

        With ``scale > 1`` (``P = scale ** spatial_dims`` codes per sub-vector slot) ``R / P`` bits remain per
        channel chunk: two chunks of ``2^(R/2P)`` codes where ``R / P`` is even, else one chunk of ``2^(R/P)``."""
        per_chunk, p = divmod(bits, int(scale**spatial_dims))
        if p or per_chunk < 1:
            return None
        if per_chunk % 2 == 0 and dim % 2 == 0:
            return {"codebook_size": 2 ** (per_chunk // 2), "codebook_dim": dim // 2}
        return {"codebook_size": 2**per_chunk, "codebook_dim": dim} if scale > 1 else None

    # ------------------------------------------------------------------ sizes
    @property
    def channel_chunks(self) -> int:
        """m = dim / codebook_dim: the chunks one (interpolated) vector's channels split into (the paper's m)."""
        return self.dim // self.codebook_dim

    @property
    def subpixels(self) -> int:
        """P = scale ** spatial_dims: interpolated vectors per original position (1 when ``scale = 1``)."""
        return int(self.scale**self.spatial_dims)

    @property
    def num_segments(self) -> int:
        """C = m * P: the sub-vector slots ("segments") of one original position, each a code column.

        The paper's m when ``scale = 1``; the per-segment metrics and ``vqkit.functional.sharing`` count these."""
        return self.channel_chunks * self.subpixels

    @property
    def codes_per_position(self) -> int:
        """C: codes per original position (``= codes_per_vector = num_segments``); what a decoder must read."""
        return self.num_segments

    @property
    def alphabet_sizes(self) -> tuple[int, ...]:
        return (self.codebook_size,) * self.num_segments

    @property
    def shares_codebook(self) -> bool:
        return True

    @property
    def loss_weights(self) -> dict[str, float]:
        return {"commitment": self.beta, "codebook": 1.0}

    @property
    def num_codebook_parameters(self) -> int:
        """K * d*: the shared codebook is the only stored codebook state."""
        return self.codebook_size * self.codebook_dim

    def search_cost(self) -> tuple[int, int] | None:
        return (
            self.num_segments * self.codebook_size * self.codebook_dim,
            self.num_segments * self.codebook_size,
        )

    # ------------------------------------------------------------------ sub-vectors
    def _split(self, blocks: torch.Tensor) -> torch.Tensor:
        """``[N, D, P]`` (channel, sub-pixel) -> sub-vectors ``[N * C, d*]`` in code-column order."""
        n = blocks.shape[0]
        if self.split == "channels":
            blocks = blocks.transpose(1, 2)  # [N, P, D]: (sub-pixel, channel chunk) order
        return blocks.reshape(n * self.num_segments, self.codebook_dim)

    def _merge(self, sub: torch.Tensor) -> torch.Tensor:
        """Inverse of ``_split`` then the mean over sub-pixels: ``[N * C, d*] -> [N, D]``.

        The one merge of ``forward`` and ``_decode`` (so the round trip is exact); at ``P > 1`` it equals the
        authors' ``avg_pool(pixel_shuffle(.), scale)``."""
        p = self.subpixels
        n = sub.shape[0] // self.num_segments
        if p == 1:
            return sub.reshape(n, self.dim)
        if self.split == "channels":
            return sub.reshape(n, p, self.dim).mean(dim=1)
        return sub.reshape(n, self.dim, p).mean(dim=2)

    def _interpolated_blocks(self, z: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        """Vectors ``[N, D]`` on the grid ``lead = (B, *S)`` -> ``[N, D, P]``: each original position's
        interpolated neighbours, sub-pixel ``p = i * scale + j`` (``pixel_unshuffle`` order)."""
        s, k = self.scale, self.spatial_dims
        if z.shape[0] == 0:
            return z[:, :, None].expand(-1, -1, s**k)
        batch, spatial = lead[0], tuple(lead[1:])
        grid = z.reshape(batch, *spatial, self.dim).movedim(-1, 1)  # [B, D, *S]
        up = F.interpolate(grid, scale_factor=float(s), mode=_INTERPOLATION[k], align_corners=False)
        # [B, D, S1 * s, ..., Sk * s] -> [B, D, S1, s, ..., Sk, s] -> [B, S1, ..., Sk, D, s, ..., s] -> [N, D, P]
        split_shape = [batch, self.dim]
        for size in spatial:
            split_shape += [size, s]
        order = [0, *(2 + 2 * i for i in range(k)), 1, *(3 + 2 * i for i in range(k))]
        return up.reshape(split_shape).permute(order).reshape(-1, self.dim, s**k)

    def _adapt(self, z: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        """The layout adapter: at ``scale > 1`` the grid ``lead = (B, *S)`` is interpolated and each original
        position becomes one row ``[D * P]`` of its sub-pixels' vectors (``_split``'s block, flattened)."""
        if self.scale == 1:
            return z
        if len(lead) != 1 + self.spatial_dims:
            other = "channels_first" if self.layout == "channels_last" else "channels_last"
            raise ValueError(
                f"x: scale={self.scale} interpolates over spatial_dims={self.spatial_dims} grid axes, so it "
                f"expects {_GRID_SHAPES[self.spatial_dims, self.layout]} (layout={self.layout!r}; "
                f"{_GRID_SHAPES[self.spatial_dims, other]} with layout={other!r}), got {len(lead)} position axes"
            )
        return self._interpolated_blocks(z, lead).reshape(z.shape[0], self.dim * self.subpixels)

    def _blocks(self, v: torch.Tensor) -> torch.Tensor:
        """Adapted rows ``[N, D * P]`` -> ``[N, D, P]``; flat ``[N, D]`` rows only at ``scale = 1``."""
        if v.shape[1] != self.dim * self.subpixels:
            raise ValueError(
                f"x: flat [N, {self.dim}] vectors need scale=1, got scale={self.scale}: interpolation needs the "
                f"grid; call forward/encode on {_GRID_SHAPES[self.spatial_dims, self.layout]} input"
            )
        return v.reshape(v.shape[0], self.dim, self.subpixels)

    # ------------------------------------------------------------------ quantization
    def _quantize(self, v: torch.Tensor) -> QuantizerOutput:
        """``Codebook.quantize`` on the sub-vectors (init, search, lookup, loss pair, update, in its order), with
        the loss pair and the straight-through estimator from ``block_search.vq_loss_pair``: one pass for the
        difference, its square sum and per-code sums instead of two ``mse_loss`` passes, the estimator's two and
        the lookup's backward (the same values, the same gradients to float rounding)."""
        blocks = self._blocks(v)
        n = blocks.shape[0]
        sub = self._split(blocks)
        cb = self.codebook
        if self.training:
            cb.warm_start(sub)
        codes, nearest = cb.search_for_update(sub)  # in training with CVQ's anchors: each code's nearest too
        quantized, q, losses = self._loss_pair(sub, codes)
        if self.training:
            cb.update(sub, codes, nearest)
        if self.gradient != "ste":
            quantized = estimate(q, sub, self.gradient)
        return QuantizerOutput(
            quantized=self._merge(quantized), codes=codes.view(n, self.num_segments), losses=losses
        )

    def _loss_pair(
        self, sub: torch.Tensor, codes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """``(straight-through output, looked-up codes, losses)`` for the sub-vectors ``sub`` ``[M, d*]`` and
        their codes ``[M]``: ``Codebook.losses`` (``vq_losses``) and ``estimate(q, sub, "ste")`` in one."""
        table = self.codebook.table()
        grad = torch.is_grad_enabled()
        with torch.no_grad():
            q = self.codebook.lookup(codes)
            residual = sub - q
            flat = residual.reshape(-1)
            level_loss = (torch.dot(flat, flat) / flat.numel())[None]
            sums = None
            if grad and table.requires_grad:
                sums = block_code_sums(residual, codes[:, None], 1, self.codebook_size).view_as(table)
        if grad:
            residual_sum = residual if sub.requires_grad else None
            quantized, commitment, codebook = vq_loss_pair(sub, q, residual_sum, level_loss, [table], [sums])
        else:  # one value for both terms, as ``vq_losses`` without autograd
            quantized, commitment = q, level_loss[0]
            codebook = commitment
        losses = {"commitment": commitment}
        if self.codebook.update_rule.codebook_loss:
            losses["codebook"] = codebook
        return quantized, q, losses

    def _encode(self, v: torch.Tensor) -> torch.Tensor:
        return self.codebook.search(self._split(self._blocks(v))).view(-1, self.num_segments)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self._merge(self.codebook.lookup(codes.reshape(-1)))

    @torch.no_grad()
    def init_codebook(self, vectors: torch.Tensor) -> None:
        """k-means (this codebook's ``kmeans_iters``, ``kmeans_seed``, distance) on the channel chunks of
        ``vectors`` ``[N, D]`` (no interpolation); marks the codebook initialized. Gathers over ranks."""
        if vectors.dim() != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors: expected [N, {self.dim}], got {tuple(vectors.shape)}")
        self.codebook.initialize_from(
            vectors.to(self.compute_dtype).reshape(-1, self.codebook_dim), force=True
        )

    # ------------------------------------------------------------------ metrics
    def _usage_metrics(self, codes: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The base metrics (``utilization``, ``perplexity``: means, and per slot) from one ``[C, K]`` count
        table instead of a loop over the ``C`` slots, plus the whole codebook's ``codebook_utilization`` (the
        share any slot used) and ``codebook_perplexity`` (of the counts pooled over slots), and ``code_sharing``."""
        counts = segment_usage(codes, self.codebook_size, validate=False)  # [C, K] float64
        utils = (counts > 0).sum(dim=1).to(torch.float32) / float(self.codebook_size)
        perps = torch.exp2(entropy_bits(counts)).to(torch.float32)
        scalars = {
            "utilization": utils.mean(),
            "perplexity": perps.mean(),
            "codebook_utilization": code_sharing_curve(counts)[0],
            "codebook_perplexity": torch.exp2(entropy_bits(counts.sum(0))).to(torch.float32),
            "code_sharing": mean_code_sharing(counts),
        }
        positions = {"utilization": utils, "perplexity": perps} if self.num_segments > 1 else {}
        return scalars, positions

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, codebook_dim={self.codebook_dim}, "
            f"segments={self.num_segments}, scale={self.scale}, spatial_dims={self.spatial_dims}, "
            f"split={self.split}"
        )
