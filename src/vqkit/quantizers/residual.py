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

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any, ClassVar, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from vqkit._validate import check_divisible, check_int_list, check_positive_int
from vqkit.functional.block_search import (
    LevelStep,
    block_code_sums,
    block_lookup,
    level_outputs,
    residual_walk,
)
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


def _plain_vq(stage: VQ) -> bool:
    """A nearest-code VQ with nothing of its own around the lookup: no affine codes, sampling, extra penalties,
    input normalization or projections."""
    return (
        stage.code_affine is None
        and stage.sampling == "nearest"
        and stage.entropy_weight == 0
        and stage.orthogonal_weight == 0
        and stage.sync_nu == 0
        and not stage.l2_normalize
        and isinstance(stage.project_in, nn.Identity)
        and isinstance(stage.project_out, nn.Identity)
    )


class _LevelPass(NamedTuple):
    total: torch.Tensor
    residual_sum: torch.Tensor | None
    losses: torch.Tensor
    code_sums: list[torch.Tensor | None]
    codes: torch.Tensor


@torch.no_grad()
def _level_pass(
    stages: Sequence[VQ], books: Sequence[torch.Tensor], h: torch.Tensor, *, grad: bool, training: bool
) -> _LevelPass:
    """One no-grad pass of plain VQ levels down the residual of ``h`` ``[N, d]`` (``block_search.residual_walk``):
    each level's k-means warm start, search, lookup and (in training) codebook update on its input ``r_i``, as
    ``Codebook.quantize`` orders them, and the statistics ``vq_loss_pair`` needs."""
    codes: list[torch.Tensor] = []

    def level(stage: VQ, book: torch.Tensor) -> Callable[[torch.Tensor], LevelStep]:
        def step(residual: torch.Tensor) -> LevelStep:
            cb = stage.codebook
            if training:
                cb.warm_start(residual)
            found, nearest = cb.search_for_update(residual)
            q = F.embedding(found, cb.vectors)
            if training:
                cb.update(residual, found, nearest)
            codes.append(found)
            return LevelStep(q, found[:, None], 1, cb.num_codes, book.requires_grad)

        return step

    walk = residual_walk(h, [level(s, b) for s, b in zip(stages, books, strict=True)], grad=grad)
    code_sums = [None if c is None else c.view_as(b) for c, b in zip(walk.code_sums, books, strict=True)]
    return _LevelPass(walk.total, walk.residual_sum, walk.losses, code_sums, torch.stack(codes, dim=1))


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
    def shares_codebook(self) -> bool:
        return self.shared_codebook

    @property
    def num_codebook_parameters(self) -> int:
        if self.codebook is None:
            return super().num_codebook_parameters
        # Every level counts the shared codebook; it is counted once.
        own = sum(p.numel() for n, p in self.named_parameters() if not n.startswith(("stages.", "codebook.")))
        stages = sum(stage.num_codebook_parameters for stage in self.stage_list)
        return own + stages - (len(self.stage_list) - 1) * self.codebook.weight.numel()

    @property
    def vq_levels(self) -> list[VQ]:
        """The levels, as the ``VQ`` s they are."""
        return cast(list[VQ], self.stage_list)

    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        if self._plain_levels():
            return self._plain_forward(z)
        return super()._quantize(z)

    def _plain_levels(self) -> bool:
        """Whether every level is a plain nearest-code VQ (no affine codes, sampling, extra penalties, input
        normalization or projection of its own) and the estimator is one for the sum: then ``_plain_forward``
        gives the per-level forward's results in one pass (a shared codebook's updates deferred to the end of
        it, as the per-level forward defers them)."""
        if self.gradient == "stages" or self.joint_search:
            return False
        return all(_plain_vq(stage) for stage in self.vq_levels)

    def _plain_forward(self, z: torch.Tensor) -> QuantizerOutput:
        """``ResidualQuantizer._quantize_levels`` for plain VQ levels (``_plain_levels``) without a per-level
        autograd graph: the same codes, codebook updates (each level's on its own input ``r_i``, in level order)
        and ``quantized``; the losses and gradients to float rounding, from ``block_search.vq_loss_pair``'s closed
        forms (the loss pair, the straight-through estimator and the lookups' backward in one function)."""
        h = self.project_in(z)
        grad = torch.is_grad_enabled()
        # Each level's ``vectors`` is its weight itself (``_plain_levels``: no normalization), so the k-means warm
        # start inside the pass, which writes the weight in place, reaches these gradient targets too.
        books = [stage.codebook.vectors for stage in self.vq_levels]
        with nullcontext() if self.codebook is None else self.codebook.deferred_updates():
            stats = _level_pass(self.vq_levels, books, h, grad=grad, training=self.training)
        quantized, losses = level_outputs(
            h,
            stats.total,
            stats.residual_sum,
            stats.losses,
            books,
            stats.code_sums,
            rotation=self.gradient == "rotation",
            codebook_term=self.vq_levels[0].codebook.update_rule.codebook_loss,
        )
        return QuantizerOutput(quantized=self.project_out(quantized), codes=stats.codes, losses=losses)

    def _quantize_levels(self, z: torch.Tensor, levels: torch.Tensor | None) -> QuantizerOutput:
        if levels is None and self._plain_levels():  # a grouped composite's groups come here
            return self._plain_forward(z)
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

    @property
    def vq_groups(self) -> list[VQ]:
        """The groups, as the ``VQ`` s they are."""
        return cast(list[VQ], self.stage_list)

    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        groups = self.vq_groups
        plain = all(_plain_vq(g) and g.gradient == "ste" for g in groups)
        if not plain or len({g.codebook_size for g in groups}) > 1 or len(groups) < 2:
            return super()._quantize(z)
        return self._plain_forward(z)

    def _plain_forward(self, z: torch.Tensor) -> QuantizerOutput:
        """``ProductQuantizer._quantize`` for plain, equal VQ groups (straight-through each) in one pass: each
        group's warm start, search, lookup and update on its channels in group order (the same codes, state and
        ``quantized``), the loss pair, estimator and lookups' backward from ``block_search.vq_loss_pair`` as one
        level of blocks (the same losses and gradients to float rounding: equal groups make the mean of the
        groups' means the mean over all channels)."""
        groups, grad = self.vq_groups, torch.is_grad_enabled()
        parts = self._split(z.detach())
        if self.training:  # k-means first: the stacked books below must hold the initial codes
            for g, part in zip(groups, parts, strict=True):
                g.codebook.warm_start(part)
        books = torch.stack([g.codebook.vectors for g in groups])  # [G, K, d]
        with torch.no_grad():
            found = []
            for g, part in zip(groups, parts, strict=True):
                found.append(g.codebook.search(part))
                if self.training:
                    g.codebook.update(part, found[-1])
            codes = torch.stack(found, dim=1)
            total = block_lookup(codes, books.detach())
            residual = z.detach() - total
            flat = residual.reshape(-1)
            loss = (torch.dot(flat, flat) / max(flat.numel(), 1))[None]
            sums = (
                block_code_sums(residual, codes, len(groups), books.shape[1]) if books.requires_grad else None
            )
        input_sum = residual if grad and z.requires_grad else None
        quantized, losses = level_outputs(
            z,
            total,
            input_sum,
            loss,
            [books],
            [sums],
            codebook_term=groups[0].codebook.update_rule.codebook_loss,
        )
        return QuantizerOutput(quantized=quantized, codes=codes, losses=losses)

    @classmethod
    def at_rate(cls, dim: int, bits: int) -> dict[str, Any] | None:
        """Two groups of ``ceil(R/2)`` and ``floor(R/2)`` bits, or one group when ``dim`` is odd."""
        parts = split_rate(bits)
        if dim % len(parts):
            return {"codebook_size": [2**bits], "num_groups": 1}
        return {"codebook_size": [2**b for b in parts], "num_groups": len(parts)}
