"""``image_folder``: every image file under a folder, read when its item is read.

Each image: EXIF orientation applied, 16-bit grey scaled to 8 bits, alpha dropped, converted to grey or RGB, the
shorter side resized to ``size`` (Pillow's bicubic filter), the centre ``size`` x ``size`` cropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqkit.data.base import CorruptDataError, VQDataset, require_nonempty, split_folder_files
from vqkit.data.images import check_channels, check_size

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")


def read_image(path: Path, channels: int, size: int | None = None) -> torch.Tensor:
    """One image file as ``[channels, H, W]`` float32 in [0, 1]; with ``size``, ``[channels, size, size]``.

    The one image reader of vqkit (the ``image_folder`` dataset and ``vqkit encode`` both use it): EXIF
    orientation applied, 16-bit grey scaled to 8 bits, transparency dropped, converted to grey (``channels=1``)
    or RGB; with ``size``, the shorter side resized to ``size`` (bicubic) and the centre square cropped.
    A file Pillow cannot decode is a ``CorruptDataError`` naming it and the decoder's complaint.
    """
    from PIL import Image

    try:
        with Image.open(path) as opened:
            image = _decoded(opened, channels)
            if size is not None:
                image = _resized_and_cropped(image, size)
            array = np.asarray(image, dtype=np.uint8)
    except Exception as error:  # decoders raise OSError, SyntaxError, struct.error, EOFError, ...
        raise CorruptDataError(f"{path}: cannot read the image ({type(error).__name__}: {error})") from error
    x = torch.from_numpy(array.copy()).to(torch.float32) / 255.0
    return x[None] if x.ndim == 2 else x.permute(2, 0, 1).contiguous()


def _decoded(opened: Any, channels: int) -> Any:
    """The opened image upright, in mode ``L`` (one channel) or ``RGB``."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(opened)
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grey: Pillow's convert("L") would clip
        image = Image.fromarray(
            (np.asarray(image, dtype=np.float64) / 257.0).round().clip(0, 255).astype(np.uint8)
        )
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("L" if channels == 1 else "RGB")


def _resized_and_cropped(image: Any, size: int) -> Any:
    """The shorter side resized to ``size`` (bicubic), then the centre ``size`` x ``size`` square."""
    from PIL import Image

    width, height = image.size
    scale = size / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    if new != image.size:
        image = image.resize(new, Image.Resampling.BICUBIC)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


class ImageFolderDataset(VQDataset):
    """Images read from files on each access (nothing is cached in memory)."""

    def __init__(self, paths: list[Path], *, size: int, channels: int, record: dict[str, Any]) -> None:
        super().__init__(
            modality="image", item_shape=(channels, size, size), length=len(paths), record=record
        )
        self._paths = paths
        self._size = size
        self._channels = channels

    def _item(self, i: int) -> torch.Tensor:
        return read_image(self._paths[i], self._channels, self._size)


def load_image_folder(
    split: str, *, data_dir: str | None, seed: int, size: int = 32, channels: int = 3
) -> VQDataset:
    """Every image under ``data_dir`` (recursive, sorted paths); a seeded 80/10/10 split of the files."""
    size, channels = check_size(size), check_channels(channels)
    root, paths, indices, rule = split_folder_files(
        data_dir, "image_folder", "images", extensions=IMAGE_EXTENSIONS, split=split, seed=seed
    )
    require_nonempty("image_folder", split, indices, f"{len(paths)} images under {root}")
    record = {
        "name": "image_folder",
        "split": split,
        "sources": [str(root)],
        "num_source_files": len(paths),
        "split_rule": rule,
        "seed": seed,
        "options": {"size": size, "channels": channels},
    }
    return ImageFolderDataset([paths[i] for i in indices], size=size, channels=channels, record=record)
