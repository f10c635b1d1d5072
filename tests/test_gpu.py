"""CUDA correctness and mixed-precision safety (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

import vqkit
from tests.conftest import DIM, small_kwargs

pytestmark = pytest.mark.gpu


def make(name: str) -> vqkit.Quantizer:
    return vqkit.create_quantizer(name, **small_kwargs(name))


def test_cuda_matches_cpu(quantizer_name: str) -> None:
    cpu = make(quantizer_name)
    x = torch.randn(4, 64, DIM)
    cpu.train()
    cpu(x)
    cpu.eval()
    gpu = make(quantizer_name)
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda().eval()
    codes_cpu, codes_gpu = cpu.encode(x), gpu.encode(x.cuda()).cpu()
    agree = (codes_cpu == codes_gpu).all(-1).float().mean()
    assert agree > 0.99  # TF32/rounding may flip near-ties only
    out = gpu(x.cuda())
    assert torch.equal(gpu.decode(out.codes), out.quantized)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_training_step_is_finite(quantizer_name: str, dtype: torch.dtype) -> None:
    q = make(quantizer_name).cuda()
    params = list(q.parameters())
    opt = torch.optim.Adam(params, lr=1e-3) if params else None
    for _ in range(5):
        x = torch.randn(8, 64, DIM, device="cuda", requires_grad=True)
        with torch.autocast("cuda", dtype=dtype):
            h = x * 1.0
            out = q(h)
            loss = (out.quantized.float() - x).pow(2).mean() + out.loss
        assert out.quantized.dtype == h.dtype
        loss.backward()
        assert torch.isfinite(loss) and x.grad is not None and torch.isfinite(x.grad).all()
        if opt is not None:
            opt.step()
            opt.zero_grad()
    for name, t in q.state_dict().items():
        if t.is_floating_point():
            assert torch.isfinite(t).all(), name


def test_half_precision_input_encodes_like_fp32() -> None:
    q = vqkit.VQ(64, 1024).cuda().eval()
    x = torch.randn(4096, 64, device="cuda")
    codes32 = q.encode(x)
    codes16 = q.encode(x.half())
    # Only the input rounding differs; the search itself runs in fp32.
    assert (codes32 == codes16).float().mean() > 0.95


def test_large_codebook_memory_bound() -> None:
    q = vqkit.VQ(64, 65536, init="gaussian").cuda().eval()
    x = torch.randn(65536, 64, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    q.encode(x)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    assert extra < 1 << 30, f"peak extra {extra / 2**20:.0f} MiB"
