"""GPU speed of every quantizer, of the nearest-code search and the VQ training step, and the search's memory.

Run ``python benchmarks/bench_gpu.py`` on a CUDA machine (expected 1-3 minutes on an H100 / H200 class GPU; no
quantizer of section 4 starts after ``--budget-s``, 300 s; it prints the elapsed time); ``--device cpu --quick`` is
the smoke test (tiny sizes, the wall clock in place of CUDA events: a check that it runs, not numbers to quote).
It runs sections 2, 3, 4, then 1 (a graph capture that fails cannot disturb the others), writes
``benchmarks/results/bench_gpu.json`` (``--out``) atomically after each (and after every quantizer: a run stopped
half-way keeps what it measured), prints the tables and writes them as Markdown with ``--markdown PATH``. A
section or quantizer that raises is an entry of ``errors`` and the run goes on; no exit status from the targets.
fp32 matmuls run without TF32 (exact fp32 comparisons; TF32 is the user's choice).

**Timing.** ``gpu_cases.race_on``: the compared calls round-robin after warm-up, in a rotated order, each call
alone between two CUDA events with the device idle before it (so launch latency counts, as it does for a user's
single call), synchronized after; the **median** of the repeats. On CPU the wall clock.

1. **The small-batch target** (``gpu_cases.small_batch``): ``VQ(64, 1024, update="ema")`` at N=16384, fp32, eval
   encode and training step (forward, ``quantized.square().mean() + loss``, backward, EMA update) over the bare
   ``x @ C^T`` of the same shapes: target at most 2x. Eager as built (its NaN/Inf input check reads one value back
   per call), eager with ``allow_nonfinite=True`` (``unchecked``), and under ``--graphs``: ``cuda`` (default; each
   call captured once with ``torch.cuda.graph`` and replayed), ``compile`` (``torch.compile(mode="reduce-overhead")``,
   cudagraph trees) or ``none``. Each graphed call is first checked against the eager call from the same state
   (equal codes, EMA state within 1e-5: ``graph_matches_eager``). Steps over the matmul's step are recorded too.
2. **Search rows** (the earlier ``bench_gpu.py``'s): ``VQ(D, K, update="ema")`` against
   vector-quantize-pytorch's ``VectorQuantize`` (``quantizer_references``' adapter: the same codebook and EMA
   state, ``decay=0.99``, ``rotation_trick=False``), at (N, D, K) = (16384, 64, 1024) and (65536, 256, 16384), fp32
   and bf16 autocast: eval encode / bare matmul, its eval forward / vqkit encode, training step speedup, codes.
3. **Memory**: the peak extra CUDA memory of encoding 65536 vectors (D=64) against 65536 and 262144 codes
   (full score matrices: 16 and 64 GiB). ``null`` on CPU.
4. **Every quantizer** ``bench_quantizers.py`` runs (``quantizer_cases``: each registered name and option
   variant at N=16384, D=64, 10 bits, the same settings, k-means fits and same-shape matmul ``[N, D] @ [D, K]``;
   ``quantizer_references``: the same vector-quantize-pytorch equivalents holding the same state), built on the
   CPU, then a fresh copy of both moved to the device for each precision: fp32 and bf16 autocast (forward and
   loss under autocast, backward outside; the matmul under the same autocast). Eval encode, eval forward and
   training step medians; vqkit over the matmul (encode) and over the matmul's step; speedups (theirs / ours,
   above 1: vqkit faster); code agreement with vector-quantize-pytorch (eval; first training step from the same
   state) and with the CPU fp32 codes of the same state. A failing call (an op without bf16 support) is an entry
   of that row's ``errors``; the rest runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the sibling modules (this folder is not a package), also when loaded by path
    sys.path.insert(0, str(HERE))

from bench_common import cpu_model, vqp_version  # noqa: E402
from bench_quantizers import DEFAULTS, FIT_ROWS  # noqa: E402
from gpu_cases import Device, attempt, bench_precision, cpu_codes, small_batch  # noqa: E402
from quantizer_cases import Case, build_case, case_names, make_input, selected_names  # noqa: E402, F401 (case_names: the tests read it here)
from quantizer_references import build_reference  # noqa: E402
from quantizer_report import markdown_table, text_table  # noqa: E402

import vqkit  # noqa: E402
from vqkit.utils.atomic import atomic_write_text  # noqa: E402

RESULTS = HERE / "results" / "bench_gpu.json"
DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}
Shape = tuple[int, int, int]  # (N, D, K)


@dataclass(frozen=True)
class Sizes:
    target: Shape
    search: list[Shape]
    memory: list[Shape]
    repeats: tuple[int, int, int]  # encode repeats, training-step repeats, warm-up rounds


SIZES = {
    "full": Sizes(
        (16384, 64, 1024),
        [(16384, 64, 1024), (65536, 256, 16384)],
        [(65536, 64, 65536), (65536, 64, 262144)],
        (20, 10, 3),
    ),
    "quick": Sizes((256, 16, 64), [(256, 16, 64)], [(512, 16, 2048)], (2, 2, 1)),
}
QUICK = {"n": 256, "dim": 64, "bits": 10}
Save = Callable[[str | None], None]  # writes the report; prints the elapsed time after a section's label


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="torch device (default cuda; cpu: the smoke test)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats: runs, no numbers")
    parser.add_argument("--n", type=int, help=f"vectors of every-quantizer rows (default {DEFAULTS['n']})")
    parser.add_argument("--dim", type=int, help=f"D of every-quantizer rows (default {DEFAULTS['dim']})")
    parser.add_argument("--bits", type=int, help=f"bits per vector (default {DEFAULTS['bits']})")
    parser.add_argument("--only", help="comma-separated quantizers or variants for section 4 (default: all)")
    parser.add_argument("--graphs", choices=("cuda", "compile", "none"), default="cuda", help="the target's")
    parser.add_argument("--budget-s", type=float, default=300.0, help="start no quantizer after this (s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON report (default {RESULTS})")
    parser.add_argument("--markdown", type=Path, help="also write the tables as Markdown to this path")
    args = parser.parse_args(argv)
    for key, default in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    try:
        device = torch.device(args.device)
    except RuntimeError as err:
        parser.error(f"--device: expected a torch device such as cuda or cpu, got {args.device!r} ({err})")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here; --device cpu runs the smoke test")
    args.names = selected_names(parser, args.only)
    return args


def environment(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    device = Device(args.device)
    return {
        "timestamp_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(args.device) if device.is_cuda else f"cpu ({cpu_model()})",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "vector_quantize_pytorch": vqp_version(),
        "vqkit": vqkit.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "command": shlex.join(["python", "benchmarks/bench_gpu.py", *argv]),
        "quick": bool(args.quick),
        "tf32": False,
        "timing": "median of round-robin calls after warm-up, each alone: CUDA events (wall clock on CPU)",
    }


# --------------------------------------------------------------------------- sections 2 and 3
def search_row(device: Device, shape: Shape, dtype: str, repeats: tuple[int, int, int]) -> dict[str, Any]:
    """Section 2: ``VQ(D, K, update="ema")`` against ``VectorQuantize`` at ``shape = (N, D, K)``."""
    n, d, k = shape
    torch.manual_seed(0)
    q = vqkit.VQ(d, k, update="ema", init="gaussian")
    ref = build_reference(q)
    case = Case(f"vq[ema] {n}x{d} K={k}", {"update": "ema", "init": "gaussian"}, q, k, k, f"{k} candidates")
    row = bench_precision(case, make_input(n, d), device, DTYPES[dtype], repeats)
    return {"n": n, "d": d, "k": k, "vqp": getattr(ref, "cls", ref), **row}


def memory_row(device: Device, shape: Shape) -> dict[str, Any]:
    """Section 3: the peak extra device memory of one eval encode (``None`` on CPU) and its median time."""
    n, d, k = shape
    torch.manual_seed(0)
    q = vqkit.VQ(d, k, init="gaussian").to(device.name).eval()
    x = torch.randn(n, d, device=device.name)
    q.encode(x[:256])  # first-call allocations (workspaces) are not the search's
    device.sync()
    peak = None
    if device.is_cuda:
        torch.cuda.reset_peak_memory_stats(device.name)
        base = torch.cuda.memory_allocated(device.name)
        q.encode(x)
        device.sync()
        peak = (torch.cuda.max_memory_allocated(device.name) - base) / 2**20
    times = sorted(device.time_call(lambda: q.encode(x)) for _ in range(5))
    return {
        "n": n,
        "k": k,
        "peak_extra_mib": peak,
        "full_matrix_mib": n * k * 4 / 2**20,
        "encode_median_s": times[2],
    }


# --------------------------------------------------------------------------- section 4
def quantizer_row(name: str, args: argparse.Namespace, x: torch.Tensor, repeats: tuple[int, int, int]) -> Any:
    """Section 4 for one case: its row, or the note why it is skipped (``build_case``'s)."""
    case = build_case(name, args.dim, args.bits, x.reshape(args.n, args.dim)[:FIT_ROWS])
    if isinstance(case, str):
        return case
    ref = build_reference(case.quantizer)
    reference = {"class": ref.cls, "settings": ref.settings} if not isinstance(ref, str) else {"n/a": ref}
    codes = cpu_codes(case, x)
    row: dict[str, Any] = {"codebook_size": case.quantizer.codebook_label, "k_matmul": case.k}
    row |= {"kwargs": case.kwargs, "candidates": case.candidates, "k_rule": case.k_rule, "vqp": reference}
    for label, dtype in DTYPES.items():
        row[label] = bench_precision(case, x, Device(args.device), dtype, repeats, codes)
    return row


def quantizer_rows(args: argparse.Namespace, started: float, report: dict[str, Any], save: Save) -> None:
    """Section 4 into ``report["quantizers"]`` and ``report["skipped"]``, one case at a time, saved after each
    (a case that fails is an entry of ``report["errors"]``); none started after ``--budget-s`` since ``started``."""
    repeats = SIZES["quick" if args.quick else "full"].repeats
    x = make_input(args.n, args.dim)
    for name in args.names:
        if time.perf_counter() - started > args.budget_s:
            report["skipped"].append(f"skipped {name!r}: past --budget-s {args.budget_s:.0f}")
            continue
        begin = time.perf_counter()
        row = attempt(report["errors"], name, partial(quantizer_row, name, args, x, repeats))
        if isinstance(row, str):
            report["skipped"].append(row)
        elif row is not None:
            report["quantizers"][name] = row
            save(None)
            print(f"-- {name}: {time.perf_counter() - begin:.1f} s", flush=True)


# --------------------------------------------------------------------------- tables
def _fmt(value: Any, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def _at(section: Any, *keys: str) -> Any:
    """``section[k1][k2]...``, or ``None`` where a part is missing (a call that failed or has no equivalent)."""
    for key in keys:
        if not isinstance(section, dict) or key not in section:
            return None
        section = section[key]
    return section


def _ms(section: Any, call: str) -> str:
    seconds = _at(section, "timings", call, "median_s")
    return _fmt(None if seconds is None else seconds * 1e3, ".3f")


def _agree(encode: Any, train: Any) -> str:
    return f"{_fmt(_at(encode, 'agreement', 'vqp_eval_pct'), '.2f', '%')} / " + _fmt(
        _at(train, "agreement", "vqp_step1_pct"), ".2f", "%"
    )


def target_table(target: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["call (fp32)", "median ms", "÷ bare matmul", f"≤ {target['target_max_ratio_to_matmul']:g}×"]
    times = {**target["encode_median_s"], **target["step_median_s"]}
    rows = [["bare matmul x @ C^T", f"{times['matmul'] * 1e3:.3f}", "1.00", ""]]
    for name, ratio in target["ratio_to_matmul"].items():
        step = _at(target, "step_ratio_to_matmul_step", name)
        label = name if step is None else f"{name} ({step:.2f}× the matmul's step)"
        meets = "yes" if target["meets_target"][name] else "no"
        rows.append([label, f"{times[name] * 1e3:.3f}", f"{ratio:.2f}", meets])
    return header, rows


def search_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["N×D, K", "precision", "encode ms", "÷ matmul", "VectorQuantize eval ÷ encode"]
    header += ["codes agree (eval / step 1)", "step ms", "÷ matmul step", "VectorQuantize step ÷ ours"]
    table = []
    for r in rows:
        enc, train = r.get("encode"), r.get("train")
        row = [f"{r['n']}×{r['d']}, {r['k']}", r["dtype"], _ms(enc, "vqkit_encode")]
        row += [_fmt(_at(enc, "ratio_to_matmul"), ".2f"), _fmt(_at(enc, "encode_speedup"), ".2f", "×")]
        row += [_agree(enc, train), _ms(train, "vqkit_step"), _fmt(_at(train, "ratio_to_matmul_step"), ".2f")]
        table.append([*row, _fmt(_at(train, "train_speedup"), ".2f", "×")])
    return header, table


def memory_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["N", "K (D=64)", "peak extra MiB", "full score matrix MiB", "encode ms"]
    table = []
    for r in rows:
        sizes = [str(r["n"]), str(r["k"]), _fmt(r["peak_extra_mib"], ".1f"), f"{r['full_matrix_mib']:.0f}"]
        table.append([*sizes, f"{r['encode_median_s'] * 1e3:.2f}"])
    return header, table


def quantizer_tables(report: dict[str, Any]) -> list[tuple[list[str], list[list[str]]]]:
    speed_header, vqp_header = ["quantizer", "codes", "K"], ["quantizer", "vector-quantize-pytorch"]
    for p in DTYPES:
        speed_header += [
            f"{p} encode ms",
            "÷ matmul",
            "eval fwd ÷ matmul",
            "step ms",
            "÷ matmul step",
            "= CPU",
        ]
        vqp_header += [f"{p} encode ×", "eval fwd ×", "step ×", "codes agree (eval / step 1)"]
    speed, vqp = [], []
    for name, r in report["quantizers"].items():
        speed_row, vqp_row = (
            [name, r["codebook_size"], str(r["k_matmul"])],
            [name, r["vqp"].get("class", "n/a")],
        )
        notes = [r["vqp"]["n/a"]] if "n/a" in r["vqp"] else []
        for p in DTYPES:
            enc, train = r[p]["encode"], r[p]["train"]
            speed_row += [_ms(enc, "vqkit_encode"), _fmt(_at(enc, "ratio_to_matmul"), ".2f")]
            speed_row += [_fmt(_at(enc, "eval_forward_ratio_to_matmul"), ".2f"), _ms(train, "vqkit_step")]
            speed_row += [_fmt(_at(train, "ratio_to_matmul_step"), ".2f")]
            speed_row += [_fmt(_at(enc, "agreement", "cpu_pct"), ".2f", "%")]
            vqp_row += [
                _fmt(_at(enc, "encode_speedup"), ".2f", "×"),
                _fmt(_at(enc, "eval_forward_speedup"), ".2f"),
            ]
            vqp_row += [_fmt(_at(train, "train_speedup"), ".2f", "×"), _agree(enc, train)]
            notes += [f"{p} {key}: {err}" for key, err in r[p]["errors"].items()]
        speed.append(speed_row)
        vqp.append([*vqp_row, "; ".join(notes)])
    return [(speed_header, speed), ([*vqp_header, "note"], vqp)]


def tables(report: dict[str, Any]) -> list[tuple[str, tuple[list[str], list[list[str]]]]]:
    found = []
    if report["small_batch"] is not None:
        found.append(("1. Small-batch target", target_table(report["small_batch"])))
    found.append(("2. Search rows: VQ(update='ema') and VectorQuantize", search_table(report["search"])))
    found.append(("3. Eval-encode memory", memory_table(report["memory"])))
    speed, vqp = quantizer_tables(report)
    found += [("4. Every quantizer", speed), ("4. Against vector-quantize-pytorch (its time ÷ vqkit's)", vqp)]
    return found


def markdown_report(report: dict[str, Any]) -> str:
    env, config = report["environment"], report["config"]
    lines = [
        f"{env['device']}, torch {env['torch']} (CUDA {env['cuda']}), vector-quantize-pytorch "
        f"{env['vector_quantize_pytorch']}, {env['timestamp_utc'][:10]}; section 4 at N={config['n']}, "
        f"D={config['dim']}, {config['bits']} bits; {env.get('wall_s', 0.0):.0f} s wall.",
        "",
        f"Command: `{env['command']}`",
    ]
    for title, (header, rows) in tables(report):
        lines += ["", f"{title}:", "", markdown_table(header, rows)]
    if report["skipped"]:
        lines += ["", "Not run: " + "; ".join(report["skipped"]) + "."]
    if report["errors"]:
        lines += ["", "Errors: " + "; ".join(f"{key}: {err}" for key, err in report["errors"].items()) + "."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main
def run(args: argparse.Namespace, report: dict[str, Any], save: Save, started: float) -> None:
    """The four sections into ``report``, saving after each (``save(label)``; ``started``: for ``--budget-s``); a
    section's failure is an entry of ``report["errors"]``. The target runs last: a graph capture that fails cannot
    disturb the other sections."""
    device, sizes, errors = Device(args.device), SIZES["quick" if args.quick else "full"], report["errors"]
    for shape in sizes.search:
        for dtype in DTYPES:
            row = attempt(
                errors, f"search {shape} {dtype}", partial(search_row, device, shape, dtype, sizes.repeats)
            )
            report["search"] += [] if row is None else [row]
    save("2. search rows")
    for shape in sizes.memory:
        row = attempt(errors, f"memory {shape}", partial(memory_row, device, shape))
        report["memory"] += [] if row is None else [row]
    save("3. memory")
    quantizer_rows(args, started, report, save)
    save("4. every quantizer")
    target = partial(small_batch, device, sizes.target, args.graphs, sizes.repeats)
    report["small_batch"] = attempt(errors, "small-batch target", target)
    save("1. small-batch target")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    started = time.perf_counter()
    report: dict[str, Any] = {"environment": environment(args, argv), "small_batch": None}
    report["config"] = {
        key: getattr(args, key) for key in ("n", "dim", "bits", "quick", "graphs", "budget_s")
    }
    report |= {"search": [], "memory": [], "quantizers": {}, "skipped": [], "errors": {}}

    def save(label: str | None) -> None:
        report["environment"]["wall_s"] = time.perf_counter() - started
        atomic_write_text(args.out, json.dumps(report, indent=2, default=str) + "\n")
        if label is not None:
            print(f"-- {label}: {report['environment']['wall_s']:.1f} s elapsed", flush=True)

    run(args, report, save, started)
    for title, (header, rows) in tables(report):
        print(f"\n{title}:\n{text_table(header, rows)}")
    for line in report["skipped"] + [f"ERROR {key}: {err}" for key, err in report["errors"].items()]:
        print(line)
    print(f"wrote {args.out}")
    if args.markdown:
        atomic_write_text(args.markdown, markdown_report(report))
        print(f"wrote {args.markdown}")
    print(f"elapsed {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
