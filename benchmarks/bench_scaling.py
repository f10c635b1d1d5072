"""How cost grows: CPU time and peak memory of the eval encode and the training step of ``vq``, ``residual_vq``,
``fsq``, ``lfq``, ``ivq``, ``simvq`` and ``looc`` as N, K and D grow, against the same-shape matmul.

Run ``.venv/bin/python benchmarks/bench_scaling.py`` (9 minutes with ``--threads 1`` on a busy 2-core
machine); ``--quick`` for tiny sizes (seconds: a check that it runs, not numbers to quote); ``--only vq,fsq`` for
a subset; ``--threads`` (default 2); ``--max-work`` (below); ``--out`` for the JSON (default
``benchmarks/results/bench_scaling.json``, written atomically with the environment), ``--plot`` for the figure
(default ``docs/figures/performance_scaling.png``, matplotlib's Agg backend).

**Sweeps.** One axis at a time around the base point N=16384 vectors, K=1024 codes (10 bits), D=64: N from 1024
to 2^20, K from 256 to 2^18 (8 to 18 bits, by 2), D from 16 to 512, the other two held at the base. K enters as
the rate: each quantizer gets ``vqkit.rates.kwargs_at_rate(name, D, bits)`` with ``bits = log2 K``, so K is the
codebook size of ``vq`` and ``simvq``, two levels of ``sqrt(K)`` codes for ``residual_vq``, one shared codebook
of ``sqrt(K)`` codes for the two halves of ``looc``, and ``bits / 4`` levels for ``ivq`` (a multiple of 4 bits:
its K sweep has 8, 12, 16 bits, and its base is 12 bits, the next rate it reaches). ``fsq`` and ``lfq`` have
implicit codebooks and no search: their K axis is the bit rate (FSQ levels of four, LFQ sign bits), where the
cost lies in the projection and, for LFQ's training step, the entropy penalty over the ``2^bits`` codes.

**Work** is ``N K D`` with ``K`` the width of ``bench_quantizers.py``'s same-shape matmul
(``quantizer_cases.matmul_width``, from ``q.search_cost()``): the candidates scored per vector, summed over code
positions and scaled to the input width (VQ, SimVQ: K; residual VQ: 2 sqrt(K); LooC: sqrt(K); IVQ: its codes
per level; FSQ, LFQ: D, one projection-sized matmul). Points whose work exceeds the budget (``--max-work``,
default 2^36 multiply-adds: VQ at N=2^20 or K=2^16) are skipped with a printed note, which leaves out VQ's and
SimVQ's K=2^18 (2^38, about 6 more minutes on one thread; ``--max-work 274877906944`` runs them).

**Timing** is bench_quantizers.py's: one process, ``torch.set_num_threads(threads)``, seeded N(0, 1) input
``[16, N/16, D]``, ``bench_common.race`` round-robin (the eval encode with the matmul ``x [N, D] @ W [D, K]``; the
training step, forward in train mode and ``(out.quantized.square().mean() + out.loss).backward()``, with the
matmul's step ``mean((x W)^2)`` backward to ``x``), minimum over the repeats. One timed warm-up round decides
the repeats: as many as fit 2 s, 1 to 9 (9 at small sizes, 1 at the largest). Where the matmul's ``N x K``
result passes 256 MiB it runs in row chunks into one reused buffer (``scaling_cases.MATMUL_FULL_BYTES``): the
same multiply-adds without a 4 to 16 GiB result. Codebooks keep their initial values (no k-means fit): a search
costs the same whatever the codes hold.

**Peak memory** of each point's eval encode is quantizer_memory.py's method: one child process for all points
(started before this one holds benchmark data), ``MALLOC_MMAP_THRESHOLD_=65536``, a 256-row warm-up call, the
``VmHWM - VmRSS`` growth (including the codes returned); the matmul's too where its result is held whole. One
memory-only point, VQ at N=65536, K=2^18, D=64, where a full fp32 score matrix would need 64 GiB, shows the
chunked search holds none.

**Fits.** Least-squares slopes of log time against log work and against log of the swept variable, per
quantizer, axis and measurement; and one slope of VQ's encode time against log work over all its points (1 is
linear in N K D).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from vqkit.utils.atomic import atomic_write_bytes, atomic_write_text

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the parts are sibling modules (see bench_quantizers.py)
    sys.path.insert(0, str(HERE))

from bench_common import environment, load_warning  # noqa: E402
from quantizer_cases import make_input  # noqa: E402
from scaling_cases import (  # noqa: E402
    DEFAULT,
    IMPLICIT,
    MEASURES,
    NAMES,
    QUICK,
    Grid,
    Point,
    bench_memory,
    build,
    memory_bounds,
    memory_child,
    series,
    slopes,
    sweep_points,
    time_point,
    vq_encode_fit,
)

ROOT = HERE.parent
RESULTS = HERE / "results" / "bench_scaling.json"
FIGURE = ROOT / "docs" / "figures" / "performance_scaling.png"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a check that it runs")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(NAMES)}")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON report (default {RESULTS})")
    parser.add_argument("--plot", type=Path, default=FIGURE, help=f"figure (default {FIGURE})")
    parser.add_argument("--max-work", type=int, help="largest N*K*D timed (default: the grid's, 2^36)")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads: expected a positive integer, got {args.threads}")
    names = list(NAMES)
    if args.only:
        wanted = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = sorted(set(wanted) - set(NAMES))
        if unknown:
            parser.error(f"--only: unknown quantizers {unknown}; known: {', '.join(NAMES)}")
        names = [name for name in NAMES if name in wanted]
    if args.max_work is not None and args.max_work < 1:
        parser.error(f"--max-work: expected a positive integer, got {args.max_work}")
    args.names = names
    return args


def plan(grid: Grid, names: list[str]) -> tuple[list[Point], dict[str, dict[str, Any]], list[str]]:
    """The points to measure (sweeps, then memory-only ones), each one's description, and the skip notes."""
    points, notes = sweep_points(grid, names)
    points += [Point(*spec, axes=["memory"]) for spec in grid.memory_only if spec[0] in names]
    kept, described = [], {}
    for point in points:
        record = build(point, None).describe(point)
        if record["work"] > grid.max_work and point.axes != ["memory"]:
            note = f"skipped {point.key}: work N*K*D = {record['work']:.3g} > budget {grid.max_work:.3g}"
            notes.append(note + " (the grid's cap on its largest points, to bound the run time)")
            continue
        kept.append(point)
        described[point.key] = record
    for note in notes:
        print(f"-- {note}")
    return kept, described, notes


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every point of ``args`` measured: the report without its ``environment``."""
    grid = QUICK if args.quick else DEFAULT
    if args.max_work is not None:
        grid = dataclasses.replace(grid, max_work=args.max_work)
    points, records, notes = plan(grid, args.names)
    start = time.perf_counter()
    memory = bench_memory(points, args.threads)  # before this process holds any benchmark data
    print(f"-- memory child: {time.perf_counter() - start:.1f} s, {len(points)} points", flush=True)
    for point in points:
        record = records[point.key]
        record["memory"] = memory.get(point.key, {})
        if point.axes == ["memory"]:
            continue
        start = time.perf_counter()
        x = make_input(point.n, point.dim)
        record.update(time_point(point, build(point, x), x, grid))
        print(
            f"-- {point.key}: encode {record['encode_s'] * 1e3:.2f} ms, train step "
            f"{record['train_step_s'] * 1e3:.2f} ms, matmul {record['matmul_s'] * 1e3:.2f} ms "
            f"({time.perf_counter() - start:.1f} s)",
            flush=True,
        )
    report: dict[str, Any] = {"config": {"quick": bool(args.quick), "grid": dataclasses.asdict(grid)}}
    report |= {"points": list(records.values()), "skipped": notes}
    report["slopes"] = slopes(report["points"])
    report["vq_encode_fit"] = vq_encode_fit(report["points"])
    report["memory_bounds"] = memory_bounds(report["points"])
    return report


# --------------------------------------------------------------------------- figure
STYLES = {"n": ("-", "o"), "bits": ("--", "s"), "dim": (":", "^")}
AXIS_LABELS = {"n": "N sweep", "bits": "K (bits) sweep", "dim": "D sweep"}


def _time_panel(ax: Any, points: list[dict[str, Any]], measure: str, colors: dict[str, Any]) -> None:
    """Time of ``measure`` against the work, one line per quantizer and axis (not the implicit codebooks' bit
    axis, whose work is constant: the last panel has it); VQ's matmul in grey."""
    for name in colors:
        for axis, (style, marker) in STYLES.items():
            run_ = series(points, name, axis)
            if len(run_) < 2 or (axis == "bits" and name in IMPLICIT):
                continue
            works = [p["work"] for p in run_]
            ax.plot(works, [p[measure] for p in run_], style, marker=marker, ms=3, color=colors[name])
            if name == "vq":
                matmul = "matmul_s" if measure == "encode_s" else "matmul_step_s"
                ax.plot(works, [p[matmul] for p in run_], style, color="0.6", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="work N·K·D (multiply-adds)", ylabel="seconds (min)")
    ax.grid(True, which="both", alpha=0.3)


def _memory_panel(ax: Any, points: list[dict[str, Any]], colors: dict[str, Any]) -> None:
    """Encode peak RSS growth against the entries of the score matrix an unchunked search would hold."""
    for name in colors:
        for axis, (style, marker) in STYLES.items():
            run_ = [p for p in series(points, name, axis) if p["memory"].get("encode_bytes") is not None]
            if len(run_) >= 2:
                xs = [p["score_matrix_bytes"] / 4 for p in run_]
                ys = [max(p["memory"]["encode_bytes"], 4096) / 2**20 for p in run_]
                ax.plot(xs, ys, style, marker=marker, ms=3, color=colors[name])
    entries = sorted(p["score_matrix_bytes"] / 4 for p in points)
    if entries:
        ends = [entries[0], entries[-1]]
        ax.plot(ends, [e * 4 / 2**20 for e in ends], "k--", lw=1, label="full fp32 score matrix")
    for p in points:
        if p["axes"] == ["memory"] and p["memory"].get("encode_bytes") is not None:
            x, y = p["score_matrix_bytes"] / 4, max(p["memory"]["encode_bytes"], 4096) / 2**20
            ax.plot([x], [y], "*", ms=12, color=colors.get(p["name"], "k"))
            ax.annotate(
                f"{p['name']} N={p['n']}, K={2 ** p['bits']}",
                (x, y),
                fontsize=8,
                ha="right",
                xytext=(-8, 6),
                textcoords="offset points",
            )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="entries of the N x K score matrix (not held)",
        ylabel="encode peak RSS growth (MiB)",
        title="Eval-encode peak memory (dashed: an N x K fp32 score matrix)",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)


def _implicit_panel(ax: Any, points: list[dict[str, Any]], colors: dict[str, Any]) -> None:
    """FSQ and LFQ along their bit axis: encode (solid) and training step (dashed) against ``2^bits``."""
    for name in IMPLICIT:
        run_ = series(points, name, "bits")
        if name in colors and len(run_) >= 2:
            ks = [2.0 ** p["bits"] for p in run_]
            ax.plot(ks, [p["encode_s"] for p in run_], "-o", ms=3, color=colors[name], label=f"{name} encode")
            ax.plot(
                ks,
                [p["train_step_s"] for p in run_],
                "--s",
                ms=3,
                color=colors[name],
                label=f"{name} train step",
            )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="implicit codebook size 2^bits",
        ylabel="seconds (min)",
        title="Implicit codebooks (FSQ, LFQ): cost along the bit rate",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def plot(report: dict[str, Any], path: Path) -> bool:
    """The figure (Agg backend) written atomically to ``path``; ``False`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
    except ImportError:  # pragma: no cover - matplotlib is the train extra's
        print("-- no matplotlib: no figure")
        return False
    points = report["points"]
    names = list(dict.fromkeys(p["name"] for p in points))
    colors = {name: plt.get_cmap("tab10")(NAMES.index(name)) for name in names}
    fig, axes = plt.subplots(2, 2, figsize=(13, 10))
    fit_ = report.get("vq_encode_fit") or {}
    slope = f" (VQ slope {fit_['encode']['slope']:.2f})" if fit_.get("encode") else ""
    _time_panel(axes[0, 0], points, "encode_s", colors)
    axes[0, 0].set_title("Eval encode" + slope)
    _time_panel(axes[0, 1], points, "train_step_s", colors)
    axes[0, 1].set_title("Training step (forward + backward)")
    handles = [Line2D([], [], color=c, label=n) for n, c in colors.items()]
    handles += [
        Line2D([], [], color="k", ls=s, marker=m, ms=3, label=AXIS_LABELS[a]) for a, (s, m) in STYLES.items()
    ]
    handles.append(Line2D([], [], color="0.6", label="same-shape matmul (VQ)"))
    axes[0, 0].legend(handles=handles, fontsize=8, loc="upper left")
    _memory_panel(axes[1, 0], points, colors)
    _implicit_panel(axes[1, 1], points, colors)
    env = report.get("environment", {})
    fig.suptitle(f"vqkit CPU cost scaling, {env.get('threads', '?')} threads, {env.get('cpu_model', '')}")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return True


# --------------------------------------------------------------------------- main
def _fmt(entry: dict[str, Any] | None) -> str:
    return "  -  " if entry is None else f"{entry['slope']:5.2f}"


def print_summary(report: dict[str, Any]) -> None:
    """Slopes against the swept variable (encode / training step / matmul) and the memory bounds."""
    print(
        f"\n{'quantizer':<12} {'axis':<5} {'encode':>6} {'train':>6} {'matmul':>6}  (log-log slope vs N, K, D)"
    )
    for name, by_axis in report["slopes"].items():
        for axis, fits in by_axis.items():
            row = " ".join(f"{_fmt(fits[m]['vs_axis']):>6}" for m in MEASURES)
            print(f"{name:<12} {axis:<5} {row}")
    fit_ = report["vq_encode_fit"]
    if fit_ and fit_["encode"]:
        print(f"\nVQ encode vs N*K*D: slope {fit_['encode']['slope']:.3f} (r2 {fit_['encode']['r2']:.3f})")
    bounds = report["memory_bounds"]
    for name, b in [*bounds["largest"].items(), *((b["name"], b) for b in bounds["memory_only"])]:
        print(
            f"{name:<12} encode peak {b['encode_bytes'] / 2**20:8.1f} MiB at {b['at']}, "
            f"{b['ratio_to_input']:.2f} x input, {b['ratio_to_score_matrix']:.3g} x score matrix "
            f"({b['score_matrix_bytes'] / 2**20:.0f} MiB), holds it: {b['holds_nk_matrix']}"
        )


def _command(argv: list[str]) -> str:
    import shlex

    python, script = Path(sys.executable), Path(__file__).resolve()
    parts = [str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in (python, script)]
    return shlex.join([*parts, *argv])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(json.loads(sys.stdin.read()), args.threads)))
        return 0
    torch.set_num_threads(args.threads)
    load_before, started = os.getloadavg(), time.perf_counter()
    report = run(args)
    load_after = os.getloadavg()
    report["environment"] = environment(load_before, load_after, started, command=_command(argv))
    print_summary(report)
    warning = load_warning(load_before, load_after)
    if warning:
        print(warning)
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    if plot(report, args.plot):
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
