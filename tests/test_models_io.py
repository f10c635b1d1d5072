"""``save_tokenizer`` / ``load_tokenizer``: the on-disk format and errors that name the path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vqkit.models import Tokenizer, build_model, load_tokenizer, read_tokenizer_config, save_tokenizer
from vqkit.models.io import CONFIG_FILE, WEIGHTS_FILE


def small(latent_dim: int = 4) -> Tokenizer:
    return build_model(
        {
            "name": "mlp_vqvae",
            "in_dim": 6,
            "hidden": [8],
            "latent_dim": latent_dim,
            "quantizer": {"name": "ema_vq", "kwargs": {"codebook_size": 8}},
        }
    )


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    model = small()
    model(torch.randn(16, 6))  # EMA statistics move: buffers must round-trip too
    return save_tokenizer(model, tmp_path / "tok")


def test_format(saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    config = json.loads((saved / CONFIG_FILE).read_text())
    assert config["format"] == "vqkit.tokenizer" and config["version"] == 1 and "vqkit_version" in config
    assert config["model"]["name"] == "mlp_vqvae"
    assert config["model"]["quantizer"]["name"] == "ema_vq"
    assert config["model"]["quantizer"]["kwargs"]["codebook_size"] == 8
    assert read_tokenizer_config(saved) == config["model"]


def test_overwrite_is_atomic_and_replaces(saved: Path) -> None:
    other = small()
    save_tokenizer(other, saved)
    loaded = load_tokenizer(saved)
    for key, value in other.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert [p.name for p in saved.parent.iterdir()] == ["tok"]  # no staging leftovers


def test_a_folder_with_other_files_is_refused_unless_overwrite_and_they_survive(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(
        FileExistsError,
        match=r"path: expected a new or empty folder or one written by save_tokenizer, got '.*keep' holding "
        r"'notes.txt'; pass overwrite=True",
    ):
        save_tokenizer(small(), keep)
    assert [p.name for p in keep.iterdir()] == ["notes.txt"]
    model = small()
    save_tokenizer(model, keep, overwrite=True)
    assert sorted(p.name for p in keep.iterdir()) == [CONFIG_FILE, "notes.txt", WEIGHTS_FILE]
    assert (keep / "notes.txt").read_text() == "mine"
    loaded = load_tokenizer(keep)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_overwrite_never_replaces_a_foreign_config(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / CONFIG_FILE).write_text('{"format": "vqkit.quantizer"}')
    with pytest.raises(FileExistsError, match=f"{CONFIG_FILE}' was not written by save_tokenizer"):
        save_tokenizer(small(), keep, overwrite=True)
    assert (keep / CONFIG_FILE).read_text() == '{"format": "vqkit.quantizer"}'


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="expected a folder written by save_tokenizer, got .*nowhere"):
        load_tokenizer(tmp_path / "nowhere")


def test_missing_or_corrupt_config(saved: Path) -> None:
    path = saved / CONFIG_FILE
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"cannot read tokenizer config .*{CONFIG_FILE}"):
        load_tokenizer(saved)
    path.write_text(json.dumps({"format": "vqkit.quantizer", "version": 1}))
    with pytest.raises(ValueError, match="is not a vqkit tokenizer config"):
        load_tokenizer(saved)
    path.write_text(json.dumps({"format": "vqkit.tokenizer", "version": 99, "model": {}}))
    with pytest.raises(ValueError, match="has config version 99"):
        load_tokenizer(saved)
    path.write_text(json.dumps({"format": "vqkit.tokenizer", "version": 1, "model": {"name": "nope"}}))
    with pytest.raises(
        ValueError, match=f"the tokenizer config in .*{CONFIG_FILE}.* is invalid: name: unknown model"
    ):
        load_tokenizer(saved)
    path.unlink()
    with pytest.raises(ValueError, match=f"cannot read tokenizer config .*tok/{CONFIG_FILE}"):
        load_tokenizer(saved)


def test_missing_or_corrupt_weights(saved: Path) -> None:
    path = saved / WEIGHTS_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"cannot read weights .*{WEIGHTS_FILE}"):
        load_tokenizer(saved)
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=f"cannot read weights .*{WEIGHTS_FILE}"):
        load_tokenizer(saved)
    path.unlink()
    with pytest.raises(ValueError, match=f"cannot read weights .*tok/{WEIGHTS_FILE}"):
        load_tokenizer(saved)


def test_weights_of_another_architecture(saved: Path, tmp_path: Path) -> None:
    save_tokenizer(small(latent_dim=2), tmp_path / "other")
    (saved / WEIGHTS_FILE).write_bytes((tmp_path / "other" / WEIGHTS_FILE).read_bytes())
    with pytest.raises(ValueError, match=f"weights .*{WEIGHTS_FILE}.* do not match the config"):
        load_tokenizer(saved)


def test_save_rejects_other_modules(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="model: expected a vqkit.models.Tokenizer"):
        save_tokenizer(torch.nn.Linear(2, 2), tmp_path / "x")  # type: ignore[arg-type]
