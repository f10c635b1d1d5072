"""``multiscale_vq`` (VAR's multi-scale residual VQ) and its pure math (``vqkit.functional.multiscale``)."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vqkit
from vqkit.functional import multiscale as ms
from vqkit.quantizers.multiscale import MultiScaleVQ
from vqkit.rates import kwargs_at_rate


def _q(**kwargs: object) -> MultiScaleVQ:
    q = vqkit.create_quantizer("multiscale_vq", **{"dim": 4, "codebook_size": 16, **kwargs})
    assert isinstance(q, MultiScaleVQ)
    return q


# ---------------------------------------------------------------------- functional oracles
def test_cells_partition_each_axis() -> None:
    for size in range(1, 14):
        for cells in range(1, size + 1):
            idx = ms.cell_index(size, cells).tolist()
            members = [[p for p in range(size) if idx[p] == i] for i in range(cells)]
            assert all(m and m == list(range(m[0], m[-1] + 1)) for m in members)  # contiguous, non-empty
            assert max(map(len, members)) - min(map(len, members)) <= 1
            assert ms.cell_starts(size, cells).tolist() == [m[0] for m in members]
    assert ms.cell_grid((7, 16, 3), 4) == (1, 4, 1)


def test_pool_expand_and_read_against_loops() -> None:
    x = torch.randn(2, 3, 7, 5, dtype=torch.float64)
    cells = (3, 2)
    rows, cols = ms.cell_index(7, 3).tolist(), ms.cell_index(5, 2).tolist()
    ref = np.zeros((2, 3, 3, 2))
    for i in range(3):
        for j in range(2):
            block = [
                [x[..., a, b].numpy() for b in range(5) if cols[b] == j] for a in range(7) if rows[a] == i
            ]
            ref[..., i, j] = np.mean([v for row in block for v in row], axis=0)
    np.testing.assert_allclose(ms.pool_cells(x, cells).numpy(), ref, rtol=1e-12)
    t = torch.randint(9, (2, 3, 2))
    up = ms.expand_cells(t, (7, 5))
    assert all(up[:, a, b].equal(t[:, rows[a], cols[b]]) for a in range(7) for b in range(5))
    assert ms.cell_values(up, cells).equal(t)
    # Divisible sides: VAR's area interpolation.
    y = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(ms.pool_cells(y, (2, 4)), F.interpolate(y, size=(2, 4), mode="area"))


def _cubic_weights(t: float, a: float = -0.75) -> list[float]:
    def near(s: float) -> float:  # |s| <= 1
        return ((a + 2) * s - (a + 3)) * s * s + 1

    def far(s: float) -> float:  # 1 < |s| < 2
        return ((a * s - 5 * a) * s + 8 * a) * s - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _resample_1d(x: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Keys' cubic (a = -0.75) or linear resampling of the last axis, ``align_corners=False``, borders clamped."""
    n = x.shape[-1]
    out = np.zeros((*x.shape[:-1], size))
    for p in range(size):
        src = (p + 0.5) * n / size - 0.5
        if mode == "linear":
            src = max(src, 0.0)
        i = math.floor(src)
        t = src - i
        taps, weights = (
            ([i, i + 1], [1 - t, t]) if mode == "linear" else ([i - 1, i, i + 1, i + 2], _cubic_weights(t))
        )
        for tap, w in zip(taps, weights, strict=True):
            out[..., p] += w * x[..., min(max(tap, 0), n - 1)]
    return out


@pytest.mark.parametrize("mode", ["cubic", "linear"])
def test_upsampling_against_the_kernel(mode: str) -> None:
    x = torch.randn(2, 3, 3, dtype=torch.float64)
    np.testing.assert_allclose(
        ms.upsample_cells(x, (11,), mode).numpy(), _resample_1d(x.numpy(), 11, mode), atol=1e-12
    )
    y = torch.randn(2, 3, 2, 3, dtype=torch.float64)
    ref = _resample_1d(_resample_1d(y.numpy(), 7, mode).swapaxes(-1, -2), 8, mode).swapaxes(-1, -2)
    np.testing.assert_allclose(ms.upsample_cells(y, (8, 7), mode).numpy(), ref, atol=1e-12)
    torch_mode = {"cubic": "bicubic", "linear": "bilinear"}[mode]
    torch.testing.assert_close(
        ms.upsample_cells(y, (8, 7), mode), F.interpolate(y, size=(8, 7), mode=torch_mode)
    )
    assert ms.upsample_cells(y, (2, 3), mode) is y
    assert ms.upsample_cells(y, (8, 7), "nearest").equal(ms.expand_cells(y, (8, 7)))
    nearest = ms.interpolation_matrix(3, 7, "nearest")
    assert torch.equal(y @ nearest, ms.expand_cells(y, (2, 7)))


def test_residual_conv_is_vars_phi() -> None:
    for conv in (nn.Conv1d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)):
        h = torch.randn(2, 4, *([5] * (conv.weight.dim() - 2)))
        ref = 0.5 * h + 0.5 * conv(h)
        torch.testing.assert_close(ms.residual_conv(h, conv.weight, conv.bias, 0.5), ref)


def _var_ticks(phis: int) -> np.ndarray:
    """``PhiPartiallyShared.ticks`` of VAR's ``models/quant.py``."""
    margin = 1 / 3 / phis if phis == 4 else 1 / 2 / phis
    return np.linspace(margin, 1 - margin, phis)


def test_phi_sharing_follows_vars_ticks() -> None:
    for phis in range(1, 7):
        ticks = _var_ticks(phis)
        for scales in range(2, 12):
            ref = [int(np.argmin(np.abs(ticks - k / (scales - 1)))) for k in range(scales)]
            assert [ms.phi_index(k, scales, phis) for k in range(scales)] == ref
    # VAR's 10 scales with 4 convolutions (FoundationVision/VAR issue #73 lists the same sharing).
    assert [ms.phi_index(k, 10, 4) for k in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert _q(factors=[7, 6, 5, 4, 3, 2, 1], phi_count=6)._phi_of_scale == [0, 0, 1, 2, 3, 4, 4]  # one unused


# ---------------------------------------------------------------------- the quantizer against VAR's loop
def _var_reference(q: MultiScaleVQ, f: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """VAR's ``VectorQuantizer2.forward`` restated (square maps, sides divisible by the factors): area pooling,
    exhaustive search, bicubic upsampling, ``Phi`` by the numpy ticks. Returns token maps, ``f_hat`` and the
    mean over scales of ``mse(f_hat_k, f)``."""
    b, d, h, w = f.shape
    codebook = q.codebook.weight.detach()
    scales, phis = len(q.factors), q.phi_count
    ticks = _var_ticks(phis)
    rest, f_hat, tokens, loss = f.clone(), torch.zeros_like(f), [], 0.0
    for si, factor in enumerate(q.factors):
        pn = h // factor
        z = F.interpolate(rest, size=(pn, pn), mode="area") if pn != h else rest
        idx = torch.cdist(z.permute(0, 2, 3, 1).reshape(-1, d).double(), codebook.double()).argmin(1)
        part = codebook[idx].view(b, pn, pn, d).permute(0, 3, 1, 2)
        part = F.interpolate(part, size=(h, w), mode="bicubic") if pn != h else part
        j = int(np.argmin(np.abs(ticks - si / (scales - 1))))
        part = part * 0.5 + F.conv2d(part, q.phi_weight[j], q.phi_bias[j], padding=1) * 0.5
        f_hat, rest = f_hat + part, rest - part
        tokens.append(idx.view(b, pn, pn))
        loss += F.mse_loss(f_hat, f) / scales
    return tokens, f_hat, torch.as_tensor(loss)


def test_matches_vars_algorithm() -> None:
    q = _q(dim=6, codebook_size=32, factors=[8, 4, 2, 1], init="gaussian", layout="channels_first").eval()
    f = torch.randn(3, 6, 8, 8)
    tokens, f_hat, loss = _var_reference(q, f)
    with torch.no_grad():
        out = q(f)
    assert all(a.equal(b) for a, b in zip(q.scale_codes(out.codes), tokens, strict=True))
    torch.testing.assert_close(out.quantized, f_hat, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.losses["commitment"], loss.float(), rtol=1e-5, atol=1e-6)
    assert out.loss_weights == {"commitment": 0.25, "codebook": 1.0}


# ---------------------------------------------------------------------- round trips and layouts
@pytest.mark.parametrize("upsample", ["cubic", "linear", "nearest"])
@pytest.mark.parametrize("side", [8, 7])
def test_exact_round_trip_on_maps(upsample: str, side: int) -> None:
    q = _q(factors=[8, 3, 2, 1], upsample=upsample, layout="channels_first")
    x = torch.randn(2, 4, side, side + 1)
    for _ in range(3):  # move the codebook and convolutions' statistics first
        q(x).loss.backward()
    q.eval()
    out = q(x)
    codes = q.encode(x)
    assert codes.shape == (2, side, side + 1, 4) and torch.equal(codes, out.codes)
    assert torch.equal(q.decode(codes), out.quantized)
    for k in range(1, 5):  # the first k scales: greedy, so a prefix of the full codes
        prefix = q.encode(x, num_quantizers=k)
        assert torch.equal(prefix, codes[..., :k])
        assert q.decode(prefix).shape == x.shape


def test_channels_first_matches_channels_last() -> None:
    first = _q(layout="channels_first", factors=[4, 2, 1]).eval()
    last = _q(factors=[4, 2, 1]).eval()
    last.load_state_dict(first.state_dict())
    x = torch.randn(2, 4, 6, 9)
    a, b = first(x), last(x.movedim(1, -1))
    assert torch.equal(a.codes, b.codes)
    torch.testing.assert_close(a.quantized, b.quantized.movedim(-1, 1))
    # Axes before the grid index independent maps: [2, 3, T, D] is six sequences.
    seq = _q(spatial_dims=1, factors=[4, 1]).eval()
    y = torch.randn(2, 3, 8, 4)
    assert torch.equal(seq.encode(y).reshape(6, 8, 2), seq.encode(y.reshape(6, 8, 4)))


def _smooth_maps(n: int, seed: int) -> torch.Tensor:
    """Maps [n, 4, 8, 8] with energy at every scale: upsampled noise of 1, 2, 4 and 8 cells a side."""
    g = torch.Generator().manual_seed(seed)
    parts = [
        F.interpolate(torch.randn(n, 4, s, s, generator=g), size=(8, 8), mode="bilinear")
        for s in (1, 2, 4, 8)
    ]
    return sum(p * w for p, w in zip(parts, (1.0, 0.7, 0.5, 0.3), strict=True))  # type: ignore[return-value]


def test_more_scales_decode_closer_after_training() -> None:
    q = _q(codebook_size=64, factors=[8, 4, 2, 1], init="kmeans", layout="channels_first")
    optimizer = torch.optim.Adam(q.parameters(), lr=3e-3)
    for step in range(150):
        out = q(_smooth_maps(32, step))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    q.eval()
    x = _smooth_maps(64, 10_000)
    with torch.no_grad():
        errors = [float(F.mse_loss(q.decode(q.encode(x, num_quantizers=k)), x)) for k in range(1, 5)]
    assert all(a > b for a, b in itertools.pairwise(errors)), errors  # seeded: 0.69, 0.33, 0.17, 0.08
    assert errors[-1] < 0.1 * float(x.var())


def test_one_scale_is_plain_vq() -> None:
    x = torch.randn(2, 5, 6, 4)
    vq = vqkit.create_quantizer("vq", dim=4, codebook_size=16).eval()
    for phi_ratio in (0.0, 0.5):
        q = _q(factors=[1], phi_ratio=phi_ratio).eval()
        q.codebook.load_state_dict(vq.codebook.state_dict())
        a, b = q(x), vq(x)
        assert torch.equal(a.codes, b.codes)
        if phi_ratio == 0:  # no convolution: the same value and losses
            assert torch.equal(a.quantized, b.quantized)
            assert a.losses.keys() == b.losses.keys()
            for name, value in b.losses.items():
                torch.testing.assert_close(a.losses[name], value)


# ---------------------------------------------------------------------- token maps and rate
def test_scale_codes_round_trip() -> None:
    q = _q(factors=[4, 3, 1]).eval()
    x = torch.randn(2, 7, 8, 4)
    codes = q.encode(x)
    tokens = q.scale_codes(codes, check=True)
    assert q.scale_shapes((7, 8)) == [(1, 2), (2, 2), (7, 8)]
    assert [tuple(t.shape) for t in tokens] == [(2, *shape) for shape in q.scale_shapes((7, 8))]
    assert torch.equal(q.codes_from_scales(tokens, (7, 8)), codes)
    fresh = [torch.randint(16, t.shape) for t in tokens]
    assert all(
        a.equal(b) for a, b in zip(q.scale_codes(q.codes_from_scales(fresh, (7, 8))), fresh, strict=True)
    )
    assert len(q.scale_codes(codes[..., :2])) == 2  # a prefix of scales
    broken = codes.clone()
    broken[0, 6, 7, 1] = (
        broken[0, 6, 7, 1] + 1
    ) % 16  # not the cell's first position: decode does not read it
    assert torch.equal(q.decode(broken), q.decode(codes))
    with pytest.raises(ValueError, match="scale 1 .* differs within a cell"):
        q.scale_codes(broken, check=True)
    with pytest.raises(ValueError, match=r"tokens\[1\]: expected integer token maps of shape \(2, 2, 2\)"):
        q.codes_from_scales([tokens[0], tokens[2], tokens[1]], (7, 8))


def test_rate_counts_each_cell_once() -> None:
    q = _q(codebook_size=4096, layout="channels_first")  # VAR's defaults: factors (16, 8, 4, 2, 1)
    share = sum(Fraction(1, f * f) for f in (16, 8, 4, 2, 1))
    assert q.bits_per_vector == float(12 * share) == 12 * 341 / 256
    assert [q.bits_per_vector_at(k) for k in (1, 5)] == [12 / 256, q.bits_per_vector]
    assert q.bits_per_map((16, 16)) == pytest.approx(
        256 * q.bits_per_vector
    )  # VAR: 1 + 4 + 16 + 64 + 256 tokens
    assert q.bits_per_map((7, 7)) == 12 * (1 + 1 + 1 + 9 + 49)  # sides shorter than a factor: one cell
    assert _q(spatial_dims=1, factors=[4, 2, 1], codebook_size=32).bits_per_vector == 5 * 1.75
    assert q.codebook_label == "5×4096" and q.num_levels == 5 and q.level_widths() == (1, 2, 3, 4, 5)


@pytest.mark.parametrize("bits", [4, 8, 12])
def test_at_rate_is_exact_on_images(bits: int) -> None:
    kwargs = kwargs_at_rate("multiscale_vq", 16, bits)
    assert isinstance(kwargs, dict) and kwargs["init"] == "kmeans"
    q = vqkit.create_quantizer("multiscale_vq", dim=16, **kwargs)
    assert q.bits_per_vector == bits
    assert MultiScaleVQ.at_rate(16, 6) is None


def test_an_image_tokenizer_at_a_rate() -> None:
    """The bench's build: Fashion-MNIST's 7x7 latents, the model filling in ``spatial_dims=2``."""
    kwargs = kwargs_at_rate("multiscale_vq", 8, 8)
    assert isinstance(kwargs, dict)
    spec = {"name": "multiscale_vq", "kwargs": kwargs}
    model = vqkit.build_model(
        {
            "name": "image_vqvae",
            "hidden": 8,
            "res_hidden": 4,
            "num_res_layers": 1,
            "latent_dim": 8,
            "quantizer": spec,
        }
    )
    x = torch.rand(2, 1, 28, 28)
    model(x).loss.backward()
    model.eval()
    with torch.no_grad():
        out = model(x)
        assert out.codes.shape == (2, 7, 7, 5)
        assert torch.equal(model.decode(model.encode(x)), out.reconstruction)
    q = model.quantizer
    assert isinstance(q, MultiScaleVQ) and q.spatial_dims == 2
    # The 7x7 map's own count (its cells once each), below the nominal 49 x 8 = 392 of lcm-sided maps.
    assert model.bits_per_item((1, 28, 28)) == q.bits_per_map((7, 7)) == 6 * (3 * 1 + 9 + 49)


# ---------------------------------------------------------------------- errors
def test_errors_name_the_problem() -> None:
    q = _q(factors=[2, 1])
    with pytest.raises(TypeError, match="cannot quantize flat"):
        q.quantize_codes(torch.randn(5, 4), None)
    with pytest.raises(ValueError, match="mask: multiscale_vq pools cells"):
        q(torch.randn(2, 3, 4, 4), mask=torch.ones(2, 3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"expects \[B, D, H, W\]"):
        _q(layout="channels_first")(torch.randn(2, 4, 8))
    with pytest.raises(TypeError, match="beam_size"):
        q.encode(torch.randn(2, 4, 4, 4), beam_size=2)
    with pytest.raises(ValueError, match="factors: expected non-increasing"):
        _q(factors=[1, 2])
    with pytest.raises(ValueError, match="phi_count"):
        _q(phi_count=0)
    with pytest.raises(ValueError, match="size: expected 2 grid sides"):
        q.scale_shapes((8,))
    with pytest.raises(ValueError, match="codes: expected"):
        q.scale_codes(torch.zeros(2, 4, 4, 3, dtype=torch.long))
