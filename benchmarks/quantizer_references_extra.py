"""More vector-quantize-pytorch 1.32.0 equivalents for ``bench_quantizers.py``: the quantizer classes added after
``quantizer_references.py`` was full, registered with its ``@adapts`` (that module imports this one at its end,
so importing either registers them), and ``vq_options``, the ``VectorQuantize`` settings of VQ's options beyond
the VQ-VAE step (``_vq_settings`` adds them for ``vq`` and every VQ level of a composite).

* ``grouped_residual_vq`` ↔ ``GroupedResidualVQ``; ``grouped_residual_lfq`` ↔ ``GroupedResidualLFQ``: one
  residual quantizer per group, with ``residual_vq``'s and ``residual_lfq``'s settings and mappings. Their codes
  ``[G, ..., L]`` (group-major) are reordered to vqkit's level-major ``[..., L * G]`` (``_level_major``).
* ``residual_vq`` with ``shared_codebook=True`` ↔ ``ResidualVQ(shared_codebook=True)``: in
  ``quantizer_references._residual_vq_reference`` (the bench row ``residual_vq[shared_codebook]``).
* VQ ``orthogonal_weight`` ↔ ``VectorQuantize(orthogonal_reg_weight, orthogonal_reg_active_codes_only=True,
  orthogonal_reg_max_codes=orthogonal_codes)`` (``vq_options``; the row ``vq[orthogonal_weight=10]``); VQ
  ``affine="running"`` ↔ ``affine_param=True`` (``vq_options``, ``copy_option_state``). VQ's stochastic codes,
  entropy penalty, learned affine codes and synchronized commitment: ``NoEquivalent`` notes (``_refuse``).
* ``bsq`` ↔ ``LFQ(spherical=True)`` (arXiv 2406.07548; ``_bsq_reference``).
* ``random_projection`` ↔ ``RandomProjectionQuantizer(norm=False)``; ``latent_quantize`` ↔ ``LatentQuantize``.
* No equivalent: ``grouped_residual_fsq`` (its ``GroupedResidualFSQ`` groups its ``ResidualFSQ``, the different
  quantizer of ``residual_fsq``'s note).
* Not matched yet, though vector-quantize-pytorch has a counterpart (a note in ``NOTES``, not a claim that it has
  none): ``multiscale_vq`` (``HierarchicalVQ``, VAR-style
  multi-scale residual VQ), ``qinco`` (``ResidualVQ(implicit_neural_codebook=True)``, another network).
"""

from __future__ import annotations

from typing import Any

import torch
from quantizer_references import (
    _FACTORIZED,
    VQP,
    Reference,
    _copy_codebook,
    _copy_linear,
    _copy_projections,
    _factorized_entropy,
    _lfq_settings,
    _none_because,
    _projected,
    _reverse_bits,
    _sum_loss,
    _vq_settings,
    _vq_stages,
    _zero_loss,
    adapts,
)
from torch import nn

from vqkit.quantizers import (
    LFQ,
    VQ,
    GroupedResidualFSQ,
    GroupedResidualLFQ,
    GroupedResidualVQ,
    LatentQuantizer,
    RandomProjectionQuantizer,
    ResidualLFQ,
    ResidualVQ,
)
from vqkit.quantizers.base import Quantizer
from vqkit.quantizers.bsq import BSQ
from vqkit.quantizers.multiscale import MultiScaleVQ
from vqkit.quantizers.qinco import QINCo

# Classes whose row prints a reason in place of the generic "no equivalent of X".
NOTES: dict[type[Quantizer], str] = {
    GroupedResidualFSQ: "its GroupedResidualFSQ groups its ResidualFSQ: symmetry-preserving bound (at any number "
    "of levels), level scales L^-i (vqkit (L-1)^-i)",
    QINCo: "not matched yet: its ResidualVQ(implicit_neural_codebook=True) is QINCo with SiLU blocks with biases "
    "(vqkit: ReLU, no biases), the same function only while every block's output layer is 0",
    MultiScaleVQ: "not matched yet: its HierarchicalVQ is VAR-style multi-scale residual VQ (average pooling, "
    "(bi)linear upsampling, an EMA VectorQuantize; no adapter written)",
}
for _cls, _reason in NOTES.items():
    adapts(_cls, exact=True)(_none_because(_reason))


def _level_major(codes: torch.Tensor) -> torch.Tensor:
    """Group-major codes ``[G, B, L, Q]`` -> vqkit's level-major ``[B, L, Q * G]`` (level 0 of every group first)."""
    return codes.movedim(0, -1).flatten(-2)


# --------------------------------------------------------------------------- VQ options
class NoEquivalent(ValueError):
    """A VQ option ``VectorQuantize`` has nothing like; ``build_reference`` prints it as the row's note."""


# VQ's training options (vqkit.quantizers.vq_training) that VectorQuantize has under a similar name but computes
# differently: (attribute, its "off" value) -> why not. Refused, never silently dropped.
_UNMATCHED: dict[tuple[str, object], str] = {
    (
        "sampling",
        "softmax",
    ): "its stochastic_sample_codes samples softmax(-|x - c| / T), the Euclidean distance (vqkit: squared)",
    ("sampling", "gumbel"): "its Gumbel straight-through takes the noise-free softmax(-|x - c| / T) as the "
    "gradient path and refuses a learnable codebook (vqkit: the noisy relaxation, squared distances)",
    ("affine", "learned"): "its affine_param is the running-statistics form only (vqkit: trained a, b)",
}


def _refuse(q: VQ) -> None:
    """``NoEquivalent`` for an option of ``q`` that ``vq_options`` cannot match."""
    for (name, value), reason in _UNMATCHED.items():
        if getattr(q, name, None) == value:
            raise NoEquivalent(reason)
    if q.entropy_weight > 0:
        raise NoEquivalent(
            "its codebook_diversity_loss is the codebook-entropy term alone, over softmax(-100 |x - c|) "
            "(vqkit: with the per-vector entropy, over squared distances / tau)"
        )
    if q.sync_nu > 0:
        raise NoEquivalent(
            "its sync_update_v, added after the straight-through estimator, scales the input's gradient by 1 + v "
            "and sends none to the codebook (vqkit: nu times the output's gradient to the codes, Eq. 21)"
        )


def vq_options(q: VQ) -> dict[str, Any]:
    """``VectorQuantize`` settings of ``q``'s options beyond the VQ-VAE step (``{}`` without any); raises
    ``NoEquivalent`` for one it has nothing like (``_UNMATCHED``, ``_refuse``: stochastic codes, the entropy
    penalty, learned affine codes, synchronized commitment).

    * ``orthogonal_weight`` ↔ ``orthogonal_reg_weight`` with ``orthogonal_reg_active_codes_only=True`` and
      ``orthogonal_reg_max_codes = orthogonal_codes``: both compute ``sum(G^2) / M^2 - 1 / M`` (the mean squared
      deviation of the cosine Gram matrix ``G`` of ``M`` codes from the identity; arXiv 2112.00384, eq. 2) over
      the codes the batch uses, or a random ``orthogonal_codes`` of them when more are used: the same value (the
      same draw aside), which ``tests/test_bench_references_extra.py`` checks.
    * ``affine="running"`` ↔ ``affine_param=True``: both search and decode ``(c' - mean_c') sd_z / sd_c' +
      mean_z``; ``affine_param_batch_decay = affine_decay``, ``affine_param_codebook_decay=0`` (vqkit takes the
      current codes' moments), the statistics copied (``copy_option_state``). Differences: it also moves its
      input statistics in eval forwards (so its eval codes drift from the copied state), and its input average is
      a plain EMA started at its first batch, vqkit's a bias-corrected EMA (the same after one batch)."""
    _refuse(q)
    settings: dict[str, Any] = {}
    if q.orthogonal_weight > 0:
        settings |= {
            "orthogonal_reg_weight": q.orthogonal_weight,
            "orthogonal_reg_active_codes_only": True,
            "orthogonal_reg_max_codes": q.orthogonal_codes,
        }
    if q.affine == "running":
        settings |= {
            "affine_param": True,
            "affine_param_batch_decay": q.affine_decay,
            "affine_param_codebook_decay": 0.0,
        }
    return settings


@torch.no_grad()
def copy_option_state(theirs: Any, ours: VQ) -> None:
    """The state of ``ours``'s options into its ``Codebook`` ``theirs``: the running affine statistics (before any
    training batch vqkit's codes are the identity, so its input moments are set to the codes' own)."""
    if ours.code_affine is None or ours.affine != "running":
        return
    codes = ours.codebook.weight.detach()
    mean, variance = codes.mean(0), codes.var(0, unbiased=False)
    affine = ours.code_affine
    if int(affine.step) > 0:  # vqkit's bias-corrected averages, what its parameters_ab reads
        correction = 1.0 - affine.decay ** float(affine.step)
        mean, variance = affine.input_mean / correction, affine.input_variance / correction
    theirs.register_buffer("batch_mean", mean.reshape(1, 1, -1).clone())
    theirs.register_buffer("batch_variance", variance.reshape(1, 1, -1).clone())
    theirs.codebook_mean.copy_(codes.mean(0).reshape(1, 1, -1))
    theirs.codebook_variance.copy_(codes.var(0, unbiased=False).reshape(1, 1, -1))
    theirs.codebook_mean_needs_init.fill_(False)
    theirs.codebook_variance_needs_init.fill_(False)


# --------------------------------------------------------------------------- grouped residual quantizers
@adapts(GroupedResidualVQ, exact=True)
def _grouped_residual_vq_reference(q: GroupedResidualVQ) -> Reference | str:
    """``GroupedResidualVQ(dim, groups, num_quantizers, codebook_size=(sizes), shared_codebook)``: ``residual_vq``'s
    per-level ``VectorQuantize`` settings in every group, every level's codebook copied, codes reordered to
    level-major. It applies the straight-through estimator at each level (vqkit: once per group, to its sum)."""
    assert VQP is not None
    groups = [g for g in q.groups if isinstance(g, ResidualVQ)]  # all of them (its residual_class)
    first = groups[0]
    stages = _vq_stages(first)
    level_settings = _vq_settings(stages[0], projected=_projected(first) or _projected(stages[0]))
    if isinstance(level_settings, str):
        return level_settings
    sizes = tuple(s.codebook_size for s in stages)
    settings = {
        "dim": q.dim,
        "groups": len(groups),
        "num_quantizers": len(sizes),
        "codebook_size": sizes,
        "shared_codebook": first.shared_codebook,
        **level_settings,
    }
    ref = VQP.GroupedResidualVQ(**settings)
    for rvq, group in zip(ref.rvqs, groups, strict=True):
        for layer, stage in zip(rvq.layers, _vq_stages(group), strict=True):
            _copy_codebook(layer._codebook, stage)
    return Reference(
        "GroupedResidualVQ",
        ref,
        settings,
        ref,
        lambda out: _level_major(out[1]),
        _sum_loss,
        ["Straight-through estimator at every level (vqkit: once, on each group's sum)"],
    )


@adapts(GroupedResidualLFQ, exact=True)
def _grouped_residual_lfq_reference(q: GroupedResidualLFQ) -> Reference | str:
    """``GroupedResidualLFQ(dim, groups, num_quantizers, codebook_size=2^bits)`` with ``residual_lfq``'s settings
    in every group (each group's projections copied, codes bit-reversed per level, then level-major); its
    differences are ``residual_lfq``'s."""
    assert VQP is not None
    groups = [g for g in q.groups if isinstance(g, ResidualLFQ)]  # all of them (its residual_class)
    stages = [stage for stage in groups[0].stage_list if isinstance(stage, LFQ)]
    first = stages[0]
    if _factorized_entropy(first):
        return _FACTORIZED
    if any(s.temperature != 0.01 for s in stages):
        return "its ResidualLFQ forward keeps the default inv_temperature 100 (temperature 0.01)"
    base = {
        "dim": q.dim,
        "groups": len(groups),
        "num_quantizers": len(stages),
        "codebook_size": 2**first.bits,
    }
    settings = _lfq_settings(first, base)
    settings.pop("codebook_scale")  # set per level: 2^-i
    ref = VQP.GroupedResidualLFQ(**settings)
    for rvq, group in zip(ref.rvqs, groups, strict=True):
        _copy_projections(rvq, group)
    bits = first.bits
    return Reference(
        "GroupedResidualLFQ",
        ref,
        settings,
        ref,
        lambda out: _level_major(_reverse_bits(out[1], bits)),
        _sum_loss,
        [
            "one ResidualLFQ per group: entropy and commitment in unscaled units, straight-through output summed "
            "over levels (residual_lfq's differences)"
        ],
    )


# --------------------------------------------------------------------------- frozen and learned-grid quantizers
def _rpq_forward(ref: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Its forward returns the codes only (no decoder, nothing to train): the input stands in for ``quantized``,
    so its "training step" is the forward and the same ``square().mean()`` backward, on the input itself."""
    return x, ref(x)


@adapts(RandomProjectionQuantizer, exact=True)
def _random_projection_reference(q: RandomProjectionQuantizer) -> Reference | str:
    """``RandomProjectionQuantizer(dim, codebook_size, codebook_dim, norm=False)`` (its ``norm=True`` default is
    BEST-RQ's input layer norm, which vqkit leaves to the model) with vqkit's projection copied into
    ``rand_projs`` (``P^T``) and its unit codebook into the cosine-similarity ``VectorQuantize``: the nearest
    unit code to the normalized projection in both. It has no decoder (vqkit decodes to ``P^+ c_k``): its eval
    forward is an encode, so its ``encode speedup`` is the like-for-like one."""
    assert VQP is not None
    settings = {
        "dim": q.dim,
        "codebook_size": q.codebook_size,
        "codebook_dim": q.codebook_dim,
        "norm": False,
    }
    ref = VQP.RandomProjectionQuantizer(**settings)
    with torch.no_grad():
        ref.rand_projs.copy_(q.projection.T[None])
        ref.vq._codebook.embed.copy_(q.codebook[None])
    return Reference(
        "RandomProjectionQuantizer",
        ref,
        settings,
        lambda x: _rpq_forward(ref, x),
        lambda out: out[1][..., None],
        _zero_loss,
        [
            "codes only, no decoder: its training step is its forward and the square-mean backward to the input"
        ],
    )


def _grid_map(q: LatentQuantizer, theirs: nn.ParameterList) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(a, b)`` per channel with ``theirs_c = a_c ours_c + b_c`` for every grid value, or ``None`` when vqkit's
    grid is no such image of theirs (it has moved unevenly in training)."""
    scale, shift = [], []
    for c, count in enumerate(q.levels):
        ours, other = q.values.detach()[c, :count], theirs[c].detach()
        a = (other[-1] - other[0]) / (ours[-1] - ours[0])
        b = other[0] - a * ours[0]
        if not torch.allclose(a * ours + b, other, atol=1e-6):
            return None
        scale.append(a)
        shift.append(b)
    return torch.stack(scale), torch.stack(shift)


@adapts(LatentQuantizer, exact=True)
def _latent_reference(q: LatentQuantizer) -> Reference | str:
    """``LatentQuantize(levels, dim)`` with vqkit's projections copied and each channel's grid mapped onto its own.

    Its index is computed from the grid values assuming its initial grid (``arange(L) / L - 0.5``, or
    ``linspace(-0.5, 0.5, L)`` for odd ``L``), vqkit's starts evenly on ``[-1, 1]``; both are even, so with
    ``theirs = a ours + b`` per channel folded into the projections (``W_in, b_in`` scaled by ``a`` and shifted by
    ``b``; ``W_out`` divided by ``a``, ``b_out`` corrected) it holds the same state: the same codes and
    ``quantized``. Only for such a grid (fresh, or moved evenly) and with projections (``dim != len(levels)``).
    Losses: its ``commitment_loss`` ``|sg[x] - out|^2`` trains the grid (vqkit's ``codebook``, weight 1) and its
    ``quantization_loss`` ``|x - sg[out]|^2`` the input (vqkit's ``commitment``, weight ``beta``); it takes them
    between the input and the projected-out output (D dims), vqkit between ``h`` and its grid values. It expects
    channels first: the input is transposed for it."""
    assert VQP is not None
    if isinstance(q.project_in, nn.Identity) or not isinstance(q.project_out, nn.Linear):
        return "dim == len(levels): its grid cannot be mapped onto vqkit's without projections"
    settings = {
        "levels": list(q.levels),
        "dim": q.dim,
        "commitment_loss_weight": 1.0,
        "quantization_loss_weight": q.beta,
    }
    ref = VQP.LatentQuantize(**settings)
    mapping = _grid_map(q, ref.values_per_latent)
    if mapping is None:
        return "vqkit's grid is no longer evenly spaced: its index assumes its initial grid"
    a, b = mapping
    assert isinstance(q.project_in, nn.Linear)
    with torch.no_grad():
        ref.project_in.weight.copy_(a[:, None] * q.project_in.weight)
        ref.project_in.bias.copy_(a * q.project_in.bias + b)
        ref.project_out.weight.copy_(q.project_out.weight / a[None, :])
        ref.project_out.bias.copy_(q.project_out.bias - ref.project_out.weight @ b)
    return Reference(
        "LatentQuantize",
        ref,
        settings,
        lambda x: ref(x.transpose(1, 2)),
        lambda out: out[1].long()[..., None],
        lambda out: out[2],
        [
            "losses between the input and the projected-out output (vqkit: in the grid's channels)",
            "grid mapped onto its initial grid per channel, folded into the projections",
        ],
    )


@adapts(BSQ, exact=True)
def _bsq_reference(q: BSQ) -> Reference | str:
    """``LFQ(dim, codebook_size=2^bits, spherical=True)``: its input l2-normalized after the projection in and its
    codes ``sign / sqrt(bits)`` (its ``l2norm`` of the ±1 vector), as BSQ; projections copied, codes
    bit-reversed (``lfq``'s mapping), ``inv_temperature = 1 / temperature`` (its distances ``-2 u . c`` differ
    from ``|u - c|^2`` by a constant on the sphere, so the soft assignments are the same). Differences: its
    codebook entropy is exact over all ``2^bits`` codes (vqkit: ``group_size`` groups, exact when
    ``group_size >= bits``); its commitment is a mean over bits (vqkit's a sum; ``beta`` is 0 by default)."""
    assert VQP is not None
    if q.data_init and q.needs_warm_start:
        return "vqkit's first-batch data init has not run (the bench runs it before copying)"
    settings = {
        "dim": q.dim,
        "codebook_size": 2**q.bits,
        "spherical": True,
        "entropy_loss_weight": q.entropy_weight,
        "commitment_loss_weight": q.beta,
        "diversity_gamma": q.diversity,
        "frac_per_sample_entropy": 1.0,
    }
    ref = VQP.LFQ(**settings)
    linear = q.input_linear()
    _copy_linear(ref.project_in, linear if linear is not None else q.project_in)
    _copy_linear(ref.project_out, q.project_out)
    inv_temperature, bits = 1.0 / q.temperature, q.bits
    differences = (
        [] if q.group_size >= bits else [f"exact codebook entropy (vqkit: groups of {q.group_size} bits)"]
    )
    return Reference(
        "LFQ(spherical=True)",
        ref,
        {**settings, "forward(inv_temperature=)": inv_temperature},
        lambda x: ref(x, inv_temperature=inv_temperature),
        lambda out: _reverse_bits(out[1], bits)[..., None],
        lambda out: out[2],
        [*differences, "commitment a mean over bits (vqkit: a sum)"],
    )
