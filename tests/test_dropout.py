"""Quantizer dropout and bitrate choice (``vqkit.quantizers.dropout``, ``encode(x, num_quantizers=k)``)."""

from __future__ import annotations

import math

import pytest
import torch

import vqkit
from vqkit.quantizers.dropout import NOT_CODED

RESIDUAL = {
    "residual_vq": {"codebook_size": 16, "num_quantizers": 4},
    "residual_fsq": {"levels": [4, 3], "num_quantizers": 3},
    "residual_lfq": {"bits": 4, "num_quantizers": 3},
    "ivq": {"lines": 4, "levels": "bottom-up"},
}


def make(name: str, **overrides: object) -> vqkit.Quantizer:
    return vqkit.create_quantizer(name, dim=8, **{**RESIDUAL[name], **overrides})


@pytest.mark.parametrize("name", list(RESIDUAL))
def test_prefix_codes_decode_to_the_first_levels(name: str) -> None:
    q = make(name)
    x = torch.randn(6, 20, 8)
    q(x)  # k-means init, statistics
    q.eval()
    full = q.encode(x)
    widths = q.level_widths()
    assert q.num_levels == len(widths) and widths[-1] == q.codes_per_vector
    previous = math.inf
    for k, width in enumerate(widths, start=1):
        codes = q.encode(x, num_quantizers=k)
        assert torch.equal(codes, full[..., :width])  # a level's codes never depend on later levels
        # Decoding a prefix sums the first k levels: the full decode with the later levels' codes removed.
        stages = q.stage_list  # type: ignore[attr-defined]
        flat = codes.reshape(-1, width)
        expected = sum(
            stage._decode(flat[:, cols]) * scale
            for stage, scale, cols in zip(stages[:k], q.stage_scales, q._code_slices(), strict=False)  # type: ignore[attr-defined]
        )
        torch.testing.assert_close(q.decode(codes), q.project_out(expected).reshape(x.shape))  # type: ignore[attr-defined]
        assert q.bits_per_vector_at(k) == pytest.approx(sum(math.log2(a) for a in q.alphabet_sizes[:width]))
        error = float((q.decode(codes).detach() - x).square().mean())
        if name == "residual_vq":  # greedy levels fitted by residual k-means: each one lowers the error
            assert error <= previous + 1e-6
        previous = error
    assert q.bits_per_vector_at(q.num_levels) == q.bits_per_vector


def test_more_levels_lower_the_error_of_a_fitted_residual_vq() -> None:
    q = make("residual_vq", codebook_size=32)
    x = torch.randn(2000, 8)
    q.init_codebook(x)
    errors = [
        float((q.decode(q.encode(x, num_quantizers=k)).detach() - x).square().mean()) for k in range(1, 5)
    ]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.5 * errors[0]


def test_level_counts_are_checked_and_named() -> None:
    q = make("residual_vq")
    x = torch.randn(5, 8)
    for bad in (0, 5):
        with pytest.raises(ValueError, match=r"num_quantizers: expected 1 to 4 \(the levels of ResidualVQ\)"):
            q.encode(x, num_quantizers=bad)
    with pytest.raises(TypeError, match="num_quantizers: expected an int"):
        q.encode(x, num_quantizers=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"or the first levels' codes \[\.\.\., w\] for w in \[1, 2, 3\]"):
        q.decode(torch.zeros(5, 7, dtype=torch.long))
    single = vqkit.create_quantizer("vq", dim=8, codebook_size=16)
    assert single.num_levels == 1 and torch.equal(single.encode(x, num_quantizers=1), single.encode(x))
    with pytest.raises(ValueError, match="expected 1 to 1"):
        single.encode(x, num_quantizers=2)
    with pytest.raises(ValueError, match="dropout: expected a number in"):
        make("residual_vq", dropout=1.5)


def test_dropped_levels_are_not_coded_and_items_share_their_level_count() -> None:
    torch.manual_seed(0)
    q = make("residual_vq", dropout=1.0, init="gaussian")  # every item drops to k ~ U{1..4}
    x = torch.randn(64, 10, 8)
    out = q(x)
    coded = out.codes >= 0  # [64, 10, 4]
    assert bool(coded[..., 0].all())  # the first level codes every vector
    k = coded.sum(-1)
    assert bool((k == k[:, :1]).all())  # one count per item
    assert bool((coded == (torch.arange(4) < k[..., None])).all())  # a prefix of the levels
    assert set(k[:, 0].tolist()) == {1, 2, 3, 4}
    assert not bool((out.codes[~coded] != NOT_CODED).any())
    # The value is the sum of the levels an item used: the decode of its prefix (a grad-trained codebook does
    # not move in the forward).
    q.eval()
    for item in range(4):
        n = int(k[item, 0])
        torch.testing.assert_close(out.quantized[item], q.decode(out.codes[item, :, :n]), rtol=0, atol=0)


def test_dropped_vectors_add_no_codebook_statistics() -> None:
    torch.manual_seed(0)
    q = make("residual_vq", dropout=1.0, update="ema", decay=0.5)
    before = [stage.codebook.cluster_size.sum().item() for stage in q.stage_list]  # type: ignore[attr-defined]
    out = q(torch.randn(32, 10, 8))
    for j, stage in enumerate(q.stage_list):  # type: ignore[attr-defined]
        coded = int((out.codes[..., j] >= 0).sum())
        # EMA counts: decay * old + (1 - decay) * this step's counts, which hold the coded vectors only.
        assert stage.codebook.cluster_size.sum().item() == pytest.approx(0.5 * before[j] + 0.5 * coded)
    assert 0 < float(out.metrics["utilization"]) <= 1  # usage metrics skip the "not coded" codes


@pytest.mark.parametrize("name", list(RESIDUAL))
def test_dropout_trains_every_quantizer_and_leaves_eval_alone(name: str) -> None:
    q = make(name, dropout=0.5)
    x = torch.randn(16, 12, 8, requires_grad=True)
    out = q(x)
    ((out.quantized * torch.randn_like(x)).mean() + out.loss).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(v) for v in out.losses.values())
    q.eval()
    ev = q(x.detach())
    assert bool((ev.codes >= 0).all()) and torch.equal(q.decode(q.encode(x.detach())), ev.quantized)
    assert q.to_config()["kwargs"]["dropout"] == 0.5


def test_tokenizers_pass_the_level_count_through() -> None:
    model = vqkit.build_model(
        {
            "name": "mlp_vqvae",
            "in_dim": 12,
            "hidden": [16],
            "latent_dim": 8,
            "quantizer": {
                "name": "residual_vq",
                "kwargs": {"codebook_size": 16, "num_quantizers": 3, "dropout": 0.3},
            },
        }
    ).eval()
    x = torch.randn(5, 12)
    codes = model.encode(x, num_quantizers=2)
    assert codes.shape == (5, 2)
    assert model.decode(codes).shape == x.shape
    assert model.bits_per_item((12,), num_quantizers=2) == 8.0 and model.bits_per_item((12,)) == 12.0
