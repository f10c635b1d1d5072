"""Quality oracles: codewords reconstruct exactly, more bits give lower distortion."""

from __future__ import annotations

import pytest
import torch

import vqkit


def fit(q: vqkit.Quantizer, data: torch.Tensor, steps: int = 30) -> float:
    params = list(q.parameters())
    opt = torch.optim.Adam(params, lr=1e-2) if params else None
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        batch = data[torch.randint(len(data), (512,), generator=g)]
        out = q(batch)
        if opt is not None:
            opt.zero_grad()
            ((out.quantized - batch).pow(2).mean() + out.loss).backward()
            opt.step()
    q.eval()
    return float((q(data).quantized - data).pow(2).mean())


def test_codewords_reconstruct_exactly() -> None:
    q = vqkit.VQ(4, 16).eval()
    codebook = q.codebook.weight.detach()
    out = q(codebook)
    assert torch.equal(out.codes[:, 0], torch.arange(16))
    assert torch.equal(out.quantized, codebook)


@pytest.mark.parametrize(
    ("name", "rates"),
    [
        ("ema_vq", [{"codebook_size": 4}, {"codebook_size": 16}, {"codebook_size": 64}]),
        ("residual_vq", [{"codebook_size": 16, "num_quantizers": n} for n in (1, 2, 3)]),
        ("product_vq", [{"codebook_size": k, "num_groups": 2} for k in (2, 8, 32)]),
        ("fsq", [{"levels": [lv] * 4} for lv in (2, 3, 5)]),
        ("residual_fsq", [{"levels": [3] * 4, "num_quantizers": n} for n in (1, 2, 3)]),
    ],
)
def test_more_bits_lower_distortion(name: str, rates: list[dict[str, object]]) -> None:
    torch.manual_seed(0)
    data = torch.randn(2048, 4)
    extra = {"init": "kmeans"} if "vq" in name else {}
    mses, bits = [], []
    for kwargs in rates:
        q = vqkit.create_quantizer(name, dim=4, **kwargs, **extra)
        bits.append(q.bits_per_vector)
        mses.append(fit(q, data))
    assert bits == sorted(bits) and len(set(bits)) == len(bits)
    assert mses == sorted(mses, reverse=True), f"{name}: MSE {mses} at bits {bits}"
    assert mses[-1] < 0.6 * mses[0]


def test_residual_levels_each_reduce_the_residual() -> None:
    data = torch.randn(4096, 8)
    q = vqkit.ResidualVQ(8, 32, num_quantizers=4, update="ema", init="kmeans")
    fit(q, data)
    codes = q.encode(data)
    errors = []
    for n in range(1, 5):
        partial = sum(stage._decode(codes[:, i : i + 1]) for i, stage in enumerate(q.stages) if i < n)
        errors.append(float((data - partial).pow(2).mean()))  # type: ignore[operator]
    assert errors == sorted(errors, reverse=True), errors


def test_residual_fsq_single_stage_trains_like_fsq() -> None:
    # One stage of residual FSQ is FSQ: the same training must give the same model (the gradient goes
    # through the stage's tanh bound, not an identity straight-through that lets inputs grow unboundedly).
    data = torch.randn(2048, 4)
    torch.manual_seed(0)
    single = vqkit.ResidualFSQ(4, levels=[4] * 4, num_quantizers=1)
    torch.manual_seed(0)
    plain = vqkit.FSQ(4, levels=[4] * 4)
    gain_a, gain_b = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(4))
    for q, gain in ((single, gain_a), (plain, gain_b)):
        opt = torch.optim.Adam([gain], lr=0.05)
        for _ in range(40):
            out = q(data * gain)
            loss = (out.quantized - data).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.testing.assert_close(gain_a, gain_b)
    assert float(gain_a.detach().abs().max()) < 3.0
