"""``vqkit tokenize``: shards and index of image folders, WAV folders and a registered dataset, resuming after an
interruption, two processes against one, and the errors. Tiny tokenizers (an 8x8 image VQ-VAE, the tests'
SEANet codec) on folders the tests write; each item's codes are checked against the tokenizer's own ``encode``
of the file, read here with Pillow / soundfile."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import vqkit
from tests.conftest import tiny_codec
from vqkit.cli import main
from vqkit.data import load_dataset
from vqkit.train import shards
from vqkit.train import tokenize_dataset as tokenize_dataset_module
from vqkit.train.shards import code_dtype, read_index, read_shard, read_shards
from vqkit.train.tokenize_dataset import tokenize_dataset

IMAGES = ["a.png", "b.png", "c.png", "sub/d.png", "sub/e.png", "sub/f.png", "z/g.png"]  # sorted path order
WAVS = {"c0.wav": 2000, "c1.wav": 1500, "c2.wav": 600}  # samples at 8 kHz; 800-sample segments: 3, 2, 1
SIZE = {"size": 8}


@pytest.fixture(scope="module")
def image_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[vqkit.Tokenizer, Path]:
    torch.manual_seed(0)
    model = vqkit.build_model(
        {
            "name": "image_vqvae",
            "in_channels": 1,
            "hidden": 8,
            "res_hidden": 4,
            "num_res_layers": 1,
            "downsample": 4,
            "latent_dim": 8,
            "quantizer": {"name": "vq", "kwargs": {"codebook_size": 16}},
        }
    ).eval()
    return model, vqkit.save_tokenizer(model, tmp_path_factory.mktemp("tok") / "image")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name in reversed(IMAGES):  # written out of order: the source sorts by path
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(root / name)
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def reference(
    image_model: tuple[vqkit.Tokenizer, Path], image_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """One uninterrupted single-process run: 7 images in shards of 3 (blocks 0, 1, 2), batches of 2."""
    out = tmp_path_factory.mktemp("ref") / "tokens"
    tokenize_dataset(image_model[1], str(image_dir), out, shard_size=3, batch_size=2, options=SIZE)
    return out


def _image_codes(model: vqkit.Tokenizer, path: Path) -> np.ndarray:
    x = torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255.0)[None, None]
    return model.encode(x)[0].numpy()


def test_image_folder_shards_and_index(
    image_model: tuple[vqkit.Tokenizer, Path], image_dir: Path, reference: Path
) -> None:
    model, folder = image_model
    assert sorted(p.name for p in reference.iterdir()) == [
        "index.json",
        "shard-r000-000000.npz",
        "shard-r000-000001.npz",
        "shard-r000-000002.npz",
    ]  # the progress records (.tokenize/) are gone once the index is written
    index = json.loads((reference / "index.json").read_text())
    assert index["format"] == "vqkit.tokenized" and index["num_items"] == len(IMAGES)
    assert [item["name"] for item in index["items"]] == IMAGES
    assert [(item["shard"], item["row"]) for item in index["items"]] == [
        (f"shard-r000-{b:06d}.npz", r) for b, r in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0)]
    ]
    assert all(item["shape"] == [2, 2, 1] for item in index["items"]) and index["dtype"] == "uint8"
    assert [s["num_items"] for s in index["shards"]] == [3, 3, 1]
    settings = index["settings"]
    assert settings["tokenizer_config"] == model.to_config()
    assert settings["source"]["options"] == {"size": 8, "channels": 1}  # channels: the tokenizer's
    assert settings["bits_per_item"] == 4 * 4.0 and settings["tokenizer"]["path"] == str(folder)
    codes = read_shards(reference)
    assert list(codes) == IMAGES
    for name in IMAGES:
        assert codes[name].dtype == np.uint8
        assert np.array_equal(codes[name], _image_codes(model, image_dir / name)), name
    with np.load(
        reference / "shard-r000-000001.npz", allow_pickle=False
    ) as archive:  # plain arrays, no pickle
        assert archive["names"].tolist() == IMAGES[3:6] and archive["codes"].shape == (3, 2, 2, 1)


def test_two_processes_make_the_same_items_and_codes(
    image_model: tuple[vqkit.Tokenizer, Path], image_dir: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "two"
    tokenize_dataset(image_model[1], str(image_dir), out, shard_size=3, batch_size=2, options=SIZE, nproc=2)
    index = read_index(out)
    # Blocks in turn: 0 and 2 to rank 0, 1 to rank 1; the index lists them in source order.
    assert [s["file"] for s in index["shards"]] == [
        "shard-r000-000000.npz",
        "shard-r001-000001.npz",
        "shard-r000-000002.npz",
    ]
    one, two = read_shards(reference), read_shards(out)
    assert list(two) == list(one) == IMAGES
    assert all(np.array_equal(two[name], one[name]) for name in IMAGES)
    assert not (out / ".tokenize").exists()


def test_resume_after_an_interruption_loses_and_duplicates_nothing(
    image_model: tuple[vqkit.Tokenizer, Path],
    image_dir: Path,
    reference: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "tokens"
    write = shards.write_shard
    calls: list[str] = []
    fail_at = [2]  # the first run fails writing its second shard; later runs do not fail

    def failing(path: Path, *args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(path.name)
        if len(calls) == fail_at[0]:
            fail_at[0] = 0
            raise RuntimeError("simulated interruption")
        return write(path, *args, **kwargs)

    monkeypatch.setattr(shards, "write_shard", failing)
    run: dict[str, Any] = {"shard_size": 3, "batch_size": 2, "options": SIZE}
    with pytest.raises(RuntimeError, match="simulated"):
        tokenize_dataset(image_model[1], str(image_dir), out, **run)
    assert not (out / "index.json").exists() and (out / ".tokenize" / "block-000000.json").exists()
    # A kill between a shard and its record leaves an unrecorded shard (here block 2's name) and a temporary file.
    shutil.copy(out / "shard-r000-000000.npz", out / "shard-r000-000002.npz")
    (out / ".shard-r000-000001.npz.x1y2.tmp").write_bytes(b"partial")
    with pytest.raises(FileExistsError, match="--out: .* pass --resume"):
        tokenize_dataset(image_model[1], str(image_dir), out, **run)
    with pytest.raises(ValueError, match="--resume: .*--shard-size differ"):
        tokenize_dataset(image_model[1], str(image_dir), out, resume=True, **{**run, "shard_size": 2})
    calls.clear()
    tokenize_dataset(image_model[1], str(image_dir), out, resume=True, **run)
    assert calls == ["shard-r000-000001.npz", "shard-r000-000002.npz"]  # block 0 was finished: skipped
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())
    index = read_index(out)
    names = [item["name"] for item in index["items"]]
    assert names == IMAGES and len(set(names)) == len(names)
    one, resumed = read_shards(reference), read_shards(out)
    assert list(resumed) == IMAGES and all(np.array_equal(resumed[n], one[n]) for n in IMAGES)
    assert index["shards"] == read_index(reference)["shards"]  # the same files, byte for byte (SHA-256)
    calls.clear()
    tokenize_dataset(image_model[1], str(image_dir), out, resume=True, **run)
    assert calls == [] and read_index(out)["items"] == index["items"]  # a finished folder: nothing to redo


def _segments(path: Path, length: int = 800) -> list[np.ndarray]:
    data, _ = sf.read(path, dtype="float32")
    count = max(1, len(data) // length + (2 * (len(data) % length) >= length))
    padded = np.zeros(count * length, dtype=np.float32)
    padded[: len(data)] = data[: count * length]
    return [padded[k * length : (k + 1) * length] for k in range(count)]


def test_wav_folder_in_parquet(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    model = tiny_codec({"name": "residual_vq", "kwargs": {"codebook_size": 16, "num_quantizers": 2}}).eval()
    folder = vqkit.save_tokenizer(model, tmp_path / "codec")
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    for i, (name, n) in enumerate(WAVS.items()):
        sf.write(wavs / name, 0.3 * np.sin(np.arange(n) / (4.0 + i)), 8000)
    out = tmp_path / "tokens"
    options = {"segment_seconds": 0.1}
    tokenize_dataset(folder, str(wavs), out, format="parquet", shard_size=4, options=options)
    expected = {f"{name}#{k}": seg for name in WAVS for k, seg in enumerate(_segments(wavs / name))}
    assert list(expected) == ["c0.wav#0", "c0.wav#1", "c0.wav#2", "c1.wav#0", "c1.wav#1", "c2.wav#0"]
    index = read_index(out)
    assert [s["file"] for s in index["shards"]] == ["shard-r000-000000.parquet", "shard-r000-000001.parquet"]
    assert index["code_shape"] == [200, 2] and index["settings"]["source"]["options"]["sample_rate"] == 8000
    codes = read_shards(out)
    assert list(codes) == list(expected)
    for name, segment in expected.items():
        want = model.encode(torch.from_numpy(segment)[None, None])[0].numpy()
        assert np.array_equal(codes[name], want), name
    import pyarrow.parquet as pq

    table = pq.read_table(out / "shard-r000-000001.parquet")
    assert table.column_names == ["name", "codes", "shape"] and table.num_rows == 2
    assert table.column("shape").to_pylist() == [[200, 2]] * 2
    assert np.array_equal(np.array(table.column("codes").to_pylist()[0]), codes["c1.wav#1"].reshape(-1))


def test_a_registered_dataset_through_the_command(
    image_model: tuple[vqkit.Tokenizer, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, folder = image_model
    out = tmp_path / "digits"
    monkeypatch.setattr(tokenize_dataset_module, "PROGRESS_INTERVAL_S", 0.0)  # a line after every batch
    args = ["tokenize", str(folder), "digits:test", "--out", str(out), "--shard-size", "64"]
    assert main(args) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("tokenize: 64/") and "items/s" in printed[0]  # stdout is no terminal here
    assert printed[-1].startswith(f"wrote {out}: ") and "uint8" in printed[-1]
    dataset = load_dataset("digits", "test")  # size 8, channels 1: the dataset's and the tokenizer's
    codes = read_shards(out)
    assert list(codes) == [f"test/{i}" for i in range(len(dataset))] and len(dataset) > 64
    x = torch.stack([dataset[i] for i in range(len(dataset))])
    assert np.array_equal(np.stack(list(codes.values())), model.encode(x).numpy())
    names, shard = read_shard(out / "shard-r000-000001.npz")
    assert names == [f"test/{i}" for i in range(64, min(128, len(dataset)))] and shard.dtype == np.uint8


def test_bad_arguments_name_themselves(
    image_model: tuple[vqkit.Tokenizer, Path],
    image_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tok, images, out = str(image_model[1]), str(image_dir), str(tmp_path / "out")
    foreign = tmp_path / "foreign"  # a folder vqkit did not write, holding a file named like its index
    foreign.mkdir()
    (foreign / "index.json").write_text("{}")
    cases = [
        ([tok, "nope:test", "--out", out], "source: expected NAME:SPLIT"),
        ([tok, "digits", "--out", out], "add a split: digits:test"),
        ([tok, "digits:tset", "--out", out], "source: expected a split"),
        ([tok, str(tmp_path / "missing"), "--out", out], "(no such folder)"),
        (
            [tok, "gaussian_clusters:test", "--out", out],
            "holds vector items; the tokenizer's modality is image",
        ),
        ([tok, str(tmp_path), "--out", out], "source: data_dir: 'image_folder' found no images"),
        ([str(tmp_path / "nothing"), images, "--out", out], "tokenizer: "),
        ([tok, images, "--out", str(foreign)], "--out: "),
        ([tok, images, "--out", str(foreign), "--resume"], "--resume: "),
        ([tok, images, "--out", str(foreign), "--force"], "--force: "),
        ([tok, images, "--out", out, "--option", "size"], "--option: expected KEY=VALUE"),
        ([tok, images, "--out", out, "--nproc", "0"], "--nproc: expected a positive integer"),
    ]
    for argv, message in cases:
        assert main(["tokenize", *argv]) == 1, message
        err = capsys.readouterr().err
        assert message in err, (message, err)
    assert sorted(p.name for p in foreign.iterdir()) == ["index.json"]  # nothing written, nothing removed
    assert (foreign / "index.json").read_text() == "{}" and not (tmp_path / "out").exists()


def test_parquet_without_pyarrow_names_the_extra(
    image_model: tuple[vqkit.Tokenizer, Path],
    image_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"--format: Parquet shards need pyarrow.*vqkit\[parquet\]"):
        tokenize_dataset(image_model[1], str(image_dir), tmp_path / "out", format="parquet", options=SIZE)
    assert not (tmp_path / "out").exists()


def test_code_dtype_is_the_smallest_that_holds_every_code() -> None:
    for sizes, dtype in (([16], np.uint8), ([256], np.uint8), ([257, 4], np.uint16), ([65536], np.uint16)):
        assert code_dtype(sizes) == dtype
    assert code_dtype([65537]) == np.uint32
