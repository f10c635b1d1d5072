"""Binary spherical quantization math (Zhao, Xiong, Krähenbühl, "Image and Video Tokenization with Binary
Spherical Quantization", arXiv 2406.07548).

The input ``u`` ``[N, L]`` lies on the unit sphere; its code is ``sign(u) / sqrt(L)``, a corner of the cube
inscribed in the sphere (so ``|code| = 1``): LFQ's sign code (``vqkit.functional.lfq``) with
``scale = 1 / sqrt(L)``. The soft assignment over the ``2^L`` corners is
``q(c | u) ∝ exp(-|u - c|^2 / tau)``; the squared distance is a sum over bits, so ``q`` factorizes into
independent bits with ``p_i = sigmoid(4 u_i / (sqrt(L) tau))``, and the per-sample entropy ``E[H(q(c | u))]`` is
exactly the sum of binary entropies.

The codebook entropy ``H(E[q(c | u)])`` does not factorize. BSQ approximates it group-wise: split the ``L``
bits into groups of ``group_size`` consecutive bits and sum the entropies of the groups' marginals,
``sum_g H(E[q(c_g | u_g)])``, each exact over its ``2^group_size`` sub-codes. By subadditivity this is an upper
bound, tight when the groups are independent under the average assignment; ``group_size = L`` is the exact
entropy and ``group_size = 1`` the per-bit bound LFQ uses above 16 bits. The cost is ``N x 2^group_size`` per
group instead of ``N x 2^L``, which is what makes the penalty affordable at many bits.
"""

from __future__ import annotations

import math

import torch

from vqkit.functional import lfq


def sphere_scale(bits: int) -> float:
    """``1 / sqrt(bits)``: the magnitude of each code value, so that a code of ``bits`` signs has norm 1."""
    return 1.0 / math.sqrt(bits)


def group_bounds(bits: int, group_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each group of ``group_size`` consecutive bits; the last group is shorter when
    ``group_size`` does not divide ``bits``."""
    return [(start, min(start + group_size, bits)) for start in range(0, bits, group_size)]


def grouped_entropy_terms(
    u: torch.Tensor,
    *,
    temperature: float = 1.0,
    group_size: int = 9,
    max_chunk_bytes: int = 64 * 1024 * 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample entropy (exact) and the group-wise codebook entropy (nats) of ``q(c | u)``. ``u``: ``[N, L]``.

    Each group's terms are ``lfq.entropy_terms`` on its bits with the full code's ``scale = 1 / sqrt(L)``
    (the exact codebook entropy over the group's sub-codes, chunked); the per-sample terms of the groups add up to
    the exact per-sample entropy. ``group_size = 1`` takes LFQ's factorized path directly (the same numbers).
    """
    bits = u.shape[-1]
    scale = sphere_scale(bits)
    if group_size == 1:
        return lfq.entropy_terms(u, scale=scale, temperature=temperature, mode="factorized")
    per_sample = u.new_zeros(())
    codebook = u.new_zeros(())
    for start, stop in group_bounds(bits, group_size):
        part_sample, part_codebook = lfq.entropy_terms(
            u[:, start:stop],
            scale=scale,
            temperature=temperature,
            mode="exact",
            max_chunk_bytes=max_chunk_bytes,
        )
        per_sample = per_sample + part_sample
        codebook = codebook + part_codebook
    return per_sample, codebook
