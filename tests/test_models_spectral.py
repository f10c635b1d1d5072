"""``spectral_codec`` and ``vqkit.functional.griffin_lim``: the tokenizer contract at tiny widths, lengths and
padding, a tiny overfit, and Griffin-Lim against exact magnitudes and a numpy framing oracle."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vqkit.functional.griffin_lim import complex_stft, griffin_lim, inverse_stft
from vqkit.functional.stft_distance import spectral_convergence
from vqkit.models import SpectralCodec, build_model
from vqkit.models.convnext import stack_frames, unstack_frames
from vqkit.train.backbone import learning_rate_factor, spread

TINY: dict[str, Any] = {
    "sample_rate": 8000,
    "latent_dim": 12,
    "n_fft": 64,
    "stft_hop": 16,
    "frames_per_latent": 2,
    "hidden": 16,
    "encoder_blocks": 1,
    "decoder_blocks": 1,
    "kernel_size": 3,
    "expansion": 2,
    "n_mels": 16,
    "griffin_lim_iters": 8,
}
QUANTIZERS = {"vq": {"codebook_size": 16}, "fsq": {"levels": [4, 3]}, "ivq": {"lines": 4}}


def make(quantizer: str = "vq", **overrides: Any) -> SpectralCodec:
    torch.manual_seed(0)
    config = {"name": "spectral_codec", **TINY, **overrides}
    config["quantizer"] = {"name": quantizer, "kwargs": QUANTIZERS[quantizer]}
    model = build_model(config)
    assert isinstance(model, SpectralCodec)
    return model


def tone(batch: int = 3, samples: int = 150, seed: int = 0) -> torch.Tensor:
    """150 samples: not a multiple of the hop (32), so padding and cropping are exercised."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples, dtype=torch.float32) / 8000
    f0 = 200 + 100 * torch.rand(batch, 1, 1, generator=g)
    return 0.4 * torch.sin(2 * math.pi * f0 * t) + 0.02 * torch.randn(batch, 1, samples, generator=g)


@pytest.mark.parametrize("quantizer", list(QUANTIZERS))
def test_forward_shapes_losses_and_gradients(quantizer: str) -> None:
    model = make(quantizer)
    x = tone()
    out = model(x)
    frames = math.ceil(150 / 32)
    assert model.hop_length == 32 and model.latent_shape((1, 150)) == (frames,)
    assert out.reconstruction.shape == x.shape
    assert out.codes.shape == (3, frames, model.quantizer.codes_per_vector)
    assert model.embed(x).shape == (3, 12, frames)
    assert set(out.losses) == {"log_magnitude", "convergence", "mel"}
    expected = sum(model.loss_weights[k] * v for k, v in out.losses.items()) + out.quantizer.loss
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    for part in (model.encoder, model.decoder):
        assert float(sum(p.grad.abs().sum() for p in part.parameters() if p.grad is not None)) > 0


@pytest.mark.parametrize("quantizer", list(QUANTIZERS))
def test_exact_round_trip_in_eval(quantizer: str) -> None:
    model = make(quantizer)
    x = tone()
    model(x)  # a training forward first: k-means inits and EMA updates
    model.eval()
    with torch.no_grad():
        out = model(x)
        codes = model.encode(x)
        decoded = model.decode(codes, length=150)
    assert torch.equal(codes, out.codes)
    assert torch.equal(decoded, out.reconstruction)
    assert model.decode(codes).shape == (3, 1, 5 * 32)  # frames * hop without a length
    assert torch.equal(model.decode(codes)[..., :150], decoded)


def test_decode_length_and_input_errors_name_the_argument() -> None:
    model = make().eval()
    codes = model.encode(tone())
    for bad in (128, 161, 0, 2.5):
        with pytest.raises(ValueError, match=r"length: expected a sample count in \[129, 160\]"):
            model.decode(codes, length=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="x: expected mono audio"):
        model(torch.zeros(2, 2, 100))
    with pytest.raises(ValueError, match="item_shape"):
        model.latent_shape((2, 100))
    with pytest.raises(ValueError, match="lengths: expected a \\[B\\] tensor"):
        model(tone(), lengths=torch.tensor([150]))
    for key, value, match in [
        ("latent_norm", "batch", "latent_norm: expected one of"),
        ("kernel_size", 4, "kernel_size: expected an odd size"),
        ("stft_hop", 80, "stft_hop: expected at most n_fft=64"),
        ("griffin_lim_momentum", 1.5, "griffin_lim_momentum"),
        ("hidden", 0, "hidden"),
    ]:
        overrides: dict[str, Any] = {key: value}
        with pytest.raises(ValueError, match=match):
            make(**overrides)


def test_short_inputs_and_zero_griffin_lim_iterations() -> None:
    model = make(griffin_lim_iters=0).eval()
    x = tone(samples=5)  # shorter than one STFT window: zero padding makes it one latent frame
    with torch.no_grad():
        out = model(x)
    assert out.reconstruction.shape == (3, 1, 5) and out.codes.shape[1] == 1
    assert all(torch.isfinite(v) for v in out.losses.values())


def test_lengths_mask_the_padding() -> None:
    model = make()
    x = tone(batch=2)
    lengths = torch.tensor([150, 70])
    full = model(x, lengths=torch.tensor([150, 150]))
    plain = model(x)
    for key in plain.losses:  # all samples real: the same terms as without lengths
        torch.testing.assert_close(full.losses[key], plain.losses[key])
    assert model.latent_mask(lengths, model.embed(x)).tolist() == [[True] * 5, [True] * 3 + [False] * 2]
    predicted: list[torch.Tensor] = []

    def keep(_module: Any, _inputs: Any, y: torch.Tensor) -> None:
        y.retain_grad()
        predicted.append(y)

    model.decoder.register_forward_hook(keep)
    out = model(x, lengths=lengths)
    out.loss.backward()
    grad = predicted[0].grad
    assert grad is not None
    centres = torch.arange(grad.shape[-1]) * model.stft_hop
    assert grad[1][:, centres >= 70].abs().max() == 0  # frames past the end do not count
    assert grad[1][:, centres < 70].abs().max() > 0 and grad[0].abs().min() >= 0


def test_tiny_model_overfits_one_clip() -> None:
    torch.set_num_threads(1)
    model = make("fsq", hidden=32, griffin_lim_iters=32)
    x = tone(batch=1, samples=2048)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = float(model.forward_unquantized(x).loss.detach())
    for _ in range(150):
        loss = model.forward_unquantized(x).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.25 * first  # about 0.13 * first
    model.eval()
    with torch.no_grad():
        y = model.forward_unquantized(x).reconstruction
    mag, mag_hat = complex_stft(x[:, 0], 64, 16).abs(), complex_stft(y[:, 0], 64, 16).abs()
    # The Griffin-Lim waveform of the fitted magnitudes fits too: about 0.05 (1.1 before fitting).
    assert float(spectral_convergence(mag_hat, mag)) < 0.15


def test_config_and_save_pretrained_round_trip(tmp_path: Path) -> None:
    model = make("ivq")
    config = model.to_config()
    assert json.loads(json.dumps(config)) == config and config["name"] == "spectral_codec"
    assert "dim" not in config["quantizer"]["kwargs"]
    assert build_model(config).to_config() == config
    model.eval().save_pretrained(tmp_path / "backbone")
    loaded = SpectralCodec.from_pretrained(tmp_path / "backbone")
    x = tone()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.forward_unquantized(x).reconstruction, model.forward_unquantized(x).reconstruction
        )
    assert (
        model.frame_rate() == 250.0 and model.bitrate_kbps() == 250 * model.quantizer.bits_per_vector / 1000
    )


# ---------------------------------------------------------------------- Griffin-Lim and the STFT
def numpy_stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Loop oracle: zero-padded centred frames, periodic Hann window, rfft per frame."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    padded = np.pad(x, (n_fft // 2, n_fft // 2))
    frames = [padded[i * hop : i * hop + n_fft] * window for i in range(len(x) // hop + 1)]
    return np.stack([np.fft.rfft(f) for f in frames], axis=-1)


def chirp(samples: int = 4000, rate: int = 8000) -> torch.Tensor:
    t = torch.arange(samples, dtype=torch.float64) / rate
    return 0.5 * torch.sin(2 * math.pi * (200 * t + 0.5 * 1500 * t**2))  # 200 -> 950 Hz over 0.5 s


def test_complex_stft_matches_the_numpy_oracle_and_inverts() -> None:
    x = torch.randn(2, 301, dtype=torch.float64)
    spec = complex_stft(x, 64, 16)
    for i in range(2):
        np.testing.assert_allclose(spec[i].numpy(), numpy_stft(x[i].numpy(), 64, 16), atol=1e-10)
    torch.testing.assert_close(inverse_stft(spec, 64, 16, 301), x)


def test_griffin_lim_reconstructs_a_chirp_from_exact_magnitudes() -> None:
    x = chirp()
    magnitude = complex_stft(x, 256, 64).abs()
    y = griffin_lim(magnitude, 256, 64, iterations=64, length=x.shape[-1])
    assert y.shape == x.shape and y.dtype == torch.float64
    convergence = float(spectral_convergence(complex_stft(y, 256, 64).abs(), magnitude))
    start = float(
        spectral_convergence(
            complex_stft(griffin_lim(magnitude, 256, 64, iterations=0), 256, 64).abs(), magnitude
        )
    )
    assert convergence < 0.05 and start > 0.5, (convergence, start)
    again = griffin_lim(magnitude, 256, 64, iterations=64, length=x.shape[-1])
    assert torch.equal(y, again)  # zero initial phase: deterministic


def test_plain_griffin_lim_never_increases_the_inconsistency_and_batches_match() -> None:
    x = torch.stack([chirp(2000), 0.3 * chirp(2000).flip(-1)])
    magnitude = complex_stft(x, 128, 32).abs()
    errors = [
        float(
            spectral_convergence(
                complex_stft(griffin_lim(magnitude, 128, 32, iterations=k, momentum=0.0), 128, 32).abs(),
                magnitude,
            )
        )
        for k in range(0, 12, 2)
    ]
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(errors))  # Griffin & Lim's theorem
    batched = griffin_lim(magnitude, 128, 32, iterations=5)
    for i in range(2):
        torch.testing.assert_close(batched[i], griffin_lim(magnitude[i], 128, 32, iterations=5))
    with pytest.raises(ValueError, match=r"magnitude: expected real \[\.\.\., 65, frames\]"):
        griffin_lim(magnitude[..., :10, :], 128, 32)


def test_backbone_schedule_and_held_out_spread() -> None:
    factors = [learning_rate_factor(s, 1000) for s in range(1000)]
    assert factors[0] == pytest.approx(0.01) and factors[99] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(0.1, abs=1e-4) and all(
        b <= a for a, b in itertools.pairwise(factors[99:])
    )
    assert spread(10, 4).tolist() == [0, 3, 6, 9] and spread(3, None).tolist() == [0, 1, 2]


def test_stacked_frames_are_consecutive_and_unstack_inverts() -> None:
    spec = torch.randn(2, 3, 8)  # [B, bins, frames]
    stacked = stack_frames(spec, 2)
    assert stacked.shape == (2, 6, 4)
    for j, k, f in itertools.product(
        range(4), range(2), range(3)
    ):  # channel f * 2 + k = bin f of frame 2j + k
        assert torch.equal(stacked[:, f * 2 + k, j], spec[:, f, 2 * j + k])
    assert torch.equal(unstack_frames(stacked, 2), spec)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_backbone_command_publishes_an_entry_with_its_curve(tmp_path: Path) -> None:
    import vqkit.pretrained as pretrained
    from vqkit.train.backbone import main

    config = Path(__file__).resolve().parents[1] / "configs" / "speech_backbone.yaml"
    overrides = [
        f"data.data_dir={tmp_path / 'data'}",
        "data.num_clips=10",
        "train.steps=3",
        "train.eval_every=2",
    ]
    overrides += ["eval.max_items=2", "model.hidden=8", "model.encoder_blocks=1", "model.decoder_blocks=1"]
    out = tmp_path / "entries" / "tiny_backbone"
    assert main([str(config), *overrides, "--out", str(out), "--final-items", "2"]) == 0
    (entry,) = pretrained.list_pretrained(root=out.parent)
    assert entry.kind == "backbone" and entry.quantizer == "ivq" and entry.sample_rate == 16000
    record = json.loads((out / "training_curve.json").read_text())
    assert [row["step"] for row in record["curve"]] == [2, 3] and record["final"] == entry.metrics
    assert set(entry.metrics) >= {"stoi", "pesq", "lsd"} and "train.steps=3" in entry.command
    model = pretrained.load_pretrained("tiny_backbone", root=out.parent)
    assert isinstance(model, SpectralCodec) and not model.training and model.hidden == 8
