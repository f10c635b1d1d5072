"""CPU speed and memory of vqkit's nearest-code search and VQ training step, against targets.

Run ``.venv/bin/python benchmarks/bench_search.py`` (``make bench``); ``--quick`` for fewer repeats.
Everything is measured in one process with ``torch.set_num_threads(2)`` and seeded data, after warm-up;
each time is the minimum over the repeats (the least disturbed run: the others only add noise from other
work on the machine), with the median recorded too. The functions compared in one benchmark run
round-robin, one call each per round, so background load hits them alike. The script prints a table,
writes ``benchmarks/results/bench_search.json`` atomically, and exits with status 1 if a target fails
(rows marked ``[info]`` are context, not targets).

Targets:

1. Eval encode, N=16384, D=64, K=1024, fp32. ``VQ(64, 1024).eval().encode(x)`` and the bare kernel
   ``nearest_code(x, C)``, each divided by the bare ``x @ C.T`` of the same shapes: <= 1.3. (The ratio to
   ``torch.mm(x, C.T, out=preallocated)`` is reported as well: the same matmul without allocating and
   page-faulting a fresh 64 MiB result, the pure compute floor.) vector-quantize-pytorch's ``VectorQuantize``
   in eval mode on the same input and codebook: vqkit >= 3x faster; code agreement is reported for both
   against each other and against a float64 oracle.
2. Training step, same N as ``(16, 1024, 64)``: forward, a loss through ``quantized`` plus the quantizer's
   weighted losses, backward to the input, and the EMA codebook update. ``VQ(64, 1024, update="ema")`` vs
   ``VectorQuantize(..., decay=0.99, kmeans_init=False)`` in train mode: vqkit >= 2x faster.
3. Encoding N=65536 vectors against K=65536 codes (D=64) in a fresh subprocess: peak RSS growth over the
   RSS after the inputs and the quantizer exist must stay under 1 GiB (a full ``N x K`` fp32 score matrix is
   16 GiB). The time is reported.
4. IVQ's two-code fast path: a yin-yang ``IVQ(96)`` (four levels of two codes, 24 bits) encodes N=65536 N(0, 1)
   vectors at least 5x faster than ``ResidualVQ(96, 64, 4)`` (4x64, the same 24 bits and D), both k-means
   initialized on the same data, in eval mode. The bottom-up IVQ (2+4+8+64 codes, 24 bits) is timed for
   information, and the eval MSE of each is recorded (equal rate, very different codebooks: 128 stored
   numbers for yin-yang against 24,576 for 4x64).

vector-quantize-pytorch 1.32.0 settings, read from its source (``VectorQuantize.__init__``), for an
apples-to-apples comparison with ``vqkit.VQ``:

* ``kmeans_init=False`` (both use the codebook we set), ``decay=0.99`` (its default is 0.8; vqkit's 0.99),
  ``eps=1e-5`` (both defaults), ``commitment_weight=0.25`` (its default 1.0; vqkit's ``beta``: the loss value
  differs, the work does not).
* ``rotation_trick=False``: its default is on for ``dim > 1`` and routes the gradient through a rotation
  (arXiv 2410.06424) instead of the straight-through estimator vqkit uses. The default configuration is
  timed too, for information only.
* ``threshold_ema_dead_code=0`` (its default; vqkit ``restart="none"``), ``use_cosine_sim=False`` (both l2),
  ``heads=1``, no projections (``codebook_dim=None``), ``sync_codebook=False`` (single process).
* Both codebooks hold the same values ``C``, with EMA counts 1 and EMA sums ``C``; the EMA formulas
  (Laplace-smoothed counts) are the same, so one training step from the same state must give the same codes
  and codebook, which the script checks before timing.

The inputs are N(0, 1) and the codes ``C`` are N(0, 1) too (data-scale codes): with vqkit's default tiny
uniform init every distance is ``|x|^2`` plus rounding noise and "agreement" would measure rounding.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
from bench_common import SEED, THREADS, agreement, environment, load_warning, race
from search_memory import bench_memory, memory_child
from search_setup import (
    DIM,
    Target,
    VectorQuantize,
    make_data,
    oracle_codes,
    print_targets,
    reference_vq,
    vqkit_vq,
)

import vqkit
from vqkit.functional.search import nearest_code
from vqkit.utils.atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results" / "bench_search.json"


# --------------------------------------------------------------------------- 1. eval encode
def bench_encode(repeats: int) -> tuple[dict[str, Any], list[Target]]:
    n, k = 16384, 1024
    x, codebook = make_data(n, k)
    q = vqkit_vq(codebook).eval()
    scores = torch.empty(n, k)
    codebook_t = codebook.t()
    fns: dict[str, Callable[[], object]] = {
        "matmul": lambda: x @ codebook_t,
        "matmul_preallocated": lambda: torch.mm(x, codebook_t, out=scores),
        "nearest_code": lambda: nearest_code(x, codebook),
        "vqkit_encode": lambda: q.encode(x),
    }
    ref = None
    x_ref = x.reshape(16, 1024, DIM)
    if VectorQuantize is not None:
        ref = reference_vq(codebook).eval()

        def ref_forward() -> object:
            with torch.no_grad():
                return ref(x_ref)

        fns["vqp_eval"] = ref_forward
    timings = race(fns, repeats)
    t = {name: timing.best for name, timing in timings.items()}

    ours = q.encode(x)[:, 0]
    exact = oracle_codes(x, codebook)
    result: dict[str, Any] = {
        "shape": {"n": n, "d": DIM, "k": k},
        "timings": {name: timing.as_dict() for name, timing in timings.items()},
        "agreement_pct": {
            "vqkit_vs_float64": agreement(ours, exact),
            "nearest_code_vs_vqkit_encode": agreement(nearest_code(x, codebook).codes, ours),
        },
    }
    targets = [
        Target("1a vqkit encode / (x @ C.T)", t["vqkit_encode"] / t["matmul"], 1.3, False),
        Target("1b nearest_code / (x @ C.T)", t["nearest_code"] / t["matmul"], 1.3, False),
    ]
    info = [
        Target(
            "1a' vqkit encode / mm(out=preallocated)",
            t["vqkit_encode"] / t["matmul_preallocated"],
            1.3,
            False,
            "the matmul without allocating its result",
            required=False,
        ),
    ]
    if ref is not None:
        with torch.no_grad():
            theirs = ref(x_ref)[1]
        result["agreement_pct"]["vqkit_vs_vqp"] = agreement(ours, theirs)
        result["agreement_pct"]["vqp_vs_float64"] = agreement(theirs, exact)
        speedup = t["vqp_eval"] / t["vqkit_encode"]
        note = f"codes agree {result['agreement_pct']['vqkit_vs_vqp']:.3f}%"
        targets.append(Target("1c speedup vs vector-quantize-pytorch eval", speedup, 3.0, True, note))
    result["info"] = [target.as_dict() for target in info]
    return result, targets + info


# --------------------------------------------------------------------------- 2. training step
def bench_train(repeats: int) -> tuple[dict[str, Any], list[Target]]:
    batch, length = 16, 1024
    x, codebook = make_data(batch * length, 1024)
    x = x.reshape(batch, length, DIM)

    def vqkit_step(q: vqkit.VQ, inp: torch.Tensor) -> vqkit.QuantizerOutput:
        inp.grad = None
        out: vqkit.QuantizerOutput = q(inp)
        (out.quantized.square().mean() + out.loss).backward()
        return out

    def vqp_step(ref: Any, inp: torch.Tensor) -> torch.Tensor:
        inp.grad = None
        quantized, codes, loss = ref(inp)
        (quantized.square().mean() + loss.sum()).backward()
        return torch.as_tensor(codes)

    result: dict[str, Any] = {"shape": {"batch": batch, "length": length, "d": DIM, "k": 1024}}
    # Sanity check: one step each from the same state picks the same codes and lands on the same codebook.
    if VectorQuantize is not None:
        q0, ref0 = vqkit_vq(codebook, update="ema").train(), reference_vq(codebook).train()
        codes_ours = vqkit_step(q0, x.clone().requires_grad_(True)).codes
        codes_theirs = vqp_step(ref0, x.clone().requires_grad_(True))
        result["first_step"] = {
            "code_agreement_pct": agreement(codes_ours, codes_theirs),
            "codebook_max_abs_diff": float((q0.codebook.weight - ref0._codebook.embed[0]).abs().max()),
        }

    q = vqkit_vq(codebook, update="ema").train()
    x_ours = x.clone().requires_grad_(True)
    fns: dict[str, Callable[[], object]] = {"vqkit_step": lambda: vqkit_step(q, x_ours)}
    if VectorQuantize is not None:
        ref = reference_vq(codebook).train()
        ref_default = reference_vq(codebook, rotation_trick=None).train()  # its default: rotation trick on
        x_ref = x.clone().requires_grad_(True)
        fns["vqp_step"] = lambda: vqp_step(ref, x_ref)
        fns["vqp_default_rotation_step"] = lambda: vqp_step(ref_default, x_ref)
    timings = race(fns, repeats)
    result["timings"] = {name: timing.as_dict() for name, timing in timings.items()}
    targets: list[Target] = []
    if VectorQuantize is not None:
        t = {name: timing.best for name, timing in timings.items()}
        first = result["first_step"]
        note = (
            f"step-1 codes agree {first['code_agreement_pct']:.3f}%, "
            f"codebooks within {first['codebook_max_abs_diff']:.1e}"
        )
        speedup = t["vqp_step"] / t["vqkit_step"]
        targets.append(Target("2  train-step speedup vs vector-quantize-pytorch", speedup, 2.0, True, note))
        targets.append(
            Target(
                "2' same, its default rotation trick",
                t["vqp_default_rotation_step"] / t["vqkit_step"],
                2.0,
                True,
                required=False,
            )
        )
    return result, targets


# --------------------------------------------------------------------------- IVQ fast path
def bench_ivq(repeats: int) -> tuple[dict[str, Any], list[Target]]:
    n, dim = 65536, 96
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(SEED))
    fit = x[:8192]
    quantizers: dict[str, vqkit.Quantizer] = {
        "ivq_yin_yang": vqkit.create_quantizer("ivq", dim=dim, levels="yin-yang"),
        "ivq_bottom_up": vqkit.create_quantizer("ivq", dim=dim, levels="bottom-up"),
        "residual_vq_4x64": vqkit.create_quantizer(
            "residual_vq", dim=dim, codebook_size=64, num_quantizers=4
        ),
    }
    for q in quantizers.values():
        q.init_codebook(fit)
        q.eval()
    assert len({q.bits_per_vector for q in quantizers.values()}) == 1
    fns: dict[str, Callable[[], object]] = {name: partial(q.encode, x) for name, q in quantizers.items()}
    timings = race(fns, repeats)
    result: dict[str, Any] = {
        "n": n,
        "dim": dim,
        "bits_per_vector": quantizers["ivq_yin_yang"].bits_per_vector,
    }
    with torch.no_grad():
        for name, q in quantizers.items():
            result[name] = {
                **timings[name].as_dict(),
                "mse": float((q.decode(q.encode(x)) - x).square().mean()),
                "codebook_size": q.codebook_label,  # the printed label ("4×64"), as before
                "codebook_parameters": q.num_codebook_parameters,
            }
    base = timings["residual_vq_4x64"].best
    targets = [
        Target(
            "4  IVQ yin-yang encode speedup vs ResidualVQ 4x64",
            base / timings["ivq_yin_yang"].best,
            5.0,
            True,
            f"N={n} D={dim} 24 bits; MSE {result['ivq_yin_yang']['mse']:.3f} vs "
            f"{result['residual_vq_4x64']['mse']:.3f}",
        ),
        Target(
            "4b IVQ bottom-up encode speedup vs ResidualVQ 4x64",
            base / timings["ivq_bottom_up"].best,
            1.0,
            True,
            f"MSE {result['ivq_bottom_up']['mse']:.3f}",
            required=False,
        ),
    ]
    return result, targets


# --------------------------------------------------------------------------- report
@contextlib.contextmanager
def section(title: str) -> Iterator[None]:
    print(f"-- {title} ...", flush=True)
    start = time.perf_counter()
    yield
    print(f"   done in {time.perf_counter() - start:.1f} s", flush=True)


def run_benchmarks(quick: bool) -> tuple[dict[str, Any], list[Target]]:
    """Sections 3, 1, 2 and 4 in that order: the report's sections and every target (3's last)."""
    repeats_encode, repeats_train = (5, 3) if quick else (20, 8)
    targets: list[Target] = []
    report: dict[str, Any] = {}
    # The memory child goes first: it inherits this process's peak RSS as its ru_maxrss (see bench_memory).
    with section("3. encode N=65536 against K=65536 in a subprocess"):
        report["memory"], memory_targets = bench_memory(65536, 65536)
    with section("1. eval encode, N=16384 D=64 K=1024"):
        report["encode"], found = bench_encode(repeats_encode)
        targets += found
    with section("2. training step, (16, 1024, 64) K=1024, EMA"):
        report["train"], found = bench_train(repeats_train)
        targets += found
    with section("4. IVQ yin-yang vs ResidualVQ 4x64 encode, N=65536 D=96"):
        report["ivq"], found = bench_ivq(repeats_encode)
        targets += found
    return report, targets + memory_targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a fast check, noisier numbers)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON report (default {RESULTS})")
    parser.add_argument("--memory-child", nargs=2, type=int, metavar=("N", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(*args.memory_child)))
        return 0

    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    load_before = os.getloadavg()
    started = time.perf_counter()
    report, targets = run_benchmarks(args.quick)
    load_after = os.getloadavg()
    print()
    # The memory child's CPU seconds per wall second (about THREADS when the cores were ours) are in the JSON.
    warning = load_warning(
        load_before, load_after, " (most for the many short parallel steps of the chunked search)"
    )
    if warning:
        print(warning)
    failed = print_targets(targets)
    report["targets"] = [t.as_dict() for t in targets]
    report["environment"] = environment(load_before, load_after, started, quick=bool(args.quick))
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
