"""``bench_quantizers.py`` measurements 1, 2 and 4: the eval-encode and training-step races of one quantizer against
the same-shape matmul and vector-quantize-pytorch's equivalent, and the same-rate race of IVQ and LooC against
residual VQ (that script's docstring has the method)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from bench_common import agreement, no_grad_call, race
from quantizer_cases import Case, matmul_weight
from quantizer_references import Reference, build_reference

import vqkit

Calls = dict[str, Callable[[], object]]


def vqkit_step(q: vqkit.Quantizer, inp: torch.Tensor) -> torch.Tensor:
    """One training step of ``q`` on ``inp`` (gradients reset first); its codes."""
    inp.grad = None
    q.zero_grad(set_to_none=True)
    out = q(inp)
    (out.quantized.square().mean() + out.loss).backward()
    return out.codes


def vqp_step(ref: Reference, inp: torch.Tensor) -> torch.Tensor:
    """One training step of vector-quantize-pytorch's module on ``inp``; its codes in vqkit's order."""
    inp.grad = None
    ref.module.zero_grad(set_to_none=True)
    out = ref.forward(inp)
    (out[0].square().mean() + ref.loss(out)).backward()
    return ref.codes(out)


def _race(fns: Calls, repeats: int, warmup: int, n: int, key: str) -> tuple[dict[str, Any], dict[str, float]]:
    """Race ``fns``; the report section (every timing, and vqkit's throughput ``key``) and the best times."""
    timings = race(fns, repeats, warmup)
    best = {name: timing.best for name, timing in timings.items()}
    section = {
        "timings": {name: timing.as_dict() for name, timing in timings.items()},
        "vectors_per_s": n / best[key],
    }
    return section, best


def _encode_race(
    case: Case, x: torch.Tensor, ref: Reference | str, repeats: int, warmup: int
) -> dict[str, Any]:
    """1. eval encode, raced with the matmul and both eval forwards: ``{"encode": section, "vqp": the code
    agreement and speedups}`` (``vqp`` empty without a reference)."""
    q = case.quantizer.eval()
    n, dim = x.shape[0] * x.shape[1], x.shape[2]
    flat, w = x.reshape(n, dim), matmul_weight(dim, case.k)
    fns: Calls = {
        "matmul": lambda: flat @ w,
        "vqkit_encode": lambda: q.encode(x),
        "vqkit_eval_forward": partial(no_grad_call, q, x),
    }
    vqp: dict[str, Any] = {}
    if isinstance(ref, Reference):
        ref.module.eval()
        fns["vqp_eval_forward"] = partial(no_grad_call, ref.forward, x)
        with torch.no_grad():
            theirs = ref.codes(ref.forward(x))
        vqp["eval_agreement_pct"] = agreement(q.encode(x), theirs)
    section, t = _race(fns, repeats, warmup, n, "vqkit_encode")
    section["ratio_to_matmul"] = t["vqkit_encode"] / t["matmul"]
    if isinstance(ref, Reference):
        vqp["encode_speedup"] = t["vqp_eval_forward"] / t["vqkit_encode"]
        vqp["eval_forward_speedup"] = t["vqp_eval_forward"] / t["vqkit_eval_forward"]
    return {"encode": section, "vqp": vqp}


def _train_race(
    case: Case, x: torch.Tensor, ref: Reference | str, repeats: int, warmup: int
) -> dict[str, Any]:
    """2. training step from the state the encode left, raced with the matmul's and the reference's:
    ``{"train": section, "vqp": the first step's code agreement and the speedup}``."""
    q = case.quantizer.train()
    n, dim = x.shape[0] * x.shape[1], x.shape[2]
    w = matmul_weight(dim, case.k)
    x_ours, x_mm = x.clone().requires_grad_(True), x.reshape(n, dim).clone().requires_grad_(True)

    def matmul_step() -> object:
        x_mm.grad = None
        (x_mm @ w).square().mean().backward()
        return x_mm.grad

    fns: Calls = {"matmul_step": matmul_step, "vqkit_step": lambda: vqkit_step(q, x_ours)}
    vqp: dict[str, Any] = {}
    if isinstance(ref, Reference):
        ref.module.train()
        x_theirs = x.clone().requires_grad_(True)
        # The first step from the same state must pick the same codes (it also warms both up).
        vqp["step1_agreement_pct"] = agreement(vqkit_step(q, x_ours), vqp_step(ref, x_theirs))
        fns["vqp_step"] = lambda: vqp_step(ref, x_theirs)
    section, t = _race(fns, repeats, warmup, n, "vqkit_step")
    section["ratio_to_matmul_step"] = t["vqkit_step"] / t["matmul_step"]
    if isinstance(ref, Reference):
        vqp["train_speedup"] = t["vqp_step"] / t["vqkit_step"]
    q.eval()
    return {"train": section, "vqp": vqp}


def bench_case(case: Case, x: torch.Tensor, repeats: tuple[int, int, int]) -> dict[str, Any]:
    """Encode and training-step races for one quantizer on ``x`` ``[B, L, D]``; ``repeats``: the encode
    repeats, the training-step repeats and the warm-up rounds."""
    repeats_encode, repeats_train, warmup = repeats
    q = case.quantizer
    ref = build_reference(q)
    result: dict[str, Any] = {
        "kwargs": case.kwargs,
        "codebook_size": q.codebook_label,  # the label ("2×32"), what this key has always held
        "bits_per_vector": q.bits_per_vector,
        "k_matmul": case.k,
        "candidates": case.candidates,
        "k_rule": case.k_rule,
        "vqp": {"class": ref.cls, "settings": ref.settings, "differences": ref.differences}
        if isinstance(ref, Reference)
        else {"n/a": ref},
    }
    encode = _encode_race(case, x, ref, repeats_encode, warmup)
    train = _train_race(case, x, ref, repeats_train, warmup)
    result["encode"], result["train"] = encode["encode"], train["train"]
    if isinstance(ref, Reference):
        result["vqp"] |= {**encode["vqp"], **train["vqp"]}
    return result


SAME_RATE = ("ivq", "looc")
"""The quantizers whose training step has residual VQ's at the same rate as its target (issue 14)."""


def same_rate_race(cases: dict[str, Case], x: torch.Tensor, repeats: int, warmup: int) -> dict[str, Any]:
    """4. the training steps of ``cases`` (``residual_vq`` and those of ``SAME_RATE`` present) in one round
    robin: each time and its ratio to residual VQ's, from the best and from the median round. Separate races
    (2) run minutes apart, and their ratio moved 20-40% with the machine's other load."""
    fns: Calls = {}
    for name, case in cases.items():
        q, inp = case.quantizer.train(), x.clone().requires_grad_(True)
        fns[name] = partial(vqkit_step, q, inp)
    timings = race(fns, repeats, warmup)
    base = timings["residual_vq"]
    return {
        "timings": {name: t.as_dict() for name, t in timings.items()},
        "ratio_to_residual_vq": {name: t.best / base.best for name, t in timings.items()},
        "median_ratio_to_residual_vq": {name: t.median / base.median for name, t in timings.items()},
    }
