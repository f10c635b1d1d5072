"""The contract every registered quantizer must honour (parametrized over the registry and its option grid)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from torch import nn

import vqkit
from tests.conftest import DIM, small_kwargs
from vqkit.functional import fsq as fsq_math
from vqkit.functional.estimators import rotated
from vqkit.quantizers.composite import ResidualQuantizer


def make(name: str, **overrides: object) -> vqkit.Quantizer:
    return vqkit.create_quantizer(name, **{**small_kwargs(name), **overrides})


def build(case: tuple[str, dict[str, object]]) -> vqkit.Quantizer:
    name, kwargs = case
    return vqkit.create_quantizer(name, **kwargs)


def test_forward_shapes_dtypes_and_fields(quantizer_case: tuple[str, dict[str, object]]) -> None:
    q = build(quantizer_case)
    x = torch.randn(3, 20, DIM)
    out = q(x)
    assert isinstance(out, vqkit.QuantizerOutput)
    assert out.quantized.shape == x.shape and out.quantized.dtype == x.dtype
    assert out.codes.shape == (3, 20, q.codes_per_vector) and out.codes.dtype == torch.long
    assert torch.isfinite(out.quantized).all()
    for name, value in out.losses.items():
        assert value.dim() == 0 and torch.isfinite(value), name
    assert {"utilization", "perplexity"} <= set(out.metrics)
    assert all(value.dim() == 0 for value in out.metrics.values()), "metrics are whole-quantizer scalars"
    assert 0 < float(out.metrics["utilization"]) <= 1
    assert 1 <= float(out.metrics["perplexity"]) <= 60 + 1e-3  # at most the number of vectors
    if q.codes_per_vector > 1:
        for name in ("utilization", "perplexity"):
            per = out.position_metrics[name]
            assert per.shape == (q.codes_per_vector,)
            torch.testing.assert_close(per.mean(), out.metrics[name])
    assert torch.isfinite(out.loss)
    for j, size in enumerate(q.alphabet_sizes):
        assert int(out.codes[..., j].min()) >= 0 and int(out.codes[..., j].max()) < size


def test_every_trainable_parameter_gets_a_nonzero_gradient(
    quantizer_case: tuple[str, dict[str, object]],
) -> None:
    q = build(quantizer_case)
    x = torch.randn(4, 32, DIM, requires_grad=True)
    out = q(x)
    ((out.quantized * torch.randn_like(x)).mean() + out.loss).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in q.named_parameters():
        assert p.grad is not None, f"{quantizer_case[0]}: {name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{quantizer_case[0]}: {name} got an all-zero gradient"


def _estimator(q: vqkit.Quantizer, e: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    """The configured estimator's surrogate: ``e`` itself (STE), or the rotation of ``e`` onto ``hard``."""
    return rotated(e, hard) if getattr(q, "gradient", "ste") == "rotation" else e


def _surrogate(q: vqkit.Quantizer, x: torch.Tensor) -> torch.Tensor:
    """The function whose gradient each quantizer's documented estimator passes to its input (an oracle
    written from the docs: identity or the rotation trick through the projections; FSQ's bound; residual FSQ's
    stage bounds). Called in eval mode, so the codes are those of the forward it is compared with."""
    if type(q) is vqkit.FSQ:  # latent quantization (an FSQ subclass) has a straight-through estimator
        h = q.project_in(x)
        return q.project_out(fsq_math.bound(h, q._levels) / fsq_math.half_width(q._levels))
    if isinstance(q, ResidualQuantizer) and q.gradient == "stages":
        h = q.project_in(x)
        residual, total = h, torch.zeros_like(h)
        for stage, scale in zip(q.stage_list, q.stage_scales, strict=True):
            assert isinstance(stage, vqkit.FSQ)
            s = (residual / scale).detach() + (h - h.detach()) / scale
            total = total + _surrogate(stage, s) * scale
            residual = residual - (stage._decode(stage._encode((residual / scale).detach())) * scale).detach()
        return q.project_out(total)
    if isinstance(q, ResidualQuantizer):
        h = q.project_in(x.reshape(-1, q.dim))
        codes = torch.cat(q.search(h.detach()), dim=1)
        levels = [
            stage._decode(codes[:, cols]) * scale
            for stage, scale, cols in zip(q.stage_list, q.stage_scales, q._code_slices(), strict=True)
        ]
        total = torch.stack(levels).sum(0)
        return q.project_out(_estimator(q, h, total)).reshape(x.shape)
    if isinstance(q, vqkit.VQ):
        h = q._to_code_space(x)
        hard = q.codebook.lookup(q.codebook.search(h.reshape(-1, h.shape[-1]))).reshape(h.shape)
        return q.project_out(_estimator(q, h, hard))
    if isinstance(q, vqkit.SimVQ):
        return _estimator(q, x, q.decode(q.encode(x)))
    if isinstance(q, (vqkit.ProductQuantizer, vqkit.GroupedResidualQuantizer)):
        parts = torch.split(x, [stage.dim for stage in q.stage_list], dim=-1)
        return torch.cat(
            [_surrogate(stage, part) for stage, part in zip(q.stage_list, parts, strict=True)], -1
        )
    if isinstance(q, vqkit.LooC):
        lead = x.shape[:-1]
        sub = q._split(q._blocks(q._adapt(x.reshape(-1, q.dim), lead)))
        hard = q.codebook.lookup(q.codebook.search(sub))
        return q._merge(_estimator(q, sub, hard)).reshape(x.shape)
    projections = [getattr(q, name, nn.Identity()) for name in ("project_in", "project_out")]
    return projections[1](projections[0](x))


def test_straight_through_gradient_oracle(quantizer_case: tuple[str, dict[str, object]]) -> None:
    """For ``loss = (q(x).quantized * g).sum()``, ``x.grad`` is the documented estimator's: ``g`` itself where it
    is the identity (the value oracle of the straight-through fix), its Jacobian-vector product elsewhere."""
    q = build(quantizer_case)
    q(torch.randn(4, 32, DIM))  # initialize (k-means) and move codebook state first
    q.eval()  # the gradient is the training one; eval keeps the state fixed between the two passes
    x = torch.randn(4, 32, DIM, requires_grad=True)
    g = torch.randn(4, 32, DIM)
    (q(x).quantized * g).sum().backward()
    reference = x.detach().clone().requires_grad_(True)
    (_surrogate(q, reference) * g).sum().backward()
    assert x.grad is not None and reference.grad is not None
    torch.testing.assert_close(x.grad, reference.grad, rtol=1e-5, atol=1e-6)


def test_eval_round_trip_is_exact(quantizer_case: tuple[str, dict[str, object]]) -> None:
    q = build(quantizer_case)
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


def test_every_code_decodes_to_its_own_vector_and_the_rate_is_honest(
    quantizer_case: tuple[str, dict[str, object]],
) -> None:
    """``bits_per_vector`` is log2 of the number of distinct decodable code tuples: every tuple of the alphabet
    decodes (and the next value is refused), and distinct tuples decode to distinct vectors (checked by
    enumeration where the alphabet is small, on random tuples otherwise)."""
    q = build(quantizer_case).eval()
    if q.shared_codes:
        _check_cell_rate(q)
        return
    sizes = q.alphabet_sizes
    assert q.codes_per_vector == len(sizes) >= 1
    total = math.prod(sizes)
    if total <= 4096:
        codes = torch.tensor(list(itertools.product(*(range(k) for k in sizes))))
    else:
        codes = torch.stack([torch.randint(k, (2048,)) for k in sizes], dim=1).unique(dim=0)
    distinct = q.decode(codes).unique(dim=0).shape[0]
    if isinstance(q, (vqkit.ResidualFSQ, vqkit.GroupedResidualFSQ)):
        # A known property, documented in docs/quantizers.md: stage i's grid (scaled by (L - 1) ** -i) overlaps
        # the coarser stages' steps, so some tuples decode alike and the nominal rate overstates the distinct
        # reconstructions. Pinned so that a change is seen.
        assert distinct < codes.shape[0]
    elif getattr(q, "shared_codebook", False):
        # Also documented: with one codebook for all levels the sum does not depend on the levels' order, so
        # (a, b) and (b, a) decode alike; the codes still carry the order (what a token model predicts).
        assert distinct < codes.shape[0]
    else:
        assert distinct == codes.shape[0], "two code tuples decode to one vector"
    assert math.log2(total) == pytest.approx(q.bits_per_vector)
    for j, k in enumerate(sizes):
        bad = codes[:1].clone()
        bad[0, j] = k
        with pytest.raises(ValueError, match=f"code {j} must lie in"):
            q.decode(bad)
    assert "×" in q.codebook_label or "+" in q.codebook_label


def _check_cell_rate(q: Any) -> None:
    """The same checks for codes shared by the cells of a grid (``shared_codes``, multi-scale quantizers), on
    the smallest grid whose cells tile exactly: the free symbols are the token maps of the scales
    (``scale_codes`` / ``codes_from_scales``), and ``bits_per_vector`` is log2 of their count per position."""
    grid = (q.period,) * q.spatial_dims
    shapes = q.scale_shapes(grid)
    cells = [math.prod(shape) for shape in shapes]
    k = q.alphabet_sizes[0]
    assert set(q.alphabet_sizes) == {k} and q.codes_per_vector == len(shapes)
    if k ** sum(cells) <= 4096:
        flat = torch.tensor(list(itertools.product(range(k), repeat=sum(cells))))
    else:
        flat = torch.randint(k, (2048, sum(cells))).unique(dim=0)
    tokens = [part.reshape(-1, *shape) for part, shape in zip(flat.split(cells, 1), shapes, strict=True)]
    codes = q.codes_from_scales(tokens, grid)
    assert all(torch.equal(a, b) for a, b in zip(q.scale_codes(codes), tokens, strict=True))
    distinct = q.decode(codes).reshape(flat.shape[0], -1).unique(dim=0).shape[0]
    assert distinct == flat.shape[0], "two token maps decode to one map"
    assert sum(cells) * math.log2(k) / math.prod(grid) == pytest.approx(q.bits_per_vector)
    for j in range(q.codes_per_vector):
        bad = codes[:1].clone()
        bad[..., j] = k
        with pytest.raises(ValueError, match=f"code {j} must lie in"):
            q.decode(bad)
    assert "×" in q.codebook_label


def test_codebook_parameter_count(quantizer_case: tuple[str, dict[str, object]]) -> None:
    """Every parameter plus the stored (frozen or EMA) code tables, and nothing of the statistics."""
    q = build(quantizer_case)
    stored = sum(
        b.numel()
        for name, b in q.named_buffers()
        if name.split(".")[-1] in ("weight", "codebook", "projection")
    )
    assert q.num_codebook_parameters == sum(p.numel() for p in q.parameters()) + stored


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


def test_config_round_trip(quantizer_case: tuple[str, dict[str, object]]) -> None:
    q = build(quantizer_case)
    config = q.to_config()
    clone = vqkit.quantizer_from_config(config)
    assert type(clone) is type(q)
    assert clone.to_config() == config
    assert clone.alphabet_sizes == q.alphabet_sizes
    assert {k: v.shape for k, v in clone.state_dict().items()} == {
        k: v.shape for k, v in q.state_dict().items()
    }
    # The config holds every argument the case passed, with the value the quantizer uses.
    for key, value in quantizer_case[1].items():
        stored = config["kwargs"][key]
        if key == "stages":  # a composite's stages, each written as its own full config
            value = [vqkit.quantizer_from_config(stage).to_config() for stage in value]
        assert stored == (list(value) if isinstance(value, tuple) else value), key


def test_save_load_round_trip(quantizer_name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    q = make(quantizer_name)
    x = torch.randn(40, DIM)
    q.train()
    q(x)
    q.eval()
    path = vqkit.save_quantizer(q, tmp_path / "q")
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


def test_compute_dtype_is_kept_and_dropped_on_change(quantizer_name: str) -> None:
    """``compute_dtype`` is found once: a cast (``_apply``) and an assigned state (``load_state_dict`` with
    ``assign=True``, which sets the tensors) are seen; a half cast keeps float32."""
    q = make(quantizer_name)
    assert q.compute_dtype == torch.float32
    assert q.double().compute_dtype == torch.float64
    assert q.float().compute_dtype == torch.float32
    assert q.half().compute_dtype == torch.float32
    state = {
        k: v.double() if v.is_floating_point() else v for k, v in make(quantizer_name).state_dict().items()
    }
    if any(v.is_floating_point() for v in state.values()):
        q.load_state_dict(state, assign=True)
        assert q.compute_dtype == torch.float64
