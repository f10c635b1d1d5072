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
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import vqkit
from vqkit.functional.search import nearest_code, pairwise_distances
from vqkit.utils.atomic import atomic_write_text


def _reference_class() -> Any:
    """vector-quantize-pytorch's ``VectorQuantize``, or ``None``: only the comparisons need it (the ``bench``
    extra), the rest runs without it."""
    try:
        from vector_quantize_pytorch import VectorQuantize
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return VectorQuantize


VectorQuantize = _reference_class()

THREADS = 2
SEED = 0
DIM = 64
RESULTS = Path(__file__).resolve().parent / "results" / "bench_search.json"
MEMORY_LIMIT_BYTES = 1 << 30


# --------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Seconds of each call after warm-up."""

    times: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        ordered = sorted(self.times)
        return ordered[len(ordered) // 2]

    def as_dict(self) -> dict[str, float]:
        return {"min_s": self.best, "median_s": self.median, "repeats": len(self.times)}


def race(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, Timing]:
    """Time ``fns`` round-robin: each round calls each once, in a rotated order, so drift and background load
    spread over all of them instead of landing on whichever happened to run during it."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    timings = {name: Timing() for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            fns[name]()
            timings[name].times.append(time.perf_counter() - start)
    return timings


# --------------------------------------------------------------------------- targets
@dataclass
class Target:
    """A measured ratio against its limit; ``required=False`` rows are context and never fail the run."""

    name: str
    value: float
    limit: float
    higher_is_better: bool
    note: str = ""
    required: bool = True

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    def row(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        verdict = ("PASS" if self.passed else "FAIL") if self.required else "info"
        name = self.name if self.required else f"{self.name} [info]"
        return f"{name:<54} {self.value:>9.3f} {op} {self.limit:<6g} {verdict:<5} {self.note}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "limit": self.limit,
            "higher_is_better": self.higher_is_better,
            "passed": self.passed,
            "note": self.note,
            "required": self.required,
        }


def make_data(n: int, k: int, dim: int = DIM) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(n, dim, generator=generator)
    codebook = torch.randn(k, dim, generator=generator)
    return x, codebook


def oracle_codes(x: torch.Tensor, codebook: torch.Tensor, rows: int = 2048) -> torch.Tensor:
    """Exact nearest codes in float64 (dense per block of rows; small problems only)."""
    c64 = codebook.double()
    blocks = [pairwise_distances(x[i : i + rows].double(), c64).argmin(1) for i in range(0, len(x), rows)]
    return torch.cat(blocks)


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return 100.0 * float((a.reshape(-1) == b.reshape(-1)).double().mean())


def reference_vq(codebook: torch.Tensor, **overrides: Any) -> Any:  # an untyped third-party module
    """vector-quantize-pytorch's VectorQuantize, set up as the module docstring says, holding ``codebook``."""
    assert VectorQuantize is not None
    kwargs: dict[str, Any] = dict(
        dim=codebook.shape[1],
        codebook_size=codebook.shape[0],
        decay=0.99,
        eps=1e-5,
        kmeans_init=False,
        commitment_weight=0.25,
        rotation_trick=False,
        threshold_ema_dead_code=0,
        use_cosine_sim=False,
        sync_codebook=False,
    )
    kwargs.update(overrides)
    ref = VectorQuantize(**kwargs)
    with torch.no_grad():
        ref._codebook.embed.copy_(codebook[None])
        ref._codebook.embed_avg.copy_(codebook[None])  # EMA sums = C * counts (counts start at 1, as vqkit's)
    return ref


def vqkit_vq(codebook: torch.Tensor, **kwargs: Any) -> vqkit.VQ:
    q = vqkit.VQ(codebook.shape[1], codebook.shape[0], **kwargs)
    q.codebook.set_codes(codebook)
    return q


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


# --------------------------------------------------------------------------- 3. memory, in a subprocess
def _status_kib(name: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (resident peak) in KiB, from ``/proc/self/status``."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{name} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0), so it measures only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def memory_child(n: int, k: int) -> dict[str, Any]:
    """In a fresh interpreter: resident-memory peak of one ``encode``, ``n`` vectors against ``k`` codes."""
    torch.set_num_threads(THREADS)
    x, codebook = make_data(n, k)
    q = vqkit_vq(codebook).eval()
    hwm_reset = _reset_peak_rss()
    rss_before, hwm_before = _status_kib("VmRSS"), _status_kib("VmHWM")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start, start_cpu = time.perf_counter(), time.process_time()
    codes = q.encode(x)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm_after = _status_kib("VmHWM")
    # Spot check against float64 on a few rows (the full oracle would need the N x K matrix).
    rows = torch.arange(0, n, max(1, n // 256))
    spot = agreement(codes[rows, 0], oracle_codes(x[rows], codebook))
    return {
        "n": n,
        "d": DIM,
        "k": k,
        "encode_s": seconds,
        "encode_cpu_s": cpu_seconds,  # all threads; far under THREADS * encode_s when other work competes
        "input_bytes": (x.numel() + codebook.numel()) * 4,
        "rss_before_kib": rss_before,
        "hwm_reset": hwm_reset,
        "hwm_before_kib": hwm_before,
        "hwm_after_kib": hwm_after,
        "maxrss_before_kib": maxrss_before,
        "maxrss_after_kib": maxrss_after,
        "spot_agreement_vs_float64_pct": spot,
    }


def bench_memory(n: int, k: int) -> tuple[dict[str, Any], list[Target]]:
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(n), str(k)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed ({proc.returncode}):\n{proc.stderr}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    # Two views of the peak, and the larger one is judged:
    # * VmHWM after the encode minus VmRSS before it (VmHWM reset just before, when the kernel allows);
    # * ru_maxrss growth. ru_maxrss is a high-water mark that Linux carries over from the parent across
    #   fork + exec, so the child is started before the parent holds any benchmark data, and a growth of 0
    #   would only mean the encode stayed under that inherited mark (the VmHWM view covers that case).
    growth_hwm = (child["hwm_after_kib"] - child["rss_before_kib"]) * 1024
    growth_maxrss = (child["maxrss_after_kib"] - child["maxrss_before_kib"]) * 1024
    growth = max(growth_hwm, growth_maxrss)
    full = n * k * 4
    child.update(
        peak_growth_vmhwm_bytes=growth_hwm,
        peak_growth_ru_maxrss_bytes=growth_maxrss,
        peak_growth_bytes=growth,
        full_score_matrix_bytes=full,
    )
    targets = [
        Target(
            f"3  peak RSS growth, MiB (N=K={n})",
            growth / 2**20,
            MEMORY_LIMIT_BYTES / 2**20,
            False,
            f"{n}x{k} fp32 scores = {full / 2**30:g} GiB; encode {child['encode_s']:.1f} s "
            f"({child['encode_cpu_s']:.1f} s CPU)",
        )
    ]
    return child, targets


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
    fns: dict[str, Callable[[], object]] = {name: (lambda q=q: q.encode(x)) for name, q in quantizers.items()}
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
                "codebook_size": q.codebook_size,
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
def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head, dirty = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def vqp_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vector-quantize-pytorch")
    except PackageNotFoundError:
        return None


@contextlib.contextmanager
def section(title: str) -> Iterator[None]:
    print(f"-- {title} ...", flush=True)
    start = time.perf_counter()
    yield
    print(f"   done in {time.perf_counter() - start:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a fast check, noisier numbers)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON report (default {RESULTS})")
    parser.add_argument("--memory-child", nargs=2, type=int, metavar=("N", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(*args.memory_child)))
        return 0

    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    repeats_encode, repeats_train = (5, 3) if args.quick else (20, 8)
    load_before = os.getloadavg()
    started = time.perf_counter()
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
    targets += memory_targets

    load_after = os.getloadavg()
    print()
    # A heuristic: this run adds about THREADS to the lagging 1-minute load average (and a previous run's
    # share fades over a minute or two); well beyond that is other work. The memory child's CPU seconds per
    # wall second (about THREADS when the cores were ours) are in the JSON too.
    if load_before[0] > 1.5 or load_after[0] > THREADS + 1.5:
        print(
            f"WARNING: load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, on "
            f"{os.cpu_count()} CPUs: other work competed for the cores and inflated the times (most for the "
            "many short parallel steps of the chunked search)."
        )
    print(f"{'target':<54} {'measured':>9}    {'limit':<6} {'':<5} note")
    for target in targets:
        print(target.row())
    required = [t for t in targets if t.required]
    failed = [t.name for t in required if not t.passed]
    print(
        f"\n{len(required) - len(failed)}/{len(required)} targets pass"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )

    report["targets"] = [t.as_dict() for t in targets]
    report["environment"] = {
        "timestamp_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "vector_quantize_pytorch": vqp_version(),
        "vqkit": vqkit.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "quick": bool(args.quick),
        # Other work on the machine shows here; times are minima over repeats to dampen it.
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "wall_s": time.perf_counter() - started,
        "timing": "min over round-robin repeats after warm-up (median recorded too)",
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
