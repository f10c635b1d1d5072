"""``bench_quantizers.py``'s inputs and cases: the seeded input, every registered quantizer at the benchmark's
rate, and the same-shape matmul that stands for its search (that script's docstring has the rules)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from bench_common import SEED

import vqkit
from vqkit.quantizers import FSQ, LFQ
from vqkit.rates import kwargs_at_rate


def make_input(n: int, dim: int) -> torch.Tensor:
    """Seeded N(0, 1) input ``[16, n/16, dim]`` (``[1, n, dim]`` when 16 does not divide ``n``)."""
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(SEED))
    batch = 16 if n % 16 == 0 else 1
    return x.reshape(batch, n // batch, dim)


def matmul_weight(dim: int, k: int) -> torch.Tensor:
    """The seeded ``W [dim, K]`` of the same-shape matmul (the same in the timing and the memory child)."""
    return torch.randn(dim, k, generator=torch.Generator().manual_seed(SEED + 1))


def matmul_width(q: vqkit.Quantizer, dim: int) -> tuple[int, int | None, str]:
    """``(K, candidates, rule)``: the matmul ``[N, dim] @ [dim, K]`` that stands for ``q``'s search, from
    ``q.search_cost()`` (multiply-adds and candidates per vector, summed over code positions)."""
    cost = q.search_cost()
    # None is the contract's answer for an implicit codebook; anything else returning it is named as such.
    if cost is None and any(isinstance(m, (FSQ, LFQ)) for m in q.modules()):
        return dim, None, "implicit codebook: K = D (one D x D projection-sized matmul)"
    if cost is None:
        return dim, None, f"search cost of {type(q).__name__} unknown to this script: K = D"
    macs, candidates = cost
    k = max(1, round(macs / dim))
    if macs == candidates * dim:
        return k, candidates, f"{candidates} candidates of D dims"
    return k, candidates, f"{candidates} candidates, {macs} multiply-adds per vector: K = {macs}/D"


@dataclass
class Case:
    """One registered quantizer at the benchmark's rate."""

    name: str
    kwargs: dict[str, Any]
    quantizer: vqkit.Quantizer
    k: int
    candidates: int | None
    k_rule: str


def build_case(name: str, dim: int, bits: int, fit: torch.Tensor | None) -> Case | str:
    """The quantizer at ``bits`` bits per vector (k-means fitted on ``fit`` when it has a codebook to fit and
    ``fit`` is given), or the note why it is skipped."""
    kwargs = kwargs_at_rate(name, dim, bits)
    if isinstance(kwargs, str):
        return kwargs
    torch.manual_seed(SEED)  # projections and frozen codebooks: the same values whatever ran before
    q = vqkit.create_quantizer(name, dim=dim, **kwargs)
    if fit is not None:
        with contextlib.suppress(TypeError):  # FSQ, LFQ, SimVQ: nothing to fit
            q.init_codebook(fit)
    k, candidates, rule = matmul_width(q, dim)
    return Case(name, kwargs, q, k, candidates, rule)
