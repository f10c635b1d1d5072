"""``image_vqvae`` and ``mlp_vqvae``: architecture, rates by hand, options and errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vqkit.models import MLPVQVAE, ImageVQVAE, build_model


def image(**kwargs: object) -> ImageVQVAE:
    config: dict[str, object] = {
        "name": "image_vqvae",
        "quantizer": {"name": "vq", "kwargs": {"codebook_size": 512}},
    }
    model = build_model({**config, **kwargs})
    assert isinstance(model, ImageVQVAE)
    return model


def test_defaults_follow_cvq_vae() -> None:
    model = image()
    assert (model.hidden, model.res_hidden, model.num_res_layers, model.latent_dim, model.downsample) == (
        128,
        32,
        2,
        64,
        4,
    )
    convs = [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]
    # conv4x4/s2 1->64, conv4x4/s2 64->128, conv3x3 128->128, 2 x (3x3 128->32, 1x1 32->128), 1x1 128->64
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (1, 64, 4, 2),
        (64, 128, 4, 2),
        (128, 128, 3, 1),
        (128, 32, 3, 1),
        (32, 128, 1, 1),
        (128, 32, 3, 1),
        (32, 128, 1, 1),
        (128, 64, 1, 1),
    ]
    convts = [m for m in model.decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convts] == [(128, 64), (64, 1)]
    assert not any(isinstance(m, nn.Sigmoid) for m in model.decoder.modules())


def test_28x28_to_7x7_and_bits_by_hand() -> None:
    model = image()
    x = torch.rand(2, 1, 28, 28)
    out = model(x)
    assert out.codes.shape == (2, 7, 7, 1)
    assert model.latent_shape((1, 28, 28)) == (7, 7) == model.latent_shape((28, 28))
    assert model.bits_per_item((1, 28, 28)) == 49 * 9
    assert model.codes_per_item((1, 28, 28)) == 49


def test_downsample_2_for_8x8_digits() -> None:
    model = image(
        downsample=2,
        hidden=16,
        res_hidden=8,
        latent_dim=4,
        quantizer={"name": "fsq", "kwargs": {"levels": [8, 5, 5, 5]}},
    )
    x = torch.rand(3, 1, 8, 8)
    out = model(x)
    assert out.reconstruction.shape == x.shape and out.codes.shape == (3, 4, 4, 1)
    assert model.bits_per_item((1, 8, 8)) == pytest.approx(16 * math.log2(1000))


def test_looc_rate_counts_every_sub_vector() -> None:
    model = image(
        hidden=16, res_hidden=8, latent_dim=16, quantizer={"name": "looc", "kwargs": {"codebook_size": 256}}
    )
    # 16 channels in sub-vectors of 4 -> 4 codes of 8 bits per latent vector, 7x7 latents
    assert model.bits_per_item((1, 28, 28)) == 49 * 4 * 8
    scaled = image(
        hidden=16,
        res_hidden=8,
        latent_dim=16,
        quantizer={"name": "looc", "kwargs": {"codebook_size": 256, "scale": 2}},
    )
    x = torch.rand(2, 1, 28, 28)
    assert scaled(x).codes.shape == (2, 7, 7, 16)
    assert scaled.bits_per_item((1, 28, 28)) == 49 * 16 * 8  # 4 sub-pixels x 4 sub-vectors
    assert "spatial_dims" not in scaled.quantizer_config()["kwargs"]  # filled in by the model


def test_sigmoid_output_and_rgb() -> None:
    model = image(in_channels=3, hidden=8, res_hidden=4, latent_dim=4, output="sigmoid")
    out = model(torch.rand(2, 3, 16, 16))
    rec = out.reconstruction.detach()
    assert rec.shape == (2, 3, 16, 16)
    assert float(rec.min()) >= 0 and float(rec.max()) <= 1


def test_image_errors() -> None:
    with pytest.raises(ValueError, match=r"downsample: expected one of \[2, 4\], got 3"):
        image(downsample=3)
    with pytest.raises(ValueError, match="output: expected one of"):
        image(output="tanh")
    with pytest.raises(ValueError, match="hidden: expected an even width"):
        image(hidden=7)
    model = image(hidden=8, res_hidden=4, latent_dim=4)
    with pytest.raises(
        ValueError, match="x: expected height and width divisible by downsample=4, got H=30, W=28"
    ):
        model(torch.rand(1, 1, 30, 28))
    with pytest.raises(ValueError, match=r"x: expected \[B, 1, H, W\]"):
        model(torch.rand(1, 3, 28, 28))
    with pytest.raises(ValueError, match="item_shape: expected height and width divisible by downsample=4"):
        model.latent_shape((1, 30, 28))
    with pytest.raises(ValueError, match=r"item_shape: expected \(1, H, W\) or \(H, W\)"):
        model.latent_shape((3, 28, 28))


def test_mlp_vqvae_shapes_and_rate() -> None:
    model = build_model(
        {
            "name": "mlp_vqvae",
            "in_dim": 32,
            "hidden": [64, 48],
            "latent_dim": 16,
            "quantizer": {"name": "residual_vq", "kwargs": {"codebook_size": 16, "num_quantizers": 2}},
        }
    )
    assert isinstance(model, MLPVQVAE)
    linears = [m for m in model.encoder.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 64), (64, 48), (48, 16)]
    linears = [m for m in model.decoder.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 48), (48, 64), (64, 32)]
    out = model(torch.randn(5, 32))
    assert out.codes.shape == (5, 2) and out.reconstruction.shape == (5, 32)
    assert model.latent_shape((32,)) == ()
    assert model.bits_per_item((32,)) == 8.0
    with pytest.raises(ValueError, match=r"item_shape: expected \(32,\)"):
        model.latent_shape((31,))
    linear = build_model(
        {"name": "mlp_vqvae", "in_dim": 8, "hidden": [], "latent_dim": 4, "quantizer": "fsq"}
    )
    assert [type(m) for m in linear.encoder] == [nn.Linear]


def test_encoder_width_alone_narrows() -> None:
    """The collapse study narrows the encoder and keeps the decoder (embeddings collapse, Fig. 4b and 5)."""
    model = image(hidden=16, res_hidden=4, latent_dim=8, encoder_hidden=4)
    first = next(m for m in model.encoder.modules() if isinstance(m, nn.Conv2d))
    assert first.out_channels == 2  # encoder_hidden / 2 in the first downsampling conv
    last = next(m for m in model.decoder.modules() if isinstance(m, nn.ConvTranspose2d))
    assert last.in_channels == 16
    assert model.to_config()["encoder_hidden"] == 4
    assert "encoder_hidden" not in image(hidden=16, res_hidden=4, latent_dim=8).to_config()
    rebuilt = build_model(model.to_config())
    assert isinstance(rebuilt, ImageVQVAE) and rebuilt.encoder_hidden == 4
    assert model(torch.rand(2, 1, 28, 28)).reconstruction.shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match="encoder_hidden: expected an even width"):
        image(encoder_hidden=5)
    mlp = build_model(
        {"name": "mlp_vqvae", "in_dim": 2, "hidden": [32, 32], "encoder_hidden": [4], "quantizer": "vq"}
    )
    assert isinstance(mlp, MLPVQVAE)
    widths = [(m.in_features, m.out_features) for m in mlp.encoder.modules() if isinstance(m, nn.Linear)]
    assert widths == [(2, 4), (4, 16)]
    assert [m.in_features for m in mlp.decoder.modules() if isinstance(m, nn.Linear)] == [16, 32, 32]
    assert build_model(mlp.to_config()).to_config() == mlp.to_config()
    with pytest.raises(ValueError, match="encoder_hidden: expected a list of positive integers"):
        build_model({"name": "mlp_vqvae", "encoder_hidden": 4, "quantizer": "vq"})
