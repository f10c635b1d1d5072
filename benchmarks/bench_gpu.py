"""GPU speed and memory of the nearest-code search and the VQ training step (run on a CUDA machine).

Prints ratios measured in one process: vqkit eval encode vs the bare ``x @ C.T`` of the same shapes and vs
vector-quantize-pytorch's ``VectorQuantize`` (when importable), a training step (forward, backward, EMA update)
vs the same, in fp32 and under bf16 autocast, and the peak extra memory of encoding 65,536 vectors against
65,536 codes. Writes ``benchmarks/results/bench_gpu.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import vqkit


def cuda_time(fn: Callable[[], object], repeats: int = 20) -> float:
    """Median seconds of ``fn`` with CUDA events after warm-up."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    return sorted(times)[len(times) // 2]


def encode_ratios(n: int, d: int, k: int) -> dict[str, float]:
    x = torch.randn(n, d, device="cuda")
    q = vqkit.VQ(d, k, init="gaussian").cuda().eval()
    codebook = q.codebook.weight.detach()
    t_mm = cuda_time(lambda: x @ codebook.t())
    t_ours = cuda_time(lambda: q.encode(x))
    result = {
        "n": n,
        "d": d,
        "k": k,
        "matmul_s": t_mm,
        "vqkit_encode_s": t_ours,
        "vqkit_over_matmul": t_ours / t_mm,
    }
    try:
        from vector_quantize_pytorch import VectorQuantize
    except ImportError:
        return result
    ref = VectorQuantize(dim=d, codebook_size=k, kmeans_init=False).cuda().eval()
    with torch.no_grad():
        ref._codebook.embed.copy_(codebook[None])
    xb = x[None]
    with torch.no_grad():
        t_ref = cuda_time(lambda: ref(xb))
        ref_codes = ref(xb)[1].reshape(-1)
    result.update(
        vqp_eval_s=t_ref,
        speedup_vs_vqp=t_ref / t_ours,
        code_agreement=float((ref_codes == q.encode(x)[:, 0]).float().mean()),
    )
    return result


def train_ratios(n: int, d: int, k: int, dtype: torch.dtype | None) -> dict[str, Any]:
    x = torch.randn(n, d, device="cuda", requires_grad=True)
    q = vqkit.VQ(d, k, update="ema", init="gaussian").cuda().train()

    def ours() -> None:
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            out = q(x)
            loss = out.quantized.float().square().mean() + out.loss
        loss.backward()

    result: dict[str, Any] = {"dtype": str(dtype), "vqkit_step_s": cuda_time(ours)}
    try:
        from vector_quantize_pytorch import VectorQuantize
    except ImportError:
        return result
    ref = (
        VectorQuantize(dim=d, codebook_size=k, decay=0.99, kmeans_init=False, rotation_trick=False)
        .cuda()
        .train()
    )
    xb = x.detach().reshape(1, n, d).requires_grad_(True)

    def theirs() -> None:
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            out, _, loss = ref(xb)
            total = out.float().square().mean() + loss.sum()
        total.backward()

    result["vqp_step_s"] = cuda_time(theirs)
    result["speedup_vs_vqp"] = result["vqp_step_s"] / result["vqkit_step_s"]
    return result


def memory_check(n: int, d: int, k: int) -> dict[str, float]:
    q = vqkit.VQ(d, k, init="gaussian").cuda().eval()
    x = torch.randn(n, d, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    t = cuda_time(lambda: q.encode(x), repeats=5)
    extra = torch.cuda.max_memory_allocated() - base
    return {
        "n": n,
        "k": k,
        "peak_extra_mib": extra / 2**20,
        "full_matrix_mib": n * k * 4 / 2**20,
        "encode_s": t,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_gpu.json"))
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # exact fp32 comparisons; TF32 is the user's choice
    report = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "encode": [encode_ratios(16384, 64, 1024), encode_ratios(65536, 256, 16384)],
        "train": [
            train_ratios(16384, 64, 1024, None),
            train_ratios(16384, 64, 1024, torch.bfloat16),
            train_ratios(65536, 256, 16384, torch.bfloat16),
        ],
        "memory": [memory_check(65536, 64, 65536), memory_check(65536, 64, 262144)],
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
