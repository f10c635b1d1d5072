"""``VQ``'s training options beyond the VQ-VAE step, as its forward uses them (``vqkit.quantizers.vq``):

* stochastic codes, ``sampling="softmax" | "gumbel"``: in training each code is drawn from
  ``softmax(-d / sampling_temperature)`` over the codes (``vqkit.functional.sampling``): with the
  straight-through estimator (RQ-VAE's stochastic sampling, Lee et al., CVPR 2022, arXiv 2203.01941), or with
  the Gumbel-softmax relaxation as the gradient path (Jang et al. 2016; dVAE of DALL-E, Ramesh et al. 2021):
  the output's value is the drawn code, its gradient that of ``softmax(-d / T + G) @ codes``, which reaches
  the input and the codebook through the distances;
* the usage-entropy penalty ``entropy`` (``vqkit.functional.regularizers.usage_entropy``);
* synchronized commitment (Huh et al., ICML 2023, arXiv 2305.08842, Eq. 21; ``vqtorch``'s ``sync_nu``):
  ``out + nu * (q - sg[q])`` has the value of ``out`` exactly and sends ``nu`` times the output's gradient to
  the code ``q`` itself, so the codebook moves with the decoder's gradient in the step the encoder does;
* affine codes (``vqkit.quantizers.code_affine``).

Evaluation and ``encode`` use none of the randomness: the nearest code, the configured estimator.

Limit: ``ResidualVQ`` detaches its levels' outputs and applies one estimator to their sum, so in its levels
``"gumbel"`` trains like ``"softmax"`` and ``sync_nu`` has no effect (``ProductVQ`` keeps both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from vqkit.functional.estimators import straight_through
from vqkit.functional.numerics import floored_logits
from vqkit.functional.sampling import gumbel_logits
from vqkit.functional.search import pairwise_distances
from vqkit.quantizers.codebook import Codebook, CodebookOptions, CodeSpace

Sampling = Literal["nearest", "softmax", "gumbel"]
SAMPLINGS: tuple[str, ...] = ("nearest", "softmax", "gumbel")


def check_combination(
    sampling: str, gradient: str, sync_nu: float, affine: str, options: CodebookOptions, l2_normalize: bool
) -> None:
    """Raise ``ValueError`` for options that contradict each other (each named with the values given)."""
    update, distance = options.update, options.distance
    if sampling == "gumbel" and gradient != "ste":
        raise ValueError(
            f"gradient: sampling='gumbel' takes its gradient from the relaxation, not an estimator; "
            f"expected gradient='ste' with it, got gradient={gradient!r}"
        )
    if sync_nu > 0 and update != "grad":
        raise ValueError(
            f"sync_nu: synchronized commitment moves a gradient-trained codebook; expected update='grad' "
            f"with sync_nu={sync_nu}, got update={update!r}"
        )
    if affine == "learned" and update != "grad":
        raise ValueError(
            f"affine: 'learned' affine codes train by the codebook loss, which update={update!r} does not "
            f"return; expected update='grad', or affine='running'"
        )
    if affine != "none" and (l2_normalize or distance != "l2"):
        raise ValueError(
            f"affine: a per-dimension scale and shift moves codes off the unit sphere and changes their "
            f"directions; expected distance='l2' and l2_normalize=False with affine={affine!r}, got "
            f"distance={distance!r}, l2_normalize={l2_normalize}"
        )


@dataclass
class SoftAssignment:
    """What the training forward draws from the distances to every code.

    Attributes:
        codes: ``[N]`` the drawn codes (``None``: the nearest, as in evaluation).
        relaxed: ``[N, K]`` the Gumbel-softmax weights (``sampling="gumbel"`` only).
        distances: ``[N, K]`` with autograd, for the entropy penalty (``None`` when it is off).
    """

    codes: torch.Tensor | None
    relaxed: torch.Tensor | None
    distances: torch.Tensor | None


def soft_assignment(
    h: torch.Tensor,
    codebook: Codebook,
    space: CodeSpace | None,
    *,
    sampling: str,
    temperature: float,
    entropy: bool,
) -> SoftAssignment:
    """Distances from ``h`` ``[N, d]`` to the codes ``codebook.table(space)`` ``[K, d]`` (with autograd where the
    relaxation or the entropy needs it), and the codes drawn from them. Costs ``N x K`` memory; nothing (not
    even the table) when neither is on."""
    if sampling == "nearest" and not entropy:
        return SoftAssignment(None, None, None)
    with torch.set_grad_enabled(torch.is_grad_enabled() and (entropy or sampling == "gumbel")):
        distances = pairwise_distances(h, codebook.table(space), codebook.distance)
    if sampling == "nearest":
        return SoftAssignment(None, None, distances)
    logits = gumbel_logits(distances if sampling == "gumbel" else distances.detach(), temperature)
    codes = logits.detach().argmax(dim=1)
    relaxed = floored_logits(logits).softmax(dim=1) if sampling == "gumbel" else None
    return SoftAssignment(codes, relaxed, distances if entropy else None)


def relaxed_output(q: torch.Tensor, relaxed: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """The value of the drawn codes ``q`` ``[N, d]`` exactly, with the gradient of ``relaxed @ table``."""
    return straight_through(q, relaxed @ table)


def synchronized(out: torch.Tensor, q: torch.Tensor, nu: float) -> torch.Tensor:
    """``out + (nu q - sg[nu q])``: the value of ``out`` exactly (``s - s`` is exactly 0), and ``nu`` times the
    gradient reaching ``out`` also reaching the looked-up codes ``q`` (and so the codebook)."""
    s = nu * q
    return out + (s - s.detach())
