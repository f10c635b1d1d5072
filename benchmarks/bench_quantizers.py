"""CPU speed and memory of every registered quantizer at one rate, against the same-shape matmul and against
vector-quantize-pytorch where it has an equivalent.

Run ``.venv/bin/python benchmarks/bench_quantizers.py`` (N=16384 vectors, D=64, 10 bits per vector);
``--quick`` for tiny sizes and few repeats (a check that it runs, not numbers to quote); ``--n``, ``--dim``,
``--bits`` change the shape and rate; ``--only vq,fsq`` runs a subset; ``--markdown PATH`` writes the tables as
Markdown (for ``docs/performance.md``). It prints the tables and writes ``benchmarks/results/bench_quantizers.json``
(``--out PATH`` elsewhere, for a partial run) atomically, with the environment (versions, threads, CPU model, git
commit, load average before and after). It sets no targets and always exits 0 once it has run.

**Option variants.** An option that is no registered name of its own gets rows named ``name[label]``
(``quantizer_cases.VARIANTS``: ``residual_vq[shared_codebook]``, ``vq[orthogonal_weight=10]``, ...): the
registered quantizer at the rate with the variant's settings added, run after its base name and selected by
``--only`` like a name (quote it for the shell: ``--only 'vq[orthogonal_weight=10]'``); skipped with a note
when the settings do not fit the rate (a shared codebook needs one codebook size).

**Settings.** Every registered quantizer gets ``vqkit.rates.kwargs_at_rate(name, D, bits)``: the settings that
spend exactly ``bits`` bits per vector (one codebook of ``2^bits`` codes, two residual levels or product groups of
``bits/2`` bits, FSQ levels of four, LFQ sign bits, ...). A quantizer that cannot reach the rate is skipped with
a printed note (IVQ needs a multiple of 4 bits, so it is skipped at 10). Codebooks that are k-means initialized
(``init="kmeans"``) are fitted once, before timing, on the first ``min(N, 4096)`` benchmark vectors
(``init_codebook``), and other first-batch inits (LFQ's data init of its projection, ``warm_start``) run on the
same vectors, so the codes are data-scale and the timed training steps never run an init.

**Timing** is bench_search.py's (``bench_common.race``): one process, ``torch.set_num_threads(2)``, seeded
N(0, 1) input of shape ``[16, N/16, D]`` (``[1, N, D]`` when 16 does not divide N), the functions compared
called round-robin after warm-up (one call each per round, in a rotated order, so background load hits them
alike); each time is the minimum over the repeats (the least disturbed call), the median is in the JSON.
Throughput is ``N / time``.

1. **Eval encode**: ``q.eval().encode(x)``. Raced with the same-shape matmul, vqkit's eval forward (under
   ``no_grad``) and vector-quantize-pytorch's eval forward, when it has an equivalent (it has no encode-only
   path; its forward also returns the quantized vectors, so the eval-forward speedup is the like-for-like one).
2. **Training step**: ``q.train()``, forward, ``(out.quantized.square().mean() + out.loss).backward()`` to the
   input (``out.loss``: the quantizer's weighted losses), which also runs the codebook statistics / EMA /
   restart updates; gradients are reset to ``None`` before each step. Raced with the matmul's training step
   and vector-quantize-pytorch's step (``quantized.square().mean() + its returned losses summed``).
3. **Peak memory of the eval encode**: resident-memory (RSS) growth on Linux, in one child process for all
   quantizers (started before the parent holds any benchmark data). For each measured call (vqkit encode, the
   matmul, vector-quantize-pytorch's eval forward): the call once on 256 rows (library and thread start-up is
   not counted), ``malloc_trim``, reset the peak (``/proc/self/clear_refs`` = 5), read ``VmRSS``, the call on
   all N rows, read the peak ``VmHWM``; the growth is ``VmHWM - VmRSS``, which includes the call's output (the
   matmul's is the whole ``N x K`` float32 result). The child runs with ``MALLOC_MMAP_THRESHOLD_=65536``, so
   every buffer of 64 KiB or more is its own mapping, returned to the system when freed: without it glibc
   raises its threshold after the first large free and serves later buffers from memory it already holds,
   and a call measured after another would show little or no growth. ``null`` where the kernel does not
   allow the peak reset.

4. **The same-rate race**: when residual VQ runs with IVQ or LooC (their target is residual VQ's training step
   at the same rate), their training steps from fresh state in one round robin of five times the training
   repeats; each time over residual VQ's, from the best and from the median round (``same_rate`` in the JSON,
   one sentence under the tables). The ratio of two separate races (2) moves with the machine's load between
   them.

**The same-shape matmul** is ``x [N, D] @ W [D, K]`` (a fresh float32 result) with ``K`` the number of code
vectors the quantizer's search scores per input vector, summed over its code positions, scaled to the input
width: ``K = sum_j K_j d_j / D`` over code positions ``j`` with ``K_j`` candidates of ``d_j`` dims each. The matmul
then does the multiply-adds of an exhaustive nearest-code search (``N K D``), the floor a search on a BLAS matmul
reaches. With full-width codes (``d_j = D``) ``K`` is the candidate count: VQ 1024 → 1024; residual VQ 2×32 → 64;
SimVQ 1024 → 1024. Split searches count their width: product VQ with 2 groups of 32 codes of ``D/2`` dims → 32
(64 candidates of half width); LooC, two sub-vectors of ``D/2`` against 32 shared codes → 32; IVQ levels of
``blocks`` blocks of ``D/blocks`` dims → ``codes`` per level; factorized VQ (1024 codes of 8 dims) → 1024·8/D
= 128, its in/out projections not counted. FSQ, LFQ and their residual forms have implicit codebooks and no
search (a projection, a bound and rounding or a sign); for them ``K = D``: one projection-sized ``D x D`` matmul
(their actual projections map D to the 5 or 10 scalar channels, so the ratio says how many such matmuls the
encode costs). The raw candidate count and the rule are in the JSON. The matmul's training step is the forward,
``mean((x W)^2)``, and the backward to ``x`` (``W`` fixed). Ratios to the matmul are ours / matmul: below 1 is
faster (or smaller) than the matmul.

**vector-quantize-pytorch 1.32.0** (the ``bench`` extra) equivalents, built from the vqkit quantizer's own
settings and holding the same state; speedups are theirs / ours (above 1: vqkit faster). Which of its classes
matches which quantizer, with which settings, index mappings (LFQ's bit reversal) and remaining differences,
and why the others have none: ``quantizer_references.py`` and ``quantizer_references_extra.py`` (the classes
added since, VQ's options), one documented adapter per quantizer class.

Code agreement (the percentage of code entries equal, after the index mappings of ``quantizer_references.py``)
is measured on the eval forward and on the first training step from the same state (before the timed steps).

**Files.** This script parses the flags and runs the cases; its parts are sibling modules: ``quantizer_cases.py``
(input, settings, the option variants, the matmul width from ``q.search_cost()``), ``quantizer_timing.py`` (1,
2 and 4), ``quantizer_memory.py`` (3, and the child), ``quantizer_references.py`` and ``quantizer_references_extra.py``
(the vector-quantize-pytorch equivalents), ``quantizer_report.py`` (tables and warnings); ``bench_common.py`` is
shared with bench_search.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from vqkit.utils.atomic import atomic_write_text

HERE = Path(__file__).resolve().parent
# The parts of this script are sibling modules (the folder is not a package): a script run puts this folder on
# sys.path, loading it by path (the tests do) does not.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bench_common import THREADS, environment  # noqa: E402
from quantizer_cases import Case, build_case, make_input, matmul_width, selected_names  # noqa: E402
from quantizer_memory import bench_memory, memory_child, memory_summary  # noqa: E402
from quantizer_references import Reference, build_reference  # noqa: E402
from quantizer_report import markdown_report, print_report, same_rate_line, table_rows  # noqa: E402
from quantizer_timing import SAME_RATE, bench_case, same_rate_race  # noqa: E402

# What the tests and other scripts use of this one, whichever part it lives in.
__all__ = [
    "Case",
    "Reference",
    "bench_case",
    "build_case",
    "build_reference",
    "main",
    "make_input",
    "markdown_report",
    "matmul_width",
    "memory_child",
    "memory_summary",
    "same_rate_line",
    "same_rate_race",
    "table_rows",
]

ROOT = HERE.parent
RESULTS = HERE / "results" / "bench_quantizers.json"
FIT_ROWS = 4096  # k-means init sample
DEFAULTS = {"n": 16384, "dim": 64, "bits": 10}
QUICK = {"n": 1024, "dim": 64, "bits": 10}
REPEATS = {"full": (20, 8, 2), "quick": (3, 2, 1)}  # encode repeats, train repeats, warm-up rounds


def _command(argv: list[str]) -> str:
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(ROOT)
    script = Path(__file__).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(ROOT)
    return shlex.join([str(python), str(script), *argv])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, help=f"vectors (default {DEFAULTS['n']}; --quick {QUICK['n']})")
    parser.add_argument("--dim", type=int, help=f"D (default {DEFAULTS['dim']})")
    parser.add_argument("--bits", type=int, help=f"bits per vector (default {DEFAULTS['bits']})")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and few repeats: a check that it runs"
    )
    parser.add_argument("--only", help="comma-separated registered names or variants (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON report (default {RESULTS})")
    parser.add_argument("--markdown", type=Path, help="also write the tables as Markdown to this path")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULTS
    for key, default in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    args.names = selected_names(parser, args.only)
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every case of ``args`` measured: the report without its ``environment``."""
    n, dim, bits = args.n, args.dim, args.bits
    repeats = REPEATS["quick" if args.quick else "full"]
    print(f"N={n} D={dim} {bits} bits/vector, {THREADS} threads, repeats (encode, train, warm-up) {repeats}")

    # The memory child goes first, before this process holds any benchmark data (see the docstring).
    start = time.perf_counter()
    memory = bench_memory(n, dim, bits, args.names)
    print(f"-- memory child: {time.perf_counter() - start:.1f} s", flush=True)

    x = make_input(n, dim)
    fit = x.reshape(n, dim)[:FIT_ROWS]
    report: dict[str, Any] = {
        "config": {"n": n, "dim": dim, "bits": bits, "quick": bool(args.quick), "repeats": repeats},
        "quantizers": {},
        "skipped": [],
        "memory_child": {k: v for k, v in memory.items() if not isinstance(v, dict)},
    }
    for name in args.names:
        case = build_case(name, dim, bits, fit)
        if isinstance(case, str):
            print(f"-- {case}")
            report["skipped"].append(case)
            continue
        start = time.perf_counter()
        result = bench_case(case, x, repeats)
        result["memory"] = memory_summary(memory.get(name))
        report["quantizers"][name] = result
        print(f"-- {name}: {time.perf_counter() - start:.1f} s", flush=True)
    same_rate = [name for name in ("residual_vq", *SAME_RATE) if name in report["quantizers"]]
    if len(same_rate) > 1 and same_rate[0] == "residual_vq":
        cases = {name: build_case(name, dim, bits, fit) for name in same_rate}
        report["same_rate"] = same_rate_race(
            {k: c for k, c in cases.items() if isinstance(c, Case)}, x, repeats[1] * 5, repeats[2]
        )
    return report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.n, args.dim, args.bits, args.names)))
        return 0

    torch.set_num_threads(THREADS)
    load_before = os.getloadavg()
    started = time.perf_counter()
    report = run(args)
    report["environment"] = environment(load_before, os.getloadavg(), started, command=_command(argv))
    print_report(report)
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.markdown:
        atomic_write_text(args.markdown, markdown_report(report))
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
