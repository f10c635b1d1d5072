"""The scalar quantizers' fast paths (issue 14) against the plain formulas they replace: float index packing,
sign codes in one buffer, FSQ's 64-wide rows, the split exact codebook entropy and its batched levels, the
one-table usage metrics, and the NaN/Inf check on the projected channels."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import vqkit
from vqkit.functional import fsq, lfq
from vqkit.functional.stats import batch_usage, column_usage


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [4] * 8, [7, 6, 2], [3] * 15])
def test_float_digits_pack_to_the_int64_index(levels: list[int]) -> None:
    lv = torch.tensor(levels)
    z = torch.randn(999, len(levels), generator=_gen()) * 3
    reference = fsq.values_to_digits(torch.round(fsq.bound(z, lv)), lv)
    for reps in (1, 3):  # rows of one vector, and 3 vectors per row (999 = 3 * 333)
        c = fsq.constants(lv, z, reps)
        digits = fsq.bounded_digits(z, c)
        assert torch.equal(digits.long(), reference)
        assert torch.equal(fsq.float_index(digits, c.place), fsq.digits_to_index(reference, lv))
        assert torch.equal(fsq.bound(z, lv, cached=c), fsq.bound(z, lv))
        values = fsq.digit_values_(digits.clone(), c)
        assert torch.equal(values, fsq.digits_to_values(reference, lv))


def test_sign_codes_are_the_index_and_values_of_the_signs() -> None:
    z = torch.randn(500, 7, generator=_gen(1))
    z[0, 3] = 0.0  # zero is bit 0, as ``z > 0`` says
    index, values = lfq.sign_codes(z, 0.3)
    bits = (z > 0).long()
    assert torch.equal(index, (bits * 2 ** torch.arange(7)).sum(-1))
    assert torch.equal(values, lfq.bits_to_values(bits, 0.3))
    wide = torch.randn(50, 40, generator=_gen(2))  # past float32's exact range: the int64 path
    assert torch.equal(lfq.signs_to_index(wide), ((wide > 0).long() * 2 ** torch.arange(40)).sum(-1))


def _dense_entropies(z: torch.Tensor, scale: float, tau: float) -> tuple[float, float]:
    """Per-sample and codebook entropy over every code, in numpy float64 (``q ∝ exp(-|z - c|^2 / tau)``)."""
    d = z.shape[1]
    codes = np.array(list(itertools.product([-scale, scale], repeat=d)))
    logits = -((z.double().numpy()[:, None, :] - codes[None]) ** 2).sum(-1) / tau
    q = np.exp(logits - logits.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    avg = q.mean(0)

    def plogp(p: np.ndarray) -> np.ndarray:
        return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)

    return float(-plogp(q).sum(1).mean()), float(-plogp(avg).sum())


@pytest.mark.parametrize("d", [1, 2, 5, 6])  # a high half of no bits, and odd and even splits
def test_split_exact_entropy_is_the_dense_one(d: int) -> None:
    z = (torch.randn(300, d, generator=_gen(3)) * 0.4).requires_grad_(True)
    before = z.detach().clone()
    per_sample, codebook = lfq.entropy_terms(z, scale=0.7, temperature=0.9, mode="exact")
    (per_sample - codebook).backward()
    assert torch.equal(z.detach(), before) and z.grad is not None  # the input untouched
    want_sample, want_codebook = _dense_entropies(z.detach(), 0.7, 0.9)
    assert float(per_sample.detach()) == pytest.approx(want_sample, rel=1e-5)
    assert float(codebook.detach()) == pytest.approx(want_codebook, rel=1e-5)


@pytest.mark.parametrize("mode", ["exact", "factorized"])
def test_levels_at_once_are_each_level_alone(mode: lfq.EntropyMode) -> None:
    z = (torch.randn(3, 200, 4, generator=_gen(4)) * 0.5).requires_grad_(True)
    per_sample, codebook = lfq.entropy_terms(z, temperature=0.5, mode=mode, max_chunk_bytes=1024)
    (per_sample.sum() - codebook.sum()).backward()
    assert per_sample.shape == codebook.shape == (3,)
    for g in range(3):
        part = z.detach()[g].clone().requires_grad_(True)
        one_sample, one_codebook = lfq.entropy_terms(part, temperature=0.5, mode=mode)
        (one_sample - one_codebook).backward()
        torch.testing.assert_close(per_sample[g], one_sample)
        torch.testing.assert_close(codebook[g], one_codebook)
        assert z.grad is not None and part.grad is not None
        torch.testing.assert_close(z.grad[g], part.grad)


@pytest.mark.parametrize("mode", ["exact", "factorized"])
@pytest.mark.parametrize(
    "chunk_bytes", [64, 1 << 20]
)  # one row per chunk (recomputed in backward), one chunk
def test_the_written_out_backward_is_the_gradient(mode: lfq.EntropyMode, chunk_bytes: int) -> None:
    z = (torch.randn(2, 7, 5, dtype=torch.float64, generator=_gen(9)) * 0.5).requires_grad_(True)

    def terms(v: torch.Tensor) -> torch.Tensor:
        per_sample, codebook = lfq.entropy_terms(
            v, scale=0.8, temperature=0.7, mode=mode, max_chunk_bytes=chunk_bytes
        )
        return torch.cat([per_sample, codebook])

    assert torch.autograd.gradcheck(terms, (z,))


def test_saturated_logits_keep_the_entropies() -> None:
    """The default temperature puts logits at about ±400: the floor at -40 before each exponential changes
    nothing float32 resolves (against the float64 dense sum over every code)."""
    z = torch.randn(400, 6, generator=_gen(5))
    per_sample, codebook = lfq.entropy_terms(z, temperature=0.01, mode="exact")
    want_sample, want_codebook = _dense_entropies(z, 1.0, 0.01)
    assert float(per_sample) == pytest.approx(want_sample, abs=1e-6)
    assert float(codebook) == pytest.approx(want_codebook, rel=1e-6)


@pytest.mark.parametrize(("n", "columns", "size"), [(500, 1, 16), (500, 3, 7), (64, 2, 1 << 16), (0, 2, 4)])
def test_column_usage_is_batch_usage_per_column(n: int, columns: int, size: int) -> None:
    codes = torch.randint(0, size, (n, columns), generator=_gen(6))
    codes[::5, -1] = -1  # not coded (quantizer dropout): not counted
    before = codes.clone()
    utilization, perplexity = column_usage(codes, [size] * columns)
    assert torch.equal(codes, before)
    for j in range(columns):
        u, p = batch_usage(codes[:, j], size)
        assert torch.equal(utilization[j], u)
        torch.testing.assert_close(perplexity[j], p, rtol=1e-6, atol=0)
    mixed = torch.stack([codes[:, 0] % 3, codes[:, 0] % 5], 1)
    utilization, _ = column_usage(mixed, [3, 5])  # unequal alphabets: one batch_usage per column
    assert torch.equal(
        utilization, torch.stack([batch_usage(mixed[:, 0], 3)[0], batch_usage(mixed[:, 1], 5)[0]])
    )


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("fsq", {"levels": [4, 4, 3]}),
        ("lfq", {"bits": 6}),
        ("bsq", {"bits": 6}),
        ("residual_lfq", {"bits": 3}),
    ],
)
def test_the_projected_channels_are_checked_not_the_padding(name: str, kwargs: dict[str, object]) -> None:
    q = vqkit.create_quantizer(name, dim=16, **kwargs)
    assert q.checks_own_channels
    x = torch.randn(2, 8, 16, generator=_gen(7))
    x[1, 5, 9] = float("nan")
    with pytest.raises(ValueError, match="x: contains NaN or Inf"):
        q(x)
    with pytest.raises(ValueError, match="x: contains NaN or Inf"):
        q.eval().encode(x)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5] = False  # the NaN sits in a padded position, which the forward ignores
    out = q.train()(x, mask=mask)
    assert torch.isfinite(out.quantized[mask]).all() and torch.isfinite(out.loss)


def test_latent_quantization_checks_its_channels() -> None:
    q = vqkit.create_quantizer("latent_quantize", dim=16, levels=[4, 4])
    assert q.checks_own_channels  # the projected channels, as FSQ's
    x = torch.randn(5, 16)
    x[2, 3] = math.inf
    with pytest.raises(ValueError, match="x: contains NaN or Inf"):
        q(x)
    with pytest.raises(ValueError, match="x: contains NaN or Inf"):
        q.encode(x)


@pytest.mark.parametrize("levels", [[4, 4, 4, 4], [5, 3, 8], [2, 7], [3] * 5])
@pytest.mark.parametrize("n", [64, 63, 1])
def test_latent_grid_search_is_the_argmin_of_the_distances(levels: list[int], n: int) -> None:
    """The running minimum over the grid's columns against the ``[N, C, W]`` distances' ``argmin`` (first
    minimum): unordered and repeated grid values, inputs exactly on grid values and on midpoints, the 64-wide
    view and rows that do not fill it."""
    q = vqkit.create_quantizer("latent_quantize", dim=len(levels), levels=levels)
    g = _gen(n)
    with torch.no_grad():
        q.values.copy_(torch.randn(q.values.shape, generator=g))
        q.values[0, 1] = q.values[0, 0]  # a repeated value: the lower index wins
    grid = q.values.detach()
    h = torch.randn(n, len(levels), generator=g)
    h[0] = grid[torch.arange(len(levels)), 0]  # on a grid value
    if n > 1:
        h[1] = (grid[:, 0] + grid[:, 1]) / 2  # on a midpoint (a tie where the float sum is exact)
    gaps = (h[:, :, None] - grid[None]).abs().masked_fill(~q._valid, float("inf"))
    digits, distances = q._grid_digits(h)
    assert torch.equal(digits.long(), gaps.argmin(dim=-1)) and torch.equal(distances, gaps.min(dim=-1).values)


def test_latent_code_table_follows_the_learned_grid() -> None:
    """The eval forward and ``decode`` gather from a table of the grid as it is now (not FSQ's fixed values)."""
    q = vqkit.create_quantizer("latent_quantize", dim=8, levels=[4, 4]).eval()
    x = torch.randn(200, 8, generator=_gen(3))
    with torch.no_grad():
        q.values.mul_(0.5).add_(0.1)
        out = q(x)
    codes = q.encode(x)
    assert torch.equal(out.codes, codes) and torch.equal(out.quantized, q.decode(codes))
    digits = fsq.index_to_digits(codes[:, 0], q._levels, q._place)
    expected = q.project_out(torch.gather(q.values.detach(), 1, digits.t()).t())
    torch.testing.assert_close(out.quantized, expected, rtol=1e-6, atol=1e-6)


def test_residual_lfq_forward_is_the_stage_by_stage_one() -> None:
    """The fused levels (values from the signs, the losses in one pass) against the composite's general loop
    (``ResidualQuantizer._quantize_levels``) on the same state."""
    torch.manual_seed(0)
    q = vqkit.ResidualLFQ(16, bits=4, num_quantizers=3).train()
    x = torch.randn(64, 16, generator=_gen(8))
    fused = q._quantize_levels(x, None)
    general = vqkit.ResidualQuantizer._quantize_levels(q, x, None)
    assert torch.equal(fused.codes, general.codes)
    assert torch.equal(fused.quantized, general.quantized)
    for name in ("commitment", "entropy"):
        torch.testing.assert_close(fused.losses[name], general.losses[name])
    h = q.project_in(x)
    walked: list[torch.Tensor] = []

    def visit(stage: vqkit.Quantizer, v: torch.Tensor) -> torch.Tensor:
        walked.append(stage._encode(v))
        return walked[-1]

    vqkit.ResidualQuantizer._walk(q, h, visit)
    assert torch.equal(torch.cat(q.search(h), 1), torch.cat(walked, 1))  # the composite's greedy search


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("fsq", {"levels": [4, 4, 4]}), ("lfq", {"bits": 6}), ("bsq", {"bits": 6}), ("fsq", {"levels": [5, 3]})],
)
def test_the_code_table_decodes_as_the_out_projection(name: str, kwargs: dict[str, object]) -> None:
    """From N >= 4K codes ``decode`` and a forward without a gradient gather rows of a table of every code's
    output: the out-projection's values to rounding, the eval forward's bit for bit, at either side of the
    switch; a training forward keeps the matmul and its gradient."""
    q = vqkit.create_quantizer(name, dim=24, **kwargs)
    k = q.alphabet_sizes[0]
    assert isinstance(q.project_out, torch.nn.Linear)
    for n in (4 * k - 1, 4 * k, 9 * k):
        x = torch.randn(n, 24, generator=_gen(n))
        q.eval()
        with torch.no_grad():
            out = q(x)
        codes = q.encode(x)
        assert torch.equal(out.codes, codes)
        assert torch.equal(out.quantized, q.decode(codes))
        with torch.no_grad():
            matmul = q.project_out(q._code_values(codes[:, 0]))
        torch.testing.assert_close(out.quantized, matmul, rtol=1e-6, atol=1e-6)
    q.train()
    x = torch.randn(9 * k, 24, generator=_gen(1), requires_grad=True)
    out = q(x)
    out.quantized.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    torch.testing.assert_close(out.quantized.detach(), q.decode(out.codes), rtol=1e-6, atol=1e-6)


def test_decode_exports_with_a_dynamic_batch() -> None:
    """The code table's switch is a branch on the batch size: traced graphs take the matmul."""
    q = vqkit.create_quantizer("lfq", dim=16, bits=4).eval()

    class Decode(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q = q

        def forward(self, codes: torch.Tensor) -> torch.Tensor:
            return self.q.decode(codes)

    codes = torch.randint(0, 16, (96, 1))
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(Decode(), (codes,), dynamic_shapes=({0: batch},))
    for n in (5, 200):
        other = torch.randint(0, 16, (n, 1))
        torch.testing.assert_close(program.module()(other), q.decode(other), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("fsq", {"levels": [4, 4, 4]}),
        ("fsq", {"levels": [5, 3, 8]}),
        ("lfq", {"bits": 6}),
        ("bsq", {"bits": 5}),
    ],
)
@pytest.mark.parametrize("cast", ["float", "double"])
def test_every_code_value_is_the_values_of_every_index(
    name: str, kwargs: dict[str, object], cast: str
) -> None:
    """The table's values of every code, kept per settings: ``_code_values`` of ``0 .. K-1`` exactly, in the
    compute dtype, the same tensor on a second call."""
    q = getattr(vqkit.create_quantizer(name, dim=12, **kwargs), cast)()
    k = q.alphabet_sizes[0]
    grid = q._every_code_value(torch.device("cpu"))
    assert grid.dtype == q.compute_dtype and grid.shape == (
        k,
        len(q._code_values(torch.zeros(1, dtype=torch.long))[0]),
    )
    assert torch.equal(grid, q._code_values(torch.arange(k)))
    assert q._every_code_value(torch.device("cpu")) is grid
    with torch.inference_mode():  # asked for first under inference mode, still a normal tensor
        assert not fsq.every_code_value((3, 7), torch.float32, torch.device("cpu")).is_inference()


def test_lfq_code_values_follow_the_scale() -> None:
    """The kept grid is keyed on the scale: two LFQs of different scales decode to their own values."""
    a, b = vqkit.LFQ(4, 4, scale=1.0), vqkit.LFQ(4, 4, scale=0.5)
    assert torch.equal(
        a._every_code_value(torch.device("cpu")) * 0.5, b._every_code_value(torch.device("cpu"))
    )


@pytest.mark.parametrize(("bits", "levels"), [(3, 2), (2, 3), (4, 2)])
def test_residual_lfq_joint_table_decodes_as_the_out_projection(bits: int, levels: int) -> None:
    """From N >= 4K joint codes residual LFQ's ``decode`` and eval forward gather from a table of every joint
    code's output: equal to each other bit for bit, to the stage sum's out-projection to rounding, for all
    levels and for a prefix; a training forward keeps the matmul and its gradient."""
    q = vqkit.ResidualLFQ(128, bits, levels).eval()
    assert not vqkit.ResidualLFQ(64, bits, levels)._tabled(torch.zeros(10**4, levels, dtype=torch.long))
    k = 2 ** (bits * levels)
    for n in (4 * k - 1, 4 * k, 6 * k):
        x = torch.randn(n, 128, generator=_gen(n))
        with torch.no_grad():
            out = q(x)
        assert q._tabled(out.codes) == (n >= 4 * k)
        assert torch.equal(out.codes, q.encode(x)) and torch.equal(out.quantized, q.decode(out.codes))
        with torch.no_grad():
            matmul = q.project_out(q._stage_sum(out.codes))
        torch.testing.assert_close(out.quantized, matmul, rtol=1e-6, atol=1e-6)
        prefix = out.codes[:, : levels - 1]
        with torch.no_grad():
            expected = q.project_out(q._stage_sum(prefix))
        torch.testing.assert_close(q.decode(prefix), expected, rtol=1e-6, atol=1e-6)
    q.train()
    x = torch.randn(6 * k, 128, generator=_gen(1), requires_grad=True)
    out = q(x)
    out.quantized.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    torch.testing.assert_close(out.quantized.detach(), q.decode(out.codes), rtol=1e-6, atol=1e-6)
