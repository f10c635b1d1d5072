"""``vqkit.pretrained``: publishing, listing and loading shipped models, offline, and the CLI taking their names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import vqkit
import vqkit.pretrained as pretrained
from vqkit.cli import main
from vqkit.models import build_model
from vqkit.train.files import read_codes


def _tiny_image_tokenizer() -> vqkit.Tokenizer:
    torch.manual_seed(0)
    return build_model(
        {
            "name": "image_vqvae",
            "hidden": 8,
            "res_hidden": 4,
            "num_res_layers": 1,
            "latent_dim": 4,
            "quantizer": {"name": "vq", "kwargs": {"codebook_size": 16}},
        }
    )


@pytest.fixture()
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package folder of entries with one published tokenizer (the real folder is left alone)."""
    root = tmp_path / "pretrained"
    root.mkdir()
    pretrained.publish(
        _tiny_image_tokenizer(),
        "tiny_images",
        kind="tokenizer",
        data="synthetic",
        metrics={"psnr": 12.5},
        command="python -c 'publish a test model'",
        description="a test model",
        item_shape=[1, 8, 8],
        root=root,
    )
    monkeypatch.setattr(pretrained, "ROOT", root)
    return root


def test_publish_list_load_round_trip(shipped: Path) -> None:
    (entry,) = vqkit.list_pretrained()
    assert entry.name == "tiny_images" and entry.kind == "tokenizer" and entry.modality == "image"
    assert entry.quantizer == "vq" and entry.metrics == {"psnr": 12.5} and entry.rate_unit == "bits/item"
    model = vqkit.load_pretrained("tiny_images")
    assert not model.training
    assert entry.rate == model.bits_per_item([1, 8, 8]) == 2 * 2 * 4  # a 2x2 latent of 16-code VQ
    reference = _tiny_image_tokenizer().eval()
    x = torch.rand(2, 1, 8, 8)
    codes = model.encode(x)
    assert torch.equal(codes, reference.encode(x))  # the published weights, not fresh ones
    torch.testing.assert_close(model.decode(codes), model(x).reconstruction)
    assert {"config.json", "model.safetensors", "README.md", "entry.json"} <= {
        p.name for p in entry.folder.iterdir()
    }


def test_unknown_names_and_bad_arguments_are_refused(shipped: Path) -> None:
    with pytest.raises(
        ValueError, match=r"name: expected one of the shipped models \['tiny_images'\], got 'nope'"
    ):
        vqkit.load_pretrained("nope")
    with pytest.raises(ValueError, match="kind: expected one of"):
        pretrained.publish(
            _tiny_image_tokenizer(),
            "x",
            kind="model",  # type: ignore[arg-type]
            data="",
            metrics={},
            command="",
            description="",
        )
    with pytest.raises(ValueError, match="item_shape"):
        pretrained.publish(
            _tiny_image_tokenizer(),
            "x",
            kind="tokenizer",
            data="",
            metrics={},
            command="",
            description="",
            root=shipped,
        )
    assert not pretrained.is_pretrained_name("./tiny_images") and pretrained.is_pretrained_name("tiny_images")


def test_cli_encode_and_decode_take_a_shipped_name(
    shipped: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    monkeypatch.chdir(tmp_path)  # no folder called tiny_images here: the name is the shipped model's
    image = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)).save(image)
    codes = tmp_path / "codes.npz"
    assert main(["encode", "tiny_images", str(image), "-o", str(codes)]) == 0
    stored = read_codes(codes)
    assert stored is not None
    assert main(["decode", "tiny_images", str(codes), "-o", str(tmp_path / "out")]) == 0
    assert list((tmp_path / "out").glob("*.png"))


def test_every_shipped_model_loads_offline_and_matches_its_entry() -> None:
    for entry in vqkit.list_pretrained():
        model = vqkit.load_pretrained(entry.name)
        assert entry.modality == model.modality
        assert model.to_config()["quantizer"]["name"] == entry.quantizer
        if entry.kind == "tokenizer":
            rate, unit = pretrained.model_rate(model, entry.sample_rate, entry.item_shape)
            assert (rate, unit) == (entry.rate, entry.rate_unit)
        assert all(np.isfinite(v) for v in entry.metrics.values()) and entry.command
