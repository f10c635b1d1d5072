"""``BSQ``: binary spherical quantization (Zhao, Xiong, Krähenbühl, "Image and Video Tokenization with Binary
Spherical Quantization", arXiv 2406.07548).

Project ``dim -> bits`` (a learned linear map; none when they are equal), l2-normalize onto the unit sphere,
keep each channel's sign scaled by ``1 / sqrt(bits)`` (a corner of the cube inscribed in the sphere, so the code
has norm 1), project back ``bits -> dim``. No codebook is stored: the ``2^bits`` corners are implicit. The
entropy penalty uses the soft assignment on the sphere and BSQ's group-wise factorization of the codebook entropy
(``vqkit.functional.bsq``), whose cost grows with ``2^group_size``, not ``2^bits``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vqkit._validate import check_int
from vqkit.functional import bsq as bsq_math
from vqkit.functional import lfq as lfq_math
from vqkit.quantizers.scalar import SignQuantizer
from vqkit.registry import register_quantizer
from vqkit.types import Layout, QuantizerOutput, terms_unless_grad

__all__ = ["BSQ", "ToSphere"]


class ToSphere(nn.Module):
    """``[..., L] -> [..., L]``: ``u = h / |h|`` (the zero vector stays zero)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(h, dim=-1)


@register_quantizer("bsq")
class BSQ(SignQuantizer):
    """Binary spherical quantization: ``[..., D]`` -> one code ``[..., 1]`` in ``[0, 2**bits)``.

    ``u = normalize(W z + b)``, code values ``sign(u) / sqrt(bits)``; ``quantized = project_out(code)`` with the
    straight-through gradient to ``u`` (through the normalization, as the authors' code). Losses:

    * ``commitment = |u - sg[code]|^2`` (squared distance on the sphere, summed over bits as in the authors'
      code; LFQ's is a mean over channels), weight ``beta``;
    * ``entropy = E[H(q(c | u))] - diversity * sum_g H(E[q(c_g | u_g)])`` with
      ``q(c | u) ∝ exp(-|u - c|^2 / temperature)`` (training only), weight ``entropy_weight``.

    Args:
        dim: D.
        bits: L, sign channels (the rate in bits per vector); default 18, the paper's main tokenizer.
        group_size: bits per group of the codebook-entropy factorization, 1 to 16 (the last group is shorter
            when it does not divide ``bits``; ``>= bits`` is the exact entropy). Default 9, the authors' code
            default (their configs use 9, "b18g2", and 1, "b18g18").
        temperature: tau of the soft assignment; default 1.0, the authors' ``inv_temperature=1``.
        diversity: gamma, the codebook-entropy weight inside ``entropy``; default 1.0 (the authors' ``gamma``, with
            per-sample weight ``gamma0 = 1``).
        beta: weight of ``commitment``; default 0.0, as every configuration of the authors' (the term is still
            returned, for logging). With ``beta=0.25`` BSQ kept 4 of 256 codes in the demo's conv VQ-VAE.
        entropy_weight: weight of ``entropy``; default 0.1, the authors' quantizer-loss weight
            (``codebook_weight``), without their ramp (3x at step 0 down to 1x at step 2,000: a schedule is the
            trainer's).
        data_init: standardize the linear map in on the first training batch before the normalization
            (``SignQuantizer``; not in the paper); default off: BSQ did not need it in the demo's conv VQ-VAE
            (all 256 codes used either way, docs/quantizers.md), where LFQ did.

    Deviations from the authors' code: the gradient reaching ``u`` is the straight-through identity, theirs is
    scaled by ``1 / sqrt(bits)`` (they scale the estimator's output); groups need not divide ``bits``; the
    per-sample entropy is always the exact per-bit sum (their ``persample_entropy_compute='analytical'``, which
    their configs use).
    """

    channel_map = ToSphere

    def __init__(
        self,
        dim: int,
        bits: int = 18,
        *,
        group_size: int = 9,
        temperature: float = 1.0,
        diversity: float = 1.0,
        beta: float = 0.0,
        entropy_weight: float = 0.1,
        data_init: bool = False,
        layout: Layout = "channels_last",
        allow_nonfinite: bool = False,
    ) -> None:
        super().__init__(dim, layout=layout, allow_nonfinite=allow_nonfinite)
        self.group_size = check_int(
            "group_size", group_size, minimum=1, maximum=lfq_math.EXACT_ENTROPY_MAX_BITS
        )
        self._setup_sign_channels(bits, data_init, (temperature, diversity, beta, entropy_weight))

    @property
    def code_scale(self) -> float:
        return bsq_math.sphere_scale(self.bits)

    @property
    def init_std(self) -> float:
        return 1.0  # before the normalization, which removes any common scale

    @property
    def loss_weights(self) -> dict[str, float]:
        return {"commitment": self.beta, "entropy": self.entropy_weight}

    def _quantize_channels(self, u: torch.Tensor) -> QuantizerOutput:
        codes, hard = self._signs(u)
        training = self.training

        def terms() -> dict[str, torch.Tensor]:
            losses = {"commitment": F.mse_loss(u, hard, reduction="sum") / max(u.shape[0], 1)}
            if training:
                per_sample, codebook = bsq_math.grouped_entropy_terms(
                    u, temperature=self.temperature, group_size=self.group_size
                )
                losses["entropy"] = per_sample - self.diversity * codebook
            return losses

        names = ("commitment", "entropy") if training else ("commitment",)
        needs_grad = torch.is_grad_enabled() and u.requires_grad
        return QuantizerOutput(
            quantized=self._values_out_if_no_grad(codes, hard, u),
            codes=codes,
            losses=terms_unless_grad(needs_grad, terms, names),
        )
