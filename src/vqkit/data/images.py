"""Image datasets held in memory: scikit-learn's digits, MNIST and Fashion-MNIST (IDX), CIFAR-10 (binary).

Every item is float32 ``[channels, size, size]`` in [0, 1]. Arrays (digits, MNIST, CIFAR) are resized with
bilinear interpolation (antialiased when shrinking). Folders of image files: ``vqkit.data.image_folder``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vqkit._validate import check_int
from vqkit.data.base import (
    CorruptDataError,
    DataNotFoundError,
    VQDataset,
    holdout_split,
    permutation_split,
    reject_data_dir,
    require_dir,
    require_nonempty,
)
from vqkit.data.idx import read_idx, read_idx_header

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
# ITU-R 601-2 luma, as Pillow's convert("L").
_LUMA = (0.299, 0.587, 0.114)


def check_size(size: Any) -> int:
    return check_int("size", size, minimum=1, maximum=4096)


def check_channels(channels: Any) -> int:
    return check_int("channels", channels, choices=(1, 3), expected="1 or 3")


def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """``[C, H, W]`` with C in {1, 3} to ``channels``: grey is repeated, colour becomes ITU-R 601-2 luma."""
    if x.shape[0] == channels:
        return x
    if channels == 3:
        return x.expand(3, -1, -1).contiguous()
    weights = torch.tensor(_LUMA, dtype=x.dtype).view(3, 1, 1)
    return (x * weights).sum(0, keepdim=True)


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """``[C, H, W]`` to ``[C, size, size]``, bilinear; antialiased when shrinking; stays in [0, 1]."""
    if x.shape[-2:] == (size, size):
        return x
    shrink = size < max(x.shape[-2:])
    out = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    return out[0].clamp_(0.0, 1.0)


class ImageArrayDataset(VQDataset):
    """Images held in memory as ``[N, C, H, W]`` (uint8, or float with its own ``scale``), converted per item."""

    def __init__(
        self,
        images: np.ndarray,
        indices: np.ndarray,
        *,
        scale: float,
        size: int,
        channels: int,
        labels: np.ndarray | None,
        record: dict[str, Any],
    ) -> None:
        super().__init__(
            modality="image",
            item_shape=(channels, size, size),
            length=len(indices),
            record=record,
            labels=None if labels is None else torch.from_numpy(labels[indices].astype(np.int64)),
        )
        self._images = images
        self._indices = indices
        self._scale = float(scale)
        self._size = size
        self._channels = channels

    def _item(self, i: int) -> torch.Tensor:
        x = torch.from_numpy(np.array(self._images[self._indices[i]], dtype=np.float32)) / self._scale
        return resize_square(convert_channels(x, self._channels), self._size)


def _array_dataset(
    name: str,
    split: str,
    seed: int,
    images: np.ndarray,
    indices: np.ndarray,
    rule: dict[str, Any],
    *,
    scale: float,
    size: int,
    channels: int,
    labels: np.ndarray | None,
    sources: list[str],
    options: dict[str, Any],
) -> ImageArrayDataset:
    require_nonempty(name, split, indices, f"{len(images)} images")
    record = {
        "name": name,
        "split": split,
        "sources": sources,
        "split_rule": rule,
        "seed": seed,
        "options": options,
    }
    return ImageArrayDataset(
        images, indices, scale=scale, size=size, channels=channels, labels=labels, record=record
    )


def _official_split_dataset(
    name: str,
    split: str,
    seed: int,
    images: np.ndarray,
    labels: np.ndarray | None,
    sources: list[str],
    num_other: int,
    size: int,
    channels: int,
) -> ImageArrayDataset:
    """A split of a source with an official train / test division (MNIST, Fashion-MNIST, CIFAR-10), uint8.

    ``images`` (and ``labels``) are the official part ``split`` is drawn from: the test set for ``test``, the
    train set for ``train`` and ``val``; ``num_other`` is the size of the other part, which ``holdout_split``
    needs for its counts but which is not read.
    """
    num_train, num_test = (num_other, len(images)) if split == "test" else (len(images), num_other)
    indices, rule = holdout_split(num_train, num_test, split, seed)
    return _array_dataset(
        name,
        split,
        seed,
        images,
        indices,
        rule,
        scale=255.0,
        size=size,
        channels=channels,
        labels=labels,
        sources=sources,
        options={"size": size, "channels": channels},
    )


# --- digits ---------------------------------------------------------------------------------------------------


def digits_path() -> Path:
    """scikit-learn's bundled ``digits.csv.gz``, found without importing scikit-learn (which takes seconds)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError("'digits' needs scikit-learn's bundled data: pip install 'vqkit[train]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise DataNotFoundError(
            f"'digits': scikit-learn is installed but {path} is missing; reinstall scikit-learn"
        )
    return path


def load_digits(
    split: str, *, data_dir: str | None, seed: int, size: int = 8, channels: int = 1
) -> VQDataset:
    """1,797 8x8 digits, values 0..16 scaled to [0, 1]; a seeded 80/10/10 split (the source has no test set)."""
    size, channels = check_size(size), check_channels(channels)
    reject_data_dir("digits", data_dir, "ships with scikit-learn")
    path = digits_path()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    except (OSError, ValueError, EOFError) as error:
        raise CorruptDataError(f"{path}: cannot read the digits table ({error})") from error
    if table.ndim != 2 or table.shape[1] != 65:
        raise CorruptDataError(
            f"{path}: expected rows of 64 pixels and a label, got shape {list(table.shape)}"
        )
    images = table[:, :64].reshape(-1, 1, 8, 8)
    indices, rule = permutation_split([str(i) for i in range(len(images))], split, seed, unit="image")
    return _array_dataset(
        "digits",
        split,
        seed,
        images,
        indices,
        rule,
        scale=16.0,
        size=size,
        channels=channels,
        labels=table[:, 64].astype(np.int64),
        sources=[str(path)],
        options={"size": size, "channels": channels},
    )


# --- MNIST and Fashion-MNIST (IDX) ------------------------------------------------------------------------------

_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_SUBFOLDERS = ("", "raw", "MNIST/raw", "FashionMNIST/raw")  # plain, and torchvision's layout


def _find_idx(folder: Path, stem: str) -> Path | None:
    for sub in _IDX_SUBFOLDERS:
        for variant in (stem, stem.replace("-idx", ".idx")):  # some mirrors write train-images.idx3-ubyte
            for suffix in (".gz", ""):
                path = folder / sub / f"{variant}{suffix}"
                if path.is_file():
                    return path
    return None


def _load_idx_pair(
    folder: Path, part: str, dataset: str, hint: str
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    image_stem, label_stem = _IDX_STEMS[part]
    image_path = _find_idx(folder, image_stem)
    if image_path is None:
        raise DataNotFoundError(
            f"data_dir: {dataset!r} found no {image_stem}[.gz] in {str(folder)!r}; {hint}"
        )
    images = read_idx(image_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise CorruptDataError(
            f"{image_path}: expected [N, H, W] uint8 images, got shape {list(images.shape)} {images.dtype}"
        )
    label_path = _find_idx(folder, label_stem)
    labels = None if label_path is None else read_idx(label_path)
    if labels is not None and labels.shape != images.shape[:1]:
        raise CorruptDataError(
            f"{label_path}: expected {images.shape[0]} labels (one per image of {image_path.name}), "
            f"got shape {list(labels.shape)}"
        )
    sources = [str(image_path)] + ([] if label_path is None else [str(label_path)])
    return images[:, None], labels, sources


def _idx_dataset(
    dataset: str, folder: Path, split: str, seed: int, size: int, channels: int, hint: str
) -> VQDataset:
    size, channels = check_size(size), check_channels(channels)
    images, labels, sources = _load_idx_pair(folder, "test" if split == "test" else "train", dataset, hint)
    other_stem = _IDX_STEMS["train" if split == "test" else "test"][0]
    other = _find_idx(folder, other_stem)
    num_other = read_idx_header(other)[1][0] if other is not None else 0
    return _official_split_dataset(dataset, split, seed, images, labels, sources, num_other, size, channels)


def load_mnist(
    split: str, *, data_dir: str | None, seed: int, size: int = 28, channels: int = 1
) -> VQDataset:
    """MNIST from the standard IDX files (gzipped or not) in ``data_dir``."""
    folder = require_dir(data_dir, "mnist", "MNIST IDX files")
    hint = "download the four IDX files of http://yann.lecun.com/exdb/mnist/ (or a mirror) into it"
    return _idx_dataset("mnist", folder, split, seed, size, channels, hint)


def load_fashion_mnist(
    split: str, *, data_dir: str | None, seed: int, size: int = 28, channels: int = 1
) -> VQDataset:
    """Fashion-MNIST from Debian's dataset-fashion-mnist package, or the same IDX files in ``data_dir``."""
    folder = Path(data_dir if data_dir is not None else FASHION_MNIST_DIR).expanduser()
    hint = (
        "install Debian's package (sudo apt-get install dataset-fashion-mnist, which puts the files in "
        f"{FASHION_MNIST_DIR}) or pass data_dir (--data-dir) pointing to a folder with the four IDX files of "
        "https://github.com/zalandoresearch/fashion-mnist"
    )
    return _idx_dataset("fashion_mnist", folder, split, seed, size, channels, hint)


# --- CIFAR-10 (binary version) -----------------------------------------------------------------------------------

_CIFAR_RECORD = 1 + 3 * 32 * 32
_CIFAR_BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"


def _cifar_folder(data_dir: str | None) -> Path:
    root = require_dir(data_dir, "cifar10", "the CIFAR-10 binary batches")
    for folder in (root, root / "cifar-10-batches-bin"):
        if (folder / "data_batch_1.bin").is_file() or (folder / "test_batch.bin").is_file():
            return folder
    for folder in (root, root / "cifar-10-batches-py"):
        if (folder / "data_batch_1").is_file() or (folder / "test_batch").is_file():
            raise DataNotFoundError(
                f"data_dir: {str(folder)!r} holds the Python (pickled) version of CIFAR-10, which vqkit does not "
                f"unpickle (unpickling runs code); download the binary version ({_CIFAR_BINARY_URL}) and extract it"
            )
    raise DataNotFoundError(
        f"data_dir: 'cifar10' found no data_batch_1.bin or test_batch.bin in {str(root)!r} or its "
        f"cifar-10-batches-bin folder; download and extract the binary version ({_CIFAR_BINARY_URL})"
    )


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images [N, 3, 32, 32] uint8, labels [N] uint8)`` of one binary CIFAR-10 batch file."""
    if not path.is_file():
        raise DataNotFoundError(f"data_dir: CIFAR-10 batch {str(path)!r} is missing")
    data = path.read_bytes()
    if not data or len(data) % _CIFAR_RECORD:
        raise CorruptDataError(
            f"{path}: expected a whole number of {_CIFAR_RECORD}-byte CIFAR-10 records (label + 3x32x32), "
            f"got {len(data)} bytes; the file is truncated or not a CIFAR-10 binary batch"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].copy()
    if labels.max() > 9:
        raise CorruptDataError(f"{path}: CIFAR-10 labels must lie in 0..9, found {int(labels.max())}")
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), labels


def load_cifar10(
    split: str, *, data_dir: str | None, seed: int, size: int = 32, channels: int = 3
) -> VQDataset:
    """CIFAR-10, binary version: ``data_batch_{1..5}.bin`` (train and val) and ``test_batch.bin`` (test)."""
    size, channels = check_size(size), check_channels(channels)
    folder = _cifar_folder(data_dir)
    train_files = [folder / f"data_batch_{k}.bin" for k in range(1, 6)]
    test_file = folder / "test_batch.bin"
    files = [test_file] if split == "test" else train_files
    parts = [read_cifar_batch(path) for path in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    others = train_files if split == "test" else [test_file]
    num_other = sum(p.stat().st_size // _CIFAR_RECORD for p in others if p.is_file())
    sources = [str(p) for p in files]
    return _official_split_dataset("cifar10", split, seed, images, labels, sources, num_other, size, channels)
