"""``bench_quantizers.py`` measurement 3: the peak resident-memory growth of each quantizer's eval encode, its
same-shape matmul and vector-quantize-pytorch's eval forward, all measured in one child process
(``bench_quantizers.py --memory-child``) started before the parent holds any benchmark data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from bench_common import THREADS, malloc_trim, no_grad_call, reset_peak_rss, status_kib
from quantizer_cases import build_case, make_input, matmul_weight
from quantizer_references import Reference, build_reference

SCRIPT = Path(__file__).resolve().parent / "bench_quantizers.py"
WARM_ROWS = 256  # rows of the memory child's start-up call
# Every buffer of 64 KiB or more its own mapping, returned to the system when freed: otherwise glibc raises its
# threshold after the first large free and a call measured after another shows little or no growth.
MALLOC_MMAP_THRESHOLD = "65536"


def peak_growth(call: Callable[[], object], warm: Callable[[], object]) -> int | None:
    """Peak RSS growth in bytes of ``call()`` (after ``warm()``, a small call that starts the libraries up),
    including its result; ``None`` when the peak cannot be reset."""
    warm()
    malloc_trim()
    if not reset_peak_rss():
        return None
    before = status_kib("VmRSS")
    result = call()
    peak = status_kib("VmHWM")
    del result
    malloc_trim()
    return max(0, peak - before) * 1024


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b


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
        "peak_reset": reset_peak_rss(),
    }
    for name in names:
        case = build_case(name, dim, bits, fit=None)
        if isinstance(case, str):
            continue
        q = case.quantizer.eval()
        w = matmul_weight(dim, case.k)
        entry: dict[str, int | None] = {
            "matmul": peak_growth(partial(_matmul, flat, w), partial(_matmul, small_flat, w)),
            "vqkit_encode": peak_growth(partial(q.encode, x), partial(q.encode, small)),
        }
        ref = build_reference(q)
        if isinstance(ref, Reference):
            ref.module.eval()
            entry["vqp_eval_forward"] = peak_growth(
                partial(no_grad_call, ref.forward, x), partial(no_grad_call, ref.forward, small)
            )
        results[name] = entry
    return results


def bench_memory(n: int, dim: int, bits: int, names: list[str]) -> dict[str, Any]:
    """``memory_child`` in a subprocess of ``bench_quantizers.py``, with ``MALLOC_MMAP_THRESHOLD_`` set."""
    command = [sys.executable, str(SCRIPT), "--memory-child", "--n", str(n)]
    command += ["--dim", str(dim), "--bits", str(bits), "--only", ",".join(names)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": MALLOC_MMAP_THRESHOLD}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed ({proc.returncode}):\n{proc.stderr}")
    child: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return child


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


def memory_summary(entry: dict[str, int | None] | None) -> dict[str, Any]:
    """One quantizer's memory row of the report, from its ``memory_child`` entry (``None``: not measured)."""
    entry = entry or {}
    ours, mm, theirs = entry.get("vqkit_encode"), entry.get("matmul"), entry.get("vqp_eval_forward")
    return {
        "vqkit_encode_bytes": ours,
        "matmul_bytes": mm,
        "vqp_eval_forward_bytes": theirs,
        "ratio_to_matmul": _ratio(ours, mm),
        "vqp_ratio": _ratio(theirs, ours),  # theirs / ours: above 1, vqkit needs less
    }
