"""vector-quantize-pytorch 1.32.0 (the ``bench`` extra) equivalents of vqkit quantizers, for
``bench_quantizers.py``: built from the vqkit quantizer's own settings and holding the same state.

``build_reference(q)`` dispatches on the quantizer's class to one adapter per class (``functools.singledispatch``,
registered with ``@adapts``): a quantizer class without an adapter gets the note "no equivalent of X", so a new
class needs no change here until it has an equivalent. Adapters registered ``exact=True`` serve their class
only, not its subclasses (a subclass may change what the settings mean). Each adapter's docstring says what it
matches and what still differs (later classes, VQ's options: ``quantizer_references_extra.py``, imported last):

* ``vq``, ``ema_vq`` ↔ ``VectorQuantize`` (``_vq_reference``, settings in ``_vq_settings``).
* ``residual_vq`` ↔ ``ResidualVQ``; ``product_vq`` ↔ ``GroupedResidualVQ``.
* ``fsq`` ↔ ``FSQ``; ``lfq`` ↔ ``LFQ``; ``residual_lfq`` ↔ ``ResidualLFQ``; ``simvq`` ↔ ``SimVQ``.
* No equivalent ("n/a" with the reason in the table; ``NO_EQUIVALENT``, ``_vq_settings``): ``cvq``,
  ``factorized_vq``, ``residual_fsq`` (a different quantizer of that name), ``ivq``, ``looc``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from bench_common import vqp_module
from torch import nn

from vqkit.functional import lfq as lfq_math
from vqkit.quantizers import FSQ, IVQ, LFQ, VQ, LooC, ProductVQ, ResidualFSQ, ResidualLFQ, ResidualVQ, SimVQ
from vqkit.quantizers.base import Quantizer

VQP = vqp_module()
Q = TypeVar("Q", bound=Quantizer)


@dataclass
class Reference:
    """A vector-quantize-pytorch module matched to a vqkit quantizer, and how to read its outputs."""

    cls: str
    module: nn.Module
    settings: dict[str, Any]
    forward: Callable[[torch.Tensor], Any]
    codes: Callable[[Any], torch.Tensor]  # its output -> codes [B, L, C] in vqkit's index order
    loss: Callable[[Any], torch.Tensor]  # its output -> its weighted losses, a scalar
    differences: list[str] = field(default_factory=list)


Adapter = Callable[[Q], Reference | str]


def build_reference(q: Quantizer) -> Reference | str:
    """vector-quantize-pytorch's equivalent of ``q`` holding the same state, or why there is none."""
    if VQP is None:
        return "vector-quantize-pytorch is not installed (the bench extra)"
    try:
        return _adapter(q)
    except (AssertionError, TypeError, ValueError) as err:  # its constructors validate with assert
        return f"{type(err).__name__}: {err}"


@functools.singledispatch
def _adapter(q: Quantizer) -> Reference | str:
    """The fallback of the dispatch: a class without an adapter."""
    return f"no equivalent of {type(q).__name__}"


def adapts(cls: type[Q], *, exact: bool = False) -> Callable[[Adapter[Q]], Adapter[Q]]:
    """Register the decorated function as the adapter of ``cls`` (and its subclasses unless ``exact``; a
    subclass of an ``exact`` class is dispatched as if ``cls`` had no adapter)."""

    def register(adapter: Adapter[Q]) -> Adapter[Q]:
        if not exact:
            _adapter.register(cls, adapter)
            return adapter

        def exactly(q: Q) -> Reference | str:
            if type(q) is cls:
                return adapter(q)
            return _adapter.dispatch(cls.__mro__[1])(q)  # what cls's parent class would get

        _adapter.register(cls, exactly)
        return adapter

    return register


def _none_because(reason: str) -> Adapter[Quantizer]:
    return lambda q: reason


# Classes vector-quantize-pytorch has nothing like (or only something else under the same name), with the
# reason the table prints in place of the generic "no equivalent of X".
NO_EQUIVALENT: dict[type[Quantizer], str] = {
    IVQ: "no IChing / binary-composition quantizer",
    LooC: "no shared low-dimensional compositional codebook",
    ResidualFSQ: "its ResidualFSQ differs: symmetry-preserving hard-clamped bound, level scales L^-i "
    "(vqkit (L-1)^-i)",
}
for _cls, _reason in NO_EQUIVALENT.items():
    adapts(_cls, exact=True)(_none_because(_reason))


# --------------------------------------------------------------------------- shared pieces
def _zero_loss(out: Any) -> torch.Tensor:
    return out[0].new_zeros(())


def _sum_loss(out: Any) -> torch.Tensor:
    return out[2].sum()


def _projected(q: Quantizer) -> bool:
    """Whether ``q`` has a learned in-projection (a composite's ``project_in`` or a VQ's own)."""
    return not isinstance(getattr(q, "project_in", nn.Identity()), nn.Identity)


@torch.no_grad()
def _copy_linear(theirs: nn.Module, ours: nn.Module) -> None:
    if isinstance(ours, nn.Identity) and isinstance(theirs, nn.Identity):
        return
    assert isinstance(ours, nn.Linear) and isinstance(theirs, nn.Linear), (ours, theirs)
    theirs.weight.copy_(ours.weight)
    if ours.bias is not None and theirs.bias is not None:
        theirs.bias.copy_(ours.bias)


def _copy_projections(theirs: Any, ours: FSQ | LFQ | ResidualLFQ) -> None:
    _copy_linear(theirs.project_in, ours.project_in)
    _copy_linear(theirs.project_out, ours.project_out)


# --------------------------------------------------------------------------- VQ and its composites
def _vq_settings(q: VQ, *, projected: bool) -> dict[str, Any] | str:
    """``VectorQuantize`` keyword arguments matching a vqkit ``VQ``, or why there are none; ``projected``: the
    vectors reach the codebook through a learned projection (the VQ's own or its composite's).

    ``kmeans_init=False`` (the codebook is copied in); ``decay`` (its default 0.8, vqkit's 0.99) and ``eps``
    from vqkit; ``commitment_weight = beta`` (0.25; its default 1.0); ``rotation_trick=False`` (its default
    routes the gradient through a rotation instead of the straight-through estimator vqkit uses);
    ``threshold_ema_dead_code=0`` (vqkit ``restart="none"``); ``use_cosine_sim=False`` (both l2);
    ``sync_codebook=False``; no projections. ``update="grad"`` ↔ ``learnable_codebook=True,
    ema_update=False``; ``update="ema"`` ↔ its default EMA update."""
    options = q.codebook.options
    if options.restart == "anchor":
        return "no CVQ anchor update (restart='anchor')"
    if options.restart != "none":
        return f"no equivalent of restart={options.restart!r}"
    if (options.distance != "l2" or q.l2_normalize) and options.update == "grad":
        return "VectorQuantize does not allow a learnable codebook with cosine similarity"
    if options.distance != "l2" or q.l2_normalize or projected:
        return "cosine matching or projected codes: not matched here"
    update = {"ema_update": True, "learnable_codebook": False}
    if options.update == "grad":
        update = {"ema_update": False, "learnable_codebook": True}
    return {
        "decay": options.decay,
        "eps": options.eps,
        "kmeans_init": False,
        "commitment_weight": q.beta,
        "rotation_trick": False,
        "threshold_ema_dead_code": 0,
        "use_cosine_sim": False,
        "sync_codebook": False,
        **update,
        **quantizer_references_extra.vq_options(q),  # its other options (ValueError: no equivalent)
    }


@torch.no_grad()
def _copy_codebook(theirs: Any, ours: VQ) -> None:
    """vqkit's codebook, EMA counts and EMA sums into a vector-quantize-pytorch ``Codebook``."""
    cb = ours.codebook
    theirs.embed.copy_(cb.weight[None])
    theirs.cluster_size.copy_(cb.cluster_size[None])
    theirs.embed_avg.copy_((cb.ema_sum if cb.options.update == "ema" else cb.weight)[None])
    quantizer_references_extra.copy_option_state(theirs, ours)  # e.g. the affine codes' statistics


def _vq_stages(q: ResidualVQ | ProductVQ) -> list[VQ]:
    return [stage for stage in q.stage_list if isinstance(stage, VQ)]


@adapts(VQ, exact=True)
def _vq_reference(q: VQ) -> Reference | str:
    """``VectorQuantize(dim, K)`` with vqkit's codebook copied into its ``embed`` (and the EMA counts and sums
    into ``cluster_size`` and ``embed_avg``). Remaining difference: with a learnable codebook its one
    ``commitment`` term ``|q - z|^2`` (neither side detached) trains both the codebook and the input with
    weight ``beta``, where vqkit has ``codebook`` (weight 1) + ``beta * commitment``: the loss values differ,
    the work does not."""
    assert VQP is not None
    settings = _vq_settings(q, projected=_projected(q))
    if isinstance(settings, str):
        return settings
    settings = {"dim": q.dim, "codebook_size": q.codebook_size, **settings}
    ref = VQP.VectorQuantize(**settings)
    _copy_codebook(ref._codebook, q)
    return Reference("VectorQuantize", ref, settings, ref, lambda out: out[1][..., None], _sum_loss)


@adapts(ResidualVQ)
def _residual_vq_reference(q: ResidualVQ) -> Reference | str:
    """``ResidualVQ(dim, num_quantizers, codebook_size=(sizes), shared_codebook)`` with the same per-level
    ``VectorQuantize`` settings and every level's codebook copied. It applies the straight-through estimator at
    each level (vqkit: once, to the sum)."""
    assert VQP is not None
    stages = _vq_stages(q)
    level_settings = _vq_settings(stages[0], projected=_projected(q) or _projected(stages[0]))
    if isinstance(level_settings, str):
        return level_settings
    sizes = tuple(s.codebook_size for s in stages)
    settings = {"dim": q.dim, "num_quantizers": len(sizes), "codebook_size": sizes, **level_settings}
    settings["shared_codebook"] = q.shared_codebook  # its levels then share the first one's (copied) codebook
    ref = VQP.ResidualVQ(**settings)
    for layer, stage in zip(ref.layers, stages, strict=True):
        _copy_codebook(layer._codebook, stage)
    return Reference(
        "ResidualVQ",
        ref,
        settings,
        ref,
        lambda out: out[1],
        _sum_loss,
        ["straight-through estimator at every level (vqkit: once, on the sum)"],
    )


@adapts(ProductVQ)
def _product_vq_reference(q: ProductVQ) -> Reference | str:
    """``GroupedResidualVQ(dim, groups, num_quantizers=1, codebook_size)`` (one single-level residual VQ per
    contiguous group: a product VQ), the ``VectorQuantize`` settings, codebooks copied. Only for equal group
    sizes (it takes one size for all groups)."""
    assert VQP is not None
    stages = _vq_stages(q)
    sizes = {s.codebook_size for s in stages}
    if len(sizes) != 1:
        return f"GroupedResidualVQ takes one codebook size for all groups, not {[s.codebook_size for s in stages]}"
    group_settings = _vq_settings(stages[0], projected=_projected(stages[0]))
    if isinstance(group_settings, str):
        return group_settings
    settings = {
        "dim": q.dim,
        "groups": len(stages),
        "num_quantizers": 1,
        "codebook_size": sizes.pop(),
        **group_settings,
    }
    ref = VQP.GroupedResidualVQ(**settings)
    for rvq, stage in zip(ref.rvqs, stages, strict=True):
        _copy_codebook(rvq.layers[0]._codebook, stage)
    return Reference(
        "GroupedResidualVQ",
        ref,
        settings,
        ref,
        lambda out: out[1][..., 0].movedim(0, -1),  # [G, B, L, 1] -> [B, L, G]
        _sum_loss,
        ["one single-level ResidualVQ per group"],
    )


# --------------------------------------------------------------------------- scalar quantizers
@adapts(FSQ, exact=True)
def _fsq_reference(q: FSQ) -> Reference | str:
    """``FSQ(levels, dim)``: same levels, the D → len(levels) projections copied. Both pack digits with the
    first channel least significant and bound with ``tanh(z + shift) (L-1)(1+1e-3)/2 - offset``, so the codes
    must agree exactly (``bench_quantizers.py`` warns when they do not). No losses."""
    assert VQP is not None
    settings = {"levels": list(q.levels), "dim": q.dim}
    ref = VQP.FSQ(**settings)
    _copy_projections(ref, q)
    return Reference("FSQ", ref, settings, ref, lambda out: out[1][..., None], _zero_loss)


def _reverse_bits(index: torch.Tensor, bits: int) -> torch.Tensor:
    """vector-quantize-pytorch LFQ index (channel 0 most significant) -> vqkit's (channel 0 least significant)."""
    shifts = torch.arange(bits - 1, -1, -1, device=index.device)
    channel_bits = torch.bitwise_and(torch.bitwise_right_shift(index.long()[..., None], shifts), 1)
    return (channel_bits << torch.arange(bits, device=index.device)).sum(-1)


def _factorized_entropy(q: LFQ) -> bool:
    return q.entropy_mode == "factorized" or (
        q.entropy_mode == "auto" and q.bits > lfq_math.EXACT_ENTROPY_MAX_BITS
    )


_FACTORIZED = "its entropy is always exact, from an N x 2^bits softmax (vqkit: factorized here)"


def _lfq_settings(q: LFQ, base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "entropy_loss_weight": q.entropy_weight,
        "commitment_loss_weight": q.beta,
        "diversity_gamma": q.diversity,
        "codebook_scale": q.scale,
        "frac_per_sample_entropy": 1.0,
    }


@adapts(LFQ, exact=True)
def _lfq_reference(q: LFQ) -> Reference | str:
    """``LFQ(dim, codebook_size=2^bits)``: projections copied; ``entropy_loss_weight`` = vqkit
    ``entropy_weight`` (0.1), ``commitment_loss_weight = beta`` (0.25; its default 0), ``diversity_gamma`` =
    ``diversity`` (1), ``codebook_scale`` = ``scale`` (1), ``frac_per_sample_entropy=1``, and the forward's
    ``inv_temperature = 1 / temperature`` (100). Its index puts channel 0 in the most significant bit, vqkit's
    in the least: its codes are bit-reversed before comparing. It computes the entropy terms from the dense
    ``N x 2^bits`` softmax; vqkit from per-bit sigmoids and a chunked exact codebook entropy (the same
    quantities)."""
    assert VQP is not None
    if _factorized_entropy(q):
        return _FACTORIZED
    settings = _lfq_settings(q, {"dim": q.dim, "codebook_size": 2**q.bits})
    ref = VQP.LFQ(**settings)
    _copy_projections(ref, q)
    inv_temperature, bits = 1.0 / q.temperature, q.bits
    return Reference(
        "LFQ",
        ref,
        {**settings, "forward(inv_temperature=)": inv_temperature},
        lambda x: ref(x, inv_temperature=inv_temperature),
        lambda out: _reverse_bits(out[1], bits)[..., None],
        lambda out: out[2],
        ["dense N x 2^bits softmax for the entropy terms (vqkit: per-bit sigmoids, chunked exact entropy)"],
    )


@adapts(ResidualLFQ)
def _residual_lfq_reference(q: ResidualLFQ) -> Reference | str:
    """``ResidualLFQ(dim, num_quantizers, codebook_size=2^bits)`` with the LFQ settings, projections copied,
    codes bit-reversed per level. Level ``i`` codes are ``±2^-i`` in both (vqkit quantizes ``r 2^i`` with unit
    codes, vector-quantize-pytorch ``r`` with codes ``±2^-i``), so the codes agree; its entropy and commitment
    terms are computed in unscaled units (different values, the same work), its forward uses the default
    ``inv_temperature`` 100 (= vqkit's default temperature 0.01) and it sums each level's straight-through
    output (vqkit: one estimator on the sum)."""
    assert VQP is not None
    stages = [stage for stage in q.stage_list if isinstance(stage, LFQ)]
    first = stages[0]
    if _factorized_entropy(first):
        return _FACTORIZED
    if any(s.temperature != 0.01 for s in stages):
        return "its ResidualLFQ forward keeps the default inv_temperature 100 (temperature 0.01)"
    settings = _lfq_settings(
        first, {"dim": q.dim, "num_quantizers": len(stages), "codebook_size": 2**first.bits}
    )
    settings.pop("codebook_scale")  # set per level: 2^-i
    ref = VQP.ResidualLFQ(**settings)
    _copy_projections(ref, q)
    bits = first.bits
    return Reference(
        "ResidualLFQ",
        ref,
        settings,
        ref,
        lambda out: _reverse_bits(out[1], bits),
        _sum_loss,
        [
            "entropy and commitment computed in unscaled units (vqkit: on r 2^i): other values, same work",
            "straight-through output summed over levels (vqkit: one estimator on the sum)",
        ],
    )


# --------------------------------------------------------------------------- SimVQ
@adapts(SimVQ, exact=True)
def _simvq_reference(q: SimVQ) -> Reference | str:
    """``SimVQ(dim, K, codebook_transform=nn.Linear(D, D, bias=True))`` (its default transform has no bias;
    vqkit's, like the authors' code, has one) with the frozen codebook and the transform copied;
    ``rotation_trick=False``; ``input_to_quantize_commit_loss_weight = beta`` (0.25), ``commitment_weight=1``:
    the same loss. Its search is a dense ``torch.cdist``; vqkit's forward also computes ``W``'s rank (an SVD of
    the D x D transform) for its metrics each step."""
    assert VQP is not None
    if q.train_codebook:
        return "its frozen codebook cannot be trained (train_codebook=True)"
    transform = nn.Linear(q.dim, q.dim, bias=True)
    settings = {
        "dim": q.dim,
        "codebook_size": q.codebook_size,
        "codebook_transform": "nn.Linear(D, D, bias=True)",
        "rotation_trick": False,
        "input_to_quantize_commit_loss_weight": q.beta,
        "commitment_weight": 1.0,
    }
    ref = VQP.SimVQ(**{**settings, "codebook_transform": transform})
    with torch.no_grad():
        ref.frozen_codebook.copy_(q.codebook)
    _copy_linear(ref.code_transform, q.transform)
    return Reference(
        "SimVQ",
        ref,
        settings,
        ref,
        lambda out: out[1][..., None],
        lambda out: out[2],
        ["dense torch.cdist search; vqkit also takes an SVD of W for its metrics each forward"],
    )


import quantizer_references_extra  # noqa: E402  (registers its adapters; imports this module)
