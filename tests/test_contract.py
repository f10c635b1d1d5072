"""The contract every registered quantizer must honour (parametrized over the registry)."""

from __future__ import annotations

import math

import pytest
import torch

import vqkit
from tests.conftest import DIM, small_kwargs


def make(name: str, **overrides: object) -> vqkit.Quantizer:
    return vqkit.create_quantizer(name, **{**small_kwargs(name), **overrides})


def test_forward_shapes_dtypes_and_fields(quantizer_name: str) -> None:
    q = make(quantizer_name)
    x = torch.randn(3, 20, DIM)
    out = q(x)
    assert isinstance(out, vqkit.QuantizerOutput)
    assert out.quantized.shape == x.shape and out.quantized.dtype == x.dtype
    assert out.codes.shape == (3, 20, q.codes_per_vector) and out.codes.dtype == torch.long
    assert torch.isfinite(out.quantized).all()
    for name, value in out.losses.items():
        assert value.dim() == 0 and torch.isfinite(value), name
    assert {"utilization", "perplexity"} <= set(out.metrics)
    assert 0 < float(out.metrics["utilization"]) <= 1
    assert 1 <= float(out.metrics["perplexity"]) <= 60 + 1e-3  # at most the number of vectors
    assert torch.isfinite(out.loss)
    for j, size in enumerate(q.alphabet_sizes):
        assert int(out.codes[..., j].min()) >= 0 and int(out.codes[..., j].max()) < size


def test_every_trainable_parameter_gets_a_gradient(quantizer_name: str) -> None:
    q = make(quantizer_name)
    x = torch.randn(4, 32, DIM, requires_grad=True)
    out = q(x)
    (out.quantized.square().mean() + out.loss).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in q.named_parameters():
        assert p.grad is not None, f"{quantizer_name}: {name} got no gradient"
        assert torch.isfinite(p.grad).all(), name


def test_eval_round_trip_is_exact(quantizer_name: str) -> None:
    q = make(quantizer_name)
    x = torch.randn(2, 50, DIM)
    q.train()
    for _ in range(3):  # move codebook state away from its initial values first
        q(x)
    q.eval()
    out = q(x)
    codes = q.encode(x)
    assert torch.equal(codes, out.codes)
    assert torch.equal(q.decode(codes), out.quantized)


def test_eval_forward_has_no_side_effects(quantizer_name: str) -> None:
    q = make(quantizer_name).eval()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    q(torch.randn(64, DIM))
    q.encode(torch.randn(64, DIM))
    for k, v in q.state_dict().items():
        assert torch.equal(before[k], v), k


def test_bits_accounting(quantizer_name: str) -> None:
    q = make(quantizer_name)
    assert q.codes_per_vector == len(q.alphabet_sizes) >= 1
    assert q.bits_per_vector == pytest.approx(sum(math.log2(k) for k in q.alphabet_sizes))
    assert "×" in q.codebook_size or "+" in q.codebook_size
    assert q.num_codebook_parameters >= 0


@pytest.mark.parametrize("shape", [(2, DIM, 12), (2, DIM, 5, 6)])
def test_channels_first_layout_matches_channels_last(quantizer_name: str, shape: tuple[int, ...]) -> None:
    first = make(quantizer_name, layout="channels_first").eval()
    last = make(quantizer_name).eval()
    last.load_state_dict(first.state_dict())
    x = torch.randn(*shape)
    out_first = first(x)
    out_last = last(x.movedim(1, -1))
    assert out_first.quantized.shape == x.shape
    assert torch.equal(out_first.codes, out_last.codes)
    torch.testing.assert_close(out_first.quantized, out_last.quantized.movedim(-1, 1))
    assert torch.equal(first.decode(first.encode(x)), out_first.quantized)


def test_config_round_trip(quantizer_name: str) -> None:
    q = make(quantizer_name)
    clone = vqkit.Quantizer.from_config(q.to_config())
    assert type(clone) is type(q)
    assert clone.to_config() == q.to_config()
    assert clone.alphabet_sizes == q.alphabet_sizes


def test_save_load_round_trip(quantizer_name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    q = make(quantizer_name)
    x = torch.randn(40, DIM)
    q.train()
    q(x)
    q.eval()
    path = q.save(tmp_path / "q")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "weights.safetensors"]
    loaded = vqkit.load_quantizer(path).eval()
    assert torch.equal(loaded.encode(x), q.encode(x))
    assert torch.equal(loaded(x).quantized, q(x).quantized)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_input_returns_input_dtype(quantizer_name: str, dtype: torch.dtype) -> None:
    q = make(quantizer_name)
    x = torch.randn(4, 8, DIM).to(dtype)
    out = q(x)
    assert out.quantized.dtype == dtype
    assert torch.isfinite(out.quantized.float()).all()
    for value in out.losses.values():
        assert value.dtype == torch.float32


def test_autocast_keeps_codebook_math_in_fp32(quantizer_name: str) -> None:
    q = make(quantizer_name)
    x = torch.randn(4, 8, DIM)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(x)
    assert out.quantized.dtype == x.dtype
    q.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codes = q.encode(x)
    assert torch.equal(codes, q.encode(x))


@pytest.mark.parametrize("cast", ["double", "half", "bfloat16"])
def test_module_casts(quantizer_name: str, cast: str) -> None:
    q = make(quantizer_name)
    q = getattr(q, cast)()
    dtype = {"double": torch.float64, "half": torch.float16, "bfloat16": torch.bfloat16}[cast]
    # .double() computes in float64; half casts keep the codebook state in float32 (see Quantizer._apply).
    expected_state = torch.float64 if cast == "double" else torch.float32
    for name, t in q.state_dict().items():
        if t.is_floating_point():
            assert t.dtype == expected_state, name
    x = torch.randn(3, 7, DIM).to(dtype)
    out = q(x)
    assert out.quantized.dtype == dtype and torch.isfinite(out.quantized.float()).all()
    q.eval()
    assert torch.equal(q.decode(q.encode(x)).to(dtype), q(x).quantized)
