"""``bench_quantizers.py``'s inputs and cases: the seeded input, every registered quantizer at the benchmark's
rate and its named option variants (``VARIANTS``), and the same-shape matmul that stands for its search (that
script's docstring has the rules)."""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from bench_common import SEED

import vqkit
from vqkit.quantizers import FSQ, LFQ
from vqkit.rates import kwargs_at_rate
from vqkit.registry import list_quantizers

# Options that are no registered name of their own, benched as rows "name[label]": the registered quantizer at the
# rate with these settings added (each option's other settings at their defaults). ``orthogonal_weight=10`` is
# vector-quantize-pytorch's README value; any weight above 0 costs the same.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "residual_vq[shared_codebook]": ("residual_vq", {"shared_codebook": True}),
    "vq[orthogonal_weight=10]": ("vq", {"orthogonal_weight": 10.0}),
    "vq[sampling=softmax]": ("vq", {"sampling": "softmax"}),
    "vq[sampling=gumbel]": ("vq", {"sampling": "gumbel"}),
    "vq[entropy_weight=0.1]": ("vq", {"entropy_weight": 0.1}),
    "vq[affine=learned]": ("vq", {"affine": "learned"}),
    "vq[affine=running]": ("vq", {"affine": "running"}),
    "vq[sync_nu=0.5]": ("vq", {"sync_nu": 0.5}),
}


def case_names() -> list[str]:
    """Every registered quantizer, each followed by its ``VARIANTS``."""
    return [
        case
        for name in list_quantizers()
        for case in (name, *(v for v, (base, _) in VARIANTS.items() if base == name))
    ]


def selected_names(parser: argparse.ArgumentParser, only: str | None) -> list[str]:
    """``case_names()``, or those ``--only`` lists (comma-separated); an unknown name is a parser error."""
    names = case_names()
    if not only:
        return names
    wanted = [name.strip() for name in only.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        parser.error(f"--only: unknown quantizers {unknown}; known: {', '.join(names)}")
    return [name for name in names if name in wanted]


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
    """The quantizer (or ``VARIANTS`` entry) ``name`` at ``bits`` bits per vector (k-means fitted on ``fit`` when it
    has a codebook to fit and ``fit`` is given), or the note why it is skipped."""
    base, options = VARIANTS.get(name, (name, {}))
    kwargs = kwargs_at_rate(base, dim, bits)
    if isinstance(kwargs, str):
        return kwargs
    kwargs = {**kwargs, **options}
    torch.manual_seed(SEED)  # projections and frozen codebooks: the same values whatever ran before
    try:
        q = vqkit.create_quantizer(base, dim=dim, **kwargs)
    except ValueError as err:
        # A variant's options may not fit the rate's settings (a shared codebook and two level sizes).
        if not options:
            raise
        return f"skipped {name!r}: {err}"
    if fit is not None:
        with contextlib.suppress(TypeError):  # FSQ, LFQ, SimVQ: nothing to fit
            q.init_codebook(fit)
        if (
            q.needs_warm_start
        ):  # other first-batch inits (LFQ's data init of its projection): done before timing
            q.warm_start(fit.reshape(-1, dim))
    k, candidates, rule = matmul_width(q, dim)
    return Case(name, kwargs, q, k, candidates, rule)
