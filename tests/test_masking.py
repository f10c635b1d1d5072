"""Padding masks (``vqkit.quantizers.masking``): a padded batch is its real vectors processed alone."""

from __future__ import annotations

import pytest
import torch

import vqkit
from tests.conftest import DIM, tiny_codec


def _pair(case: tuple[str, dict[str, object]]) -> tuple[vqkit.Quantizer, vqkit.Quantizer]:
    name, kwargs = case
    torch.manual_seed(0)
    first = vqkit.create_quantizer(name, **kwargs)
    torch.manual_seed(0)
    second = vqkit.create_quantizer(name, **kwargs)
    return first, second


def _padded(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 12, 3])
    mask = torch.arange(12)[None, :] < lengths[:, None]  # [3, 12]
    return torch.randn(3, 12, DIM, generator=g), mask


def _skip_grid_readers(case: tuple[str, dict[str, object]]) -> None:
    if case[1].get("scale", 1) != 1:
        pytest.skip("LooC's interpolation reads padded neighbours (documented)")
    if vqkit.registry.quantizer_class(case[0]).shared_codes:
        pytest.skip(
            "a multi-scale cell would average padding into its code: masks are refused (test_multiscale)"
        )


def test_a_padded_batch_is_its_real_vectors_alone(quantizer_case: tuple[str, dict[str, object]]) -> None:
    _skip_grid_readers(quantizer_case)
    padded, alone = _pair(quantizer_case)
    x, mask = _padded(1)
    torch.manual_seed(5)
    out = padded(x, mask=mask)
    torch.manual_seed(5)
    ref = alone(x[mask])  # [R, D]: the real vectors, in the same order
    assert torch.equal(out.codes[mask], ref.codes)
    assert torch.equal(out.quantized[mask], ref.quantized)
    assert out.losses.keys() == ref.losses.keys()
    for name, value in ref.losses.items():
        torch.testing.assert_close(out.losses[name], value, rtol=1e-6, atol=1e-7, msg=name)
    for name in ("utilization", "perplexity"):
        torch.testing.assert_close(out.metrics[name], ref.metrics[name], msg=name)
    for key, value in alone.state_dict().items():  # EMA, counts, k-means init, restarts: real vectors only
        torch.testing.assert_close(padded.state_dict()[key], value, rtol=1e-6, atol=1e-7, msg=key)


def test_padded_values_change_nothing_but_their_own_codes() -> None:
    q1, q2 = _pair(("ema_vq", {"dim": DIM, "codebook_size": 32, "init": "kmeans", "restart": "dead"}))
    x, mask = _padded(2)
    other = torch.where(mask[..., None], x, 100.0 * torch.randn_like(x))
    torch.manual_seed(7)  # dead-code restarts draw candidates from the global generator
    a = q1(x, mask=mask)
    torch.manual_seed(7)
    b = q2(other, mask=mask)
    assert torch.equal(a.losses["commitment"], b.losses["commitment"])
    for key, value in q1.state_dict().items():
        assert torch.equal(q2.state_dict()[key], value), key
    # Padded positions still get the codes encode gives them, and their decoded value.
    q1.eval()
    assert torch.equal(a.codes[~mask], q1.encode(x)[~mask])


def test_no_gradient_reaches_padded_positions() -> None:
    q = vqkit.create_quantizer("residual_vq", dim=DIM, codebook_size=16, num_quantizers=2)
    x, mask = _padded(3)
    x.requires_grad_(True)
    out = q(x, mask=mask)
    (out.quantized.sum() + out.loss).backward()
    assert x.grad is not None
    assert bool((x.grad[~mask] == 0).all()) and bool((x.grad[mask] != 0).any())


def test_an_all_padded_batch_has_zero_losses() -> None:
    q = vqkit.create_quantizer("vq", dim=DIM, codebook_size=16)
    x, _ = _padded(4)
    out = q(x, mask=torch.zeros(3, 12, dtype=torch.bool))
    assert all(float(v) == 0.0 for v in out.losses.values()) and torch.isfinite(out.loss)


def test_bad_masks_are_named() -> None:
    q = vqkit.create_quantizer("vq", dim=DIM, codebook_size=16)
    x, mask = _padded(5)
    with pytest.raises(TypeError, match="mask: expected a bool tensor"):
        q(x, mask=mask.long())
    with pytest.raises(ValueError, match=r"mask: expected the shape of x's positions \(3, 12\)"):
        q(x, mask=mask[:, :5])
    channels_first = vqkit.create_quantizer("vq", dim=DIM, codebook_size=16, layout="channels_first")
    out = channels_first(x.movedim(-1, 1), mask=mask)  # [B, D, T] input: the mask is [B, T]
    assert out.codes.shape == (3, 12, 1)


def test_audio_tokenizers_take_lengths_of_a_padded_batch() -> None:
    codec = tiny_codec({"name": "ema_vq", "kwargs": {"codebook_size": 16}})
    x = torch.zeros(2, 1, 80)
    x[0] = torch.randn(1, 80)
    x[1, :, :30] = torch.randn(1, 30)  # 30 real samples, then padding
    lengths = torch.tensor([80, 30])
    mask = codec.latent_mask(lengths, codec.embed(x))
    assert mask.shape == (2, 20) and mask.sum(1).tolist() == [20, 8]  # ceil(30 / 4) frames
    twin = vqkit.create_quantizer("ema_vq", dim=8, codebook_size=16, layout="channels_first")
    twin.load_state_dict(codec.quantizer.state_dict())
    out = codec(x, lengths=lengths)
    ref = twin(codec.embed(x).detach(), mask=mask)
    torch.testing.assert_close(out.quantizer.losses["commitment"], ref.losses["commitment"])
    for key, value in twin.state_dict().items():
        torch.testing.assert_close(codec.quantizer.state_dict()[key], value, msg=key)
    image = vqkit.build_model(
        {"name": "mlp_vqvae", "in_dim": 12, "hidden": [16], "latent_dim": 8, "quantizer": "vq"}
    )
    with pytest.raises(
        TypeError, match="lengths: MLPVQVAE is a vector model; only audio models take lengths"
    ):
        image(torch.randn(2, 12), lengths=torch.tensor([12, 6]))
    with pytest.raises(ValueError, match=r"lengths: expected a \[B\] tensor of sample counts for B=2"):
        codec(x, lengths=torch.tensor([80]))


def test_codebook_usage_leaves_padded_positions_out() -> None:
    x, mask = _padded(6)
    q = vqkit.create_quantizer("vq", dim=DIM, codebook_size=16).eval()
    codes = q.encode(x)
    masked, alone = vqkit.CodebookUsage((16,)), vqkit.CodebookUsage((16,))
    masked.update(codes, mask)
    alone.update(codes[mask])
    assert masked.compute(sync=False) == alone.compute(sync=False)
    with pytest.raises(ValueError, match=r"mask: expected a bool tensor of shape \(3, 12\)"):
        masked.update(codes, mask[:, :3])
