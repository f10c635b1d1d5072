"""What the CPU benchmarks share: the round-robin timing, code agreement, the Linux resident-memory readings,
the environment record and the load-average warning, and the optional vector-quantize-pytorch import.

``bench_search.py`` and ``bench_quantizers.py`` (and the modules they are split into) import this file as a
top-level module: running a script puts this folder on ``sys.path``, and ``bench_quantizers.py`` puts it there
when it is loaded by path (the tests do).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

import vqkit

THREADS = 2
SEED = 0
ROOT = Path(__file__).resolve().parent.parent


def vqp_module() -> ModuleType | None:
    """vector-quantize-pytorch, or ``None``: only the comparisons need it (the ``bench`` extra), the rest runs
    without it."""
    try:
        import vector_quantize_pytorch
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return vector_quantize_pytorch


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


def no_grad_call(fn: Callable[[torch.Tensor], object], x: torch.Tensor) -> object:
    """``fn(x)`` without autograd: an eval forward as a user runs it (bind it with ``functools.partial``)."""
    with torch.no_grad():
        return fn(x)


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Percentage of equal entries of two code tensors with the same number of entries."""
    return 100.0 * float((a.reshape(-1) == b.reshape(-1)).double().mean())


# --------------------------------------------------------------------------- resident memory (Linux)
def status_kib(name: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (resident peak) in KiB, from ``/proc/self/status``."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{name} not in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0), so it measures only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def malloc_trim() -> None:
    """Return freed heap memory to the system (glibc); a no-op elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# --------------------------------------------------------------------------- environment
def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def git_commit() -> str | None:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
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


def environment(
    load_before: tuple[float, ...], load_after: tuple[float, ...], started: float, **extra: Any
) -> dict[str, Any]:
    """The report's ``environment``: versions, threads, CPU, git commit, ``extra`` (the command, ``--quick``),
    the load average before and after the measurements (other work on the machine shows here; times are
    minima over repeats to dampen it) and the wall time since ``started`` (a ``time.perf_counter()``)."""
    return {
        "timestamp_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "vector_quantize_pytorch": vqp_version(),
        "vqkit": vqkit.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        **extra,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "wall_s": time.perf_counter() - started,
        "timing": "min over round-robin repeats after warm-up (median recorded too)",
    }


def load_warning(
    load_before: tuple[float, ...], load_after: tuple[float, ...], detail: str = ""
) -> str | None:
    """The warning to print when other work competed for the cores, or ``None``.

    A heuristic: a run adds about ``THREADS`` to the lagging 1-minute load average (and a previous run's share
    fades over a minute or two); well beyond that is other work."""
    if load_before[0] <= 1.5 and load_after[0] <= THREADS + 1.5:
        return None
    return (
        f"WARNING: load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, on "
        f"{os.cpu_count()} CPUs: other work competed for the cores and inflated the times{detail}."
    )
