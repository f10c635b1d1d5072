"""vqkit against vector-quantize-pytorch on every quantizer it has an equivalent of, over a grid of rates and widths.

Run ``.venv/bin/python benchmarks/bench_peers.py --markdown benchmarks/results/bench_peers.md`` (8 and 16 bits per
vector, D=64 and 256; N=16384, fewer at 16 bits (``cell_n``); ``--quick`` for a check that it runs). For each
cell of the grid and each quantizer ``bench_quantizers.py`` can match (its ``quantizer_references`` adapters: same
settings, same state), the eval encode, the eval forward and the training step are raced round-robin in one process
exactly as there (``quantizer_timing.bench_case``: the best of the repeats, the median in the JSON), and the
speedups (their time / vqkit's) are checked against issue 14's target of 1.5x with the codes' agreement. Large
cells take fewer repeats (``repeats``). Writes ``benchmarks/results/bench_peers.json`` atomically (``--out``)
with the environment.
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

from bench_common import THREADS, environment, load_warning, race
from quantizer_cases import build_case, case_names, make_input, selected_names
from quantizer_references import Reference, build_reference
from quantizer_timing import bench_case

from vqkit.utils.atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results" / "bench_peers.json"
TARGET = 1.5
FIT_ROWS = 4096  # k-means init sample, as bench_quantizers.py
SPEEDUPS = ("encode_speedup", "eval_forward_speedup", "train_speedup")


def cell_n(n: int, dim: int, bits: int) -> int:
    """Vectors in a cell: ``n``, or fewer where a single codebook has more than ``2^12`` codes (4096 at D=64,
    1024 at D=256 for ``2^16``): vector-quantize-pytorch's dense search holds an ``N x K`` float32 matrix (4 GiB
    at ``N = 16384``) and its calls would take most of the run."""
    return n if bits <= 12 else min(n, max(1024, 2**18 // dim))


def repeats(dim: int, bits: int, quick: bool) -> tuple[int, int, int]:
    """``(encode, train, warm-up)`` repeats: fewer where one call scores ``2^16`` codes of 256 dimensions."""
    if quick:
        return 2, 2, 1
    work = dim * 2**bits
    return (20, 8, 2) if work <= 64 * 2**10 else (10, 5, 1) if work < 64 * 2**16 else (4, 3, 1)


def matched_names(dim: int, bits: int) -> list[str]:
    """The benchmark's cases (registered names and variants) that have a vector-quantize-pytorch equivalent."""
    names = []
    for name in case_names():
        case = build_case(name, dim, bits, None)
        if not isinstance(case, str) and isinstance(build_reference(case.quantizer), Reference):
            names.append(name)
    return names


def projection_floor(q: Any, ref: Reference, x: torch.Tensor, repeats: int) -> float | None:
    """For a quantizer with learned in and out projections (FSQ, LFQ, BSQ and their residual forms): their eval
    forward's time over that of the two projections alone (``project_out(project_in(x))``, raced with it), the
    most any implementation holding those two maps could gain; ``None`` without projections."""
    proj_in, proj_out = getattr(q, "project_in", None), getattr(q, "project_out", None)
    if not isinstance(proj_in, nn.Linear) or not isinstance(proj_out, nn.Linear):
        return None
    flat = x.reshape(-1, x.shape[-1])
    ref.module.eval()  # the training race left it in training mode (their LFQ then adds its entropy terms)
    with torch.no_grad():
        t = race({"projections": lambda: proj_out(proj_in(flat)), "theirs": lambda: ref.forward(x)}, repeats)
    return t["theirs"].best / t["projections"].best


def run_cell(n: int, dim: int, bits: int, names: list[str], quick: bool) -> dict[str, Any]:
    """Every matched quantizer at one ``(dim, bits)``: ``{name: row}``."""
    x = make_input(n, dim)
    fit = x.reshape(n, dim)[:FIT_ROWS]
    rows: dict[str, Any] = {}
    for name in names:
        case = build_case(name, dim, bits, fit)
        if isinstance(case, str):
            rows[name] = {"skipped": case}
            continue
        start = time.perf_counter()
        result = bench_case(case, x, repeats(dim, bits, quick))
        vqp = result["vqp"]
        reference = build_reference(case.quantizer)
        floor = (
            projection_floor(case.quantizer.eval(), reference, x, repeats(dim, bits, quick)[0])
            if isinstance(reference, Reference)
            else None
        )
        rows[name] = {
            "eval_forward_floor_speedup": floor,
            "class": vqp.get("class"),
            **{key: vqp.get(key) for key in SPEEDUPS},
            "eval_agreement_pct": vqp.get("eval_agreement_pct"),
            "step1_agreement_pct": vqp.get("step1_agreement_pct"),
            "encode_ms": result["encode"]["timings"]["vqkit_encode"]["min_s"] * 1e3,
            "train_ms": result["train"]["timings"]["vqkit_step"]["min_s"] * 1e3,
            "meets_target": all((vqp.get(key) or 0.0) >= TARGET for key in SPEEDUPS),
        }
        print(f"-- D={dim} {bits} bits {name}: {time.perf_counter() - start:.1f} s", flush=True)
    return rows


def markdown(report: dict[str, Any]) -> str:
    """The grid as one Markdown table: a row per quantizer and cell."""
    env = report["environment"]
    lines = [
        f"{env['threads']} threads, {env['cpu_model']}, torch {env['torch']}, "
        f"vector-quantize-pytorch {env['vector_quantize_pytorch']}, {env['timestamp_utc']}, commit "
        f"{env['git_commit']}, load average {env['loadavg_before'][0]:.2f} before / "
        f"{env['loadavg_after'][0]:.2f} after, {env['wall_s']:.0f} s wall.",
        "",
        f"Command: `{env['command']}`",
        "",
        "| quantizer | D | bits | N | theirs | encode | eval forward | train step | codes agree (eval / step 1) "
        "| ≥ 1.5× | eval forward bound |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in report["cells"]:
        for name, row in cell["rows"].items():
            if "skipped" in row:
                lines.append(
                    f"| {name} | {cell['dim']} | {cell['bits']} | {cell['n']} | skipped: {row['skipped']} |||||"
                )
                continue
            speed = " | ".join(f"{row[key]:.2f}×" for key in SPEEDUPS)
            agree = f"{row['eval_agreement_pct']:.2f}% / {row['step1_agreement_pct']:.2f}%"
            mark = "yes" if row["meets_target"] else "**no**"
            bound = row.get("eval_forward_floor_speedup")
            bound_text = "" if bound is None else f"{bound:.2f}×"
            lines.append(
                f"| {name} | {cell['dim']} | {cell['bits']} | {cell['n']} | {row['class']} | {speed} | {agree} "
                f"| {mark} | {bound_text} |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=16384, help="vectors (default 16384; --quick 512)")
    parser.add_argument("--dims", default="64,256", help="comma-separated D (default 64,256)")
    parser.add_argument("--bits", default="8,16", help="comma-separated bits per vector (default 8,16)")
    parser.add_argument("--only", help="comma-separated names or variants (default: every matched one)")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and few repeats: a check that it runs"
    )
    parser.add_argument("--threads", type=int, default=THREADS, help=f"torch threads (default {THREADS})")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON report (default {RESULTS})")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown to this path")
    args = parser.parse_args(argv)
    args.wanted = set(selected_names(parser, args.only))
    args.dims = [int(v) for v in args.dims.split(",")]
    args.bits = [int(v) for v in args.bits.split(",")]
    if args.quick:
        args.n, args.dims, args.bits = 512, [16], [4, 8]
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before, started = os.getloadavg(), time.perf_counter()
    cells = []
    for dim in args.dims:
        for bits in args.bits:
            names = [name for name in matched_names(dim, bits) if name in args.wanted]
            n = cell_n(args.n, dim, bits)
            cells.append(
                {"dim": dim, "bits": bits, "n": n, "rows": run_cell(n, dim, bits, names, args.quick)}
            )
    load_after = os.getloadavg()
    command = " ".join([".venv/bin/python", "benchmarks/bench_peers.py", *argv])
    report = {
        "config": {"n": args.n, "dims": args.dims, "bits": args.bits, "target": TARGET},
        "cells": cells,
        "environment": environment(load_before, load_after, started, command=command),
    }
    warning = load_warning(load_before, load_after)
    if warning:
        print(warning)
    text = markdown(report)
    print(text)
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    if args.markdown:
        atomic_write_text(args.markdown, text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
