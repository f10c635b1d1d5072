"""LooC: one low-dimensional codebook shared by every sub-vector, extrapolation-by-interpolation, sharing metrics."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import vqkit
from vqkit.functional.estimators import estimate
from vqkit.functional.search import nearest_code
from vqkit.functional.sharing import code_sharing_curve, mean_code_sharing, segment_usage, segment_utilization
from vqkit.quantizers.base import Quantizer
from vqkit.quantizers.codebook import Codebook
from vqkit.quantizers.looc import LooC
from vqkit.types import QuantizerOutput


def grid(layout: str, spatial_dims: int, batch: int = 2, dim: int = 16, size: int = 5) -> torch.Tensor:
    """A random feature map: [B, D, *S] for channels_first, [B, *S, D] for channels_last."""
    spatial = (size, size + 1) if spatial_dims == 2 else (size + 2,)
    x = torch.randn(batch, dim, *spatial)
    return x if layout == "channels_first" else x.movedim(1, -1)


def train_steps(q: Quantizer, x: torch.Tensor, steps: int = 3) -> None:
    q.train()
    opt = torch.optim.SGD(q.parameters(), lr=0.1)
    for _ in range(steps):
        out = q(x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()


# ---------------------------------------------------------------------------------------------- m = 1 is VQ
@pytest.mark.parametrize(
    "options",
    [
        {"distance": "cosine", "restart": "anchor"},
        {"distance": "l2", "restart": "none"},
        {"distance": "l2", "restart": "dead", "update": "ema"},
        {"distance": "cosine", "restart": "anchor", "init": "kmeans"},
    ],
)
def test_one_segment_without_interpolation_is_plain_vq(options: dict[str, object]) -> None:
    looc = LooC(8, 16, codebook_dim=8, **options)  # type: ignore[arg-type]
    vq = vqkit.create_quantizer("vq", dim=8, codebook_size=16, **options)
    vq_codebook = vq.codebook
    assert isinstance(vq_codebook, Codebook)
    vq_codebook.load_state_dict(looc.codebook.state_dict())
    opt_looc = torch.optim.SGD(looc.parameters(), lr=0.1) if list(looc.parameters()) else None
    opt_vq = torch.optim.SGD(vq.parameters(), lr=0.1) if list(vq.parameters()) else None
    for step in range(4):
        x = torch.randn(64, 8)
        outs = []
        for q, opt in ((looc, opt_looc), (vq, opt_vq)):
            torch.manual_seed(step)  # dead-code restarts draw random candidates
            out = q(x)
            if opt is not None:
                opt.zero_grad()
                out.loss.backward()
                opt.step()
            outs.append(out)
        a, b = outs
        assert torch.equal(a.quantized, b.quantized)
        assert torch.equal(a.codes, b.codes)
        assert a.losses.keys() == b.losses.keys()
        for name in a.losses:
            # LooC takes the pair's value from one square sum (``LooC._loss_pair``), VQ from ``mse_loss``.
            torch.testing.assert_close(a.losses[name], b.losses[name], rtol=1e-6, atol=0.0, msg=name)
        assert a.loss_weights == b.loss_weights
    assert torch.equal(looc.codebook.weight, vq_codebook.weight)
    looc.eval()
    vq.eval()
    x = torch.randn(32, 8)
    assert torch.equal(looc(x).quantized, vq(x).quantized)
    assert torch.equal(looc.encode(x), vq.encode(x))
    assert torch.equal(looc.decode(looc.encode(x)), vq.decode(vq.encode(x)))


# ---------------------------------------------------------------------------------------------- rate
@pytest.mark.parametrize(
    ("dim", "codebook_dim", "scale", "spatial_dims", "codes"),
    [
        (16, 4, 1, 2, 4),
        (16, 16, 1, 2, 1),
        (16, 4, 2, 2, 16),
        (16, 4, 2, 1, 8),
        (16, 8, 3, 2, 18),
        (16, 2, 3, 1, 24),
    ],
)
def test_rate_counts_every_code_the_decoder_needs(
    dim: int, codebook_dim: int, scale: int, spatial_dims: int, codes: int
) -> None:
    q = LooC(dim, 32, codebook_dim, scale=scale, spatial_dims=spatial_dims)
    assert q.codes_per_vector == q.num_segments == q.codes_per_position == codes
    assert q.channel_chunks * q.subpixels == codes and q.subpixels == scale**spatial_dims
    assert q.alphabet_sizes == (32,) * codes
    assert q.bits_per_vector == pytest.approx(codes * math.log2(32))
    assert q.codebook_label == f"{codes}×32"
    assert q.num_codebook_parameters == 32 * codebook_dim


@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_codes_have_one_group_per_original_position(scale: int, spatial_dims: int) -> None:
    q = LooC(16, 32, 4, scale=scale, spatial_dims=spatial_dims, layout="channels_first")
    x = grid("channels_first", spatial_dims)
    out = q(x)
    spatial = tuple(x.shape[2:])
    c = 4 * scale**spatial_dims
    assert out.quantized.shape == x.shape
    assert out.codes.shape == (2, *spatial, c) and q.encode(x).shape == (2, *spatial, c)
    assert q.decode(out.codes).shape == x.shape


# ---------------------------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("split", ["channels", "unshuffle"])
@pytest.mark.parametrize(("scale", "spatial_dims"), [(2, 2), (2, 1), (3, 2)])
def test_interpolated_round_trip_is_exact(layout: str, split: str, scale: int, spatial_dims: int) -> None:
    q = LooC(16, 32, 4, scale=scale, spatial_dims=spatial_dims, split=split, layout=layout)  # type: ignore[arg-type]
    x = grid(layout, spatial_dims)
    before = q.codebook.weight.detach().clone()
    train_steps(q, x)  # anchors and gradients move the codes first
    assert not torch.equal(before, q.codebook.weight)
    q.eval()
    out = q(x)
    codes = q.encode(x)
    assert torch.equal(codes, out.codes)
    assert torch.equal(q.decode(codes), out.quantized)


def test_layouts_agree_with_interpolation() -> None:
    first = LooC(16, 32, 4, scale=2, layout="channels_first").eval()
    last = LooC(16, 32, 4, scale=2).eval()
    last.load_state_dict(first.state_dict())
    x = grid("channels_first", 2)
    out_first, out_last = first(x), last(x.movedim(1, -1))
    assert torch.equal(out_first.codes, out_last.codes)
    torch.testing.assert_close(out_first.quantized, out_last.quantized.movedim(-1, 1))


# ---------------------------------------------------------------------------------------------- split modes
def _oracle_subvectors(x: torch.Tensor, split: str, d: int, s: int) -> torch.Tensor:
    """Sub-vectors [B, H, W, C, d] by explicit indexing of the bilinearly upsampled map (x: [B, D, H, W])."""
    up = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
    b, dim, h, w = x.shape
    m = dim // d
    out = torch.empty(b, h, w, m * s * s, d)
    for bi in range(b):
        for hi in range(h):
            for wi in range(w):
                if split == "channels":  # sub-vector p * m + g: channels [g d, (g + 1) d) of sub-pixel p
                    for i in range(s):
                        for j in range(s):
                            for g in range(m):
                                out[bi, hi, wi, (i * s + j) * m + g] = up[
                                    bi, g * d : (g + 1) * d, s * hi + i, s * wi + j
                                ]
                else:  # pixel_unshuffle vector v[c s^2 + i s + j], cut into d-chunks
                    v = torch.empty(dim * s * s)
                    for c in range(dim):
                        for i in range(s):
                            for j in range(s):
                                v[c * s * s + i * s + j] = up[bi, c, s * hi + i, s * wi + j]
                    out[bi, hi, wi] = v.reshape(-1, d)
    return out


@pytest.mark.parametrize("split", ["channels", "unshuffle"])
def test_subvectors_match_an_explicit_indexing_oracle(split: str) -> None:
    q = LooC(8, 64, 4, distance="l2", scale=2, split=split, layout="channels_first").eval()  # type: ignore[arg-type]
    with torch.no_grad():
        q.codebook.weight.copy_(torch.randn(64, 4))
    x = torch.randn(2, 8, 3, 4)
    oracle = _oracle_subvectors(x, split, d=4, s=2)  # [B, H, W, C, d]
    # The quantizer's own sub-vectors, in code-column order.
    blocks = q._interpolated_blocks(x.movedim(1, -1).reshape(-1, 8), torch.Size([2, 3, 4]))
    torch.testing.assert_close(q._split(blocks).reshape(oracle.shape), oracle)
    # And observably: the codes are the oracle sub-vectors' nearest codes.
    expected = nearest_code(oracle.reshape(-1, 4), q.codebook.weight, distance="l2").codes
    assert torch.equal(q.encode(x), expected.reshape(2, 3, 4, 8))
    if split == "unshuffle":  # with s=2, d=4: each sub-vector is the 2x2 patch of one channel
        up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        torch.testing.assert_close(oracle[1, 2, 3, 5], up[1, 5, 4:6, 6:8].reshape(4))


def test_the_two_split_modes_differ() -> None:
    channels = LooC(8, 64, 4, distance="l2", scale=2, layout="channels_first").eval()
    unshuffle = LooC(8, 64, 4, distance="l2", scale=2, split="unshuffle", layout="channels_first").eval()
    unshuffle.load_state_dict(channels.state_dict())
    with torch.no_grad():
        channels.codebook.weight.copy_(torch.randn(64, 4))
        unshuffle.codebook.weight.copy_(channels.codebook.weight)
    x = torch.randn(2, 8, 3, 4)
    assert not torch.equal(channels.encode(x), unshuffle.encode(x))
    assert not torch.allclose(channels(x).quantized, unshuffle(x).quantized)
    # At scale 1 they are the same quantizer.
    one_c = LooC(8, 64, 4, distance="l2").eval()
    one_u = LooC(8, 64, 4, distance="l2", split="unshuffle").eval()
    one_u.load_state_dict(one_c.state_dict())
    y = torch.randn(20, 8)
    assert torch.equal(one_c.encode(y), one_u.encode(y))


@pytest.mark.parametrize("spatial_dims", [1, 2])
@pytest.mark.parametrize("scale", [2, 3])
def test_constant_map_quantizes_like_scale_one(spatial_dims: int, scale: int) -> None:
    # Interpolating a spatially constant map gives the same vector at every sub-pixel, so each sub-pixel's m codes
    # are the scale=1 codes, and the mean over identical sub-pixels is the scale=1 quantization.
    flat = LooC(16, 32, 4, distance="l2").eval()
    big = LooC(
        16, 32, 4, distance="l2", scale=scale, spatial_dims=spatial_dims, layout="channels_first"
    ).eval()
    with torch.no_grad():
        flat.codebook.weight.copy_(torch.randn(32, 4))
    big.load_state_dict(flat.state_dict())
    vectors = torch.randn(2, 16)
    spatial = (3, 4) if spatial_dims == 2 else (5,)
    x = vectors.reshape(2, 16, *([1] * spatial_dims)).expand(2, 16, *spatial).contiguous()
    out = big(x)
    per_vector = flat(vectors)
    p = scale**spatial_dims
    codes = out.codes.reshape(2, -1, p, 4)  # (sub-pixel, segment) column order
    assert torch.equal(codes, per_vector.codes[:, None, None, :].expand_as(codes))
    expected = per_vector.quantized.reshape(2, 16, *([1] * spatial_dims)).expand_as(x)
    torch.testing.assert_close(out.quantized, expected)


# ---------------------------------------------------------------------------------------------- merge
@pytest.mark.parametrize("split", ["channels", "unshuffle"])
def test_merge_is_the_authors_pixel_shuffle_and_average_pool(split: str) -> None:
    b, h, w, s, dim = 2, 3, 4, 2, 8
    q = LooC(dim, 16, 4, scale=s, split=split).eval()  # type: ignore[arg-type]
    codes = torch.randint(16, (b, h, w, q.codes_per_vector))
    decoded = q.decode(codes)  # [B, H, W, D]
    looked_up = q.codebook.weight.detach()[codes]  # [B, H, W, C, d]
    if split == "unshuffle":
        unshuffled = looked_up.reshape(b, h, w, dim * s * s)  # order c s^2 + i s + j
    else:  # (sub-pixel, channel) -> (channel, sub-pixel)
        unshuffled = looked_up.reshape(b, h, w, s * s, dim).transpose(-1, -2).reshape(b, h, w, dim * s * s)
    authors = F.avg_pool2d(F.pixel_shuffle(unshuffled.permute(0, 3, 1, 2), s), kernel_size=s)
    torch.testing.assert_close(decoded, authors.permute(0, 2, 3, 1))


def test_regrouping_matches_pixel_unshuffle_and_its_1d_analogue() -> None:
    q2 = LooC(8, 16, 4, scale=2, split="unshuffle")
    x = torch.randn(2, 8, 3, 5)
    blocks = q2._interpolated_blocks(x.movedim(1, -1).reshape(-1, 8), torch.Size([2, 3, 5]))
    authors = F.pixel_unshuffle(F.interpolate(x, scale_factor=2, mode="bilinear"), 2)  # [B, D*4, H, W]
    torch.testing.assert_close(blocks.reshape(2, 3, 5, 32), authors.permute(0, 2, 3, 1))
    q1 = LooC(8, 16, 4, scale=3, spatial_dims=1)
    t = torch.randn(2, 8, 7)
    blocks = q1._interpolated_blocks(t.movedim(1, -1).reshape(-1, 8), torch.Size([2, 7]))
    up = F.interpolate(t, scale_factor=3, mode="linear", align_corners=False)  # [B, D, 3T]
    expected = up.reshape(2, 8, 7, 3).permute(0, 2, 1, 3)  # order c s + i
    torch.testing.assert_close(blocks.reshape(2, 7, 8, 3), expected)
    # 1-D merge = avg_pool1d of the upsampled map.
    codes = torch.randint(16, (2, 7, q1.codes_per_vector))
    looked_up = q1.codebook.weight.detach()[codes].reshape(2, 7, 3, 8)  # (sub-pixel, channel)
    authors_1d = F.avg_pool1d(looked_up.permute(0, 3, 1, 2).reshape(2, 8, 21), kernel_size=3)
    torch.testing.assert_close(q1.decode(codes), authors_1d.movedim(1, -1))


# ---------------------------------------------------------------------------------------------- sharing metrics
def test_sharing_functions_on_a_hand_computed_example() -> None:
    codes = torch.tensor([[0, 1], [0, 0], [2, 1]])  # N=3 vectors, C=2 segments, K=4 codes
    counts = segment_usage(codes, 4)
    assert counts.dtype == torch.float64
    assert torch.equal(
        counts, torch.tensor([[2.0, 0.0, 1.0, 0.0], [1.0, 2.0, 0.0, 0.0]], dtype=torch.float64)
    )
    torch.testing.assert_close(segment_utilization(counts), torch.tensor([0.5, 0.5]))
    # code 0 is used by both segments, codes 1 and 2 by one, code 3 by none
    torch.testing.assert_close(code_sharing_curve(counts), torch.tensor([0.75, 0.25]))
    torch.testing.assert_close(mean_code_sharing(counts), torch.tensor((1.0 + 0.5 + 0.5) / 3))
    assert float(mean_code_sharing(torch.zeros(3, 5))) == 0.0
    # Separate codes per segment (what separate codebooks amount to): sharing 1/C.
    disjoint = segment_usage(torch.tensor([[0, 1, 2], [0, 1, 2]]), 3)
    assert float(mean_code_sharing(disjoint)) == pytest.approx(1 / 3)
    torch.testing.assert_close(code_sharing_curve(disjoint), torch.tensor([1.0, 0.0, 0.0]))


def test_sharing_functions_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="codes: code 1 must lie in"):
        segment_usage(torch.tensor([[0, 4]]), 4)
    with pytest.raises(ValueError, match=r"codes: expected shape \[N, C\]"):
        segment_usage(torch.tensor([0, 1]), 4)
    with pytest.raises(TypeError, match="codes: expected an integer tensor"):
        segment_usage(torch.zeros(2, 2), 4)
    with pytest.raises(ValueError, match="num_codes"):
        segment_usage(torch.zeros(2, 2, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="counts: expected a"):
        code_sharing_curve(torch.zeros(4))


@pytest.mark.parametrize("scale", [1, 2])
def test_forward_metrics(scale: int) -> None:
    q = LooC(16, 32, 4, scale=scale, layout="channels_first")
    x = grid("channels_first", 2)
    out = q(x)
    metrics = out.metrics
    c = q.codes_per_vector
    assert {"utilization", "perplexity", "codebook_utilization", "code_sharing"} <= set(metrics)
    assert out.position_metrics["utilization"].shape == (c,)
    for value in metrics.values():
        assert value.dim() == 0 and not value.requires_grad
    codes = out.codes.reshape(-1, c)
    counts = segment_usage(codes, 32)
    assert float(metrics["codebook_utilization"]) == pytest.approx(float(code_sharing_curve(counts)[0]))
    assert 1 / c <= float(metrics["code_sharing"]) <= 1
    assert 0 < float(metrics["utilization"]) <= float(metrics["codebook_utilization"]) <= 1
    # The vectorized per-slot metrics equal the base class's loop.
    base, per_position = Quantizer._usage_metrics(q, codes)
    for name, value in base.items():
        torch.testing.assert_close(metrics[name], value, msg=name)
    for name, value in per_position.items():
        torch.testing.assert_close(out.position_metrics[name], value, msg=name)


# ---------------------------------------------------------------------------------------------- training
def test_gradients_reach_input_and_codebook_through_interpolation() -> None:
    q = LooC(16, 32, 4, scale=2, layout="channels_first")
    x = grid("channels_first", 2).requires_grad_(True)
    out = q(x)
    (out.quantized.square().mean() + out.loss).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert q.codebook.weight.grad is not None and q.codebook.weight.grad.abs().sum() > 0


def test_anchors_move_unused_codes_in_training_and_nothing_moves_in_eval() -> None:
    q = LooC(8, 64, 4, scale=2, spatial_dims=1, layout="channels_first")
    x = torch.randn(2, 8, 6) * 3
    q.eval()
    state = {k: v.clone() for k, v in q.state_dict().items()}
    q(x)
    q.encode(x)
    for k, v in q.state_dict().items():
        assert torch.equal(state[k], v), k
    before = q.codebook.weight.detach().clone()
    q.train()
    with torch.no_grad():
        codes = q(x).codes  # no optimizer step: only the anchor update can move codes
    unused = segment_usage(codes.reshape(-1, q.codes_per_vector), 64).sum(0) == 0
    assert 0 < int(unused.sum()) < 64
    step = (q.codebook.weight.detach() - before).norm(dim=1)
    # Codes no sub-vector chose (usage EMA zero) jump onto their nearest sub-vector, at the data's scale
    # (U(-1/K, 1/K) before); codes the batch used barely move.
    assert bool((step[unused] > 10 * before.abs().max()).all())
    assert float(step[~unused].max()) < 0.2 * float(step[unused].min())


def test_kmeans_init_on_channel_chunks() -> None:
    q = LooC(8, 4, 4, distance="l2", init="kmeans")
    centers = torch.tensor([[5.0, 0, 0, 0], [0, 5.0, 0, 0], [0, 0, 5.0, 0], [0, 0, 0, 5.0]])
    vectors = torch.cat([centers[torch.randint(4, (200,))], centers[torch.randint(4, (200,))]], dim=1)
    q.init_codebook(vectors + 0.01 * torch.randn(200, 8))
    assert bool(q.codebook.initialized)
    found = q.codebook.weight.detach()
    assert torch.cdist(centers, found).min(dim=1).values.max() < 0.1
    with pytest.raises(ValueError, match=r"vectors: expected \[N, 8\]"):
        q.init_codebook(torch.randn(4, 6))


def test_compositional_codes_beat_one_code_at_the_same_codebook_size() -> None:
    # 16-D vectors made of four 4-D chunks, each one of 8 cluster centres: 16 codes of 4 dims cover every chunk,
    # 16 codes of 16 dims cannot cover 8^4 combinations. Measured over seeds 0-4: LooC MSE 0.008-0.009 (the
    # noise floor is 0.01), VQ 1.4-1.9.
    centers = torch.randn(8, 4) * 2
    data = centers[torch.randint(8, (2048, 4))].reshape(2048, 16) + 0.1 * torch.randn(2048, 16)
    errors = {}
    for name, kwargs in (("looc", {"codebook_dim": 4, "restart": "none"}), ("vq", {})):
        q = vqkit.create_quantizer(name, dim=16, codebook_size=16, distance="l2", init="kmeans", **kwargs)
        opt = torch.optim.Adam(q.parameters(), lr=1e-2)
        for _ in range(30):
            out = q(data[torch.randint(2048, (256,))])
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        errors[name] = float((q.eval()(data).quantized - data).square().mean())
    assert errors["looc"] < 0.05 < 0.5 < errors["vq"]


def _codebook_quantize(q: LooC, v: torch.Tensor) -> QuantizerOutput:
    """The sub-vectors through ``Codebook.quantize`` (two ``mse_loss`` terms, the lookup under autograd) and the
    estimator: what ``LooC._quantize`` replaces with ``vq_loss_pair``."""
    sub = q._split(q._blocks(v))
    codes, looked_up, losses = q.codebook.quantize(sub)
    quantized = q._merge(estimate(looked_up, sub, q.gradient))
    return QuantizerOutput(quantized=quantized, codes=codes.view(v.shape[0], q.num_segments), losses=losses)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"init": "kmeans"},
        {"scale": 2, "spatial_dims": 1},
        {"split": "unshuffle", "scale": 2, "spatial_dims": 1},
        {"gradient": "rotation", "scale": 2, "spatial_dims": 1},
        {"distance": "l2", "restart": "dead", "update": "ema"},
    ],
)
def test_fused_loss_pair_equals_codebook_quantize(kwargs: dict[str, object]) -> None:
    """Same codes, ``quantized`` and codebook state bit for bit; losses and gradients to rounding."""
    new = LooC(16, 32, codebook_dim=4, **kwargs)  # type: ignore[arg-type]
    old = copy.deepcopy(new)
    g = torch.Generator().manual_seed(5)
    for step in range(3):
        x = torch.randn(2, 12, 16, generator=g)
        results = []
        for q, quantize in ((old, _codebook_quantize), (new, LooC._quantize)):
            q.train(step < 2)
            q.zero_grad(set_to_none=True)
            inp = x.clone().requires_grad_(True)
            v = q._adapt(inp.reshape(-1, 16), inp.shape[:-1])
            torch.manual_seed(step)  # dead-code restarts draw candidates
            out = quantize(q, v)
            (out.quantized.square().mean() + out.weighted_loss(q.loss_weights)).backward()
            grads = [inp.grad, *(p.grad for p in q.parameters())]
            results.append((out, grads, {k: t.clone() for k, t in q.state_dict().items()}))
        (a, grads_a, state_a), (b, grads_b, state_b) = results
        assert torch.equal(a.codes, b.codes) and torch.equal(a.quantized, b.quantized)
        assert a.losses.keys() == b.losses.keys()
        for name in a.losses:
            torch.testing.assert_close(b.losses[name], a.losses[name], msg=name)
        for grad_a, grad_b in zip(grads_a, grads_b, strict=True):
            torch.testing.assert_close(grad_b, grad_a)
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    with torch.no_grad():
        v = new._adapt(x.reshape(-1, 16), x.shape[:-1])
        a, b = _codebook_quantize(old.eval(), v), new.eval()._quantize(v)
    assert torch.equal(a.quantized, b.quantized) and a.losses.keys() == b.losses.keys()
    assert all(torch.allclose(a.losses[k], b.losses[k]) for k in a.losses)


# ---------------------------------------------------------------------------------------------- dtypes, config
def test_interpolated_low_precision_autocast_and_config() -> None:
    q = LooC(16, 32, 4, scale=2, spatial_dims=1, split="unshuffle")
    x = torch.randn(2, 9, 16)
    out = q(x.to(torch.bfloat16))
    assert out.quantized.dtype == torch.bfloat16 and torch.isfinite(out.quantized.float()).all()
    assert all(v.dtype == torch.float32 for v in out.losses.values())
    q.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codes = q.encode(x)
    assert torch.equal(codes, q.encode(x))
    clone = vqkit.quantizer_from_config(q.to_config())
    assert isinstance(clone, LooC) and clone.to_config() == q.to_config()
    assert (clone.scale, clone.spatial_dims, clone.split) == (2, 1, "unshuffle")


def test_interpolated_save_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    q = LooC(16, 32, 4, scale=2, layout="channels_first")
    x = grid("channels_first", 2)
    train_steps(q, x, steps=1)
    q.eval()
    loaded = vqkit.load_quantizer(vqkit.save_quantizer(q, tmp_path / "looc")).eval()
    assert torch.equal(loaded.encode(x), q.encode(x))
    assert torch.equal(loaded(x).quantized, q(x).quantized)


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"codebook_dim": 5},
            r"codebook_dim: expected a divisor of dim=16 .*, got codebook_dim=5 \(16 % 5 = 1\)",
        ),
        ({"codebook_dim": 32}, "codebook_dim: expected a divisor of dim=16"),
        ({"codebook_dim": 0}, "codebook_dim: expected a positive integer"),
        ({"scale": 0}, "scale: expected a positive integer, got 0"),
        ({"scale": 1.5}, "scale: expected a positive integer, got 1.5"),
        ({"scale": 2.0}, "scale: expected a positive integer, got 2.0"),
        ({"spatial_dims": 3}, "spatial_dims: expected 1 .* or 2 .*, got 3"),
        ({"spatial_dims": 2.0}, "spatial_dims: expected 1 .* or 2 .*, got 2.0"),
        ({"split": "random"}, r"split: expected one of \['channels', 'unshuffle'\], got 'random'"),
        ({"codebook_size": 0}, "codebook_size: expected a positive integer"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LooC(**{"dim": 16, **kwargs})  # type: ignore[arg-type]


def test_wrong_input_rank_with_interpolation_is_named() -> None:
    q = LooC(16, 32, 4, scale=2)
    with pytest.raises(ValueError, match=r"x: scale=2 .* spatial_dims=2 .* expects \[B, H, W, D\]"):
        q(torch.randn(4, 7, 16))
    with pytest.raises(ValueError, match=r"\[B, D, T\] with layout='channels_first'"):
        LooC(16, 32, 4, scale=2, spatial_dims=1).encode(torch.randn(64, 16))
    with pytest.raises(ValueError, match="x: expected size dim=16"):
        q(torch.randn(2, 3, 3, 8))
    with pytest.raises(TypeError, match="x: expected a floating-point tensor"):
        q(torch.zeros(2, 3, 3, 16, dtype=torch.long))
    bad = torch.randn(2, 3, 3, 16)
    bad[0, 1, 1, 3] = float("nan")
    with pytest.raises(ValueError, match="x: contains NaN or Inf"):
        q(bad)
    with pytest.raises(ValueError, match=r"x: flat \[N, 16\] vectors need scale=1"):
        q._encode(torch.randn(5, 16))
