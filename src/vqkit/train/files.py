"""Reading and writing the files ``vqkit encode`` / ``vqkit decode`` work on, and the codes archive.

* Images (PNG, JPEG, BMP, ... via Pillow) become ``[C, H, W]`` in [0, 1] with the model's channel count;
  audio (WAV, FLAC, OGG, ... via soundfile) becomes mono ``[1, T]`` at the model's sample rate. Both are read
  by the data layer (``vqkit.data.image_folder.read_image``, ``vqkit.data.audio.read_audio``), which the
  folder datasets use too.
* ``codes.npz`` holds one int array per input (``codes_0``, ``codes_1``, ...) and ``meta`` (a JSON string:
  the source names, what each decodes to, bits per item). It is read with ``allow_pickle=False`` and written
  atomically; so is every decoded file.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from vqkit.data.audio import AUDIO_EXTENSIONS, read_audio
from vqkit.data.base import CorruptDataError
from vqkit.data.image_folder import IMAGE_EXTENSIONS, read_image
from vqkit.utils.atomic import atomic_write_bytes

CODES_FORMAT = "vqkit.codes"


class InputFileError(ValueError):
    """An input file is missing, corrupt or of an unsupported kind; the message names it."""


def read_input(
    path: Path, modality: str, *, channels: int = 1, sample_rate: int | None = None
) -> torch.Tensor:
    """One input file for ``vqkit encode``: an image ``[channels, H, W]`` in [0, 1] as it is (no resizing), or
    mono audio ``[1, T]`` resampled to ``sample_rate``. Read by the data layer's ``read_image`` /
    ``read_audio``, so a file decodes exactly as the ``image_folder`` / ``audio_folder`` datasets decode it."""
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    if modality not in ("image", "audio"):
        raise InputFileError(f"{path}: models of modality {modality!r} do not encode files")
    kind, suffixes = ("an image", IMAGE_EXTENSIONS) if modality == "image" else ("audio", AUDIO_EXTENSIONS)
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise InputFileError(f"{path}: expected {kind} ({sorted(suffixes)}), got {suffix or 'no suffix'!r}")
    if modality == "audio" and sample_rate is None:
        raise InputFileError(f"{path}: the model records no sample rate to resample to")
    try:
        if modality == "image":
            return read_image(path, channels)
        return torch.from_numpy(np.ascontiguousarray(read_audio(path, sample_rate=sample_rate)))[None]
    except CorruptDataError as error:  # it names the file already; the command reports InputFileError
        raise InputFileError(str(error)) from error


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
    """The codes and ``meta`` of a codes archive; ``InputFileError`` names ``path`` and what is wrong with it."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
        if not magic.startswith(b"PK"):  # np.load would try it as a .npy array or a pickle
            raise ValueError(
                f"an .npz archive is a zip file; this one starts with {magic.hex(' ') or 'nothing'}"
            )
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            if not isinstance(meta, dict) or not isinstance(meta.get("items"), list):
                raise ValueError("its 'meta' is not a mapping with a list of 'items'")
            codes = [_integer_codes(archive, f"codes_{i}") for i in range(len(meta["items"]))]
    except (zipfile.BadZipFile, EOFError, zlib.error) as err:
        raise InputFileError(f"{path}: a truncated or damaged codes archive ({err})") from err
    except (OSError, ValueError, KeyError) as err:  # ValueError includes bad JSON
        raise InputFileError(f"{path}: not a readable vqkit codes archive ({err})") from err
    if meta.get("format") != CODES_FORMAT:
        raise InputFileError(f"{path}: not a vqkit codes archive (format {meta.get('format')!r})")
    return codes, meta


def _integer_codes(archive: Any, name: str) -> torch.Tensor:
    array = archive[name]
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} holds {array.dtype} values, expected integer codes")
    return torch.from_numpy(array)
