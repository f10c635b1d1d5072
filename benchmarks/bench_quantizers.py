"""CPU speed and memory of every registered quantizer at one rate, against the same-shape matmul and against
vector-quantize-pytorch where it has an equivalent.

Run ``.venv/bin/python benchmarks/bench_quantizers.py`` (N=16384 vectors, D=64, 10 bits per vector);
``--quick`` for tiny sizes and few repeats (a check that it runs, not numbers to quote); ``--n``, ``--dim``,
``--bits`` change the shape and rate; ``--only vq,fsq`` runs a subset; ``--markdown PATH`` writes the tables as
Markdown (for ``docs/performance.md``). It prints the tables and writes ``benchmarks/results/bench_quantizers.json``
atomically, with the environment (versions, threads, CPU model, git commit, load average before and after). It
sets no targets and always exits 0 once it has run.

**Settings.** Every registered quantizer gets ``vqkit.rates.kwargs_at_rate(name, D, bits)``: the settings that
spend exactly ``bits`` bits per vector (one codebook of ``2^bits`` codes, two residual levels or product groups of
``bits/2`` bits, FSQ levels of four, LFQ sign bits, ...). A quantizer that cannot reach the rate is skipped with
a printed note (IVQ needs a multiple of 4 bits, so it is skipped at 10). Codebooks that are k-means initialized
(``init="kmeans"``) are fitted once, before timing, on the first ``min(N, 4096)`` benchmark vectors
(``init_codebook``), so the codes are data-scale and the timed training steps never run k-means.

**Timing** is bench_search.py's (its ``race`` is imported): one process, ``torch.set_num_threads(2)``, seeded
N(0, 1) input of shape ``[16, N/16, D]`` (``[1, N, D]`` when 16 does not divide N), the functions compared
called round-robin after warm-up (one call each per round, in a rotated order, so background load hits them
alike); each time is the minimum over the repeats (the least disturbed call), the median is in the JSON.
Throughput is ``N / time``.

1. **Eval encode**: ``q.eval().encode(x)``. Raced with the same-shape matmul, vqkit's eval forward (under
   ``no_grad``) and vector-quantize-pytorch's eval forward, when it has an equivalent (it has no encode-only
   path; its forward also returns the quantized vectors, so the eval-forward speedup is the like-for-like one).
2. **Training step**: ``q.train()``, forward, ``(out.quantized.square().mean() + out.loss).backward()`` to the
   input (``out.loss``: the quantizer's weighted losses), which also runs the codebook statistics / EMA /
   restart updates; gradients are reset to ``None`` before each step. Raced with the matmul's training step
   and vector-quantize-pytorch's step (``quantized.square().mean() + its returned losses summed``).
3. **Peak memory of the eval encode**: resident-memory (RSS) growth on Linux, in one child process for all
   quantizers (started before the parent holds any benchmark data). For each measured call (vqkit encode, the
   matmul, vector-quantize-pytorch's eval forward): the call once on 256 rows (library and thread start-up is
   not counted), ``malloc_trim``, reset the peak (``/proc/self/clear_refs`` = 5), read ``VmRSS``, the call on
   all N rows, read the peak ``VmHWM``; the growth is ``VmHWM - VmRSS``, which includes the call's output (the
   matmul's is the whole ``N x K`` float32 result). The child runs with ``MALLOC_MMAP_THRESHOLD_=65536``, so
   every buffer of 64 KiB or more is its own mapping, returned to the system when freed: without it glibc
   raises its threshold after the first large free and serves later buffers from memory it already holds,
   and a call measured after another would show little or no growth. ``null`` where the kernel does not
   allow the peak reset.

**The same-shape matmul** is ``x [N, D] @ W [D, K]`` (a fresh float32 result) with ``K`` the number of code
vectors the quantizer's search scores per input vector, summed over its code positions, scaled to the input
width: ``K = sum_j K_j d_j / D`` over code positions ``j`` with ``K_j`` candidates of ``d_j`` dims each. The matmul
then does the multiply-adds of an exhaustive nearest-code search (``N K D``), the floor a search on a BLAS matmul
reaches. With full-width codes (``d_j = D``) ``K`` is the candidate count: VQ 1024 → 1024; residual VQ 2×32 → 64;
SimVQ 1024 → 1024. Split searches count their width: product VQ with 2 groups of 32 codes of ``D/2`` dims → 32
(64 candidates of half width); LooC, two sub-vectors of ``D/2`` against 32 shared codes → 32; IVQ levels of
``blocks`` blocks of ``D/blocks`` dims → ``codes`` per level; factorized VQ (1024 codes of 8 dims) → 1024·8/D
= 128, its in/out projections not counted. FSQ, LFQ and their residual forms have implicit codebooks and no
search (a projection, a bound and rounding or a sign); for them ``K = D``: one projection-sized ``D x D`` matmul
(their actual projections map D to the 5 or 10 scalar channels, so the ratio says how many such matmuls the
encode costs). The raw candidate count and the rule are in the JSON. The matmul's training step is the forward,
``mean((x W)^2)``, and the backward to ``x`` (``W`` fixed). Ratios to the matmul are ours / matmul: below 1 is
faster (or smaller) than the matmul.

**vector-quantize-pytorch 1.32.0** (the ``bench`` extra) equivalents, built from the vqkit quantizer's own
settings and holding the same state; speedups are theirs / ours (above 1: vqkit faster):

* ``vq``, ``ema_vq`` ↔ ``VectorQuantize(dim, K)``: ``kmeans_init=False`` with vqkit's codebook copied into its
  ``embed`` (and the EMA counts and sums into ``cluster_size`` and ``embed_avg``); ``decay`` (its default 0.8,
  vqkit's 0.99) and ``eps`` from vqkit; ``commitment_weight = beta`` (0.25; its default 1.0);
  ``rotation_trick=False`` (its default routes the gradient through a rotation instead of the straight-through
  estimator vqkit uses); ``threshold_ema_dead_code=0`` (vqkit ``restart="none"``); ``use_cosine_sim=False``
  (both l2); ``sync_codebook=False``; no projections. ``update="grad"`` (``vq``) ↔ ``learnable_codebook=True,
  ema_update=False``; ``update="ema"`` (``ema_vq``) ↔ its default EMA update. Remaining difference: with a
  learnable codebook its one ``commitment`` term ``|q - z|^2`` (neither side detached) trains both the codebook
  and the input with weight ``beta``, where vqkit has ``codebook`` (weight 1) + ``beta * commitment``: the loss
  values differ, the work does not.
* ``residual_vq`` ↔ ``ResidualVQ(dim, num_quantizers, codebook_size=(sizes))`` with the same per-level
  ``VectorQuantize`` settings and every level's codebook copied. It applies the straight-through estimator at
  each level (vqkit: once, to the sum).
* ``product_vq`` ↔ ``GroupedResidualVQ(dim, groups, num_quantizers=1, codebook_size)`` (one single-level
  residual VQ per contiguous group: a product VQ), same settings, codebooks copied. Only for equal group sizes
  (it takes one size for all groups).
* ``fsq`` ↔ ``FSQ(levels, dim)``: same levels, the D → len(levels) projections copied. Both pack digits with the
  first channel least significant and bound with ``tanh(z + shift) (L-1)(1+1e-3)/2 - offset``, so the codes must
  agree exactly (checked: the agreement is reported, and a warning printed when it is not 100%). No losses.
* ``lfq`` ↔ ``LFQ(dim, codebook_size=2^bits)``: projections copied; ``entropy_loss_weight`` = vqkit
  ``entropy_weight`` (0.1), ``commitment_loss_weight = beta`` (0.25; its default 0), ``diversity_gamma`` =
  ``diversity`` (1), ``codebook_scale`` = ``scale`` (1), ``frac_per_sample_entropy=1``, and the forward's
  ``inv_temperature = 1 / temperature`` (100). Its index puts channel 0 in the most significant bit, vqkit's in
  the least: its codes are bit-reversed before comparing. It computes the entropy terms from the dense
  ``N x 2^bits`` softmax; vqkit from per-bit sigmoids and a chunked exact codebook entropy (the same quantities).
* ``residual_lfq`` ↔ ``ResidualLFQ(dim, num_quantizers, codebook_size=2^bits)`` with the LFQ settings above,
  projections copied, codes bit-reversed per level. Level ``i`` codes are ``±2^-i`` in both (vqkit quantizes
  ``r 2^i`` with unit codes, vector-quantize-pytorch ``r`` with codes ``±2^-i``), so the codes agree; its entropy
  and commitment terms are computed in unscaled units (different values, the same work), its forward uses the
  default ``inv_temperature`` 100 (= vqkit's default temperature 0.01) and it sums each level's straight-through
  output (vqkit: one estimator on the sum).
* ``simvq`` ↔ ``SimVQ(dim, K, codebook_transform=nn.Linear(D, D, bias=True))`` (its default transform has no bias;
  vqkit's, like the authors' code, has one) with the frozen codebook and the transform copied;
  ``rotation_trick=False``; ``input_to_quantize_commit_loss_weight = beta`` (0.25), ``commitment_weight=1``: the
  same loss. Its search is a dense ``torch.cdist``; vqkit's forward also computes ``W``'s rank (an SVD of the D x D
  transform) for its metrics each step.
* No equivalent ("n/a" with the reason in the table): ``cvq`` (no CVQ anchor update), ``factorized_vq``
  (``VectorQuantize`` does not allow a learnable codebook with cosine similarity), ``residual_fsq`` (its
  ``ResidualFSQ`` uses a symmetry-preserving hard-clamped bound and scales level ``i`` by ``L^-i``, vqkit by
  ``(L-1)^-i``: a different quantizer), ``ivq``, ``looc``.

Code agreement (the percentage of code entries equal, after the index mappings above) is measured on the eval
forward and on the first training step from the same state (before the timed steps).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

import vqkit
from vqkit.functional import lfq as lfq_math
from vqkit.quantizers import FSQ, LFQ, VQ, LooC, ProductVQ, ResidualLFQ, ResidualVQ, SimVQ
from vqkit.quantizers.composite import ProductQuantizer, ResidualQuantizer
from vqkit.quantizers.ivq import IVQLevel
from vqkit.rates import kwargs_at_rate
from vqkit.registry import list_quantizers
from vqkit.utils.atomic import atomic_write_text

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "bench_quantizers.json"
THREADS = 2
SEED = 0
FIT_ROWS = 4096  # k-means init sample
WARM_ROWS = 256  # rows of the memory child's start-up call
DEFAULTS = {"n": 16384, "dim": 64, "bits": 10}
QUICK = {"n": 1024, "dim": 64, "bits": 10}
REPEATS = {"full": (20, 8, 2), "quick": (3, 2, 1)}  # encode repeats, train repeats, warm-up rounds


def _sibling(name: str) -> ModuleType:
    """Another script of this folder, by path (the folder is not a package)."""
    module_name = f"_vqkit_benchmarks_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


_search = _sibling("bench_search")  # the timing method and environment helpers are shared, not copied
race = _search.race


def _vqp() -> ModuleType | None:
    """vector-quantize-pytorch, or ``None``: only the comparisons need it (the ``bench`` extra)."""
    try:
        import vector_quantize_pytorch
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return vector_quantize_pytorch


VQP = _vqp()


# --------------------------------------------------------------------------- inputs and quantizers
def make_input(n: int, dim: int) -> torch.Tensor:
    """Seeded N(0, 1) input ``[16, n/16, dim]`` (``[1, n, dim]`` when 16 does not divide ``n``)."""
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(SEED))
    batch = 16 if n % 16 == 0 else 1
    return x.reshape(batch, n // batch, dim)


def search_cost(q: nn.Module) -> tuple[int, int] | None:
    """``(multiply-adds, candidate code vectors)`` per input vector of an exhaustive nearest-code search, summed
    over code positions; ``None`` for an implicit codebook (FSQ, LFQ) or a class this does not know."""
    if isinstance(q, (FSQ, LFQ)):
        return None
    if isinstance(q, VQ):
        return q.codebook.num_codes * q.codebook.dim, q.codebook.num_codes
    if isinstance(q, SimVQ):
        return q.num_codes * q.dim, q.num_codes
    if isinstance(q, LooC):
        return q.num_segments * q.num_codes * q.codebook_dim, q.num_segments * q.num_codes
    if isinstance(q, IVQLevel):
        return q.blocks * q.num_codes * q.sub_dim, q.blocks * q.num_codes
    if isinstance(q, (ResidualQuantizer, ProductQuantizer)):
        parts = [search_cost(stage) for stage in q.stage_list]
        if any(part is None for part in parts):
            return None
        return sum(p[0] for p in parts if p), sum(p[1] for p in parts if p)
    return None


def matmul_width(q: nn.Module, dim: int) -> tuple[int, int | None, str]:
    """``(K, candidates, rule)``: the matmul ``[N, dim] @ [dim, K]`` that stands for ``q``'s search (docstring)."""
    cost = search_cost(q)
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


# --------------------------------------------------------------------------- vector-quantize-pytorch
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


def _zero_loss(out: Any) -> torch.Tensor:
    return out[0].new_zeros(())


def _sum_loss(out: Any) -> torch.Tensor:
    return out[2].sum()


def _reverse_bits(index: torch.Tensor, bits: int) -> torch.Tensor:
    """vector-quantize-pytorch LFQ index (channel 0 most significant) -> vqkit's (channel 0 least significant)."""
    shifts = torch.arange(bits - 1, -1, -1, device=index.device)
    channel_bits = torch.bitwise_and(torch.bitwise_right_shift(index.long()[..., None], shifts), 1)
    return (channel_bits << torch.arange(bits, device=index.device)).sum(-1)


def _vq_settings(q: VQ) -> dict[str, Any] | str:
    """``VectorQuantize`` keyword arguments matching a vqkit ``VQ`` (docstring), or why there are none."""
    cb = q.codebook
    if cb.restart == "anchor":
        return "no CVQ anchor update (restart='anchor')"
    if cb.restart != "none":
        return f"no equivalent of restart={cb.restart!r}"
    if (cb.distance != "l2" or q.l2_normalize) and cb.update_mode == "grad":
        return "VectorQuantize does not allow a learnable codebook with cosine similarity"
    if cb.distance != "l2" or q.l2_normalize or not isinstance(q.project_in, nn.Identity):
        return "cosine matching or projected codes: not matched here"
    update = {"ema_update": True, "learnable_codebook": False}
    if cb.update_mode == "grad":
        update = {"ema_update": False, "learnable_codebook": True}
    return {
        "decay": cb.decay,
        "eps": cb.eps,
        "kmeans_init": False,
        "commitment_weight": q.beta,
        "rotation_trick": False,
        "threshold_ema_dead_code": 0,
        "use_cosine_sim": False,
        "sync_codebook": False,
        **update,
    }


@torch.no_grad()
def _copy_codebook(theirs: Any, ours: VQ) -> None:
    """vqkit's codebook, EMA counts and EMA sums into a vector-quantize-pytorch ``Codebook``."""
    cb = ours.codebook
    theirs.embed.copy_(cb.weight[None])
    theirs.cluster_size.copy_(cb.cluster_size[None])
    theirs.embed_avg.copy_((cb.ema_sum if cb.update_mode == "ema" else cb.weight)[None])


@torch.no_grad()
def _copy_linear(theirs: nn.Module, ours: nn.Module) -> None:
    if isinstance(ours, nn.Identity) and isinstance(theirs, nn.Identity):
        return
    assert isinstance(ours, nn.Linear) and isinstance(theirs, nn.Linear), (ours, theirs)
    theirs.weight.copy_(ours.weight)
    if ours.bias is not None and theirs.bias is not None:
        theirs.bias.copy_(ours.bias)


def _factorized_entropy(q: LFQ) -> bool:
    return q.entropy_mode == "factorized" or (
        q.entropy_mode == "auto" and q.bits > lfq_math.EXACT_ENTROPY_MAX_BITS
    )


def _residual_lfq_stages(q: ResidualLFQ) -> list[LFQ]:
    return [stage for stage in q.stage_list if isinstance(stage, LFQ)]


def build_reference(q: vqkit.Quantizer) -> Reference | str:
    """vector-quantize-pytorch's equivalent of ``q`` holding the same state, or why there is none."""
    if VQP is None:
        return "vector-quantize-pytorch is not installed (the bench extra)"
    try:
        return _build_reference(q)
    except (AssertionError, TypeError, ValueError) as err:  # its constructors validate with assert
        return f"{type(err).__name__}: {err}"


def _build_reference(q: vqkit.Quantizer) -> Reference | str:
    assert VQP is not None
    if type(q) is VQ:
        settings = _vq_settings(q)
        if isinstance(settings, str):
            return settings
        settings = {"dim": q.dim, "codebook_size": q.num_codes, **settings}
        ref = VQP.VectorQuantize(**settings)
        _copy_codebook(ref._codebook, q)
        return Reference("VectorQuantize", ref, settings, ref, lambda out: out[1][..., None], _sum_loss)
    if isinstance(q, ResidualVQ):
        stages = [s for s in q.stage_list if isinstance(s, VQ)]
        settings_ = _vq_settings(stages[0])
        if isinstance(settings_, str):
            return settings_
        sizes = tuple(s.num_codes for s in stages)
        settings = {"dim": q.dim, "num_quantizers": len(sizes), "codebook_size": sizes, **settings_}
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
    if isinstance(q, ProductVQ):
        stages = [s for s in q.stage_list if isinstance(s, VQ)]
        sizes = {s.num_codes for s in stages}
        if len(sizes) != 1:
            return f"GroupedResidualVQ takes one codebook size for all groups, not {[s.num_codes for s in stages]}"
        settings_ = _vq_settings(stages[0])
        if isinstance(settings_, str):
            return settings_
        groups = len(stages)
        settings = {
            "dim": q.dim,
            "groups": groups,
            "num_quantizers": 1,
            "codebook_size": sizes.pop(),
            **settings_,
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
    if type(q) is FSQ:
        settings = {"levels": list(q.levels), "dim": q.dim}
        ref = VQP.FSQ(**settings)
        _copy_linear(ref.project_in, q.project_in)
        _copy_linear(ref.project_out, q.project_out)
        return Reference("FSQ", ref, settings, ref, lambda out: out[1][..., None], _zero_loss)
    if type(q) is LFQ:
        if _factorized_entropy(q):
            return "its entropy is always exact, from an N x 2^bits softmax (vqkit: factorized here)"
        settings = _lfq_settings(q, {"dim": q.dim, "codebook_size": 2**q.bits})
        ref = VQP.LFQ(**settings)
        _copy_linear(ref.project_in, q.project_in)
        _copy_linear(ref.project_out, q.project_out)
        inv_temperature = 1.0 / q.temperature
        bits = q.bits
        return Reference(
            "LFQ",
            ref,
            {**settings, "forward(inv_temperature=)": inv_temperature},
            lambda x: ref(x, inv_temperature=inv_temperature),
            lambda out: _reverse_bits(out[1], bits)[..., None],
            lambda out: out[2],
            [
                "dense N x 2^bits softmax for the entropy terms (vqkit: per-bit sigmoids, chunked exact entropy)"
            ],
        )
    if isinstance(q, ResidualLFQ):
        stages = _residual_lfq_stages(q)
        first = stages[0]
        if _factorized_entropy(first):
            return "its entropy is always exact, from an N x 2^bits softmax (vqkit: factorized here)"
        if any(s.temperature != 0.01 for s in stages):
            return "its ResidualLFQ forward keeps the default inv_temperature 100 (temperature 0.01)"
        settings = _lfq_settings(
            first, {"dim": q.dim, "num_quantizers": len(stages), "codebook_size": 2**first.bits}
        )
        settings.pop("codebook_scale")  # set per level: 2^-i
        ref = VQP.ResidualLFQ(**settings)
        _copy_linear(ref.project_in, q.project_in)
        _copy_linear(ref.project_out, q.project_out)
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
    if type(q) is SimVQ:
        if q.train_codebook:
            return "its frozen codebook cannot be trained (train_codebook=True)"
        transform = nn.Linear(q.dim, q.dim, bias=True)
        settings = {
            "dim": q.dim,
            "codebook_size": q.num_codes,
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
    reasons = {
        "IVQ": "no IChing / binary-composition quantizer",
        "LooC": "no shared low-dimensional compositional codebook",
        "ResidualFSQ": "its ResidualFSQ differs: symmetry-preserving hard-clamped bound, level scales L^-i "
        "(vqkit (L-1)^-i)",
    }
    return reasons.get(type(q).__name__, f"no equivalent of {type(q).__name__}")


def _lfq_settings(q: LFQ, base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "entropy_loss_weight": q.entropy_weight,
        "commitment_loss_weight": q.beta,
        "diversity_gamma": q.diversity,
        "codebook_scale": q.scale,
        "frac_per_sample_entropy": 1.0,
    }


# --------------------------------------------------------------------------- measurements
def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return 100.0 * float((a.reshape(-1) == b.reshape(-1)).double().mean())


def vqkit_step(q: vqkit.Quantizer, inp: torch.Tensor) -> torch.Tensor:
    inp.grad = None
    q.zero_grad(set_to_none=True)
    out = q(inp)
    (out.quantized.square().mean() + out.loss).backward()
    return out.codes


def vqp_step(ref: Reference, inp: torch.Tensor) -> torch.Tensor:
    inp.grad = None
    ref.module.zero_grad(set_to_none=True)
    out = ref.forward(inp)
    (out[0].square().mean() + ref.loss(out)).backward()
    return ref.codes(out)


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


def bench_case(case: Case, x: torch.Tensor, repeats: tuple[int, int, int]) -> dict[str, Any]:
    """Encode and training-step races for one quantizer on ``x`` ``[B, L, D]`` (docstring, 1 and 2)."""
    repeats_encode, repeats_train, warmup = repeats
    q = case.quantizer
    n, dim = x.shape[0] * x.shape[1], x.shape[2]
    flat = x.reshape(n, dim)
    w = torch.randn(dim, case.k, generator=torch.Generator().manual_seed(SEED + 1))
    ref = build_reference(q)
    result: dict[str, Any] = {
        "kwargs": case.kwargs,
        "codebook_size": q.codebook_size,
        "bits_per_vector": q.bits_per_vector,
        "k_matmul": case.k,
        "candidates": case.candidates,
        "k_rule": case.k_rule,
        "vqp": {"class": ref.cls, "settings": ref.settings, "differences": ref.differences}
        if isinstance(ref, Reference)
        else {"n/a": ref},
    }

    # 1. eval encode
    q.eval()
    fns: dict[str, Callable[[], object]] = {
        "matmul": lambda: flat @ w,
        "vqkit_encode": lambda: q.encode(x),
    }

    def vqkit_eval_forward() -> object:
        with torch.no_grad():
            return q(x)

    fns["vqkit_eval_forward"] = vqkit_eval_forward
    if isinstance(ref, Reference):
        ref.module.eval()

        def vqp_eval_forward() -> object:
            with torch.no_grad():
                return ref.forward(x)

        fns["vqp_eval_forward"] = vqp_eval_forward
        with torch.no_grad():
            theirs = ref.codes(ref.forward(x))
        result["vqp"]["eval_agreement_pct"] = agreement(q.encode(x), theirs)
    timings = race(fns, repeats_encode, warmup)
    t = {name: timing.best for name, timing in timings.items()}
    result["encode"] = {
        "timings": {name: timing.as_dict() for name, timing in timings.items()},
        "vectors_per_s": n / t["vqkit_encode"],
        "ratio_to_matmul": t["vqkit_encode"] / t["matmul"],
    }
    if isinstance(ref, Reference):
        result["vqp"]["encode_speedup"] = t["vqp_eval_forward"] / t["vqkit_encode"]
        result["vqp"]["eval_forward_speedup"] = t["vqp_eval_forward"] / t["vqkit_eval_forward"]

    # 2. training step
    q.train()
    x_ours, x_mm = x.clone().requires_grad_(True), flat.clone().requires_grad_(True)

    def matmul_step() -> object:
        x_mm.grad = None
        (x_mm @ w).square().mean().backward()
        return x_mm.grad

    fns = {"matmul_step": matmul_step, "vqkit_step": lambda: vqkit_step(q, x_ours)}
    if isinstance(ref, Reference):
        ref.module.train()
        x_theirs = x.clone().requires_grad_(True)
        # The first step from the same state must pick the same codes (it also warms both up).
        result["vqp"]["step1_agreement_pct"] = agreement(vqkit_step(q, x_ours), vqp_step(ref, x_theirs))
        fns["vqp_step"] = lambda: vqp_step(ref, x_theirs)
    timings = race(fns, repeats_train, warmup)
    t = {name: timing.best for name, timing in timings.items()}
    result["train"] = {
        "timings": {name: timing.as_dict() for name, timing in timings.items()},
        "vectors_per_s": n / t["vqkit_step"],
        "ratio_to_matmul_step": t["vqkit_step"] / t["matmul_step"],
    }
    if isinstance(ref, Reference):
        result["vqp"]["train_speedup"] = t["vqp_step"] / t["vqkit_step"]
    q.eval()
    return result


# --------------------------------------------------------------------------- 3. memory, in a child process
def _malloc_trim() -> None:
    """Return freed heap memory to the system (glibc); a no-op elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_growth(call: Callable[[], object], warm: Callable[[], object]) -> int | None:
    """Peak RSS growth in bytes of ``call()`` (after ``warm()``, a small call that starts the libraries up),
    including its result; ``None`` when the peak cannot be reset."""
    warm()
    _malloc_trim()
    if not _search._reset_peak_rss():
        return None
    before = _search._status_kib("VmRSS")
    result = call()
    peak = _search._status_kib("VmHWM")
    del result
    _malloc_trim()
    return max(0, peak - before) * 1024


def memory_child(n: int, dim: int, bits: int, names: list[str]) -> dict[str, Any]:
    """In a fresh interpreter: the peak RSS growth of each quantizer's encode, its matmul, and vector-quantize-
    pytorch's eval forward. Codebooks keep their initial values: the memory of a search does not depend on them."""
    torch.set_num_threads(THREADS)
    x = make_input(n, dim)
    flat = x.reshape(n, dim)
    rows = min(n, WARM_ROWS)
    small, small_flat = flat[:rows].reshape(1, rows, dim), flat[:rows]
    results: dict[str, Any] = {
        "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
        "peak_reset": _search._reset_peak_rss(),
    }
    for name in names:
        case = build_case(name, dim, bits, fit=None)
        if isinstance(case, str):
            continue
        q = case.quantizer.eval()
        w = torch.randn(dim, case.k, generator=torch.Generator().manual_seed(SEED + 1))
        entry: dict[str, int | None] = {
            "matmul": peak_growth(lambda w=w: flat @ w, lambda w=w: small_flat @ w),
            "vqkit_encode": peak_growth(lambda q=q: q.encode(x), lambda q=q: q.encode(small)),
        }
        ref = build_reference(q)
        if isinstance(ref, Reference):
            ref.module.eval()
            with torch.no_grad():
                entry["vqp_eval_forward"] = peak_growth(
                    lambda ref=ref: ref.forward(x), lambda ref=ref: ref.forward(small)
                )
        results[name] = entry
    return results


def bench_memory(n: int, dim: int, bits: int, names: list[str]) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", "--n", str(n)]
    command += ["--dim", str(dim), "--bits", str(bits), "--only", ",".join(names)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed ({proc.returncode}):\n{proc.stderr}")
    child: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return child


def memory_summary(entry: dict[str, int | None] | None) -> dict[str, Any]:
    entry = entry or {}
    ours, mm, theirs = entry.get("vqkit_encode"), entry.get("matmul"), entry.get("vqp_eval_forward")
    return {
        "vqkit_encode_bytes": ours,
        "matmul_bytes": mm,
        "vqp_eval_forward_bytes": theirs,
        "ratio_to_matmul": _ratio(ours, mm),
        "vqp_ratio": _ratio(theirs, ours),  # theirs / ours: above 1, vqkit needs less
    }


# --------------------------------------------------------------------------- report
def _f(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f}"


SPEED_HEADER = [
    "quantizer",
    "codes",
    "K",
    "encode ms",
    "encode Mvec/s",
    "encode / matmul",
    "train ms",
    "train Mvec/s",
    "train / matmul step",
    "peak MiB",
    "peak / matmul",
]
VQP_HEADER = [
    "quantizer",
    "vector-quantize-pytorch",
    "encode speedup",
    "eval-forward speedup",
    "train speedup",
    "its peak MiB (÷ ours)",
    "codes agree (eval / step 1)",
    "note",
]


def table_rows(report: dict[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    speed, vqp = [], []
    for name, r in report["quantizers"].items():
        enc, train, mem = r["encode"], r["train"], r["memory"]
        t_enc = enc["timings"]["vqkit_encode"]["min_s"]
        t_train = train["timings"]["vqkit_step"]["min_s"]
        speed.append(
            [
                name,
                r["codebook_size"],
                str(r["k_matmul"]),
                f"{t_enc * 1e3:.2f}",
                f"{enc['vectors_per_s'] / 1e6:.2f}",
                f"{enc['ratio_to_matmul']:.2f}",
                f"{t_train * 1e3:.1f}",
                f"{train['vectors_per_s'] / 1e6:.3f}",
                f"{train['ratio_to_matmul_step']:.2f}",
                _mib(mem["vqkit_encode_bytes"]),
                _f(mem["ratio_to_matmul"], ".2f"),
            ]
        )
        v = r["vqp"]
        if "n/a" in v:
            vqp.append([name, "n/a", "", "", "", "", "", v["n/a"]])
            continue
        vqp.append(
            [
                name,
                v["class"],
                _f(v["encode_speedup"], ".1f", "×"),
                _f(v["eval_forward_speedup"], ".1f", "×"),
                _f(v["train_speedup"], ".1f", "×"),
                f"{_mib(mem['vqp_eval_forward_bytes'])} ({_f(mem['vqp_ratio'], '.1f', '×')})",
                f"{v['eval_agreement_pct']:.2f}% / {v['step1_agreement_pct']:.2f}%",
                "",
            ]
        )
    return speed, vqp


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(row) for row in rows)])


def markdown_report(report: dict[str, Any]) -> str:
    env, config = report["environment"], report["config"]
    speed, vqp = table_rows(report)
    load = env["loadavg_before"][0], env["loadavg_after"][0]
    lines = [
        f"N={config['n']} vectors, D={config['dim']}, {config['bits']} bits per vector; CPU, "
        f"{env['threads']} threads ({env['cpu_model']}), torch {env['torch']}, vector-quantize-pytorch "
        f"{env['vector_quantize_pytorch']}, {env['timestamp_utc'][:10]}, commit {env['git_commit']}, "
        f"load average {load[0]:.2f} before / {load[1]:.2f} after; {env['wall_s']:.0f} s wall.",
        "",
        f"Command: `{env['command']}`",
        "",
        markdown_table(SPEED_HEADER, speed),
        "",
        "Against vector-quantize-pytorch (speedups: its time / vqkit's; above 1, vqkit is faster):",
        "",
        markdown_table(VQP_HEADER, vqp),
    ]
    if report["skipped"]:
        lines += ["", "Not run: " + "; ".join(report["skipped"]) + "."]
    return "\n".join(lines) + "\n"


def _command(argv: list[str]) -> str:
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(ROOT)
    script = Path(__file__).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(ROOT)
    return shlex.join([str(python), str(script), *argv])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, help=f"vectors (default {DEFAULTS['n']}; --quick {QUICK['n']})")
    parser.add_argument("--dim", type=int, help=f"D (default {DEFAULTS['dim']})")
    parser.add_argument("--bits", type=int, help=f"bits per vector (default {DEFAULTS['bits']})")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and few repeats: a check that it runs"
    )
    parser.add_argument("--only", help="comma-separated registered names (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON report (default {RESULTS})")
    parser.add_argument("--markdown", type=Path, help="also write the tables as Markdown to this path")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULTS
    for key, default in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    names = list_quantizers()
    if args.only:
        wanted = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            parser.error(f"--only: unknown quantizers {unknown}; registered: {', '.join(names)}")
        names = [name for name in names if name in wanted]
    args.names = names
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.n, args.dim, args.bits, args.names)))
        return 0

    torch.set_num_threads(THREADS)
    load_before = os.getloadavg()
    started = time.perf_counter()
    n, dim, bits = args.n, args.dim, args.bits
    repeats = REPEATS["quick" if args.quick else "full"]
    print(f"N={n} D={dim} {bits} bits/vector, {THREADS} threads, repeats (encode, train, warm-up) {repeats}")

    # The memory child goes first, before this process holds any benchmark data (see the docstring).
    start = time.perf_counter()
    memory = bench_memory(n, dim, bits, args.names)
    print(f"-- memory child: {time.perf_counter() - start:.1f} s", flush=True)

    x = make_input(n, dim)
    fit = x.reshape(n, dim)[:FIT_ROWS]
    report: dict[str, Any] = {
        "config": {"n": n, "dim": dim, "bits": bits, "quick": bool(args.quick), "repeats": repeats},
        "quantizers": {},
        "skipped": [],
        "memory_child": {k: v for k, v in memory.items() if not isinstance(v, dict)},
    }
    for name in args.names:
        case = build_case(name, dim, bits, fit)
        if isinstance(case, str):
            print(f"-- {case}")
            report["skipped"].append(case)
            continue
        start = time.perf_counter()
        result = bench_case(case, x, repeats)
        result["memory"] = memory_summary(memory.get(name))
        report["quantizers"][name] = result
        print(f"-- {name}: {time.perf_counter() - start:.1f} s", flush=True)

    load_after = os.getloadavg()
    report["environment"] = {
        "timestamp_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": _command(argv),
        "git_commit": _search.git_commit(),
        "torch": torch.__version__,
        "vector_quantize_pytorch": _search.vqp_version(),
        "vqkit": vqkit.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_model": _search.cpu_model(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "wall_s": time.perf_counter() - started,
        "timing": "min over round-robin repeats after warm-up (median recorded too)",
    }

    speed, vqp = table_rows(report)
    print()
    print(text_table(SPEED_HEADER, speed))
    print()
    print(text_table(VQP_HEADER, vqp))
    for name, r in report["quantizers"].items():
        exact = r["vqp"].get("class") in {"FSQ", "LFQ", "ResidualLFQ"}
        agree = [r["vqp"].get(key) for key in ("eval_agreement_pct", "step1_agreement_pct")]
        if exact and any(a is not None and a < 100.0 for a in agree):
            print(f"WARNING: {name}: codes should agree exactly with vector-quantize-pytorch, got {agree}%")
    # As bench_search.py: this run adds about THREADS to the 1-minute load average; far beyond is other work.
    if load_before[0] > 1.5 or load_after[0] > THREADS + 1.5:
        print(
            f"WARNING: load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, on "
            f"{os.cpu_count()} CPUs: other work competed for the cores and inflated the times."
        )
    if report["skipped"]:
        print("\n".join(report["skipped"]))

    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.markdown:
        atomic_write_text(args.markdown, markdown_report(report))
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
