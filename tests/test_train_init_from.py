"""``train.init_from`` (``vqkit.train.init_from``, ``python -m vqkit.train.finetune``): a tokenizer started from a
backbone's weights, k-means from its encoder, trained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from vqkit.functional.kmeans import kmeans
from vqkit.models import build_model
from vqkit.models.base import Tokenizer
from vqkit.train import checkpoint as ckpt
from vqkit.train.config import ConfigError, load_config
from vqkit.train.finetune import main
from vqkit.train.init_from import RECORD, init_from_backbone, load_backbone, start_from_backbone
from vqkit.train.pretrain import fits_codebook
from vqkit.train.run import RunPaths, load_split

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "train.device=cpu",
    "train.tensorboard=false",
    "train.progress=false",
    "train.batch_size=32",
    "train.kmeans_vectors=300",
    "eval.max_items=32",
    "model.hidden=8",
    "model.res_hidden=4",
    "model.latent_dim=4",
    "model.quantizer.kwargs={codebook_size: 8, init: kmeans}",
]


def _config(*extra: str) -> Any:
    return load_config(ROOT / "configs" / "digits.yaml", [*TINY, *extra])


def _backbone(config: Any, seed: int = 1) -> Tokenizer:
    """A model of ``config``'s architecture with other weights (and another quantizer) than a fresh build."""
    torch.manual_seed(seed)
    model = build_model({**config.model, "quantizer": {"name": "fsq", "kwargs": {"levels": [3, 3, 3, 3]}}})
    return model.eval()


def test_init_from_backbone_copies_all_but_the_quantizer_and_refuses_other_architectures() -> None:
    config = _config()
    backbone, net = _backbone(config), build_model(dict(config.model))
    codebook = net.quantizer.state_dict()
    assert init_from_backbone(net, backbone) == len(
        [k for k in backbone.state_dict() if not k.startswith("quantizer.")]
    )
    for name, tensor in net.state_dict().items():
        if not name.startswith("quantizer."):
            assert torch.equal(tensor, backbone.state_dict()[name]), name
    for name, tensor in net.quantizer.state_dict().items():
        assert torch.equal(tensor, codebook[name]), name
    wider = build_model({**config.model, "hidden": 12})
    with pytest.raises(ValueError, match=r"model: expected the backbone's architecture.*hidden: 8 vs 12"):
        init_from_backbone(wider, backbone)


def test_the_codebook_is_kmeans_of_the_backbone_encoder_on_the_first_training_vectors(tmp_path: Path) -> None:
    config = _config("train.steps=1")
    backbone = _backbone(config)
    backbone.save_pretrained(tmp_path / "backbone")
    config.train.init_from = str(tmp_path / "backbone")
    net = build_model(dict(config.model))
    items = load_split(config, "train")
    start_from_backbone(net, config, items, torch.device("cpu"), RunPaths(tmp_path / "run"))
    # Oracle: the encoder's first 300 vectors of the training split in order, channels last, k-means'd with the
    # codebook's own seed and iterations.
    x = torch.stack([items[i] for i in range(300 // 16 + 1)])  # 4x4 latents: 16 vectors per item
    with torch.no_grad():
        z = backbone.embed(x).permute(0, 2, 3, 1).reshape(-1, 4)[:300]
    generator = torch.Generator().manual_seed(0)
    expected = kmeans(z, 8, iters=10, generator=generator).centers
    torch.testing.assert_close(net.quantizer.codebook.weight, expected)
    assert bool(net.quantizer.codebook.initialized)  # the first training batch does not re-run k-means
    assert torch.equal(net.state_dict()["encoder.0.weight"], backbone.state_dict()["encoder.0.weight"])
    record = json.loads((tmp_path / "run" / RECORD).read_text())
    copied = len([k for k in backbone.state_dict() if not k.startswith("quantizer.")])
    assert record == {"backbone": config.train.init_from, "copied_tensors": copied, "kmeans_vectors": 300}


def test_a_quantizer_without_a_codebook_is_fine_tuned_without_kmeans(tmp_path: Path) -> None:
    config = _config("model.quantizer={name: fsq, kwargs: {levels: [3, 3, 3, 3]}}")
    _backbone(config).save_pretrained(tmp_path / "backbone")
    config.train.init_from = str(tmp_path / "backbone")
    net = build_model(dict(config.model))
    assert not fits_codebook(net.quantizer) and fits_codebook(build_model(dict(_config().model)).quantizer)
    start_from_backbone(
        net, config, load_split(config, "train"), torch.device("cpu"), RunPaths(tmp_path / "r")
    )
    assert json.loads((tmp_path / "r" / RECORD).read_text())["kmeans_vectors"] == 0


@pytest.mark.parametrize("other", ["train.pretrain_epochs=1", "train.continuous=true"])
def test_another_first_stage_is_refused(other: str) -> None:
    with pytest.raises(ConfigError, match=r"cannot be combined with train.(pretrain_epochs|init_from)"):
        _config("train.init_from=somewhere", other)


def test_the_command_trains_from_a_saved_backbone_and_resumes(tmp_path: Path) -> None:
    config = _config()
    backbone_dir, run = tmp_path / "backbone", tmp_path / "run"
    _backbone(config).save_pretrained(backbone_dir)
    loaded = load_backbone(backbone_dir)
    assert torch.equal(
        loaded.state_dict()["decoder.0.weight"], _backbone(config).state_dict()["decoder.0.weight"]
    )
    common = [
        str(ROOT / "configs" / "digits.yaml"),
        *TINY,
        "--backbone",
        str(backbone_dir),
        "--run-dir",
        str(run),
    ]
    assert main([*common, "train.steps=2", "train.checkpoint_every=2"]) == 0
    assert ckpt.checkpoint_step(ckpt.latest_checkpoint(RunPaths(run).checkpoints)) == 2  # type: ignore[arg-type]
    assert main([*common, "train.steps=3", "train.checkpoint_every=2", "--resume"]) == 0
    assert ckpt.checkpoint_step(ckpt.latest_checkpoint(RunPaths(run).checkpoints)) == 3  # type: ignore[arg-type]
    with pytest.raises(FileExistsError, match="already holds checkpoints; pass --resume"):
        main([*common, "train.steps=2"])
    # A run directory is a backbone source too, at any of its checkpoints.
    early = load_backbone(run, ckpt.list_checkpoints(RunPaths(run).checkpoints)[0])
    assert not torch.equal(
        early.state_dict()["encoder.0.weight"], load_backbone(run).state_dict()["encoder.0.weight"]
    )
    with pytest.raises(ValueError, match="checkpoint: only a run directory's backbone takes one"):
        load_backbone(backbone_dir, "x")


def test_vqkit_train_takes_a_backbone(tmp_path: Path) -> None:
    from vqkit.cli import main as vqkit

    config = _config()
    _backbone(config).save_pretrained(tmp_path / "backbone")
    run = tmp_path / "run"
    args = ["train", str(ROOT / "configs" / "digits.yaml"), *TINY, "train.steps=1", "--run-dir", str(run)]
    assert vqkit([*args, "--init-from", str(tmp_path / "backbone"), "--no-report"]) == 0
    assert json.loads((run / RECORD).read_text())["backbone"] == str(tmp_path / "backbone")
    assert load_config(run / "config.yaml").train.init_from == str(tmp_path / "backbone")
