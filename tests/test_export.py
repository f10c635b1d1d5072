"""``vqkit.export_onnx``: encode and decode of every quantizer (and of a tokenizer) run in onnxruntime and give
what the module gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import vqkit
from tests.conftest import DIM, small_kwargs

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytestmark = pytest.mark.slow


def _run(file: Path, array: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(file))
    result: np.ndarray = session.run(None, {session.get_inputs()[0].name: array})[0]
    return result


def test_every_quantizer_exports_encode_and_decode(quantizer_name: str, tmp_path: Path) -> None:
    q = vqkit.create_quantizer(quantizer_name, **small_kwargs(quantizer_name))
    q(torch.randn(4, 8, DIM))  # k-means init, statistics
    folder = vqkit.export_onnx(q, tmp_path / "onnx", torch.randn(3, 8, DIM))
    assert sorted(p.name for p in folder.iterdir()) == ["decode.onnx", "encode.onnx", "vqkit-onnx.json"]
    assert q.training  # the mode is restored
    q.eval()
    x = torch.randn(5, 8, DIM)  # another batch size: the leading axis is dynamic
    codes = _run(folder / "encode.onnx", x.numpy())
    assert np.array_equal(codes, q.encode(x).numpy())
    vectors = _run(folder / "decode.onnx", codes)
    np.testing.assert_allclose(
        vectors, q.decode(torch.from_numpy(codes)).detach().numpy(), rtol=1e-5, atol=1e-5
    )


def test_a_tokenizer_exports_encoder_and_decoder(tmp_path: Path) -> None:
    model = vqkit.build_model(
        {
            "name": "image_vqvae",
            "in_channels": 1,
            "hidden": 8,
            "res_hidden": 4,
            "num_res_layers": 1,
            "downsample": 4,
            "latent_dim": 8,
            "quantizer": {"name": "residual_vq", "kwargs": {"codebook_size": 16, "num_quantizers": 2}},
        }
    ).eval()
    folder = vqkit.export_onnx(model, tmp_path / "tok", torch.rand(2, 1, 8, 8))
    x = torch.rand(3, 1, 8, 8)
    codes = _run(folder / "encode.onnx", x.numpy())
    assert np.array_equal(codes, model.encode(x).numpy())
    images = _run(folder / "decode.onnx", codes)
    np.testing.assert_allclose(images, model.decode(torch.from_numpy(codes)).detach().numpy(), atol=1e-5)
    manifest = json.loads((folder / "vqkit-onnx.json").read_text())
    assert manifest["example_shape"] == [2, 1, 8, 8] and manifest["codes_shape"] == [2, 2, 2, 2]


def test_export_never_deletes_a_users_file(tmp_path: Path) -> None:
    q = vqkit.create_quantizer("vq", dim=DIM, codebook_size=16).eval()
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(
        FileExistsError, match="path: expected a new or empty folder or one written by export_onnx"
    ):
        vqkit.export_onnx(q, folder, torch.randn(2, DIM))
    vqkit.export_onnx(q, folder, torch.randn(2, DIM), overwrite=True)
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "encode.onnx").exists()
    vqkit.export_onnx(q, tmp_path / "again", torch.randn(2, DIM))
    vqkit.export_onnx(q, tmp_path / "again", torch.randn(2, DIM))  # an earlier export is replaced
