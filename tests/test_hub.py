"""Hub-style folders (``save_pretrained`` / ``from_pretrained``, ``vqkit.hub``): the layout huggingface_hub
writes and reads, the model card, repo ids through a stubbed ``snapshot_download`` (never the network), the
library without huggingface_hub, the older folders, and the overwrite rules."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import vqkit
from tests.conftest import DIM, small_kwargs, tiny_codec
from vqkit.models import MLPVQVAE, SEANetCodec, Tokenizer, build_model

FILES = ["README.md", "config.json", "model.safetensors"]


def trained(name: str = "ema_vq", **overrides: object) -> vqkit.Quantizer:
    q = vqkit.create_quantizer(name, **{**small_kwargs(name), **overrides})
    q(torch.randn(40, DIM))  # EMA statistics and lazily initialized codebooks move: state must round-trip
    return q.eval()


def mlp() -> Tokenizer:
    quantizer = {"name": "ema_vq", "kwargs": {"codebook_size": 8}}
    model = build_model(
        {"name": "mlp_vqvae", "in_dim": 6, "hidden": [8], "latent_dim": 4, "quantizer": quantizer}
    )
    model(torch.randn(16, 6))
    return model.eval()


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    assert a.state_dict().keys() == b.state_dict().keys()
    for key, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[key], value), key


def test_every_quantizer_round_trips(quantizer_name: str, tmp_path: Path) -> None:
    q = trained(quantizer_name)
    folder = q.save_pretrained(tmp_path / "q")
    assert sorted(p.name for p in folder.iterdir()) == FILES
    loaded = vqkit.Quantizer.from_pretrained(folder)
    assert type(loaded) is type(q) and not loaded.training  # eval mode, as huggingface_hub's loaders return
    assert_same_state(q, loaded)
    x = torch.randn(40, DIM)
    assert torch.equal(loaded.encode(x), q.encode(x))
    assert torch.equal(loaded(x).quantized, q(x).quantized)


def test_config_json_is_the_flat_constructor_arguments(tmp_path: Path) -> None:
    q = trained("residual_vq")
    folder = q.save_pretrained(tmp_path / "q")
    text = (folder / "config.json").read_text()
    config = json.loads(text)
    assert text == json.dumps(config, indent=2, sort_keys=True)  # as ModelHubMixin.save_pretrained writes it
    header = config.pop("vqkit")
    assert config == {"name": "residual_vq", **q.to_config()["kwargs"]}
    assert {k: header[k] for k in ("format", "version", "vqkit_version")} == {
        "format": "vqkit.hub.quantizer",
        "version": 1,
        "vqkit_version": vqkit.__version__,
    }
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt", "vqkit.format": "vqkit.hub.quantizer"}
        assert sorted(handle.keys()) == sorted(q.state_dict())


def test_an_audio_tokenizer_round_trips_and_its_card_gives_the_rates(tmp_path: Path) -> None:
    quantizer: dict[str, object] = {
        "name": "residual_vq",
        "kwargs": {"codebook_size": 16, "num_quantizers": 3},
    }
    model = tiny_codec(quantizer).eval()
    folder = model.save_pretrained(tmp_path / "codec")
    for cls in (Tokenizer, SEANetCodec):
        loaded = cls.from_pretrained(str(folder))
        assert isinstance(loaded, SEANetCodec)
        assert_same_state(model, loaded)
    x = torch.randn(2, 1, 64)
    with torch.no_grad():
        assert torch.equal(loaded.decode(loaded.encode(x)), model.decode(model.encode(x)))
    card = (folder / "README.md").read_text()
    frames = 8000 / 4  # sample rate / hop (ratios [2, 2])
    bits = frames * 3 * math.log2(16)
    assert "| sample rate | 8000 Hz |" in card and f"| frames per second | {frames:g} |" in card
    assert f"| bits per second | {bits:g} ({bits / 1000:g} kbps) |" in card
    assert "| quantizer codebook | 3×16 |" in card and "| quantizer bits per vector | 12 |" in card
    levels = ", ".join(f"{frames * k * math.log2(16):g}" for k in (1, 2, 3))  # the first k of 3 levels
    assert f"| bits per second of the first 1, 2, ... levels | {levels} |" in card
    assert 'vqkit.Tokenizer.from_pretrained("path/to/this-folder")' in card


def test_huggingface_hub_reads_the_card(tmp_path: Path) -> None:
    hub = pytest.importorskip("huggingface_hub")
    info = {"datasets": "fashion_mnist", "metrics": {"psnr": 24.123456, "mse": 0.0031}, "split": "test"}
    folder = trained("residual_vq").save_pretrained(
        tmp_path / "q",
        model_card_kwargs={**info, "license": "mit", "repo_id": "someone/rvq", "tags": ["demo"]},
    )
    card = hub.ModelCard.load(folder / "README.md")
    assert card.data.library_name == "vqkit" and card.data.license == "mit"
    assert card.data.tags == ["vqkit", "vector-quantization", "quantizer", "residual_vq", "demo"]
    assert card.data.datasets == ["fashion_mnist"]
    body = card.text
    assert "| codebook | 16+8 |" in body and "| bits per vector | 7 |" in body  # log2(16) + log2(8)
    assert (
        "Measured on the `test` split:" in body and "| psnr | 24.12 |" in body and "| mse | 0.0031 |" in body
    )
    assert 'vqkit.Quantizer.from_pretrained("someone/rvq")' in body
    plain = hub.ModelCard.load(trained().save_pretrained(tmp_path / "plain") / "README.md")
    assert plain.data.datasets is None and "Not recorded." in plain.text


def test_huggingface_hubs_own_loader_reads_our_folders(tmp_path: Path) -> None:
    """``PyTorchModelHubMixin.from_pretrained`` (constructor arguments from config.json, weights from
    model.safetensors) on our folders, for classes without ``**kwargs`` (``vqkit.hub`` says why not VQ)."""
    pytest.importorskip("huggingface_hub")
    from huggingface_hub import PyTorchModelHubMixin

    # The hub's methods come first here; mypy notes that their signatures are not vqkit's (another return type).
    class HubSimVQ(PyTorchModelHubMixin, vqkit.SimVQ):  # type: ignore[misc]
        pass

    class HubMLP(PyTorchModelHubMixin, MLPVQVAE):  # type: ignore[misc]
        pass

    q, model = trained("simvq"), mlp()
    for original, cls in ((q, HubSimVQ), (model, HubMLP)):
        loaded = cls.from_pretrained(original.save_pretrained(tmp_path / type(original).__name__))
        assert_same_state(original, loaded)
    x = torch.randn(8, 6)
    assert torch.equal(loaded.encode(x), model.encode(x))


def test_a_repo_id_goes_to_snapshot_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = pytest.importorskip("huggingface_hub")
    q = trained()
    folder = q.save_pretrained(tmp_path / "snapshot")
    calls: list[dict[str, object]] = []

    def snapshot_download(**kwargs: object) -> str:
        calls.append(kwargs)
        return str(folder)

    monkeypatch.setattr(hub, "snapshot_download", snapshot_download)
    monkeypatch.chdir(tmp_path)
    loaded = vqkit.VQ.from_pretrained("someone/vq", revision="v1", cache_dir=tmp_path / "cache", token="t")
    assert_same_state(q, loaded)
    assert calls == [
        {
            "repo_id": "someone/vq",
            "revision": "v1",
            "cache_dir": str(tmp_path / "cache"),
            "force_download": False,
            "token": "t",
            "local_files_only": False,
            "allow_patterns": ["config.json", "model.safetensors", "weights.safetensors"],
        }
    ]
    vqkit.Quantizer.from_pretrained("snapshot")  # an existing folder, named relative to the working folder
    assert len(calls) == 1


def test_a_repo_id_without_huggingface_hub_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import huggingface_hub now raises ImportError
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ImportError, match=r"'someone/vq' is no local folder.*pip install 'vqkit\[hub\]'"):
        vqkit.Quantizer.from_pretrained("someone/vq")
    q = trained()  # local folders need nothing
    assert_same_state(q, vqkit.Quantizer.from_pretrained(q.save_pretrained("q")))


def test_vqkit_imports_saves_and_loads_without_huggingface_hub(tmp_path: Path) -> None:
    script = f"""
import sys
sys.modules["huggingface_hub"] = None  # not installed, as far as any import can tell
import torch, vqkit
q = vqkit.create_quantizer("vq", dim=4, codebook_size=8)
loaded = vqkit.Quantizer.from_pretrained(q.save_pretrained({str(tmp_path / "q")!r}))
assert torch.equal(loaded.codebook.weight, q.codebook.weight)
assert not [m for m in sys.modules if m.startswith("huggingface_hub") and sys.modules[m] is not None]
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_older_folders_load_and_saving_over_one_converts_it(tmp_path: Path) -> None:
    q, model = trained(), mlp()
    old_q = vqkit.save_quantizer(q, tmp_path / "q")
    old_model = vqkit.save_tokenizer(model, tmp_path / "model")
    assert_same_state(q, vqkit.Quantizer.from_pretrained(old_q))
    assert_same_state(model, Tokenizer.from_pretrained(old_model))
    other = trained(codebook_size=16)
    other.save_pretrained(old_q)  # no overwrite needed: the folder holds only what save_quantizer wrote
    assert sorted(p.name for p in old_q.iterdir()) == FILES
    assert_same_state(other, vqkit.Quantizer.from_pretrained(old_q))


def test_a_folder_of_another_kind_or_class_is_refused(tmp_path: Path) -> None:
    folder = trained("vq").save_pretrained(tmp_path / "vq")
    assert isinstance(vqkit.VQ.from_pretrained(folder), vqkit.VQ)
    with pytest.raises(
        ValueError, match=r"holds a VQ, not a FSQ; load it with vqkit.Quantizer.from_pretrained"
    ):
        vqkit.FSQ.from_pretrained(folder)
    with pytest.raises(
        ValueError, match=r"holds a vqkit quantizer, not a tokenizer; load it with vqkit.Quantizer"
    ):
        Tokenizer.from_pretrained(folder)
    old = vqkit.save_tokenizer(mlp(), tmp_path / "old")
    with pytest.raises(
        ValueError, match=r"holds a vqkit tokenizer, not a quantizer; load it with vqkit.Tokenizer"
    ):
        vqkit.Quantizer.from_pretrained(old)


def test_a_previous_output_is_replaced_and_an_edited_card_is_kept(tmp_path: Path) -> None:
    folder = trained().save_pretrained(tmp_path / "q")
    second = trained(codebook_size=16)
    second.save_pretrained(folder)  # our own output: replaced whole, no overwrite needed
    assert_same_state(second, vqkit.Quantizer.from_pretrained(folder))
    assert [p.name for p in tmp_path.iterdir()] == ["q"]  # no staging or backup leftovers
    (folder / "README.md").write_text("# my own card\n")
    with pytest.raises(FileExistsError, match=r"holding 'README.md'; pass overwrite=True"):
        trained().save_pretrained(folder)
    third = trained(codebook_size=4)
    third.save_pretrained(folder, overwrite=True)
    third.save_pretrained(folder, overwrite=True)
    assert (folder / "README.md").read_text() == "# my own card\n"
    assert json.loads((folder / "config.json").read_text())["vqkit"]["model_card_sha256"] is None
    assert_same_state(third, vqkit.Quantizer.from_pretrained(folder))


def test_other_files_are_kept_and_a_foreign_config_is_never_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"save_directory: expected a new or empty folder"):
        trained().save_pretrained(folder)
    trained().save_pretrained(folder, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*FILES, "notes.txt"])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"hidden_size": 8}')
    with pytest.raises(FileExistsError, match=r"config.json' was not written by save_pretrained"):
        trained().save_pretrained(foreign, overwrite=True)
    assert (foreign / "config.json").read_text() == '{"hidden_size": 8}'
    with pytest.raises(ValueError, match=r"config.json' is not a vqkit config: expected a 'vqkit' header"):
        vqkit.Quantizer.from_pretrained(foreign)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"got no folder at '\./missing/q'"):
        vqkit.Quantizer.from_pretrained("./missing/q")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"got the file"):
        vqkit.Quantizer.from_pretrained(tmp_path / "file")
    folder = trained().save_pretrained(tmp_path / "q")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "vqkit": {**config["vqkit"], "version": 2}}))
    with pytest.raises(ValueError, match=r"config.json' has version 2; this vqkit reads up to 1"):
        vqkit.Quantizer.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**config, "codebook_size": -1}))
    with pytest.raises(
        ValueError, match=r"the quantizer config in '.*config.json' is invalid: codebook_size"
    ):
        vqkit.Quantizer.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**config, "codebook_size": 16}))
    with pytest.raises(ValueError, match=r"weights '.*model.safetensors' do not match the config"):
        vqkit.Quantizer.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"cannot read weights '.*model.safetensors'"):
        vqkit.Quantizer.from_pretrained(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"cannot read the vqkit config '.*config.json'"):
        vqkit.Quantizer.from_pretrained(folder)


def test_bad_arguments_raise_before_anything_is_written(tmp_path: Path) -> None:
    q = trained()
    with pytest.raises(ValueError, match=r"model_card_kwargs: unknown key 'dataset'; expected keys from"):
        q.save_pretrained(tmp_path / "a", model_card_kwargs={"dataset": "mnist"})
    with pytest.raises(
        ValueError, match=r"model_card_kwargs.metrics: expected a dict of name -> finite number"
    ):
        q.save_pretrained(tmp_path / "a", model_card_kwargs={"metrics": {"psnr": "high"}})
    with pytest.raises(
        ValueError, match=r"model_card_kwargs.datasets: expected a string or a list of strings"
    ):
        q.save_pretrained(tmp_path / "a", model_card_kwargs={"datasets": [1]})

    class Unregistered(vqkit.VQ):
        pass

    with pytest.raises(TypeError, match=r"Unregistered is not registered"):
        Unregistered(dim=4, codebook_size=8).save_pretrained(tmp_path / "a")
    assert not (tmp_path / "a").exists()
