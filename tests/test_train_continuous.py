"""``train.continuous``: the model trained with its quantizer skipped (a bench's ceiling), evaluated the same way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vqkit.cli import main
from vqkit.models import build_model
from vqkit.train.config import ConfigError, load_config
from vqkit.train.evaluate import evaluate
from vqkit.train.loop import train
from vqkit.train.run import load_run_model, load_split

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "train.device=cpu",
    "train.tensorboard=false",
    "train.progress=false",
    "train.batch_size=32",
    "train.steps=4",
    "train.eval_every=2",
    "train.log_every=2",
    "eval.max_items=40",
    "eval.lpips=null",
    "model.hidden=8",
    "model.res_hidden=4",
    "model.latent_dim=4",
    "model.quantizer.kwargs={codebook_size: 8, init: kmeans}",
]


def test_a_continuous_run_trains_encoder_and_decoder_and_leaves_the_quantizer_alone(tmp_path: Path) -> None:
    config = load_config(ROOT / "configs" / "digits.yaml", [*TINY, "train.continuous=true"])
    torch.manual_seed(config.seed)
    fresh = build_model(dict(config.model))  # the loop builds the same model after the same seed
    train(config, tmp_path / "run")
    model, _ = load_run_model(tmp_path / "run")
    for name, tensor in fresh.quantizer.state_dict().items():  # never initialized, never updated
        assert torch.equal(model.quantizer.state_dict()[name], tensor), name
    assert not torch.equal(model.state_dict()["encoder.0.weight"], fresh.state_dict()["encoder.0.weight"])
    log = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    validated = {line.split(",")[0] for line in log if ",val,mse," in line}
    assert validated == {"2", "4"}  # every 2 steps, with the quantizer skipped
    test = load_split(config, "test")
    metrics = evaluate(model, test, config, unquantized=True)
    assert not any(k.startswith("codebook/") or k.startswith("collapse/") for k in metrics)
    assert metrics["bits_per_item"] == 32 * 4 * 16  # 4x4 positions of 4 float32 values
    # Oracle: the squared error of forward_unquantized's clamped reconstruction over the same 40 items.
    x = torch.stack([test[i] for i in range(40)])
    with torch.no_grad():
        recon = model.eval().forward_unquantized(x).reconstruction.clamp(0, 1)
    assert metrics["mse"] == pytest.approx(float((recon - x).square().mean()), rel=1e-5)
    with pytest.raises(ValueError, match="num_quantizers: expected None for an unquantized evaluation"):
        evaluate(model, test, config, unquantized=True, num_quantizers=1)


def test_vqkit_eval_of_a_continuous_run_skips_its_quantizer(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [
        "train",
        str(ROOT / "configs" / "digits.yaml"),
        *TINY,
        "train.continuous=true",
        "--run-dir",
        str(run),
    ]
    assert main(args) == 0  # trains, then evaluates and reports
    metrics = json.loads((run / "eval.json").read_text())["metrics"]
    assert metrics["bits_per_item"] == 32 * 4 * 16 and "codebook/utilization" not in metrics


def test_a_continuous_run_has_no_pretrain_stage() -> None:
    with pytest.raises(ConfigError, match="train.continuous: cannot be combined with train.pretrain_epochs"):
        load_config(ROOT / "configs" / "digits.yaml", ["train.continuous=true", "train.pretrain_epochs=1"])
    with pytest.raises(ConfigError, match="train.continuous: expected true or false"):
        load_config(ROOT / "configs" / "digits.yaml", ["train.continuous=maybe"])
