"""Quantizer settings for a target rate: the keyword arguments that make a registered quantizer spend exactly
``bits`` bits per vector, so comparisons (``vqkit.demo``, ``vqkit bench``) run every method at equal rate.

Rules follow the class, so a new preset of an existing class is covered:

* one codebook (``vq``, ``ema_vq``, ``cvq``, ``factorized_vq``, ``simvq``): ``2^R`` codes;
* residual / product VQ: two levels or groups of ``ceil(R/2)`` and ``floor(R/2)`` bits;
* FSQ: levels ``[4] * (R/2)`` (an eight for an odd rate; a lone two only at one bit); LFQ: ``R`` sign bits;
  residual FSQ / LFQ: two stages of ``R/2`` bits (one stage for an odd rate: stages share their levels);
* IVQ: ``R/4`` yin-yang levels of four lines (two codes of ``D/4`` dims each), so ``R`` must be a multiple of 4;
* LooC: two sub-vectors of ``D/2`` dims from one shared codebook of ``2^(R/2)`` codes (``R`` even).

A method that cannot reach the rate gets a note saying why instead of settings; the caller reports it.
"""

from __future__ import annotations

import inspect
from typing import Any

import vqkit
from vqkit.quantizers import (
    FSQ,
    IVQ,
    LFQ,
    VQ,
    LooC,
    ProductVQ,
    ResidualFSQ,
    ResidualLFQ,
    ResidualVQ,
)
from vqkit.registry import quantizer_class


def _halves(bits: int) -> list[int]:
    """Two parts of ``bits`` (larger first), or one when ``bits`` is 1."""
    return [bits] if bits < 2 else [bits - bits // 2, bits // 2]


def _fsq_levels(bits: int) -> list[int]:
    """Levels with ``prod = 2^bits``: fours, and one eight for an odd rate (a lone two for one bit).

    Two levels are avoided: FSQ's bound maps 0 to 0, which for ``L = 2`` puts the only decision threshold at
    ``z = -atanh(0.999) ≈ -3.8``, far in the tail of the input, so nearly every value lands on one digit.
    """
    if bits == 1:
        return [2]
    return [4] * ((bits - 3) // 2) + [8] if bits % 2 else [4] * (bits // 2)


def accepts(cls: type, name: str) -> bool:
    """Whether ``cls`` takes keyword ``name`` (explicitly, or via ``**kwargs`` forwarded to ``VQ``)."""
    params = inspect.signature(cls).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def rate_config(name: str, dim: int, bits: int) -> dict[str, Any] | None:
    """Keyword arguments that make the quantizer registered as ``name`` spend ``bits`` bits per vector.

    Rules follow the class (so a new preset of an existing class is covered); ``None`` when no rule applies.
    """
    cls = quantizer_class(name)
    parts = _halves(bits)
    if issubclass(cls, ResidualVQ):
        return {"codebook_size": [2**b for b in parts], "num_quantizers": len(parts)}
    if issubclass(cls, ProductVQ):
        groups = len(parts) if dim % len(parts) == 0 else 1
        sizes = [2**b for b in parts] if groups == len(parts) else [2**bits]
        return {"codebook_size": sizes, "num_groups": groups}
    if issubclass(cls, ResidualFSQ):
        if len(set(parts)) > 1:  # stages share levels: an odd rate gets one stage
            parts = [bits]
        return {"levels": _fsq_levels(parts[0]), "num_quantizers": len(parts)}
    if issubclass(cls, ResidualLFQ):
        if len(set(parts)) > 1:
            parts = [bits]
        return {"bits": parts[0], "num_quantizers": len(parts)}
    if issubclass(cls, IVQ):  # yin-yang levels of four lines (4 bits each), 2-code codebooks of D/4 dims
        if bits % 4 or dim % 4:
            return None
        return {"lines": 4, "levels": [[2, 4]] * (bits // 4)}
    if issubclass(cls, LooC):  # two sub-vectors of D/2 dims from one shared codebook of 2^(R/2) codes
        if bits % 2 or dim % 2:
            return None
        return {"codebook_size": 2 ** (bits // 2), "codebook_dim": dim // 2}
    if issubclass(cls, FSQ):
        return {"levels": _fsq_levels(bits)}
    if issubclass(cls, LFQ):
        return {"bits": bits}
    if issubclass(cls, VQ) or "codebook_size" in inspect.signature(cls).parameters:
        return {"codebook_size": 2**bits}
    return None


def kwargs_at_rate(name: str, dim: int, bits: int, *, kmeans_init: bool = True) -> dict[str, Any] | str:
    """Validated keyword arguments (JSON) for ``create_quantizer(name, dim=dim, **kwargs)`` at ``bits`` bits
    per vector, with k-means init on the first batch where the class takes ``init``; or a note why not."""
    cls = quantizer_class(name)
    kwargs = rate_config(name, dim, bits)
    if kwargs is None:
        return f"skipped {name!r}: no rule reaches {bits} bits at D={dim} for {cls.__name__}"
    attempts = [{**kwargs, "init": "kmeans"}, kwargs] if kmeans_init and accepts(cls, "init") else [kwargs]
    error: Exception | None = None
    for attempt in attempts:
        try:
            q = vqkit.create_quantizer(name, dim=dim, **attempt)
        except (TypeError, ValueError) as err:
            error = err
            continue
        if q.bits_per_vector != bits:
            return f"skipped {name!r}: its settings give {q.bits_per_vector:g} bits, not {bits}"
        return attempt
    return f"skipped {name!r} at D={dim}, R={bits}: {kwargs} raised {type(error).__name__}: {error}"
