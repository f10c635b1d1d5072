"""The one image reader and the one audio reader, shared by the folder datasets and ``vqkit encode``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqkit.data import CorruptDataError
from vqkit.data.audio import read_audio, resample
from vqkit.data.image_folder import read_image
from vqkit.train.files import InputFileError, read_input


def _tall_image_rotated_by_exif(path: Path) -> np.ndarray:
    """A 4 x 6 (H x W) RGB image stored sideways with EXIF orientation 6 ("rotate 90 clockwise to view")."""
    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) * 3
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, exif=exif)
    return np.rot90(pixels, k=-1)  # what a viewer shows: 6 x 4


def test_read_image_applies_the_exif_orientation_with_or_without_resizing(tmp_path: Path) -> None:
    upright = _tall_image_rotated_by_exif(tmp_path / "photo.png")
    x = read_image(tmp_path / "photo.png", 3)
    assert x.shape == (3, 6, 4)
    assert torch.equal(x, torch.from_numpy(upright.copy()).permute(2, 0, 1).float() / 255.0)
    assert read_image(tmp_path / "photo.png", 1, size=4).shape == (1, 4, 4)
    assert torch.equal(read_input(tmp_path / "photo.png", "image", channels=3), x)  # the CLI reads the same


def test_read_image_scales_16_bit_grey(tmp_path: Path) -> None:
    Image.fromarray(np.full((5, 7), 65535, dtype=np.uint16)).save(tmp_path / "white16.png")
    x = read_image(tmp_path / "white16.png", 1)
    assert x.shape == (1, 5, 7) and torch.equal(x, torch.ones(1, 5, 7))


def test_read_audio_resamples_when_asked(tmp_path: Path) -> None:
    import soundfile as sf

    t = np.arange(2205) / 22050
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 220 * t)], axis=1) * 0.5
    sf.write(tmp_path / "tone.wav", stereo, 22050, subtype="FLOAT")
    native = read_audio(tmp_path / "tone.wav")
    assert native.dtype == np.float32 and native.shape == (2205,)
    np.testing.assert_allclose(native, stereo.mean(axis=1), atol=1e-7)
    at_16k = read_audio(tmp_path / "tone.wav", sample_rate=16000)
    assert at_16k.shape == (1600,) and np.array_equal(at_16k, resample(native, 22050, 16000))
    assert np.array_equal(read_audio(tmp_path / "tone.wav", 100, 300), native[100:300])
    cli = read_input(tmp_path / "tone.wav", "audio", sample_rate=16000)
    assert cli.shape == (1, 1600) and np.array_equal(cli[0].numpy(), at_16k)


def test_unreadable_files_are_named_by_both_readers_and_the_cli(tmp_path: Path) -> None:
    bad_png, bad_wav = tmp_path / "bad.png", tmp_path / "bad.wav"
    bad_png.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    bad_wav.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(CorruptDataError, match=rf"{bad_png}: cannot read the image \(UnidentifiedImageError"):
        read_image(bad_png, 3)
    with pytest.raises(CorruptDataError, match=rf"{bad_wav}: cannot read the audio file"):
        read_audio(bad_wav, sample_rate=16000)
    with pytest.raises(InputFileError, match=rf"{bad_png}: cannot read the image"):
        read_input(bad_png, "image", channels=1)
    with pytest.raises(InputFileError, match=rf"{bad_wav}: cannot read the audio file"):
        read_input(bad_wav, "audio", sample_rate=16000)
    with pytest.raises(InputFileError, match=r"notes.txt: expected an image \(\['.bmp'"):
        (tmp_path / "notes.txt").write_text("hi")
        read_input(tmp_path / "notes.txt", "image")
