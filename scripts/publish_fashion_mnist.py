"""Publish the shipped Fashion-MNIST backbone and tokenizer from their runs, with held-out test metrics.

The two models and the four commands that make them (configs/pretrained/fashion_mnist_*.yaml say the same):

    OMP_NUM_THREADS=1 vqkit train configs/pretrained/fashion_mnist_backbone.yaml \
        --run-dir runs/pretrained/fashion_mnist_backbone --no-report
    OMP_NUM_THREADS=1 python scripts/publish_fashion_mnist.py backbone
    OMP_NUM_THREADS=1 python -m vqkit.train.finetune configs/pretrained/fashion_mnist_vq8.yaml \
        --backbone fashion_mnist_backbone --run-dir runs/pretrained/fashion_mnist_vq8
    OMP_NUM_THREADS=1 python scripts/publish_fashion_mnist.py tokenizer

* ``backbone``: the backbone run's checkpoint at the end of its pretrain stage (``vqkit train`` follows a pretrain
  stage with at least one quantized step, which the backbone must not have), evaluated unquantized
  (``evaluate(..., unquantized=True)``: ``forward_unquantized``, reconstructions clamped to [0, 1]) on the
  whole test split, published as ``fashion_mnist_backbone`` (kind ``"backbone"``).
* ``tokenizer``: the fine-tuning run's final checkpoint, evaluated by ``vqkit.train.evaluate.evaluate`` on the
  whole test split (reconstruction metrics, code usage, nominal / effective / coded rate), published as
  ``fashion_mnist_vq8`` (kind ``"tokenizer"``).

Metrics: PSNR, SSIM, MS-SSIM (two scales at 28x28), MSE and LPIPS (AlexNet) of ``vqkit.metrics.eval.image``.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Any

import torch

from vqkit.pretrained import publish
from vqkit.train import checkpoint as ckpt
from vqkit.train.evaluate import evaluate
from vqkit.train.run import RunPaths, load_run_model, load_split, run_config

BACKBONE_RUN = Path("runs/pretrained/fashion_mnist_backbone")
TOKENIZER_RUN = Path("runs/pretrained/fashion_mnist_vq8")
ITEM_SHAPE = [1, 28, 28]
DATA = "fashion_mnist"
IMAGE_METRICS = ("psnr", "ssim", "ms_ssim", "mse", "lpips_alex")
BACKBONE_COMMAND = (
    "OMP_NUM_THREADS=1 vqkit train configs/pretrained/fashion_mnist_backbone.yaml "
    "--run-dir runs/pretrained/fashion_mnist_backbone --no-report && "
    "OMP_NUM_THREADS=1 python scripts/publish_fashion_mnist.py backbone"
)
TOKENIZER_COMMAND = (
    "OMP_NUM_THREADS=1 python -m vqkit.train.finetune configs/pretrained/fashion_mnist_vq8.yaml "
    "--backbone fashion_mnist_backbone --run-dir runs/pretrained/fashion_mnist_vq8 && "
    "OMP_NUM_THREADS=1 python scripts/publish_fashion_mnist.py tokenizer"
)


def train_seconds(run: Path, step: int) -> float:
    """The wall seconds ``metrics.csv`` logged at ``step`` (the last logged step up to it)."""
    seconds = 0.0
    with open(RunPaths(run).metrics, newline="") as f:
        for row in csv.DictReader(f):
            if row["name"] == "seconds" and int(row["step"]) <= step:
                seconds = float(row["value"])
    return seconds


def _optimizer(config: Any) -> str:
    train = config.train
    clip = f", gradients clipped at norm {train.grad_clip:g}" if train.grad_clip else ""
    return f"constant lr {train.lr:g}, betas ({train.betas[0]:g}, {train.betas[1]:g}){clip}"


def publish_backbone(run: Path) -> None:
    config = run_config(run)
    train_set, test_set = load_split(config, "train"), load_split(config, "test")
    steps = config.train.pretrain_epochs * math.ceil(len(train_set) / config.train.batch_size)
    chosen = next(
        p for p in ckpt.list_checkpoints(RunPaths(run).checkpoints) if ckpt.checkpoint_step(p) == steps
    )
    model, _ = load_run_model(run, str(chosen))
    config.eval.lpips, config.eval.max_items = "alex", None
    scores = evaluate(model, test_set, config, unquantized=True)
    metrics = {k: round(scores[k], 5) for k in IMAGE_METRICS}
    minutes = train_seconds(run, steps) / 60
    description = (
        "Continuous (unquantized) Fashion-MNIST backbone: the demo's conv VQ-VAE (hidden "
        f"{config.model['hidden']}, {config.model['latent_dim']}-dim latents on a 7x7 grid) trained with the "
        f"quantizer skipped for {config.train.pretrain_epochs} epochs ({steps} Adam steps of "
        f"{config.train.batch_size}, {_optimizer(config)}, {minutes:.1f} min on one CPU thread), seed "
        f"{config.seed}: the ceiling of its "
        "quantized fine-tunes and their starting point (python -m vqkit.train.finetune --backbone "
        "fashion_mnist_backbone). Its quantizer is untrained and unused. Metrics: forward_unquantized on the "
        "10,000 test images, reconstructions clamped to [0, 1]."
    )
    entry = publish(
        model, "fashion_mnist_backbone", kind="backbone", data=DATA, metrics=metrics,
        command=BACKBONE_COMMAND, description=description, item_shape=ITEM_SHAPE,
    )  # fmt: skip
    print(entry.name, metrics)


def publish_tokenizer(run: Path) -> None:
    config = run_config(run)
    config.eval.lpips, config.eval.max_items = "alex", None
    model, meta = load_run_model(run)
    scores = evaluate(model, load_split(config, "test"), config)
    metrics = {k: round(scores[k], 5) for k in IMAGE_METRICS}
    for name, key in (
        ("utilization", "codebook/utilization"),
        ("perplexity", "codebook/perplexity"),
        ("effective_bits_per_vector", "codebook/effective_bits"),
        ("bits_per_item", "bits_per_item"),
        ("coded_bits_per_item", "coded_bits_per_item"),
    ):
        if key in scores:
            metrics[name] = round(scores[key], 5)
    steps = ckpt.checkpoint_step(Path(meta["checkpoint"]))
    quantizer = model.quantizer
    description = (
        f"Fashion-MNIST tokenizer: {quantizer.codebook_label} EMA VQ ({quantizer.bits_per_vector:g} bits per "
        f"position of the 7x7 latent grid, {model.bits_per_item(ITEM_SHAPE):g} bits per image: the demo's rate) "
        "fine-tuned from fashion_mnist_backbone: its encoder and decoder weights, the codebook k-means-"
        f"initialized from its encoder's outputs (the first {config.train.kmeans_vectors} vectors of the training "
        f"split), then {steps} Adam steps of {config.train.batch_size} ({_optimizer(config)}, "
        f"{train_seconds(run, steps) / 60:.1f} min on one CPU thread), seed {config.seed}. Metrics: vqkit eval "
        "on the 10,000 test images."
    )
    entry = publish(
        model, "fashion_mnist_vq8", kind="tokenizer", data=DATA, metrics=metrics,
        command=TOKENIZER_COMMAND, description=description, item_shape=ITEM_SHAPE,
    )  # fmt: skip
    print(entry.name, metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["backbone", "tokenizer"])
    parser.add_argument("--run", type=Path, help="the run (default: BACKBONE_RUN or TOKENIZER_RUN)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.which == "backbone":
        publish_backbone(args.run or BACKBONE_RUN)
    else:
        publish_tokenizer(args.run or TOKENIZER_RUN)


if __name__ == "__main__":
    main()
