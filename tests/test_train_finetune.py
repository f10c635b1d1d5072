"""``vqkit.train.finetune``: a tokenizer started from a backbone's weights, k-means from its encoder, trained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import vqkit.train.finetune as finetune_module
from vqkit.functional.kmeans import kmeans
from vqkit.models import build_model
from vqkit.models.base import Tokenizer
from vqkit.train import checkpoint as ckpt
from vqkit.train.config import load_config
from vqkit.train.finetune import finetune, init_from_backbone, load_backbone, main
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


def test_the_codebook_is_kmeans_of_the_backbone_encoder_on_the_first_training_vectors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config("train.steps=1")
    backbone = _backbone(config)
    seen: dict[str, Any] = {}

    def fake_train(config: Any, run_dir: Any, **kwargs: Any) -> Path:
        seen.update(kwargs)
        return Path(run_dir)

    monkeypatch.setattr(finetune_module, "train", fake_train)
    finetune(config, tmp_path, backbone, source="tiny")
    net = seen["model"]
    # Oracle: the encoder's first 300 vectors of the training split in order, channels last, k-means'd with the
    # codebook's own seed and iterations.
    items = load_split(config, "train")
    x = torch.stack([items[i] for i in range(300 // 16 + 1)])  # 4x4 latents: 16 vectors per item
    with torch.no_grad():
        z = backbone.embed(x).permute(0, 2, 3, 1).reshape(-1, 4)[:300]
    generator = torch.Generator().manual_seed(0)
    expected = kmeans(z, 8, iters=10, generator=generator).centers
    torch.testing.assert_close(net.quantizer.codebook.weight, expected)
    assert bool(net.quantizer.codebook.initialized)  # the first training batch does not re-run k-means
    assert torch.equal(net.state_dict()["encoder.0.weight"], backbone.state_dict()["encoder.0.weight"])
    assert seen["resume"] is False and set(seen["datasets"]) == {"train", "val"}
    record = json.loads((tmp_path / "finetune.json").read_text())
    copied = len([k for k in backbone.state_dict() if not k.startswith("quantizer.")])
    assert record == {"backbone": "tiny", "copied_tensors": copied, "kmeans_vectors": 300}


def test_a_pretrain_stage_is_refused(tmp_path: Path) -> None:
    config = _config("train.pretrain_epochs=1")
    with pytest.raises(ValueError, match="train.pretrain_epochs: expected 0 when fine-tuning"):
        finetune(config, tmp_path, _backbone(config))


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
