"""``torch.compile`` (inductor) against eager mode for every registered quantizer, measured in one process.

For each quantizer at 8 bits per vector (``vqkit.rates``), the eager module and ``torch.compile(q,
fullgraph=True)`` race round-robin (``bench_common.race``) on the same seeded input: the training step (forward,
``quantized.square().mean() + loss``, backward) and ``encode``. Compilation time is reported apart. Writes JSON
(and Markdown with ``--markdown``).

    python benchmarks/bench_compile.py [--n 16384] [--dim 64] [--repeats 10] [--only vq,fsq] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import environment, load_warning, race

import vqkit
from vqkit.rates import kwargs_at_rate
from vqkit.utils.atomic import atomic_write_text


def _step(
    fn: Callable[[torch.Tensor], vqkit.QuantizerOutput], q: vqkit.Quantizer, x: torch.Tensor
) -> Callable[[], object]:
    def run() -> object:
        q.zero_grad(set_to_none=True)
        out = fn(x.clone().requires_grad_(True))
        (out.quantized.square().mean() + out.loss).backward()
        return out

    return run


def bench_one(name: str, n: int, dim: int, repeats: int) -> dict[str, object]:
    kwargs = kwargs_at_rate(name, dim, 8)
    if isinstance(kwargs, str):
        return {"quantizer": name, "skipped": kwargs}
    torch.manual_seed(0)
    q = vqkit.create_quantizer(name, dim=dim, **kwargs)
    # [16, N/16, D]: a grid of positions as bench_quantizers.py feeds, so multi-scale quantizers get their 2-D maps.
    x = torch.randn(16, n // 16, dim, generator=torch.Generator().manual_seed(0))
    q(x[: max(1, 4096 // (n // 16))])  # first-batch k-means eagerly
    torch._dynamo.reset()
    started = time.perf_counter()
    compiled = torch.compile(q, fullgraph=True)
    _step(compiled, q, x)()
    compile_train = time.perf_counter() - started
    train = race({"eager": _step(q, q, x), "compiled": _step(compiled, q, x)}, repeats)
    q.eval()
    started = time.perf_counter()
    encode = torch.compile(q.encode, fullgraph=True)
    codes = encode(x)
    compile_encode = time.perf_counter() - started
    agree = float((codes == q.encode(x)).double().mean())
    enc = race({"eager": lambda: q.encode(x), "compiled": lambda: encode(x)}, repeats)
    return {
        "quantizer": name,
        "train_eager_ms": 1e3 * train["eager"].best,
        "train_compiled_ms": 1e3 * train["compiled"].best,
        "train_speedup": train["eager"].best / train["compiled"].best,
        "encode_eager_ms": 1e3 * enc["eager"].best,
        "encode_compiled_ms": 1e3 * enc["compiled"].best,
        "encode_speedup": enc["eager"].best / enc["compiled"].best,
        "codes_agree": agree,
        "compile_s": compile_train + compile_encode,
    }


def markdown(rows: list[dict[str, object]], n: int, dim: int) -> str:
    lines = [
        f"8 bits per vector, N={n}, D={dim}, {torch.get_num_threads()} threads; best of the race (ms):",
        "",
        "| quantizer | step eager | step compiled | speedup | encode eager | encode compiled | speedup |"
        " codes agree | compile (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['quantizer']} | {r['skipped']} | | | | | | | |")
            continue
        lines.append(
            f"| {r['quantizer']} | {r['train_eager_ms']:.2f} | {r['train_compiled_ms']:.2f} | "
            f"{r['train_speedup']:.2f} | {r['encode_eager_ms']:.2f} | {r['encode_compiled_ms']:.2f} | "
            f"{r['encode_speedup']:.2f} | {100 * float(r['codes_agree']):.2f}% | {r['compile_s']:.0f} |"  # type: ignore[arg-type]
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--n", type=int, default=16384, help="vectors per step")
    parser.add_argument("--dim", type=int, default=64, help="vector dimension D")
    parser.add_argument("--repeats", type=int, default=10, help="rounds of each race")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--only", default="", help="comma-separated registry names (default: all)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/bench_compile.json"))
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = [n for n in args.only.split(",") if n] or vqkit.list_quantizers()
    started, load_before = time.perf_counter(), os.getloadavg()
    rows = []
    for name in names:
        try:
            rows.append(bench_one(name, args.n, args.dim, args.repeats))
        except Exception as err:  # a quantizer that does not compile is a row that says why, not a crash
            first = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
            rows.append({"quantizer": name, "skipped": f"failed: {type(err).__name__}: {first}"})
        print(json.dumps(rows[-1]), flush=True)
    load_after = os.getloadavg()
    warning = load_warning(load_before, load_after)
    if warning:
        print(warning)
    report = {"environment": environment(load_before, load_after, started, command=sys.argv), "rows": rows}
    atomic_write_text(args.json, json.dumps(report, indent=2))
    if args.markdown is not None:
        atomic_write_text(args.markdown, markdown(rows, args.n, args.dim))


if __name__ == "__main__":
    main()
