"""``save_quantizer`` / ``load_quantizer``: the on-disk format, the overwrite rules (nothing a user made is
lost, defect D2), and load errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import vqkit
from vqkit.io import CONFIG_FILE, WEIGHTS_FILE


def trained(codebook_size: int = 8) -> vqkit.Quantizer:
    q = vqkit.create_quantizer("ema_vq", dim=4, codebook_size=codebook_size)
    q(torch.randn(32, 4))  # EMA statistics move: buffers must round-trip too
    return q


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    assert a.state_dict().keys() == b.state_dict().keys()
    for key, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[key], value), key


def test_format_is_unchanged(tmp_path: Path) -> None:
    q = trained()
    folder = vqkit.save_quantizer(q, tmp_path / "q")
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert sorted(config) == ["format", "kwargs", "name", "version", "vqkit_version"]
    assert config["format"] == "vqkit.quantizer" and config["version"] == 1 and config["name"] == "vq"


def test_a_folder_in_the_old_format_still_loads(tmp_path: Path) -> None:
    """Written the way every earlier vqkit wrote it, without the new code."""
    q = trained()
    folder = tmp_path / "old"
    folder.mkdir()
    config = {"format": "vqkit.quantizer", "version": 1, "vqkit_version": "0.1.0", **q.to_config()}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
    save_file(dict(q.state_dict()), str(folder / WEIGHTS_FILE), metadata={"format": "vqkit.quantizer"})
    assert_same_state(q, vqkit.load_quantizer(folder))


def test_a_previous_output_is_replaced_atomically(tmp_path: Path) -> None:
    path = vqkit.save_quantizer(trained(), tmp_path / "q")
    other = trained(16)
    vqkit.save_quantizer(other, path)  # no overwrite needed: the folder holds only what save_quantizer wrote
    assert_same_state(other, vqkit.load_quantizer(path))
    assert [p.name for p in tmp_path.iterdir()] == ["q"]  # no staging or backup leftovers


def test_an_empty_folder_is_used(tmp_path: Path) -> None:
    (tmp_path / "q").mkdir()
    vqkit.save_quantizer(trained(), tmp_path / "q")
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]


def test_a_folder_with_other_files_is_refused_and_kept(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(
        FileExistsError,
        match=r"path: expected a new or empty folder or one written by save_quantizer, got '.*keep' holding "
        r"'notes.txt'; pass overwrite=True",
    ):
        vqkit.save_quantizer(trained(), keep)
    assert [p.name for p in keep.iterdir()] == ["notes.txt"] and (keep / "notes.txt").read_text() == "mine"


def test_overwrite_writes_beside_other_files_and_keeps_them(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    (keep / "sub").mkdir()
    (keep / "sub" / "data.bin").write_bytes(b"\x00\x01")
    vqkit.save_quantizer(trained(), keep, overwrite=True)
    other = trained(16)
    vqkit.save_quantizer(other, keep, overwrite=True)  # again: our two files are replaced, nothing else
    assert sorted(p.name for p in keep.iterdir()) == [CONFIG_FILE, "notes.txt", "sub", WEIGHTS_FILE]
    assert (keep / "notes.txt").read_text() == "mine" and (
        keep / "sub" / "data.bin"
    ).read_bytes() == b"\x00\x01"
    assert_same_state(other, vqkit.load_quantizer(keep))
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]
    with pytest.raises(FileExistsError, match="holding 'notes.txt', 'sub'"):  # still refused without it
        vqkit.save_quantizer(other, keep)


@pytest.mark.parametrize("name", [CONFIG_FILE, WEIGHTS_FILE])
def test_overwrite_never_replaces_a_file_it_did_not_write(tmp_path: Path, name: str) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / name).write_text('{"format": "someone-else"}')
    with pytest.raises(
        FileExistsError,
        match=rf"path: '.*keep/{name}' was not written by save_quantizer, and overwrite=True replaces only its "
        "own files",
    ):
        vqkit.save_quantizer(trained(), keep, overwrite=True)
    assert [p.name for p in keep.iterdir()] == [name]
    assert (keep / name).read_text() == '{"format": "someone-else"}'


def test_a_tokenizer_folder_is_not_a_quantizer_output(tmp_path: Path) -> None:
    from vqkit.models import build_model, save_tokenizer

    quantizer = {"name": "vq", "kwargs": {"codebook_size": 8}}
    model = build_model(
        {"name": "mlp_vqvae", "in_dim": 6, "hidden": [8], "latent_dim": 4, "quantizer": quantizer}
    )
    folder = save_tokenizer(model, tmp_path / "tok")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(FileExistsError, match="holding 'config.json', 'weights.safetensors'"):
        vqkit.save_quantizer(trained(), folder)
    with pytest.raises(FileExistsError, match="config.json' was not written by save_quantizer"):
        vqkit.save_quantizer(trained(), folder, overwrite=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_file_at_the_path_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "q"
    target.write_text("a file")
    with pytest.raises(FileExistsError, match=r"path: expected a folder \(or nothing\), got the file '.*q'"):
        vqkit.save_quantizer(trained(), target, overwrite=True)
    assert target.read_text() == "a file"


def test_weights_of_another_shape_name_the_file(tmp_path: Path) -> None:
    folder = vqkit.save_quantizer(trained(8), tmp_path / "q")
    other = vqkit.save_quantizer(trained(16), tmp_path / "other")
    (folder / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    with pytest.raises(
        ValueError,
        match=rf"path: weights '.*q/{WEIGHTS_FILE}' do not match the config: '.*' has shape \(16, 4\)",
    ):
        vqkit.load_quantizer(folder)


def test_an_invalid_config_names_the_file(tmp_path: Path) -> None:
    folder = vqkit.save_quantizer(trained(), tmp_path / "q")
    config = json.loads((folder / CONFIG_FILE).read_text())
    (folder / CONFIG_FILE).write_text(json.dumps({**config, "name": "nope"}))
    with pytest.raises(
        ValueError,
        match=rf"the quantizer config in '.*q/{CONFIG_FILE}' is invalid: name: unknown quantizer 'nope'",
    ):
        vqkit.load_quantizer(folder)
    (folder / CONFIG_FILE).write_text(json.dumps({**config, "version": 99}))
    with pytest.raises(ValueError, match="has config version 99; this vqkit reads up to 1"):
        vqkit.load_quantizer(folder)


def test_save_rejects_other_modules(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="quantizer: expected a vqkit Quantizer, got Linear"):
        vqkit.save_quantizer(torch.nn.Linear(2, 2), tmp_path / "x")  # type: ignore[arg-type]
