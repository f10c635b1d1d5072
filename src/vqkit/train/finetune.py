"""Fine-tune a quantized tokenizer from a continuous backbone: its weights, k-means from its encoder, training.

``python -m vqkit.train.finetune CONFIG --backbone SOURCE --run-dir DIR [--checkpoint CKPT] [--resume]
[--threads N] [key=value ...]``

The second stage of pretrain-then-finetune (the collapse study's fix, Zhao et al., arXiv 2411.16550) started
from a backbone trained elsewhere, instead of from a pretrain stage of the same run (``train.pretrain_epochs``):

1. ``CONFIG``'s model is built and every weight outside its quantizer is copied from the backbone
   (``init_from_backbone``; the architectures must match, the quantizers may differ);
2. the codebook is k-means-initialized from the backbone encoder's outputs of the training split, in order, at
   most ``train.kmeans_vectors`` (``vqkit.train.pretrain.kmeans_from_encoder``, as after a pretrain stage);
3. ``vqkit.train.loop.train`` trains it for ``train.steps`` steps into ``DIR``: a run directory like any other
   (``vqkit eval DIR``, ``vqkit export DIR``), with ``finetune.json`` recording the backbone.

``SOURCE`` is a shipped model's name (``vqkit.list_pretrained``), a ``save_pretrained`` / ``save_tokenizer``
folder, or a run directory (its latest checkpoint, or ``--checkpoint``). ``--resume`` continues ``DIR`` from its
latest checkpoint (which holds the codebook; steps 1 and 2 are skipped). One process, or under ``torchrun``: the
k-means gathers the ranks' vectors, so every rank starts from the same codebook.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vqkit import distributed
from vqkit.models import build_model
from vqkit.models.base import Tokenizer
from vqkit.train import checkpoint as ckpt
from vqkit.train.config import RunConfig, load_config
from vqkit.train.loop import train
from vqkit.train.pretrain import kmeans_from_encoder
from vqkit.train.run import RunPaths, is_run_dir, load_run_model, load_split
from vqkit.train.runtime import init_distributed_from_env, resolve_device
from vqkit.utils.atomic import atomic_write_text

RECORD = "finetune.json"
_NOT_ARCHITECTURE = ("quantizer", "loss_weights")  # what a fine-tune may change of the backbone's config


def load_backbone(
    source: str | os.PathLike[str], checkpoint: str | os.PathLike[str] | None = None
) -> Tokenizer:
    """The backbone ``source`` names (module docstring), in eval mode. ``checkpoint`` only for a run directory."""
    from vqkit.pretrained import is_pretrained_name, load_pretrained

    if checkpoint is not None and not is_run_dir(Path(source)):
        raise ValueError(f"checkpoint: only a run directory's backbone takes one, got source {str(source)!r}")
    if is_pretrained_name(source):
        return load_pretrained(os.fspath(source))
    path = Path(source)
    if not path.is_dir():
        raise FileNotFoundError(f"backbone: {str(path)!r} is neither a shipped model's name nor a folder")
    if is_run_dir(path):
        model, _ = load_run_model(path, None if checkpoint is None else os.fspath(checkpoint))
        return model
    return Tokenizer.from_pretrained(path).eval()


def architecture(model: Tokenizer) -> dict[str, Any]:
    """``model.to_config()`` without what a fine-tune may change (the quantizer, the loss weights)."""
    return {k: v for k, v in model.to_config().items() if k not in _NOT_ARCHITECTURE}


def init_from_backbone(net: Tokenizer, backbone: Tokenizer) -> int:
    """Copy every parameter and buffer of ``backbone`` outside ``quantizer`` into ``net``, whose architecture
    (``architecture``) must be the backbone's; returns how many tensors were copied. ``net``'s quantizer is
    left as it is."""
    mine, theirs = architecture(net), architecture(backbone)
    if mine != theirs:
        differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        shown = ", ".join(f"{k}: {theirs.get(k)!r} vs {mine.get(k)!r}" for k in differ)
        raise ValueError(f"model: expected the backbone's architecture, got other values of {shown}")
    state = {k: v for k, v in backbone.state_dict().items() if not k.startswith("quantizer.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    left = [k for k in missing if not k.startswith("quantizer.")]
    if left or unexpected:  # cannot happen for equal configs; a guard against a model with hidden state
        raise ValueError(
            f"backbone: weights do not match the model (missing {left}, unexpected {unexpected})"
        )
    return len(state)


def finetune(
    config: RunConfig,
    run_dir: str | os.PathLike[str],
    backbone: Tokenizer,
    *,
    resume: bool = False,
    source: str = "",
) -> Path:
    """Build ``config``'s model from ``backbone`` (weights, then k-means from its encoder on the training
    split) and train it into ``run_dir``; returns the final checkpoint. ``source``: what ``finetune.json``
    records as the backbone's origin. ``train.pretrain_epochs`` must be 0: the backbone is the pretrain stage."""
    if config.train.pretrain_epochs:
        raise ValueError(
            "train.pretrain_epochs: expected 0 when fine-tuning from a backbone (the backbone is the pretrain "
            f"stage), got {config.train.pretrain_epochs}"
        )
    paths = RunPaths(run_dir)
    if not resume and ckpt.list_checkpoints(
        paths.checkpoints
    ):  # before k-means, not after it (as train would)
        raise FileExistsError(
            f"run_dir: {str(paths.root)!r} already holds checkpoints; pass --resume to continue it or choose "
            "another run directory"
        )
    device = resolve_device(config.train.device)
    init_distributed_from_env(device)  # before k-means, which gathers over the ranks
    torch.manual_seed(config.seed)
    datasets = {split: load_split(config, split) for split in ("train", "val")}
    net = build_model(dict(config.model))
    copied = init_from_backbone(net, backbone)
    if not resume:  # a resumed run's checkpoint holds the codebook
        net.to(device)
        kmeans_from_encoder(net, datasets["train"], config, device)
        if distributed.rank() == 0:
            record = {
                "backbone": source,
                "copied_tensors": copied,
                "kmeans_vectors": config.train.kmeans_vectors,
            }
            paths.root.mkdir(parents=True, exist_ok=True)
            atomic_write_text(paths.root / RECORD, json.dumps(record, indent=2) + "\n")
    return train(config, run_dir, resume=resume, model=net, datasets=datasets)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vqkit.train.finetune", description=__doc__.splitlines()[0]
    )
    parser.add_argument("config", type=Path)
    parser.add_argument("overrides", nargs="*", help="section.key=value, as for vqkit train")
    parser.add_argument("--backbone", required=True, help="shipped model name, model folder or run directory")
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint of a run-directory backbone")
    parser.add_argument("--run-dir", type=Path, required=True, help="where the fine-tuning run goes")
    parser.add_argument("--resume", action="store_true", help="continue --run-dir from its latest checkpoint")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    # Overrides may come after options too (``--run-dir X train.steps=5``), which argparse alone rejects.
    args, extra = parser.parse_known_args(argv)
    if any(arg.startswith("-") or "=" not in arg for arg in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = [*args.overrides, *extra]
    if args.threads < 1:
        parser.error(f"--threads: expected a positive integer, got {args.threads}")
    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.overrides)
    backbone = load_backbone(args.backbone, args.checkpoint)
    final = finetune(config, args.run_dir, backbone, resume=args.resume, source=str(args.backbone))
    print(f"trained: {args.run_dir} ({final})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
