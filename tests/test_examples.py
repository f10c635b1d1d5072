"""The examples that are more than a few lines: ``examples/cross_modal.py`` on tiny untrained models."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from vqkit.models import build_model

ROOT = Path(__file__).resolve().parent.parent


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def models(quantizer: dict[str, Any], audio_quantizer: dict[str, Any] | None = None) -> tuple[Any, Any]:
    torch.manual_seed(0)
    image = build_model(
        {"name": "image_vqvae", "hidden": 8, "res_hidden": 4, "latent_dim": 12, "quantizer": quantizer}
    )
    audio = build_model(
        {
            "name": "seanet_codec",
            "n_filters": 2,
            "latent_dim": 12,
            "stft_sizes": [64, 128],
            "mel_n_fft": 128,
            "n_mels": 16,
            "quantizer": audio_quantizer or quantizer,
        }
    )
    return image.eval(), audio.eval()


def test_cross_modal_report_decodes_image_codes_as_audio() -> None:
    cross_modal = example("cross_modal")
    image, audio = models({"name": "ivq", "kwargs": {"levels": "yin-yang"}})
    images, speech = torch.rand(3, 1, 28, 28), 0.1 * torch.randn(4, 1, 8000)
    report, decoded = cross_modal.cross_modal_report(image, audio, images, speech, 16000)
    assert decoded.shape == (3, 1, 49 * audio.hop_length)  # a 7 x 7 grid read as 49 frames
    assert report["frames_per_image"] == 49 and report["alphabet_sizes"] == [64] * 4
    # Yin-yang hexagram tables are sums of per-line codes, so their geometry agrees across modalities even
    # untrained: the structure comes from the binary composition.
    assert all(g > 0.5 for g in report["geometry"])
    assert all(0 <= j <= 1 for j in report["usage_js_bits"])
    distances = report["log_mel_frechet"]
    assert set(distances) == {"real_speech", "codec_reconstruction", "from_image_codes", "from_random_codes"}
    assert all(d >= 0 for d in distances.values())
    rvq = {"name": "residual_vq", "kwargs": {"codebook_size": 64, "num_quantizers": 4}}
    baseline, _ = cross_modal.cross_modal_report(*models(rvq), images, speech, 16000)
    assert all(abs(g) < 0.3 for g in baseline["geometry"])  # independent codebooks: no shared geometry
    other = {"name": "ivq", "kwargs": {"levels": [[4, 3]] * 4}}
    with pytest.raises(ValueError, match="cross-modal decoding needs IVQs with the same layout"):
        cross_modal.cross_modal_report(
            *models({"name": "ivq", "kwargs": {"levels": "yin-yang"}}, other), images, speech, 16000
        )
