"""Lookup-free quantization math (Yu et al., "Language Model Beats Diffusion: Tokenizer is Key to Visual
Generation", MAGVIT-v2, arXiv 2310.05737).

Each channel is quantized to its sign, ``{-scale, +scale}``; the code is the bit pattern (channel ``i`` is bit
``i``). The entropy penalty ``E[H(q(z))] - gamma * H(E[q(z)])`` uses ``q(c | z) ∝ exp(-|z - c|^2 / tau)``. Because
the squared distance is a sum over channels, ``q`` factorizes into independent bits with
``p_i = sigmoid(4 * scale * z_i / tau)``: the per-sample entropy is exactly the sum of binary entropies. The
codebook entropy ``H(E[q])`` does not factorize; it is computed exactly over all ``2^d`` codes for ``d <= 16``
and by the factorized upper bound ``sum_i H(E[p_i])`` (as in BSQ, arXiv 2406.07548) above that.

**The exact codebook entropy without ``N x 2^d`` exponentials.** Split the bits into a low half ``A`` (``a``
bits) and a high half ``B``: ``q(c | z) = q(c_A | z) q(c_B | z)``, so the average assignment is one matrix
product, ``E[q](c_A, c_B) = (1/N) sum_n q(c_A | z_n) q(c_B | z_n)`` (``Q_A^T Q_B / N``, ``[2^a, 2^b]``). That
needs ``N (2^a + 2^b)`` exponentials and ``N 2^d`` multiply-adds, where the direct sum over codes takes ``N 2^d``
exponentials and ``2 d N 2^d`` multiply-adds (the same values, up to float rounding). Rows go in chunks of at
most ``max_chunk_bytes``, recomputed in backward when there are several; the backward is written out
(``_EntropyTerms``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from vqkit.utils.constants import cached_constant

EntropyMode = Literal["auto", "exact", "factorized"]
EXACT_ENTROPY_MAX_BITS = 16
EXACT_FLOAT_BITS = 24
"""Sign patterns of up to this many bits pack exactly as a float32 matrix-vector product (``sign_codes``)."""


def bit_weights(
    num_bits: int, device: torch.device | None = None, dtype: torch.dtype = torch.long
) -> torch.Tensor:
    return torch.pow(2, torch.arange(num_bits, device=device, dtype=torch.long)).to(dtype)


def bits_to_index(bits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Bits ``[..., d]`` (0/1 of any dtype) -> ``[...]`` int64 index (bit ``i`` is channel ``i``). Float bits of up
    to ``EXACT_FLOAT_BITS`` take one matrix-vector product with ``weights`` (``bit_weights`` in their dtype, or
    built here): sums of distinct powers of two below ``2^24`` round nowhere. Others: an int64 multiply and sum."""
    d = bits.shape[-1]
    if bits.is_floating_point() and d <= EXACT_FLOAT_BITS:
        weights = bit_weights(d, bits.device, bits.dtype) if weights is None else weights
        return (bits @ weights).long()
    return (bits.long() * bit_weights(d, bits.device)).sum(-1)


def signs_to_index(z: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``[..., d]`` -> ``[...]`` int64 index of the sign pattern (``z > 0`` is bit 1)."""
    return sign_codes(z, 1.0, weights=weights)[0]


def sign_codes(
    z: torch.Tensor, scale: float, dtype: torch.dtype | None = None, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The index ``[...]`` (``signs_to_index``) and the values ``±scale`` ``[..., d]`` of ``dtype`` (default
    ``z``'s; ``bits_to_values`` of the same bits) of ``z``'s signs, in one buffer: the bits as floats, then the
    values in place (``2 scale b - scale`` is exactly ``(2 b - 1) scale`` for ``b`` in {0, 1})."""
    bits = torch.gt(z.detach(), 0, out=torch.empty(z.shape, dtype=dtype or z.dtype, device=z.device))
    index = bits_to_index(bits, weights)
    return index, bits.mul_(2.0 * scale).sub_(scale)


def index_to_bits(index: torch.Tensor, num_bits: int) -> torch.Tensor:
    """``[...]`` int64 -> ``[..., d]`` bits in {0, 1} (int64)."""
    return torch.remainder(
        torch.div(index[..., None], bit_weights(num_bits, index.device), rounding_mode="floor"), 2
    )


def bits_to_values(
    bits: torch.Tensor, scale: float = 1.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Bits (int64 in {0, 1} or bool) -> ``{-scale, +scale}`` values of ``dtype``."""
    return (bits.to(dtype) * 2.0 - 1.0) * scale


@cached_constant()
def every_code_value(num_bits: int, scale: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The values ``±scale`` ``[2^num_bits, num_bits]`` of every index in order (``bits_to_values`` of
    ``index_to_bits``), made once per arguments; not to be written to."""
    index = torch.arange(2**num_bits, device=device)
    return bits_to_values(index_to_bits(index, num_bits), scale, dtype)


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-7, 1 - 1e-7)
    return -(p * torch.log(p) + (1 - p) * torch.log1p(-p))


LOG_FLOOR = -40.0
"""Logits are clamped to ``±40`` and each half-code log-probability raised to at least ``-40`` before its
exponential: a sign code's logits reach ``±400`` at the default temperature, and ``exp`` of a value below about
``-87`` (a subnormal or zero result) runs 10-30x slower on an x86 CPU. ``e^-40 ≈ 4e-18`` is far below the float32
resolution of the terms it joins, so the entropies do not change. The gradient passes the clamps unchanged."""


def _half_code_maps(bits: int, low: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log_p @ map`` is ``log q(c_A | z)`` over the codes of the low ``low`` bits (the first map,
    ``[2 bits, 2^low]``), or ``log q(c_B | z)`` over those of the high bits (the second), for ``log_p`` the bits'
    ``[log p, log(1 - p)]`` (``[..., 2 bits]``)."""
    maps = []
    for start, stop in ((0, low), (low, bits)):
        pattern = index_to_bits(torch.arange(2 ** (stop - start), device=like.device), stop - start).t()
        out = like.new_zeros(2 * bits, 2 ** (stop - start))
        out[start:stop] = pattern.to(like.dtype)
        out[bits + start : bits + stop] = 1 - pattern.to(like.dtype)
        maps.append(out)
    return maps[0], maps[1]


def _half_codes(
    log_p: torch.Tensor, maps: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``q(c_A | z)`` ``[G, 2^a, n]`` and ``q(c_B | z)`` ``[G, 2^b, n]`` of columns ``log_p`` ``[G, 2d, n]``."""
    return (maps[0] @ log_p).clamp_(min=LOG_FLOOR).exp_(), (maps[1] @ log_p).clamp_(min=LOG_FLOOR).exp_()


class _EntropyTerms(torch.autograd.Function):
    """Per-sample and codebook entropy ``[G]`` of logits ``[G, N, d]`` (``entropy_terms``), with a backward
    written out: the binary entropies' gradient is ``-l p (1 - p)``, the codebook entropy's flows back through
    the two half-code tables. Everything runs on ``[G, d, N]`` (one transposed copy of the logits): the small
    matrix products then have the batch as their long axis, 3-4x faster on CPU than ``[N, 4] @ [4, 8]``; the
    tables of each chunk of columns are recomputed in backward when there are several chunks."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, logits: torch.Tensor, exact: bool, rows: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logit = logits.transpose(1, 2).clamp(LOG_FLOOR, -LOG_FLOOR).contiguous()  # [G, d, N]
        log_p = F.logsigmoid(torch.cat([logit, -logit], dim=1))  # [log p; log(1 - p)], [G, 2d, N]
        p = log_p.exp()
        d, n = logit.shape[1], logit.shape[2]
        per_sample = -(p * log_p).sum((1, 2)) / n
        if not exact:
            mean = p[:, :d].mean(2)
            ctx.save_for_backward(logit, p, mean)
            ctx.mode = (exact, rows, None)  # type: ignore[attr-defined]
            return per_sample, _binary_entropy(mean).sum(-1)
        low, high = _half_code_maps(d, (d + 1) // 2, logit)
        maps = (low.t(), high.t())
        mass, kept = None, None
        for start in range(0, n, rows):
            q_low, q_high = _half_codes(log_p[:, :, start : start + rows], maps)
            chunk = q_low @ q_high.transpose(1, 2)
            mass = chunk if mass is None else mass + chunk
            kept = (q_low, q_high) if rows >= n else None  # one chunk: kept for backward
        assert mass is not None
        avg = mass / n
        log_avg = avg.clamp(min=1e-12).log()
        ctx.save_for_backward(logit, p, log_p, log_avg, low, high)
        ctx.mode = (exact, rows, kept)  # type: ignore[attr-defined]
        return per_sample, -(avg * log_avg).sum((1, 2))

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, g_sample: torch.Tensor, g_codebook: torch.Tensor
    ) -> tuple[torch.Tensor, None, None]:
        exact, rows, kept = ctx.mode  # type: ignore[attr-defined]
        logit, p = ctx.saved_tensors[:2]  # type: ignore[attr-defined]
        d, n = logit.shape[1], logit.shape[2]
        spread = p[:, :d] * p[:, d:]  # p (1 - p)
        grad = (g_sample / -n)[:, None, None] * logit * spread  # dH_i / dl_i = -l p (1 - p)
        if not exact:
            m = ctx.saved_tensors[2].clamp(1e-7, 1 - 1e-7)  # type: ignore[attr-defined]
            grad = grad + ((g_codebook[:, None] / n) * torch.log((1 - m) / m))[:, :, None] * spread
            return grad.transpose(1, 2), None, None
        log_p, log_avg, low, high = ctx.saved_tensors[2:]  # type: ignore[attr-defined]
        scores = -(log_avg + 1) * (g_codebook / n)[:, None, None]  # dH / d mass, [G, 2^a, 2^b]
        grads = []
        for start in range(0, n, rows):
            q_low, q_high = (
                kept
                if kept is not None
                else _half_codes(log_p[:, :, start : start + rows], (low.t(), high.t()))
            )
            g_low = (scores @ q_high).mul_(q_low)  # d / d log q(c_A | z)
            g_high = (scores.transpose(1, 2) @ q_low).mul_(q_high)
            grads.append(low @ g_low + high @ g_high)  # d / d log_p, [G, 2d, n]
        g_log_p = torch.cat(grads, dim=2) if len(grads) > 1 else grads[0]
        # d log p / dl = 1 - p, d log(1 - p) / dl = -p
        grad = grad + g_log_p[:, :d] * p[:, d:] - g_log_p[:, d:] * p[:, :d]
        return grad.transpose(1, 2), None, None


def entropy_terms(
    z: torch.Tensor,
    *,
    scale: float = 1.0,
    temperature: float = 0.01,
    mode: EntropyMode = "auto",
    max_chunk_bytes: int = 64 * 1024 * 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample entropy and codebook entropy (nats) of the soft assignment ``q(c | z)``. ``z``: ``[N, d]``, or
    ``[G, N, d]`` for ``G`` independent codes at once (a residual quantizer's levels): then ``[G]`` each.

    The exact codebook entropy holds at most ``max_chunk_bytes`` of half-code probabilities at a time (module
    docstring), ``d <= 24``."""
    n, d = z.shape[-2], z.shape[-1]
    if n == 0:  # e.g. a rank with an empty batch: no entropy, and no NaN from a mean over nothing
        zero = z.sum((-2, -1)) * 0.0
        return zero, zero
    exact = mode == "exact" or (mode == "auto" and d <= EXACT_ENTROPY_MAX_BITS)
    if exact and d > 24:
        raise ValueError(f"entropy_terms: mode='exact' needs at most 24 bits, got d={d}")
    logits = z * (4.0 * scale / temperature)
    grouped = logits.dim() == 3
    low = (d + 1) // 2
    row_bytes = (2**low + 2 ** (d - low)) * (logits.shape[0] if grouped else 1) * z.element_size()
    rows = max(1, max_chunk_bytes // row_bytes)
    per_sample, codebook = _EntropyTerms.apply(logits if grouped else logits[None], exact, rows)
    return (per_sample, codebook) if grouped else (per_sample[0], codebook[0])
