"""What the rotation trick costs against the straight-through estimator, measured in one process.

For each codebook quantizer that takes ``gradient=``, two copies with the same state, one ``"ste"`` and one
``"rotation"``, race round-robin (``bench_common.race``) on the same seeded input: a training step (forward,
``quantized.square().mean() + loss``, backward). The value is the same by construction (checked); the ratio
``rotation / ste`` is the estimator's overhead. Writes JSON (and Markdown with ``--markdown``).

    python benchmarks/bench_estimators.py [--n 16384] [--dim 64] [--repeats 15] [--json PATH] [--markdown PATH]
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
from vqkit.utils.atomic import atomic_write_text

CASES: dict[str, dict[str, object]] = {
    "vq 1x1024": {"name": "vq", "codebook_size": 1024},
    "ema_vq 1x1024": {"name": "ema_vq", "codebook_size": 1024},
    "simvq 1x1024": {"name": "simvq", "codebook_size": 1024},
    "residual_vq 4x256": {"name": "residual_vq", "codebook_size": 256, "num_quantizers": 4},
    "product_vq 4x256": {"name": "product_vq", "codebook_size": 256, "num_groups": 4},
    "looc 256, d*=4": {"name": "looc", "codebook_size": 256, "codebook_dim": 4},
    "ivq yin-yang, L=8": {"name": "ivq", "lines": 8},
}


def _step(q: vqkit.Quantizer, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        q.zero_grad(set_to_none=True)
        inp = x.clone().requires_grad_(True)
        out = q(inp)
        (out.quantized.square().mean() + out.loss).backward()
        return out

    return run


def bench(n: int, dim: int, repeats: int) -> list[dict[str, object]]:
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(0))
    rows = []
    for label, spec in CASES.items():
        kwargs = {k: v for k, v in spec.items() if k != "name"}
        torch.manual_seed(0)
        ste = vqkit.create_quantizer(str(spec["name"]), dim=dim, **kwargs)
        ste(x[:4096])  # k-means init and statistics first, then one state for both
        rot = vqkit.create_quantizer(str(spec["name"]), dim=dim, gradient="rotation", **kwargs)
        rot.load_state_dict(ste.state_dict())
        ste.eval(), rot.eval()  # fixed state, the same codes; the gradient is still the training one
        assert torch.equal(ste(x).quantized, rot(x).quantized)
        times = race({"ste": _step(ste, x), "rotation": _step(rot, x)}, repeats)
        rows.append(
            {
                "quantizer": label,
                "ste_ms": 1e3 * times["ste"].best,
                "rotation_ms": 1e3 * times["rotation"].best,
                "rotation / ste": times["rotation"].best / times["ste"].best,
            }
        )
        print(
            f"{label:22s} ste {rows[-1]['ste_ms']:8.2f} ms  rotation {rows[-1]['rotation_ms']:8.2f} ms  "
            f"ratio {rows[-1]['rotation / ste']:.2f}"
        )
    return rows


def markdown(rows: list[dict[str, object]], n: int, dim: int) -> str:
    lines = [
        f"Training step (eval-mode state, N={n}, D={dim}, {torch.get_num_threads()} threads), best of the race:",
        "",
        "| quantizer | STE (ms) | rotation (ms) | rotation / STE |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['quantizer']} | {row['ste_ms']:.2f} | {row['rotation_ms']:.2f} | {row['rotation / ste']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=16384, help="vectors per step")
    parser.add_argument("--dim", type=int, default=64, help="vector dimension D")
    parser.add_argument("--repeats", type=int, default=15, help="rounds of the race")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/bench_estimators.json"))
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started, load_before = time.perf_counter(), os.getloadavg()
    rows = bench(args.n, args.dim, args.repeats)
    load_after = os.getloadavg()
    warning = load_warning(load_before, load_after)
    if warning:
        print(warning)
    report = {"environment": environment(load_before, load_after, started, command=sys.argv), "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(report, indent=2))
    if args.markdown is not None:
        atomic_write_text(args.markdown, markdown(rows, args.n, args.dim))


if __name__ == "__main__":
    main()
