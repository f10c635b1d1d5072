"""Residual and product forms of VQ (registry: ``residual_vq``, ``product_vq``).

* ``ResidualVQ``: residual vector quantization (SoundStream, arXiv 2107.03312; Encodec, arXiv 2210.13438), with
  per-level codebook sizes; every stage is a ``VQ`` and takes the same options (EMA, k-means init, restarts…).
  ``codebook_dim`` factorizes the codes (DAC, arXiv 2306.06546): the composite projects ``dim -> codebook_dim``
  once, every level quantizes there, and one out projection maps the sum back. Deviation from DAC, whose every
  level has its own in/out projections: one pair serves all levels, so the out projection sits after the one
  straight-through estimator and trains from the decoder's gradient (per-level out projections inside a
  detached sum would never train), at one level's projection cost.
  ``shared_codebook=True``: one codebook for every level (RQ-VAE, Lee et al., arXiv 2203.01941), owned by the
  composite (one ``codebook.*`` in the state dict); with EMA it moves once per step on all levels' assignments.
* ``ProductVQ``: product quantization (Jégou et al., TPAMI 2011): ``num_groups`` sub-vectors, a separate
  codebook each (IVQ's "PVQ" baseline).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from vqkit._validate import check_divisible, check_int_list, check_positive_int
from vqkit.functional.estimators import Gradient
from vqkit.quantizers.base import split_rate
from vqkit.quantizers.codebook import Codebook
from vqkit.quantizers.composite import ProductQuantizer, ResidualQuantizer
from vqkit.quantizers.vq import VQ
from vqkit.registry import register_quantizer
from vqkit.types import Layout, QuantizerOutput


def _level_sizes(
    codebook_size: int | Sequence[int], num_quantizers: int | None, count_name: str = "num_quantizers"
) -> list[int]:
    sizes = check_int_list("codebook_size", codebook_size, minimum=2)
    if num_quantizers is None:
        return sizes
    check_positive_int(count_name, num_quantizers)
    if len(sizes) == 1:
        return sizes * num_quantizers
    if len(sizes) != num_quantizers:
        raise ValueError(f"codebook_size: expected 1 or {count_name}={num_quantizers} sizes, got {sizes}")
    return sizes


@register_quantizer("residual_vq")
class ResidualVQ(ResidualQuantizer):
    """Residual VQ: ``num_quantizers`` levels of ``VQ`` (``[..., D]`` -> codes ``[..., num_quantizers]``).

    Args:
        dim: D.
        codebook_size: one size for every level, or one per level (``[1024, 512, 256]``).
        num_quantizers: number of levels (default: ``len(codebook_size)`` or 4 for one size).
        codebook_dim: the levels' code dimension (default ``dim``); smaller adds the composite's projections.
        gradient: ``"ste"`` or ``"rotation"`` (the rotation trick onto the summed levels); the value is the same.
        dropout: quantizer dropout (SoundStream, DAC): in training, with this probability per item, only the
            first ``k ~ U{1..L}`` levels; then ``encode(x, num_quantizers=k)`` / ``bits_per_vector_at(k)``.
        shared_codebook: one codebook for all levels (RQ-VAE; needs one ``codebook_size``). The levels keep
            their own losses; gradient codebooks sum the levels' gradients, EMA codebooks take one step on all
            levels' vectors (``Codebook.deferred_updates``), and a dead code is one no level uses. k-means init
            (``init="kmeans"``) runs on the first level's input, the largest residuals.
        **vq_kwargs: options of every level's ``VQ`` (``update``, ``init``, ``beta``, ``restart``, ...).
    """

    codebook: Codebook | None

    stage_class: ClassVar[type[VQ]] = VQ
    """What ``**vq_kwargs`` configure (``vqkit.rates.accepts`` reads it)."""

    def __init__(
        self,
        dim: int,
        codebook_size: int | Sequence[int] = 64,
        num_quantizers: int | None = None,
        *,
        codebook_dim: int | None = None,
        gradient: Gradient = "ste",
        dropout: float = 0.0,
        shared_codebook: bool = False,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
        **vq_kwargs: Any,
    ) -> None:
        if isinstance(codebook_size, int) and num_quantizers is None:
            num_quantizers = 4
        sizes = _level_sizes(codebook_size, num_quantizers)
        self.codebook_size = sizes if len(set(sizes)) > 1 else sizes[0]
        self.num_quantizers = len(sizes)
        self.codebook_dim = None if codebook_dim is None else check_positive_int("codebook_dim", codebook_dim)
        self.vq_kwargs = dict(vq_kwargs)
        width = dim if codebook_dim is None else codebook_dim
        self.shared_codebook = bool(shared_codebook)
        if self.shared_codebook and len(set(sizes)) > 1:
            raise ValueError(f"codebook_size: a shared codebook has one size, got one per level: {sizes}")
        levels = [VQ(width, size, **vq_kwargs) for size in sizes]
        super().__init__(
            dim,
            levels,
            project=width != dim,
            gradient=gradient,
            dropout=dropout,
            layout=layout,
            allow_nonfinite=allow_nonfinite,
        )
        self.codebook = None
        if self.shared_codebook:
            self.codebook = levels[0].codebook
            for level in levels:
                # The levels use the composite's codebook without registering it (one state-dict entry).
                del level._modules["codebook"]
                object.__setattr__(level, "codebook", self.codebook)

    @property
    def num_codebook_parameters(self) -> int:
        if self.codebook is None:
            return super().num_codebook_parameters
        # Every level counts the shared codebook; it is counted once.
        own = sum(p.numel() for n, p in self.named_parameters() if not n.startswith(("stages.", "codebook.")))
        stages = sum(stage.num_codebook_parameters for stage in self.stage_list)
        return own + stages - (len(self.stage_list) - 1) * self.codebook.weight.numel()

    def _quantize_levels(self, z: torch.Tensor, levels: torch.Tensor | None) -> QuantizerOutput:
        if self.codebook is None:
            return super()._quantize_levels(z, levels)
        with self.codebook.deferred_updates():
            return super()._quantize_levels(z, levels)

    @classmethod
    def at_rate(cls, dim: int, bits: int) -> dict[str, Any] | None:
        """Two levels of ``ceil(R/2)`` and ``floor(R/2)`` bits (one level for one bit)."""
        parts = split_rate(bits)
        return {"codebook_size": [2**b for b in parts], "num_quantizers": len(parts)}


@register_quantizer("product_vq")
class ProductVQ(ProductQuantizer):
    """Product VQ: ``num_groups`` sub-vectors of ``dim / num_groups``, one ``VQ`` codebook each.

    Args:
        dim: D (a multiple of ``num_groups``).
        codebook_size: codes per sub-codebook (one size, or one per group).
        num_groups: number of sub-vectors.
        **vq_kwargs: options of every group's ``VQ``.
    """

    stage_class: ClassVar[type[VQ]] = VQ

    def __init__(
        self,
        dim: int,
        codebook_size: int | Sequence[int] = 64,
        num_groups: int = 4,
        *,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
        **vq_kwargs: Any,
    ) -> None:
        check_positive_int("num_groups", num_groups)
        check_divisible("dim", check_positive_int("dim", dim), "num_groups", num_groups)
        sizes = _level_sizes(codebook_size, num_groups, "num_groups")
        self.codebook_size = sizes if len(set(sizes)) > 1 else sizes[0]
        self.num_groups = num_groups
        self.vq_kwargs = dict(vq_kwargs)
        groups = [VQ(dim // num_groups, size, **vq_kwargs) for size in sizes]
        super().__init__(dim, groups, layout=layout, allow_nonfinite=allow_nonfinite)

    @classmethod
    def at_rate(cls, dim: int, bits: int) -> dict[str, Any] | None:
        """Two groups of ``ceil(R/2)`` and ``floor(R/2)`` bits, or one group when ``dim`` is odd."""
        parts = split_rate(bits)
        if dim % len(parts):
            return {"codebook_size": [2**bits], "num_groups": 1}
        return {"codebook_size": [2**b for b in parts], "num_groups": len(parts)}
