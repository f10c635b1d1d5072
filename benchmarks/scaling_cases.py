"""``bench_scaling.py``'s grid and measurements: the one-axis sweeps around a base point, each point's quantizer
and same-shape matmul, its encode and training-step races, and the child process that measures the encode's
peak memory (that script's docstring has the method)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from bench_common import SEED, Timing, race
from quantizer_cases import make_input, matmul_weight, matmul_width
from quantizer_memory import MALLOC_MMAP_THRESHOLD, WARM_ROWS, peak_growth
from quantizer_timing import vqkit_step

import vqkit
from vqkit.rates import kwargs_at_rate

SCRIPT = Path(__file__).resolve().parent / "bench_scaling.py"
NAMES = ("vq", "residual_vq", "fsq", "lfq", "ivq", "simvq", "looc")
IMPLICIT = ("fsq", "lfq")
"""Implicit codebooks: no search, so their "K axis" is the bit rate (levels or sign bits), not a codebook size."""
AXES = ("n", "bits", "dim")
MEASURES = ("encode_s", "train_step_s", "matmul_s")
MEMORY_BOUND_BYTES = 1 << 30  # bench_search.py's target 3: a chunked search stays far under this
WARM_START_ROWS = 4096  # LFQ's data init of its projection, run before timing (as bench_quantizers does)
MATMUL_FULL_BYTES = 256 * 2**20
"""Above this, the same-shape matmul runs in row chunks into one reused result: the same multiply-adds without
allocating the N x K result (4 GiB at N=2^20, K=1024; 16 GiB at N=16384, K=2^18)."""


@dataclass(frozen=True)
class Grid:
    """The base point, the values each axis sweeps (the others held at the base), the largest work ``N K D``
    that is timed, the seconds of repeats a race aims at and their cap (``timed_race``), and the points whose
    encode memory alone is measured."""

    n: int
    bits: int
    dim: int
    ns: tuple[int, ...]
    bits_values: tuple[int, ...]
    dims: tuple[int, ...]
    max_work: int
    race_s: float
    max_repeats: int
    memory_only: tuple[tuple[str, int, int, int], ...] = field(default=())  # (name, n, bits, dim)


DEFAULT = Grid(
    n=16384,
    bits=10,
    dim=64,
    ns=(1024, 4096, 16384, 65536, 262144, 1048576),
    bits_values=(8, 10, 12, 14, 16, 18),  # K = 256 ... 262144
    dims=(16, 32, 64, 128, 256, 512),
    # 2^36: VQ at N=2^20 or K=2^16 (D=64), about 1.5 s an encode on one core. VQ and SimVQ at K=2^18 (2^38)
    # would add about 6 minutes at one thread (``--max-work 2**38`` runs them).
    max_work=2**36,
    race_s=2.0,
    max_repeats=9,
    memory_only=(("vq", 65536, 18, 64),),  # a full 65536 x 262144 fp32 score matrix: 64 GiB
)
QUICK = Grid(
    n=512,
    bits=8,
    dim=16,
    ns=(256, 512, 1024),
    bits_values=(6, 8, 10),
    dims=(16, 32),
    max_work=2**22,  # small enough that the quick run also skips a point (VQ at K=1024)
    race_s=0.0,
    max_repeats=1,
    memory_only=(("vq", 2048, 12, 16),),
)


@dataclass
class Point:
    """One measured configuration and the sweeps (``AXES``) it lies on (the base point lies on all three)."""

    name: str
    n: int
    bits: int
    dim: int
    axes: list[str]

    @property
    def key(self) -> str:
        return f"{self.name} N={self.n} bits={self.bits} D={self.dim}"


def base_bits(name: str, grid: Grid) -> int | None:
    """The base rate for ``name``: the grid's, or the next of the three above it that it reaches (IVQ spends
    4 bits per level, so 12 for a base of 10); ``None`` if none is reached."""
    for bits in range(grid.bits, grid.bits + 4):
        if not isinstance(kwargs_at_rate(name, grid.dim, bits, kmeans_init=False), str):
            return bits
    return None


def sweep_points(grid: Grid, names: list[str]) -> tuple[list[Point], list[str]]:
    """Every distinct point of the one-axis sweeps of ``names``, and the notes of the rates skipped."""
    points: dict[tuple[str, int, int, int], Point] = {}
    notes: list[str] = []
    for name in names:
        bits0 = base_bits(name, grid)
        if bits0 is None:
            notes.append(f"skipped {name!r}: no rate within 3 bits above {grid.bits} at D={grid.dim}")
            continue
        if bits0 != grid.bits:
            notes.append(f"{name}: base rate {bits0} bits (it cannot reach {grid.bits})")
        sweeps = {
            "n": [(n, bits0, grid.dim) for n in grid.ns],
            "bits": [(grid.n, bits, grid.dim) for bits in grid.bits_values],
            "dim": [(grid.n, bits0, dim) for dim in grid.dims],
        }
        for axis, configs in sweeps.items():
            for n, bits, dim in configs:
                kwargs = kwargs_at_rate(name, dim, bits, kmeans_init=False)
                if isinstance(kwargs, str):
                    notes.append(f"{kwargs} (the {axis} sweep)")
                    continue
                point = points.setdefault((name, n, bits, dim), Point(name, n, bits, dim, []))
                point.axes.append(axis)
    return list(points.values()), notes


@dataclass
class Built:
    """A point's quantizer at its rate and the width ``K`` of its same-shape matmul (``quantizer_cases``)."""

    kwargs: dict[str, Any]
    quantizer: vqkit.Quantizer
    k: int
    candidates: int | None
    k_rule: str

    def describe(self, point: Point) -> dict[str, Any]:
        """The point's record without its measurements: settings, K, the work ``N K D``, and the bytes of the
        matmul's fp32 result and of the full score matrix an unchunked search would hold (N times the
        candidates per vector; for an implicit codebook N times its ``2^bits`` codes)."""
        return {
            **asdict(point),
            "kwargs": self.kwargs,
            "codebook_size": 2**point.bits,
            "k_matmul": self.k,
            "candidates": self.candidates,
            "k_rule": self.k_rule,
            "work": point.n * self.k * point.dim,
            "matmul_result_bytes": point.n * self.k * 4,
            "score_matrix_bytes": point.n * (self.candidates or 2**point.bits) * 4,
            "input_bytes": point.n * point.dim * 4,
        }


def build(point: Point, x: torch.Tensor | None) -> Built:
    """The quantizer at ``point`` with its initial codebook (no k-means fit: a search costs the same whatever
    the codes hold, and k-means on 2^18 codes would take longer than the sweep); LFQ's data init on ``x``
    (``None``: not run, for a description only)."""
    kwargs = kwargs_at_rate(point.name, point.dim, point.bits, kmeans_init=False)
    assert not isinstance(kwargs, str), kwargs  # sweep_points kept reachable rates only
    torch.manual_seed(SEED)
    q = vqkit.create_quantizer(point.name, dim=point.dim, **kwargs)
    if x is not None and q.needs_warm_start:
        q.warm_start(x.reshape(-1, point.dim)[:WARM_START_ROWS])
    k, candidates, rule = matmul_width(q, point.dim)
    return Built(kwargs, q, k, candidates, rule)


def chunk_rows(n: int, k: int) -> int:
    """Rows of the same-shape matmul at a time: all ``n`` when the result fits ``MATMUL_FULL_BYTES``."""
    return max(1, min(n, MATMUL_FULL_BYTES // (4 * k)))


def matmul_call(flat: torch.Tensor, w: torch.Tensor) -> Callable[[], object]:
    """``flat @ w`` into a fresh result, or in row chunks into one reused buffer when that result is large."""
    n, k = flat.shape[0], w.shape[1]
    rows = chunk_rows(n, k)
    if rows == n:
        return lambda: flat @ w
    buffer = torch.empty(rows, k)

    def chunked() -> object:
        for start in range(0, n, rows):
            part = flat[start : start + rows]
            torch.mm(part, w, out=buffer[: part.shape[0]])
        return buffer

    return chunked


def matmul_step_call(flat: torch.Tensor, w: torch.Tensor) -> Callable[[], object]:
    """The matmul's training step: ``mean((x W)^2)`` and its backward to ``x``, in the row chunks of
    ``chunk_rows`` (each chunk its own leaf, so a backward writes only its rows' gradient); returns the
    gradients, chunk by chunk."""
    n, k = flat.shape[0], w.shape[1]
    rows = chunk_rows(n, k)
    leaves = [part.clone().requires_grad_(True) for part in flat.split(rows)]

    def step() -> object:
        for leaf in leaves:
            leaf.grad = None
            ((leaf @ w).square().sum() / (n * k)).backward()
        return [leaf.grad for leaf in leaves]

    return step


def timed_race(fns: dict[str, Callable[[], object]], grid: Grid) -> tuple[dict[str, Timing], list[float]]:
    """``race`` with as many repeats as fit ``grid.race_s`` (1 to ``grid.max_repeats``), judged by one timed
    warm-up round: many at small sizes, one at the largest. Returns the timings and the warm-up round's times."""
    warmup = []
    for fn in fns.values():
        start = time.perf_counter()
        fn()
        warmup.append(time.perf_counter() - start)
    repeats = max(1, min(grid.max_repeats, int(grid.race_s / max(sum(warmup), 1e-9))))
    return race(fns, repeats, warmup=0), warmup


def time_point(point: Point, built: Built, x: torch.Tensor, grid: Grid) -> dict[str, Any]:
    """The eval encode raced with the same-shape matmul, then the training step raced with the matmul's."""
    q = built.quantizer
    flat = x.reshape(point.n, point.dim)
    w = matmul_weight(point.dim, built.k)
    q.eval()
    encode, warm_encode = timed_race({"matmul": matmul_call(flat, w), "encode": partial(q.encode, x)}, grid)
    q.train()
    x_train = x.clone().requires_grad_(True)
    steps: dict[str, Callable[[], object]] = {
        "matmul_step": matmul_step_call(flat, w),
        "train_step": partial(vqkit_step, q, x_train),
    }
    train, warm_train = timed_race(steps, grid)
    q.eval()
    timings = {**encode, **train}
    best = {name: timing.best for name, timing in timings.items()}
    return {
        "timings": {name: timing.as_dict() for name, timing in timings.items()},
        "encode_s": best["encode"],
        "matmul_s": best["matmul"],
        "train_step_s": best["train_step"],
        "matmul_step_s": best["matmul_step"],
        "encode_ratio_to_matmul": best["encode"] / best["matmul"],
        "train_ratio_to_matmul_step": best["train_step"] / best["matmul_step"],
        "matmul_chunk_rows": chunk_rows(point.n, built.k),
        "warmup_s": dict(zip([*encode, *train], warm_encode + warm_train, strict=True)),
    }


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b


def memory_child(points: list[dict[str, Any]], threads: int) -> dict[str, Any]:
    """In a fresh interpreter: the peak RSS growth of each point's eval encode (codebooks at their initial
    values: memory does not depend on them) and of its matmul where that fits in one result."""
    torch.set_num_threads(threads)
    results: dict[str, Any] = {}
    for spec in points:
        point = Point(**spec)
        x = make_input(point.n, point.dim)
        built = build(point, x)
        q = built.quantizer.eval()
        rows = min(point.n, WARM_ROWS)
        small = x.reshape(point.n, point.dim)[:rows].reshape(1, rows, point.dim)
        entry: dict[str, int | None] = {
            "encode_bytes": peak_growth(partial(q.encode, x), partial(q.encode, small))
        }
        if chunk_rows(point.n, built.k) == point.n:
            flat, w = x.reshape(point.n, point.dim), matmul_weight(point.dim, built.k)
            entry["matmul_bytes"] = peak_growth(partial(_matmul, flat, w), partial(_matmul, flat[:rows], w))
        results[point.key] = entry
        del x, built, q, small
    return results


def bench_memory(points: list[Point], threads: int) -> dict[str, Any]:
    """``memory_child`` in a subprocess of ``bench_scaling.py`` (points as JSON on its stdin), with
    ``MALLOC_MMAP_THRESHOLD_`` set as in ``quantizer_memory``."""
    command = [sys.executable, str(SCRIPT), "--memory-child", "--threads", str(threads)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": MALLOC_MMAP_THRESHOLD}
    payload = json.dumps([asdict(p) for p in points])
    proc = subprocess.run(
        command, input=payload, capture_output=True, text=True, timeout=1800, check=False, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed ({proc.returncode}):\n{proc.stderr}")
    child: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return child


# --------------------------------------------------------------------------- fits and bounds
def fit(xs: list[float], ys: list[float]) -> dict[str, float] | None:
    """Least-squares slope and r^2 of ``log y`` against ``log x``; ``None`` under two distinct ``x``."""
    lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    if len(set(xs)) < 2 or sxx == 0:
        return None
    sxy = sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True))
    syy = sum((b - my) ** 2 for b in ly)
    return {"slope": sxy / sxx, "r2": sxy * sxy / (sxx * syy) if syy else 1.0, "points": len(xs)}


def series(points: list[dict[str, Any]], name: str, axis: str) -> list[dict[str, Any]]:
    """The timed points of ``name``'s sweep along ``axis``, in increasing order of the swept variable."""
    key = {"n": "n", "bits": "bits", "dim": "dim"}[axis]
    chosen = [p for p in points if p["name"] == name and axis in p["axes"] and "encode_s" in p]
    return sorted(chosen, key=lambda p: p[key])


def axis_value(point: dict[str, Any], axis: str) -> float:
    """The swept variable: N, K = 2^bits, or D."""
    return float(2 ** point["bits"] if axis == "bits" else point[axis])


def slopes(points: list[dict[str, Any]]) -> dict[str, Any]:
    """``{name: {axis: {measure: {"vs_axis": fit, "vs_work": fit}}}}`` (``vs_work`` ``None`` where the work
    stays constant: the implicit codebooks' bit axis)."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(p["name"] for p in points):
        for axis in AXES:
            run_ = series(points, name, axis)
            if len(run_) < 2:
                continue
            values = [axis_value(p, axis) for p in run_]
            out.setdefault(name, {})[axis] = {
                measure: {
                    "vs_axis": fit(values, [p[measure] for p in run_]),
                    "vs_work": fit([p["work"] for p in run_], [p[measure] for p in run_]),
                }
                for measure in MEASURES
            }
    return out


def vq_encode_fit(points: list[dict[str, Any]]) -> dict[str, Any] | None:
    """VQ's encode time (and its matmul's) against the work ``N K D`` over all its timed points."""
    vq = [p for p in points if p["name"] == "vq" and "encode_s" in p]
    if len(vq) < 2:
        return None
    works = [p["work"] for p in vq]
    return {
        "encode": fit(works, [p["encode_s"] for p in vq]),
        "matmul": fit(works, [p["matmul_s"] for p in vq]),
        "work_range": [min(works), max(works)],
    }


def _bound(p: dict[str, Any], grown: int) -> dict[str, Any]:
    return {
        "encode_bytes": grown,
        "at": f"N={p['n']} K={2 ** p['bits']} D={p['dim']}",
        "score_matrix_bytes": p["score_matrix_bytes"],
        "ratio_to_score_matrix": grown / p["score_matrix_bytes"],
        "input_bytes": p["input_bytes"],
        "ratio_to_input": grown / p["input_bytes"],
        # Where the scores are no larger than the input, a copy of the input would pass for them: no verdict.
        "holds_nk_matrix": grown >= p["score_matrix_bytes"]
        if p["score_matrix_bytes"] > p["input_bytes"]
        else None,
        "bounded": grown < MEMORY_BOUND_BYTES,
    }


def memory_bounds(points: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"largest": {name: bound}, "memory_only": [bound]}``: each quantizer's largest encode peak growth and
    the memory-only points', against the input and the full score matrix of an unchunked search
    (``holds_nk_matrix``: the growth reaches its size, ``None`` where it is no larger than the input;
    ``bounded``: under ``MEMORY_BOUND_BYTES``)."""
    largest: dict[str, Any] = {}
    memory_only = []
    for p in points:
        grown = p["memory"].get("encode_bytes")
        if grown is None:
            continue
        if p["axes"] == ["memory"]:
            memory_only.append({"name": p["name"], **_bound(p, grown)})
        elif p["name"] not in largest or grown > largest[p["name"]]["encode_bytes"]:
            largest[p["name"]] = _bound(p, grown)
    return {"largest": largest, "memory_only": memory_only}
