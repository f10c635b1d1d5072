"""Residual and product forms of VQ (registry: ``residual_vq``, ``product_vq``).

* ``ResidualVQ``: residual vector quantization (SoundStream, arXiv 2107.03312; Encodec, arXiv 2210.13438), with
  per-level codebook sizes; every stage is a ``VQ`` and takes the same options (EMA, k-means init, restarts…).
* ``ProductVQ``: product quantization (Jégou et al., TPAMI 2011): ``num_groups`` sub-vectors, a separate
  codebook each (IVQ's "PVQ" baseline).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vqkit._validate import check_divisible, check_int_list, check_positive_int
from vqkit.quantizers.composite import ProductQuantizer, ResidualQuantizer
from vqkit.quantizers.vq import VQ
from vqkit.registry import register_quantizer
from vqkit.types import Layout


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
        **vq_kwargs: options of every level's ``VQ`` (``update``, ``init``, ``beta``, ``restart``, ...).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int | Sequence[int] = 64,
        num_quantizers: int | None = None,
        *,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
        **vq_kwargs: Any,
    ) -> None:
        if isinstance(codebook_size, int) and num_quantizers is None:
            num_quantizers = 4
        sizes = _level_sizes(codebook_size, num_quantizers)
        levels = [VQ(dim, size, **vq_kwargs) for size in sizes]
        super().__init__(dim, levels, layout=layout, allow_nonfinite=allow_nonfinite)


@register_quantizer("product_vq")
class ProductVQ(ProductQuantizer):
    """Product VQ: ``num_groups`` sub-vectors of ``dim / num_groups``, one ``VQ`` codebook each.

    Args:
        dim: D (a multiple of ``num_groups``).
        codebook_size: codes per sub-codebook (one size, or one per group).
        num_groups: number of sub-vectors.
        **vq_kwargs: options of every group's ``VQ``.
    """

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
        groups = [VQ(dim // num_groups, size, **vq_kwargs) for size in sizes]
        super().__init__(dim, groups, layout=layout, allow_nonfinite=allow_nonfinite)
