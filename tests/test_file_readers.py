"""Every file reader, given truncated, corrupt and wrong-type input, raises an error that names the file and
says what is wrong with it (never a bare traceback from the parser underneath).

Each case writes a good file with vqkit's own writer (or the format's), damages it (cut in half, emptied,
replaced by a file of another format, or given contents of the right format but the wrong shape or kind), and
reads it through the public reader: safetensors (quantizer, tokenizer, checkpoint), config JSON (quantizer,
tokenizer, checkpoint state, a run's data record) and a run's config YAML, codes archives (``vqkit encode``),
WAV, PNG, YAML (train and bench configs) and IDX (MNIST).
"""

from __future__ import annotations

import gzip
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from safetensors.torch import save
from torch import nn

import vqkit
from vqkit.data import CorruptDataError, read_idx
from vqkit.data.images import load_mnist
from vqkit.models import build_model, load_tokenizer, save_tokenizer
from vqkit.train import checkpoint as ckpt
from vqkit.train.bench_spec import load_bench
from vqkit.train.config import ConfigError, dump_config, load_config
from vqkit.train.files import InputFileError, read_codes, read_input, write_codes
from vqkit.train.run import RunPaths, load_run_model


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _wav() -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.linspace(-0.5, 0.5, 800, dtype=np.float32), 8000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


PNG, WAV = _png(), _wav()
IDX = b"\x00\x00\x08\x03" + np.array([2, 3, 3], dtype=">u4").tobytes() + bytes(range(18))
MLP = {"name": "mlp_vqvae", "in_dim": 6, "hidden": [8], "latent_dim": 4}
MLP_QUANTIZER = {"name": "vq", "kwargs": {"codebook_size": 8}}


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


# --- the good files and their readers: each returns {file name: path} and the read --------------------------


def quantizer(root: Path) -> tuple[dict[str, Path], Callable[[], object]]:
    folder = vqkit.save_quantizer(vqkit.VQ(4, 8), root / "q")
    return {p.name: p for p in folder.iterdir()}, lambda: vqkit.load_quantizer(folder)


def tokenizer(root: Path) -> tuple[dict[str, Path], Callable[[], object]]:
    folder = save_tokenizer(build_model({**MLP, "quantizer": MLP_QUANTIZER}), root / "tok")
    return {p.name: p for p in folder.iterdir()}, lambda: load_tokenizer(folder)


def checkpoint(root: Path) -> tuple[dict[str, Path], Callable[[], object]]:
    model = nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    path = ckpt.save_checkpoint(root, 3, model, optimizer, {})
    return {p.name: p for p in path.iterdir()}, lambda: ckpt.load_checkpoint(path, model, optimizer)


def run_dir(root: Path) -> tuple[dict[str, Path], Callable[[], object]]:
    """A run directory as ``vqkit train`` leaves it (config.yaml, data.json, a checkpoint), read by ``vqkit
    encode`` / ``decode`` / ``eval`` through ``load_run_model``."""
    config = load_config(Path(__file__).resolve().parent.parent / "configs" / "synthetic.yaml")
    paths = RunPaths(root / "run")
    model = build_model(dict(config.model))
    ckpt.save_checkpoint(paths.checkpoints, 1, model, torch.optim.Adam(model.parameters()), {})
    paths.config.write_text(dump_config(config))
    paths.data.write_text(json.dumps({"train": {"item_shape": [2]}}))
    return {"config.yaml": paths.config, "data.json": paths.data}, lambda: load_run_model(paths.root)


def codes(root: Path) -> tuple[dict[str, Path], Callable[[], object]]:
    path = write_codes(
        root / "codes.npz", [torch.zeros(2, 1, dtype=torch.long)], {"items": [{"source": "a"}]}
    )
    return {"codes.npz": path}, lambda: read_codes(path)


def media(
    name: str, data: bytes, modality: str
) -> Callable[[Path], tuple[dict[str, Path], Callable[[], object]]]:
    def make(root: Path) -> tuple[dict[str, Path], Callable[[], object]]:
        path = root / name
        path.write_bytes(data)
        return {name: path}, lambda: read_input(path, modality, sample_rate=8000)

    return make


def train_yaml(root: Path) -> tuple[dict[str, Path], Callable[[], object]]:
    path = root / "train.yaml"
    path.write_text(
        "data: {name: digits}\nmodel: {name: image_vqvae, quantizer: {name: vq}}\ntrain: {steps: 3}\n"
    )
    return {"train.yaml": path}, lambda: load_config(path)


def bench_yaml(root: Path) -> tuple[dict[str, Path], Callable[[], object]]:
    path = root / "bench.yaml"
    path.write_text("config: ../digits.yaml\nmethods: [vq, fsq]\nbits: [4, 6]\nseeds: [0]\n")
    return {"bench.yaml": path}, lambda: load_bench(path)


def idx(root: Path) -> tuple[dict[str, Path], Callable[[], object]]:
    path = root / "data.idx"
    path.write_bytes(IDX)
    return {"data.idx": path}, lambda: read_idx(path)


def mnist(root: Path) -> tuple[dict[str, Path], Callable[[], object]]:
    path = root / "t10k-images-idx3-ubyte"
    path.write_bytes(IDX)
    return {path.name: path}, lambda: load_mnist("test", data_dir=str(root), seed=0)


# --- the cases ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    good: Callable[[Path], tuple[dict[str, Path], Callable[[], object]]]
    file: str  # which of the good files is damaged
    damage: Callable[[bytes], bytes]
    error: type[Exception]
    reason: str  # a regex the message matches, besides naming the file


def _other_weights(_: bytes) -> bytes:  # a readable safetensors file of some other module
    return save({"codebook.weight": torch.zeros(3, 3)})


def _npy(_: bytes) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    return buffer.getvalue()


def _json(value: Any) -> Callable[[bytes], bytes]:
    return lambda _: json.dumps(value).encode()


def _edit_json(edit: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    def damage(data: bytes) -> bytes:
        value = json.loads(data)
        edit(value)
        return json.dumps(value).encode()

    return damage


def _wav_data_cut(data: bytes) -> bytes:  # the header intact, half of the samples gone
    return data[: 44 + 400]


SAFETENSORS = r"cannot read .*: Error while deserializing header"
CASES: dict[str, Case] = {
    # safetensors
    "quantizer weights, truncated": Case(quantizer, "weights.safetensors", half, ValueError, SAFETENSORS),
    "quantizer weights, empty": Case(
        quantizer, "weights.safetensors", lambda _: b"", ValueError, SAFETENSORS
    ),
    "quantizer weights, a PNG": Case(
        quantizer, "weights.safetensors", lambda _: PNG, ValueError, SAFETENSORS
    ),
    "quantizer weights, another shape": Case(
        quantizer, "weights.safetensors", _other_weights, ValueError, "do not match the config"
    ),
    "tokenizer weights, truncated": Case(tokenizer, "weights.safetensors", half, ValueError, SAFETENSORS),
    "tokenizer weights, JSON": Case(tokenizer, "weights.safetensors", _json({}), ValueError, SAFETENSORS),
    "checkpoint model, truncated": Case(checkpoint, "model.safetensors", half, ValueError, SAFETENSORS),
    "checkpoint optimizer, a PNG": Case(
        checkpoint, "optimizer.safetensors", lambda _: PNG, ValueError, SAFETENSORS
    ),
    "checkpoint model, another model": Case(
        checkpoint, "model.safetensors", _other_weights, ValueError, "does not fit the model: .*Missing key"
    ),
    # config JSON
    "quantizer config, truncated": Case(
        quantizer, "config.json", half, ValueError, "cannot read quantizer config"
    ),
    "quantizer config, empty": Case(quantizer, "config.json", lambda _: b"", ValueError, "Expecting value"),
    "quantizer config, a PNG": Case(quantizer, "config.json", lambda _: PNG, ValueError, "can't decode byte"),
    "quantizer config, a list": Case(
        quantizer, "config.json", _json([1]), ValueError, "not a vqkit quantizer config"
    ),
    "quantizer config, bad kwargs": Case(
        quantizer,
        "config.json",
        _edit_json(lambda c: c.update(kwargs=[1])),
        ValueError,
        "config.kwargs: expected",
    ),
    "tokenizer config, truncated": Case(
        tokenizer, "config.json", half, ValueError, "cannot read tokenizer config"
    ),
    "tokenizer config, a quantizer's": Case(
        tokenizer,
        "config.json",
        _json({"format": "vqkit.quantizer", "version": 1}),
        ValueError,
        "not a vqkit tokenizer",
    ),
    "checkpoint state, truncated": Case(
        checkpoint, "state.json", half, ValueError, "cannot read .*Expecting"
    ),
    "checkpoint state, a PNG": Case(checkpoint, "state.json", lambda _: PNG, ValueError, "can't decode byte"),
    "checkpoint state, no optimizer": Case(
        checkpoint,
        "state.json",
        _edit_json(lambda s: s.pop("optimizer")),
        ValueError,
        "is damaged: .*'optimizer'",
    ),
    "checkpoint state, bad step": Case(
        checkpoint,
        "state.json",
        _edit_json(lambda s: s.update(step="x")),
        ValueError,
        "is damaged: .*'step' 'x'",
    ),
    "checkpoint state, bad generators": Case(
        checkpoint, "state.json", _edit_json(lambda s: s["rng"].pop("torch")), ValueError, "damaged generator"
    ),
    "run data record, truncated": Case(run_dir, "data.json", half, ValueError, "run: cannot read .*line 1"),
    "run data record, a list": Case(
        run_dir, "data.json", _json([]), ValueError, "must hold a JSON object, got list"
    ),
    "run config, cut to valid YAML": Case(
        run_dir,
        "config.yaml",
        lambda d: d[: d.index(b"  quantizer")],
        ValueError,
        "model config in .* is invalid",
    ),
    "run config, a damaged line": Case(
        run_dir,
        "config.yaml",
        lambda d: d.replace(b"quantizer:", b"quantizer: ["),
        ConfigError,
        "not valid YAML",
    ),
    "run config, a PNG": Case(run_dir, "config.yaml", lambda _: PNG, ConfigError, "not a UTF-8 text file"),
    # codes archives
    "codes, truncated": Case(codes, "codes.npz", half, InputFileError, "truncated or damaged codes archive"),
    "codes, empty": Case(
        codes, "codes.npz", lambda _: b"", InputFileError, "zip file; this one starts with nothing"
    ),
    "codes, a PNG": Case(codes, "codes.npz", lambda _: PNG, InputFileError, "starts with 89 50 4e 47"),
    "codes, an .npy array": Case(
        codes, "codes.npz", _npy, InputFileError, "zip file; this one starts with 93 4e"
    ),
    "codes, no meta": Case(codes, "codes.npz", lambda _: npz(codes_0=np.zeros(2)), InputFileError, "meta"),
    "codes, meta a list": Case(
        codes,
        "codes.npz",
        lambda _: npz(meta=np.array("[1]")),
        InputFileError,
        "not a mapping with a list of 'items'",
    ),
    "codes, float codes": Case(
        codes,
        "codes.npz",
        lambda _: npz(meta=np.array(json.dumps({"items": [{}]})), codes_0=np.zeros(2)),
        InputFileError,
        "codes_0 holds float64 values, expected integer codes",
    ),
    # WAV and PNG
    "WAV, header cut": Case(
        media("a.wav", WAV, "audio"), "a.wav", lambda d: d[:20], InputFileError, "Malformed"
    ),
    "WAV, samples cut": Case(
        media("a.wav", WAV, "audio"),
        "a.wav",
        _wav_data_cut,
        InputFileError,
        "truncated WAV file: .*1600 bytes",
    ),
    "WAV, empty": Case(
        media("a.wav", WAV, "audio"), "a.wav", lambda _: b"", InputFileError, "Format not recognised"
    ),
    "WAV, a PNG": Case(
        media("a.wav", WAV, "audio"), "a.wav", lambda _: PNG, InputFileError, "cannot read the audio"
    ),
    "PNG, truncated": Case(
        media("i.png", PNG, "image"), "i.png", half, InputFileError, "cannot read the image"
    ),
    "PNG, empty": Case(
        media("i.png", PNG, "image"), "i.png", lambda _: b"", InputFileError, "cannot identify image"
    ),
    "PNG, a WAV": Case(
        media("i.png", PNG, "image"), "i.png", lambda _: WAV, InputFileError, "cannot identify image"
    ),
    # YAML
    "train config, truncated": Case(
        train_yaml, "train.yaml", lambda d: d[:14], ConfigError, "not valid YAML"
    ),
    "train config, a PNG": Case(
        train_yaml, "train.yaml", lambda _: PNG, ConfigError, "not a UTF-8 text file"
    ),
    "train config, a list": Case(
        train_yaml, "train.yaml", lambda _: b"- 1\n", ConfigError, "must hold a mapping"
    ),
    "train config, a python tag": Case(
        train_yaml,
        "train.yaml",
        lambda _: b"seed: !!python/object/apply:os.getpid []\n",
        ConfigError,
        "not valid YAML",
    ),
    "bench, truncated": Case(bench_yaml, "bench.yaml", lambda d: d[:37], ConfigError, "not valid YAML"),
    "bench, a PNG": Case(bench_yaml, "bench.yaml", lambda _: PNG, ConfigError, "not a UTF-8 text file"),
    "bench, a list": Case(bench_yaml, "bench.yaml", lambda _: b"- 1\n", ConfigError, "must be a mapping"),
    "bench, bits of text": Case(
        bench_yaml,
        "bench.yaml",
        lambda d: d.replace(b"[4, 6]", b"[four]"),
        ConfigError,
        "bench.bits: expected",
    ),
    "bench, quick a list": Case(
        bench_yaml,
        "bench.yaml",
        lambda d: d + b"quick: [1]\n",
        ConfigError,
        "bench.quick: expected a mapping",
    ),
    # IDX
    "IDX, header cut": Case(idx, "data.idx", lambda d: d[:10], CorruptDataError, "truncated IDX header"),
    "IDX, data cut": Case(
        idx, "data.idx", lambda d: d[:20], CorruptDataError, "truncated IDX data: .*needs 18"
    ),
    "IDX, empty": Case(idx, "data.idx", lambda _: b"", CorruptDataError, "shorter than the 4-byte header"),
    "IDX, a PNG": Case(idx, "data.idx", lambda _: PNG, CorruptDataError, "expected the magic 00 00"),
    "IDX, gzip cut": Case(
        idx, "data.idx", lambda d: gzip.compress(d)[:15], CorruptDataError, "broken gzip stream"
    ),
    "MNIST images, a labels file": Case(
        mnist,
        "t10k-images-idx3-ubyte",
        lambda _: b"\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02",
        CorruptDataError,
        r"expected \[N, H, W\] uint8 images, got shape \[2\]",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_damaged_file_is_named_with_what_is_wrong(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    files, read = case.good(tmp_path)
    read()  # the good file reads
    damaged = files[case.file]
    damaged.write_bytes(case.damage(damaged.read_bytes()))
    with pytest.raises(case.error) as caught:
        read()
    message = str(caught.value)
    assert str(damaged) in message, message  # names the file itself, not only its folder
    assert re.search(case.reason, message, re.DOTALL), message
