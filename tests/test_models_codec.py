"""``seanet_codec``: the SEANet layout of Encodec, latent rate, padding and cropping, causality, rates, losses,
and a few training steps on a tone."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vqkit.models import SEANetCodec, SEANetConfig, SEANetDecoder, SEANetEncoder, build_model
from vqkit.models.losses import mel_l1_loss, multi_resolution_stft_loss
from vqkit.models.seanet import SLSTM, SConv1d, SConvTranspose1d

TINY: dict[str, Any] = {
    "n_filters": 2,
    "latent_dim": 8,
    "stft_sizes": [64, 128],
    "mel_n_fft": 128,
    "n_mels": 16,
}


def codec(quantizer: Any = "fsq", **kwargs: Any) -> SEANetCodec:
    if quantizer == "fsq":
        quantizer = {"name": "fsq", "kwargs": {"levels": [5, 5]}}
    model = build_model({"name": "seanet_codec", **TINY, "quantizer": quantizer, **kwargs})
    assert isinstance(model, SEANetCodec)
    return model


def tone(batch: int, length: int, sample_rate: int = 16000, freq: float = 440.0) -> torch.Tensor:
    t = torch.arange(length, dtype=torch.float32) / sample_rate
    phase = torch.rand(batch, 1, 1) * 2 * math.pi
    return 0.5 * torch.sin(2 * math.pi * freq * t + phase)


def test_encodec_layout_at_default_width() -> None:
    enc = SEANetEncoder(SEANetConfig(true_skip=False, pad_mode="reflect"))
    strided = [m for m in enc.modules() if isinstance(m, SConv1d) and m.stride > 1]
    # ratios (8, 5, 4, 2) are applied reversed: strides 2, 4, 5, 8 with kernels 2r; channels 32 -> 512
    convs = [m.conv for m in strided]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (32, 64, 4, 2),
        (64, 128, 8, 4),
        (128, 256, 10, 5),
        (256, 512, 16, 8),
    ]
    lstm = next(m for m in enc.modules() if isinstance(m, SLSTM)).lstm
    assert (lstm.input_size, lstm.num_layers) == (512, 2)
    assert enc.model[-1].conv.out_channels == 128 and enc.model[-1].conv.kernel_size == (7,)
    assert any("parametrizations" in name for name, _ in enc.named_parameters())  # weight norm
    dec = SEANetDecoder(SEANetConfig())
    ups = [m.convtr for m in dec.modules() if isinstance(m, SConvTranspose1d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in ups] == [
        (512, 256, 8),
        (256, 128, 5),
        (128, 64, 4),
        (64, 32, 2),
    ]


def test_hop_320_gives_50_frames_per_second_at_16khz() -> None:
    model = codec(quantizer={"name": "vq", "kwargs": {"codebook_size": 1024}})
    assert model.hop_length == 320
    assert model.frame_rate() == 50.0 and model.frame_rate(32000) == 100.0
    assert model.latent_shape((1, 16000)) == (50,) and model.latent_shape((16001,)) == (51,)
    assert model.bits_per_item((1, 16000)) == 500.0
    assert model.bitrate_kbps() == pytest.approx(0.5) and model.codes_per_second() == 50.0
    x = tone(2, 3200)
    out = model(x)
    assert out.codes.shape == (2, 10, 1) and out.reconstruction.shape == x.shape
    rvq = codec(quantizer={"name": "residual_vq", "kwargs": {"codebook_size": 1024, "num_quantizers": 8}})
    assert rvq.bitrate_kbps() == pytest.approx(4.0) and rvq.codes_per_second() == 400.0
    ivq = codec(quantizer={"name": "ivq", "kwargs": {"lines": 4}})  # 4 levels x 4 lines
    assert ivq.bitrate_kbps(16000) == pytest.approx(50 * 16 / 1000)


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
@pytest.mark.parametrize("causal", [False, True])
def test_output_length_equals_input_length(pad_mode: str, causal: bool) -> None:
    model = codec(ratios=[2, 3], pad_mode=pad_mode, causal=causal, lstm=1)
    for length in (1, 5, 6, 7, 37):
        x = torch.randn(2, 1, length)
        out = model(x)
        assert out.reconstruction.shape == x.shape, length
        assert out.codes.shape[1] == math.ceil(length / 6)
    enc = SEANetEncoder(
        SEANetConfig(n_filters=2, dimension=4, ratios=(2, 3), pad_mode=pad_mode, causal=causal)
    )
    assert enc(torch.randn(1, 1, 37)).shape == (1, 4, 7)  # strided convs pad the last window: ceil(37 / 6)
    dec = SEANetDecoder(
        SEANetConfig(n_filters=2, dimension=4, ratios=(2, 3), pad_mode=pad_mode, causal=causal)
    )
    assert dec(torch.randn(1, 4, 7)).shape == (1, 1, 42)


def test_right_padding_with_zeros_and_cropping() -> None:
    model = codec(ratios=[2, 2]).eval()
    x = torch.randn(2, 1, 37)
    padded = F.pad(x, (0, 3))
    out = model(x)
    assert torch.equal(model.encode(x), model.encode(padded))
    torch.testing.assert_close(out.reconstruction, model(padded).reconstruction[..., :37])
    codes = model.encode(x)
    assert model.decode(codes).shape == (2, 1, 40)  # hop multiple without length
    assert torch.equal(model.decode(codes, length=37), out.reconstruction)
    with pytest.raises(ValueError, match=r"length: expected a sample count in \[37, 40\]"):
        model.decode(codes, length=36)
    with pytest.raises(ValueError, match="length"):
        model.decode(codes, length=41)


def test_causal_output_ignores_the_future() -> None:
    model = codec(ratios=[2, 2], causal=True, lstm=1).eval()
    x = torch.randn(1, 1, 64)
    y = x.clone()
    y[..., 32:] = torch.randn(32)  # differs from sample 32 on (a multiple of the hop)
    a, b = model(x).reconstruction, model(y).reconstruction
    assert torch.equal(a[..., :32], b[..., :32])
    assert not torch.equal(a[..., 32:], b[..., 32:])


def test_looc_with_interpolation_gets_spatial_dims_1() -> None:
    model = codec(quantizer={"name": "looc", "kwargs": {"codebook_size": 16, "codebook_dim": 4, "scale": 2}})
    x = tone(2, 1280)
    out = model(x)
    assert out.codes.shape == (2, 4, 4)  # 2 sub-vectors x 2 interpolated frames per latent frame
    model.eval()
    assert torch.equal(model.decode(model.encode(x), length=1280), model(x).reconstruction)


def test_options_and_errors() -> None:
    model = codec(true_skip=False, norm="none", loss_weights={"mel": 0.0})
    assert not any("parametrizations" in n for n, _ in model.named_parameters())
    assert any(isinstance(m.shortcut, SConv1d) for m in model.modules() if hasattr(m, "shortcut"))
    assert set(model(tone(1, 640)).losses) == {"l1", "stft"}
    with pytest.raises(ValueError, match="pad_mode: expected one of"):
        codec(pad_mode="circular")
    with pytest.raises(ValueError, match="ratios: expected integers >= 1"):
        codec(ratios=[2, 0])
    with pytest.raises(ValueError, match=r"x: expected \[B, 1, T\]"):
        model(torch.randn(2, 640))
    with pytest.raises(ValueError, match=r"item_shape: expected \(1, T\) or \(T,\)"):
        model.latent_shape((2, 640))


def test_mr_stft_loss_is_zero_for_identical_inputs_and_positive_otherwise() -> None:
    x = tone(2, 4096) + 0.01 * torch.randn(2, 1, 4096)
    assert float(multi_resolution_stft_loss(x, x)) == 0.0
    assert float(multi_resolution_stft_loss(torch.zeros_like(x), torch.zeros_like(x))) == 0.0
    y = x + 0.05 * torch.randn_like(x)
    y.requires_grad_(True)
    loss = multi_resolution_stft_loss(y, x)
    assert float(loss.detach()) > 0
    loss.backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and float(y.grad.abs().sum()) > 0
    far = multi_resolution_stft_loss(x + 0.5 * torch.randn_like(x), x)
    assert float(far) > float(loss.detach())
    assert float(mel_l1_loss(x, x, 16000)) == 0.0 and float(mel_l1_loss(y.detach(), x, 16000)) > 0
    with pytest.raises(ValueError, match="x_hat: expected the shape of x"):
        multi_resolution_stft_loss(x[..., :100], x)


def test_a_few_training_steps_on_a_tone_reduce_the_loss() -> None:
    model = codec(
        ratios=[4, 4], n_filters=8, latent_dim=8, quantizer={"name": "fsq", "kwargs": {"levels": [8, 8]}}
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = tone(4, 1024)
    losses = []
    for _ in range(30):
        out = model(x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses


def test_weight_norm_and_lstm_parameters_are_all_trained() -> None:
    model = codec(ratios=[2, 2])
    model(tone(2, 64)).loss.backward()
    names = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert names == []
    assert any(isinstance(m, nn.LSTM) for m in model.modules())
