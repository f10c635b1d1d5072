"""vqkit.data images: the IDX reader, MNIST / Fashion-MNIST, CIFAR-10 binary batches, image folders."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from vqkit.data import CorruptDataError, DataNotFoundError, load_dataset, read_idx
from vqkit.data.images import FASHION_MNIST_DIR

Image = pytest.importorskip("PIL.Image", reason="the train extra (pillow) is not installed")

_TYPE_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
               np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}  # fmt: skip


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file written by hand (big-endian header and data), independent of the reader under test."""
    big = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    header = bytes([0, 0, _TYPE_CODES[big.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + big.tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_idx_round_trip(tmp_path: Path, dtype: str, compress: bool) -> None:
    array = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(np.dtype(dtype).newbyteorder("="))
    if dtype == "u1":
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / "a.idx", array, compress))
    assert out.shape == (2, 3, 4) and out.dtype.isnative and np.array_equal(out, array)
    out[0, 0, 0] = 1  # writable


@pytest.mark.parametrize("compress", [False, True])
def test_idx_truncated_names_the_file(tmp_path: Path, compress: bool) -> None:
    data = idx_bytes(np.zeros((10, 4, 4), dtype=np.uint8))[:-5]
    path = tmp_path / ("cut.gz" if compress else "cut")
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(CorruptDataError, match=rf"{path}: truncated (gzipped )?IDX data: shape \[10, 4, 4\]"):
        read_idx(path)


def test_idx_corruptions_name_the_file(tmp_path: Path) -> None:
    good = gzip.compress(idx_bytes(np.zeros((100, 8, 8), dtype=np.uint8)))
    cases = {
        "magic": (b"\x01\x02\x08\x03" + b"\x00" * 12, "not an IDX file: expected the magic"),
        "type": (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "not an IDX file"),
        "short": (b"\x00\x00", "shorter than the 4-byte header"),
        "dims": (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated IDX header: 3 dimensions declared"),
        "trailing": (idx_bytes(np.zeros(3, dtype=np.uint8)) + b"\x00", "bytes after the"),
        "gzip-cut": (good[: len(good) // 2], "broken gzip stream"),
        "gzip-bad": (good[:10] + bytes(b ^ 0xFF for b in good[10:40]) + good[40:], "broken gzip stream"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CorruptDataError, match=str(path)) as error:
            read_idx(path)
        assert message in str(error.value), (name, str(error.value))


def _mnist_folder(folder: Path, n_train: int, n_test: int, compress: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    gz = ".gz" if compress else ""
    write_idx(folder / f"train-images-idx3-ubyte{gz}", train, compress)
    write_idx(folder / f"train-labels-idx1-ubyte{gz}", (np.arange(n_train) % 10).astype(np.uint8), compress)
    write_idx(folder / f"t10k-images-idx3-ubyte{gz}", test, compress)
    write_idx(folder / f"t10k-labels-idx1-ubyte{gz}", (np.arange(n_test) % 10).astype(np.uint8), compress)
    return train, test


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_from_idx_files(tmp_path: Path, compress: bool) -> None:
    train, test = _mnist_folder(tmp_path, 20, 5, compress)
    splits = {s: load_dataset("mnist", s, data_dir=tmp_path) for s in ("train", "val", "test")}
    assert {s: len(d) for s, d in splits.items()} == {"train": 18, "val": 2, "test": 5}
    assert splits["test"].info()["split_rule"]["counts"] == {"train": 18, "val": 2, "test": 5}
    assert splits["train"].info()["split_rule"]["rule"] == "official_test_with_holdout_val"
    expected_test = torch.from_numpy(test[:, None].astype(np.float32)) / 255.0
    assert torch.equal(torch.stack([splits["test"][i] for i in range(5)]), expected_test)
    got = sorted(d[i].numpy().tobytes() for d in (splits["train"], splits["val"]) for i in range(len(d)))
    assert got == sorted((img[None].astype(np.float32) / 255.0).tobytes() for img in train)
    labels = splits["test"].labels
    assert labels is not None and labels.tolist() == [0, 1, 2, 3, 4]
    assert load_dataset("mnist", "test", data_dir=tmp_path, size=32)[0].shape == (1, 32, 32)


def test_mnist_needs_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="data_dir: 'mnist' needs a folder of MNIST IDX files"):
        load_dataset("mnist", "train")
    with pytest.raises(DataNotFoundError, match=r"found no train-images-idx3-ubyte\[.gz\]"):
        load_dataset("mnist", "train", data_dir=tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 28, 28), dtype=np.uint8), False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8), False)
    with pytest.raises(CorruptDataError, match="train-labels-idx1-ubyte: expected 4 labels"):
        load_dataset("mnist", "train", data_dir=tmp_path)


@pytest.mark.skipif(
    not Path(FASHION_MNIST_DIR).is_dir(), reason="Debian's dataset-fashion-mnist is not installed"
)
def test_fashion_mnist_from_the_debian_package() -> None:
    ds = load_dataset("fashion_mnist", "test")
    assert len(ds) == 10_000 and ds.item_shape == (1, 28, 28)
    assert ds.info()["split_rule"]["counts"] == {"train": 54_000, "val": 6_000, "test": 10_000}
    assert ds.labels is not None and torch.bincount(ds.labels).tolist() == [1000] * 10
    x = ds[0]
    assert (
        x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.5
    )


def test_fashion_mnist_missing_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(
        DataNotFoundError, match=r"apt-get install dataset-fashion-mnist.*data_dir \(--data-dir\)"
    ):
        load_dataset("fashion_mnist", "train", data_dir=tmp_path)


def _cifar_batch(path: Path, n: int, first_label: int) -> np.ndarray:
    rng = np.random.default_rng(n + first_label)
    records = rng.integers(0, 256, (n, 3073), dtype=np.uint8)
    records[:, 0] = (np.arange(n) + first_label) % 10
    path.write_bytes(records.tobytes())
    return records


def test_cifar10_binary(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    train = [_cifar_batch(folder / f"data_batch_{k}.bin", 2, k) for k in range(1, 6)]
    test = _cifar_batch(folder / "test_batch.bin", 3, 0)
    ds = load_dataset("cifar10", "test", data_dir=tmp_path)
    assert len(ds) == 3 and ds.item_shape == (3, 32, 32)
    assert torch.equal(ds[1], torch.from_numpy(test[1, 1:].reshape(3, 32, 32).astype(np.float32)) / 255.0)
    assert ds.labels is not None and ds.labels.tolist() == [0, 1, 2]
    parts = [load_dataset("cifar10", s, data_dir=folder) for s in ("train", "val")]
    assert [len(p) for p in parts] == [9, 1]
    got = sorted(p[i].numpy().tobytes() for p in parts for i in range(len(p)))
    want = sorted((r[1:].reshape(3, 32, 32).astype(np.float32) / 255.0).tobytes() for b in train for r in b)
    assert got == want
    grey = load_dataset("cifar10", "test", data_dir=tmp_path, channels=1, size=16)[0]
    assert grey.shape == (1, 16, 16)


def test_cifar10_errors(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="cifar-10-binary.tar.gz"):
        load_dataset("cifar10", "train", data_dir=tmp_path)
    python = tmp_path / "cifar-10-batches-py"
    python.mkdir()
    (python / "data_batch_1").write_bytes(b"\x80\x02}q\x00.")  # a pickle: must never be loaded
    with pytest.raises(DataNotFoundError, match=r"Python \(pickled\) version of CIFAR-10.*binary version"):
        load_dataset("cifar10", "train", data_dir=tmp_path)
    binary = tmp_path / "bin"
    binary.mkdir()
    (binary / "test_batch.bin").write_bytes(b"\x00" * 3000)
    with pytest.raises(CorruptDataError, match=r"test_batch.bin: expected a whole number of 3073-byte"):
        load_dataset("cifar10", "test", data_dir=binary)


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return path


def test_image_folder_reads_resizes_and_crops(tmp_path: Path) -> None:
    wide = np.zeros((20, 60, 3), dtype=np.uint8)
    wide[:, 20:40] = (255, 128, 0)  # the centre third: what a centre crop keeps
    _save(tmp_path / "b" / "wide.png", wide)
    _save(tmp_path / "a.jpg", np.full((30, 30, 3), 200, dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    _save(tmp_path / ".hidden.png", np.zeros((4, 4), dtype=np.uint8))
    ds = load_dataset("image_folder", "train", data_dir=tmp_path, size=10)
    assert len(ds) == 2 and ds.item_shape == (3, 10, 10)
    centre = ds[1]  # sorted paths: a.jpg, b/wide.png
    assert centre.shape == (3, 10, 10)
    torch.testing.assert_close(
        centre[:, :, 2:8], torch.tensor([1.0, 128 / 255, 0.0])[:, None, None].expand(3, 10, 6)
    )
    assert abs(float(ds[0].mean()) - 200 / 255) < 0.02
    grey = load_dataset("image_folder", "train", data_dir=tmp_path, size=10, channels=1)
    assert grey[1].shape == (1, 10, 10)
    expected = (0.299 * 255 + 0.587 * 128) / 255
    assert abs(float(grey[1][0, 5, 5]) - expected) < 2 / 255


def test_image_folder_modes(tmp_path: Path) -> None:
    _save(tmp_path / "grey16.png", np.full((8, 8), 65535 // 2, dtype=np.uint16))
    _save(tmp_path / "rgba.png", np.full((8, 8, 4), 255, dtype=np.uint8))
    Image.new("P", (8, 8), 3).save(tmp_path / "palette.png", transparency=0)
    ds = load_dataset("image_folder", "train", data_dir=tmp_path, size=8, channels=3)
    items = [ds[i] for i in range(len(ds))]
    assert all(x.shape == (3, 8, 8) and float(x.min()) >= 0 and float(x.max()) <= 1 for x in items)
    assert abs(float(items[0].mean()) - 0.5) < 0.01  # 16-bit grey is scaled, not clipped


def test_image_folder_corrupt_and_truncated_name_the_file(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    png = _save(tmp_path / "source.png", pixels).read_bytes()
    broken = {"garbage.png": b"\x89PNG\r\n\x1a\nthis is not a png", "truncated.png": png[:400]}
    for name, data in broken.items():
        folder = tmp_path / name.split(".")[0]
        _save(folder / "good.png", pixels)
        (folder / name).write_bytes(data)
        ds = load_dataset("image_folder", "train", data_dir=folder, size=8)  # two files: both in train
        bad = 0 if name < "good.png" else 1  # items follow the sorted paths
        good = 1 - bad
        assert ds[good].shape == (3, 8, 8)
        with pytest.raises(CorruptDataError, match=rf"{folder / name}: cannot read the image"):
            ds[bad]


def test_image_folder_splits_are_disjoint(tmp_path: Path) -> None:
    for i in range(12):
        _save(tmp_path / f"d{i % 3}" / f"{i:02d}.png", np.full((6, 6), i * 20, dtype=np.uint8))
    values = {}
    for split in ("train", "val", "test"):
        ds = load_dataset("image_folder", split, data_dir=tmp_path, size=6, channels=1, seed=1)
        values[split] = {round(float(ds[i].mean()) * 255) for i in range(len(ds))}
    assert [len(v) for v in values.values()] == [10, 1, 1]
    assert set.union(*values.values()) == {i * 20 for i in range(12)}


def test_image_folder_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="data_dir: 'image_folder' needs a folder of images"):
        load_dataset("image_folder", "train")
    with pytest.raises(DataNotFoundError, match="no such folder"):
        load_dataset("image_folder", "train", data_dir=tmp_path / "missing")
    with pytest.raises(DataNotFoundError, match="found no images"):
        load_dataset("image_folder", "train", data_dir=tmp_path)
    for i in range(2):
        _save(tmp_path / f"{i}.png", np.zeros((4, 4), dtype=np.uint8))
    assert len(load_dataset("image_folder", "train", data_dir=tmp_path)) == 2
    with pytest.raises(ValueError, match=r"split: 'image_folder' has no 'val' items \(2 images under"):
        load_dataset("image_folder", "val", data_dir=tmp_path)
