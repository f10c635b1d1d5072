"""Reading and writing the files ``vqkit encode`` / ``vqkit decode`` work on, and the codes archive.

* Images (PNG, JPEG, BMP, ... via Pillow) become ``[C, H, W]`` in [0, 1] with the model's channel count;
  audio (WAV, FLAC, OGG via soundfile) becomes mono ``[1, T]`` at the model's sample rate.
* ``codes.npz`` holds one int array per input (``codes_0``, ``codes_1``, ...) and ``meta`` (a JSON string:
  the source names, what each decodes to, bits per item). It is read with ``allow_pickle=False`` and written
  atomically; so is every decoded file.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from vqkit.utils.atomic import atomic_write_bytes

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}
CODES_FORMAT = "vqkit.codes"


class InputFileError(ValueError):
    """An input file is missing, corrupt or of an unsupported kind; the message names it."""


def read_image(path: Path, channels: int) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            converted = img.convert("L" if channels == 1 else "RGB")
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise InputFileError(f"{path}: cannot read the image ({err})") from err
    array = np.asarray(converted, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array.copy())
    return tensor[None] if channels == 1 else tensor.permute(2, 0, 1).contiguous()


def read_audio(path: Path, sample_rate: int) -> torch.Tensor:
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, sf.LibsndfileError) as err:
        raise InputFileError(f"{path}: cannot read the audio ({err})") from err
    mono = data.mean(axis=1)
    if rate != sample_rate:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(rate), int(sample_rate))
        mono = resample_poly(mono, sample_rate // g, int(rate) // g).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(mono))[None]


def read_input(
    path: Path, modality: str, *, channels: int = 1, sample_rate: int | None = None
) -> torch.Tensor:
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if modality == "image":
        if suffix not in IMAGE_SUFFIXES:
            raise InputFileError(
                f"{path}: expected an image ({sorted(IMAGE_SUFFIXES)}), got {suffix or 'no suffix'!r}"
            )
        return read_image(path, channels)
    if modality == "audio":
        if suffix not in AUDIO_SUFFIXES:
            raise InputFileError(
                f"{path}: expected audio ({sorted(AUDIO_SUFFIXES)}), got {suffix or 'no suffix'!r}"
            )
        if sample_rate is None:
            raise InputFileError(f"{path}: the model records no sample rate to resample to")
        return read_audio(path, sample_rate)
    raise InputFileError(f"{path}: models of modality {modality!r} do not encode files")


def image_bytes(x: torch.Tensor) -> bytes:
    from PIL import Image

    array = (x.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu()
    mode_array = array[0].numpy() if array.shape[0] == 1 else array.permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(mode_array).save(buffer, format="PNG")
    return buffer.getvalue()


def audio_bytes(x: torch.Tensor, sample_rate: int) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, x.reshape(-1).clamp(-1, 1).cpu().numpy(), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def write_codes(path: Path, codes: list[torch.Tensor], meta: dict[str, Any]) -> Path:
    arrays = {f"codes_{i}": c.cpu().numpy().astype(np.int64) for i, c in enumerate(codes)}
    payload = {"format": CODES_FORMAT, "version": 1, **meta}
    buffer = io.BytesIO()
    arrays["meta"] = np.array(json.dumps(payload))
    np.savez_compressed(buffer, **cast(dict[str, Any], arrays))
    return atomic_write_bytes(path, buffer.getvalue())


def read_codes(path: Path) -> tuple[list[torch.Tensor], dict[str, Any]]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            codes = [torch.from_numpy(archive[f"codes_{i}"]) for i in range(len(meta["items"]))]
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        raise InputFileError(f"{path}: not a readable vqkit codes archive ({err})") from err
    if meta.get("format") != CODES_FORMAT:
        raise InputFileError(f"{path}: not a vqkit codes archive (format {meta.get('format')!r})")
    return codes, meta
