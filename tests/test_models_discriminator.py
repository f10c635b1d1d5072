"""The optional MS-STFT discriminator: shapes, gradients, and the hinge / feature-matching losses."""

from __future__ import annotations

import pytest
import torch

from vqkit.models import (
    MultiScaleSTFTDiscriminator,
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
)

N_FFTS = (64, 128, 32)


def test_shapes_per_scale() -> None:
    disc = MultiScaleSTFTDiscriminator(filters=8, n_ffts=N_FFTS)
    out = disc(torch.randn(2, 1, 512))
    assert len(out.logits) == len(out.features) == 3
    for n_fft, logits, maps in zip(N_FFTS, out.logits, out.features, strict=True):
        frames, freq = (512 - n_fft) // (n_fft // 4) + 1, n_fft // 2 + 1
        assert len(maps) == 5
        assert maps[0].shape == (2, 8, frames, freq)
        assert maps[-1].shape[:3] == (2, 8, frames) and maps[-1].shape[3] == -(-freq // 8)  # 3 stride-2 convs
        assert logits.shape == (2, 1, frames, maps[-1].shape[3])


def test_default_is_encodec_size() -> None:
    disc = MultiScaleSTFTDiscriminator()
    assert [d.n_fft for d in disc.discriminators] == [1024, 2048, 512]
    assert [d.hop_length for d in disc.discriminators] == [256, 512, 128]
    assert disc.discriminators[0].convs[0].out_channels == 32


def test_gradients_reach_the_input_and_every_parameter() -> None:
    disc = MultiScaleSTFTDiscriminator(filters=4, n_ffts=N_FFTS)
    real = torch.randn(2, 1, 256)
    fake = torch.randn(2, 1, 256, requires_grad=True)
    d_real, d_fake = disc(real), disc(fake.detach())
    loss = discriminator_hinge_loss(d_real.logits, d_fake.logits)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in disc.parameters())
    disc.zero_grad()
    g_fake = disc(fake)
    gen = generator_hinge_loss(g_fake.logits) + feature_matching_loss(d_real.features, g_fake.features)
    gen.backward()
    assert fake.grad is not None and float(fake.grad.abs().sum()) > 0


def test_loss_values() -> None:
    high, low = [torch.full((1, 1, 2, 2), 2.0)], [torch.full((1, 1, 2, 2), -2.0)]
    assert float(discriminator_hinge_loss(high, low)) == 0.0  # confident and right: no loss
    assert float(discriminator_hinge_loss(low, high)) == 6.0  # relu(1 + 2) + relu(1 + 2)
    assert float(generator_hinge_loss(high)) == 0.0 and float(generator_hinge_loss(low)) == 3.0
    maps = [[torch.ones(1, 2, 3, 3), -torch.ones(1, 2, 3, 3)]]
    assert float(feature_matching_loss(maps, maps)) == 0.0
    half = [[0.5 * m for m in maps[0]]]
    assert float(feature_matching_loss(maps, half)) == pytest.approx(0.5)


def test_errors() -> None:
    disc = MultiScaleSTFTDiscriminator(filters=4, n_ffts=N_FFTS)
    with pytest.raises(ValueError, match="x: expected at least n_fft=64 samples, got T=40"):
        disc(torch.randn(1, 1, 40))
    with pytest.raises(ValueError, match=r"x: expected \[B, C, T\]"):
        disc(torch.randn(1, 400))
    with pytest.raises(ValueError, match="hop_lengths: expected one hop per FFT size"):
        MultiScaleSTFTDiscriminator(n_ffts=(64, 32), hop_lengths=(16,))
