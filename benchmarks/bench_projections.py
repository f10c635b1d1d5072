"""The narrow-projection layout rule of ``vqkit.functional.linear``, measured in one process.

For each ``(D, c)`` (``c`` scalar channels, as FSQ/LFQ/BSQ project to), races round-robin (``bench_common.race``)
the two backward products of an out projection ``c -> D`` as autograd writes them against ``mm``'s transposed
form, and a whole in-and-out projection training step (``nn.Linear`` pair against ``nn.Linear`` in +
``vqkit.functional.linear.Linear`` out, the pair the scalar quantizers use). Prints the times and ratios and writes
``benchmarks/results/bench_projections.json`` atomically.

``.venv/bin/python benchmarks/bench_projections.py --threads 1`` (about 30 s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import THREADS, environment, race

from vqkit.functional.linear import Linear, mm
from vqkit.utils.atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results" / "bench_projections.json"


def one_shape(n: int, dim: int, channels: int, repeats: int) -> dict[str, Any]:
    """The raced times (ms, best of ``repeats``) and ratios for ``N = n`` vectors of ``dim`` into ``channels``."""
    torch.manual_seed(0)
    gy, h, w_out = torch.randn(n, dim), torch.randn(n, channels), torch.randn(dim, channels)
    x = torch.randn(n, dim, requires_grad=True)
    plain = (nn.Linear(dim, channels), nn.Linear(channels, dim))
    ours = (nn.Linear(dim, channels), Linear(channels, dim))
    for a, b in zip(plain, ours, strict=True):
        b.load_state_dict(a.state_dict())

    def step(pair: tuple[nn.Module, nn.Module]) -> None:
        x.grad = None
        for m in pair:
            m.zero_grad(set_to_none=True)
        pair[1](pair[0](x)).sum().backward()

    t = race(
        {
            "input_grad_autograd": lambda: gy @ w_out,
            "input_grad_mm": lambda: mm(gy, w_out),
            "weight_grad_autograd": lambda: gy.t() @ h,
            "weight_grad_mm": lambda: mm(gy.t(), h),
            "step_nn_linear": lambda: step(plain),
            "step_vqkit_linear": lambda: step(ours),
        },
        repeats,
    )
    ms = {name: timing.best * 1e3 for name, timing in t.items()}
    return {
        "ms": ms,
        "input_grad_speedup": ms["input_grad_autograd"] / ms["input_grad_mm"],
        "weight_grad_speedup": ms["weight_grad_autograd"] / ms["weight_grad_mm"],
        "step_speedup": ms["step_nn_linear"] / ms["step_vqkit_linear"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a check that it runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    n, repeats = (256, 2) if args.quick else (args.n, args.repeats)
    load_before, started = os.getloadavg(), time.perf_counter()
    rows = []
    print(
        "   D   c  input grad (autograd / mm)  weight grad (autograd / mm)  step (nn.Linear / vqkit Linear)"
    )
    for dim in (64, 256):
        for channels in (4, 8, 10, 16):
            r = one_shape(n, dim, channels, repeats)
            rows.append({"dim": dim, "channels": channels, **r})
            ms = r["ms"]
            print(
                f"{dim:4d} {channels:3d}  {ms['input_grad_autograd']:7.3f} / {ms['input_grad_mm']:7.3f} "
                f"({r['input_grad_speedup']:4.2f}x)  {ms['weight_grad_autograd']:7.3f} / {ms['weight_grad_mm']:7.3f} "
                f"({r['weight_grad_speedup']:4.2f}x)  {ms['step_nn_linear']:7.3f} / {ms['step_vqkit_linear']:7.3f} "
                f"({r['step_speedup']:4.2f}x)",
                flush=True,
            )
    command = " ".join([".venv/bin/python", "benchmarks/bench_projections.py", *(argv or sys.argv[1:])])
    report = {
        "n": n,
        "rows": rows,
        "environment": environment(load_before, os.getloadavg(), started, command=command),
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
