"""Lookup-free quantization math (Yu et al., "Language Model Beats Diffusion: Tokenizer is Key to Visual
Generation", MAGVIT-v2, arXiv 2310.05737).

Each channel is quantized to its sign, ``{-scale, +scale}``; the code is the bit pattern (channel ``i`` is bit
``i``). The entropy penalty ``E[H(q(z))] - gamma * H(E[q(z)])`` uses ``q(c | z) ∝ exp(-|z - c|^2 / tau)``. Because
the squared distance is a sum over channels, ``q`` factorizes into independent bits with
``p_i = sigmoid(4 * scale * z_i / tau)``: the per-sample entropy is exactly the sum of binary entropies. The
codebook entropy ``H(E[q])`` does not factorize; it is computed exactly over all ``2^d`` codes for ``d <= 16``
(chunked, never ``N x 2^d`` at once) and by the factorized upper bound ``sum_i H(E[p_i])`` (as in BSQ,
arXiv 2406.07548) above that.
"""

from __future__ import annotations

from typing import Literal

import torch

EntropyMode = Literal["auto", "exact", "factorized"]
EXACT_ENTROPY_MAX_BITS = 16


def bit_weights(num_bits: int, device: torch.device | None = None) -> torch.Tensor:
    return torch.pow(2, torch.arange(num_bits, device=device, dtype=torch.long))


def signs_to_index(z: torch.Tensor) -> torch.Tensor:
    """``[..., d]`` -> ``[...]`` int64 index of the sign pattern (``z > 0`` is bit 1)."""
    return ((z > 0).long() * bit_weights(z.shape[-1], z.device)).sum(-1)


def index_to_bits(index: torch.Tensor, num_bits: int) -> torch.Tensor:
    """``[...]`` int64 -> ``[..., d]`` bits in {0, 1} (int64)."""
    return torch.remainder(
        torch.div(index[..., None], bit_weights(num_bits, index.device), rounding_mode="floor"), 2
    )


def bits_to_values(bits: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Bits -> ``{-scale, +scale}`` float32 values."""
    return (bits.to(torch.float32) * 2.0 - 1.0) * scale


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-7, 1 - 1e-7)
    return -(p * torch.log(p) + (1 - p) * torch.log1p(-p))


def entropy_terms(
    z: torch.Tensor,
    *,
    scale: float = 1.0,
    temperature: float = 0.01,
    mode: EntropyMode = "auto",
    chunk: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample entropy and codebook entropy (nats) of the soft assignment ``q(c | z)``. ``z``: ``[N, d]``."""
    n, d = z.shape
    logits = 4.0 * scale * z / temperature
    p = torch.sigmoid(logits)
    per_sample = _binary_entropy(p).sum(-1).mean()
    exact = mode == "exact" or (mode == "auto" and d <= EXACT_ENTROPY_MAX_BITS)
    if not exact:
        return per_sample, _binary_entropy(p.mean(0)).sum()
    if d > 24:
        raise ValueError(f"entropy_terms: mode='exact' needs at most 24 bits, got d={d}")
    log_p1 = torch.nn.functional.logsigmoid(logits)
    log_p0 = torch.nn.functional.logsigmoid(-logits)
    all_bits = index_to_bits(torch.arange(2**d, device=z.device), d).to(z.dtype)  # [2^d, d]
    avg = z.new_zeros(2**d)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        # log q(c|z) = sum_i b_i log p_i + (1 - b_i) log(1 - p_i)
        log_q = log_p1[start:stop] @ all_bits.t() + log_p0[start:stop] @ (1 - all_bits).t()
        avg = avg + log_q.exp().sum(0)
    avg = avg / n
    codebook = -(avg * torch.log(avg.clamp(min=1e-12))).sum()
    return per_sample, codebook
