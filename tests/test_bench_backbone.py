"""``vqkit bench`` in "pretrain once, quantize many" mode: every run fine-tunes one backbone, which is the ceiling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vqkit.train.bench import load_bench, run_bench
from vqkit.train.config import ConfigError, load_config
from vqkit.train.evaluate import evaluate
from vqkit.train.init_from import load_backbone
from vqkit.train.loop import train
from vqkit.train.run import load_split, run_config

ROOT = Path(__file__).resolve().parent.parent
MODEL = ["model.hidden=8", "model.res_hidden=4", "model.latent_dim=4", "eval.lpips=null"]
COMMON = ["train.device=cpu", "train.batch_size=32", "train.kmeans_vectors=300", "eval.max_items=40", *MODEL]


def test_every_run_fine_tunes_the_backbone_on_its_split_and_the_backbone_is_the_ceiling(
    tmp_path: Path,
) -> None:
    backbone = tmp_path / "backbone"  # a run directory is a backbone: a continuous model trained 30 steps
    settings = [*COMMON, "train.progress=false", "train.tensorboard=false", "train.steps=30"]
    train(load_config(ROOT / "configs" / "digits.yaml", [*settings, "train.continuous=true"]), backbone)
    overrides = [*COMMON, "train.steps=3", "train.eval_every=3", "train.checkpoint_every=3"]
    bench = tmp_path / "bench.yaml"
    bench.write_text(
        f"config: {ROOT / 'configs' / 'digits.yaml'}\noverrides: {json.dumps(overrides)}\n"
        "backbone: backbone\nmethods: [vq, fsq]\nbits: [4]\nseeds: [0, 1]\n"
    )
    out = tmp_path / "out"
    report = run_bench(bench, out).read_text()
    rows = json.loads((out / "results.json").read_text())["rows"]
    ceilings = [r for r in rows if r.get("ceiling")]
    assert [(r["method"], r["seed"], r["steps"]) for r in ceilings] == [
        ("continuous backbone backbone (ceiling)", 0, 0)
    ]
    config = load_config(ROOT / "configs" / "digits.yaml", COMMON)
    oracle = evaluate(load_backbone(backbone), load_split(config, "test"), config, unquantized=True)
    assert ceilings[0]["metrics"]["mse"] == pytest.approx(oracle["mse"], rel=1e-6)
    for method, seed in (("vq", 0), ("vq", 1), ("fsq", 0), ("fsq", 1)):
        run = out / "runs" / f"{method}-4b-s{seed}"
        record = json.loads((run / "finetune.json").read_text())
        assert record["backbone"] == str(backbone)
        assert (record["kmeans_vectors"] > 0) == (method == "vq")  # FSQ has no codebook to fit
        assert run_config(run).data["split_seed"] == 0  # seed 1 tests on the backbone's test items too
    first = load_split(run_config(out / "runs" / "vq-4b-s1"), "test")[0]
    assert torch.equal(first, load_split(config, "test")[0])
    assert not torch.equal(
        first, load_split(load_config(ROOT / "configs" / "digits.yaml", ["seed=1"]), "test")[0]
    )
    assert (
        "**Pretrain once, quantize many:**" in report
        and "| continuous backbone backbone (ceiling) |" in report
    )


def test_a_backbone_that_does_not_exist_is_named(tmp_path: Path) -> None:
    bench = tmp_path / "bench.yaml"
    bench.write_text(f"config: {ROOT / 'configs' / 'digits.yaml'}\nbackbone: nowhere\nmethods: [vq]\n")
    with pytest.raises(ConfigError, match=r"bench.backbone: 'nowhere' is neither a shipped model's name"):
        load_bench(bench)
    bench.write_text(f"config: {ROOT / 'configs' / 'digits.yaml'}\nceiling: sometimes\nmethods: [vq]\n")
    with pytest.raises(ConfigError, match="bench.ceiling: expected true or false"):
        load_bench(bench)
