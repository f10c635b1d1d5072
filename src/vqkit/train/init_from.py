"""``train.init_from``: start a run from a backbone trained elsewhere, the collapse study's fix as one step.

The second stage of pretrain-then-finetune (Zhao et al., arXiv 2411.16550) started from a continuous backbone
(``vqkit.train.backbone``, a shipped model) instead of from a pretrain stage of the same run
(``train.pretrain_epochs``). Before the first step of a new run (``vqkit.train.loop.train``):

1. the backbone is loaded (``load_backbone``: a shipped model's name, ``vqkit.list_pretrained``; a
   ``save_pretrained`` / ``save_tokenizer`` folder; or a run directory, its latest checkpoint);
2. every weight outside the run's quantizer is copied from it (``init_from_backbone``; the architectures must
   match, the quantizers may differ);
3. the codebook is k-means-initialized from the backbone encoder's outputs of the training split, in order, at
   most ``train.kmeans_vectors`` (``vqkit.train.pretrain.kmeans_from_encoder``, as after a pretrain stage;
   skipped for quantizers without codebooks, FSQ and LFQ);
4. ``RUN/finetune.json`` records the backbone.

A resumed run skips all of it: its checkpoint holds the weights and the codebook.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from vqkit import distributed
from vqkit.models.base import Tokenizer
from vqkit.train.config import RunConfig
from vqkit.train.pretrain import kmeans_from_encoder
from vqkit.train.run import RunPaths, is_run_dir, load_run_model
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
        raise FileNotFoundError(
            f"train.init_from: {str(path)!r} is neither a shipped model's name nor a folder"
        )
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


def start_from_backbone(
    net: Tokenizer, config: RunConfig, train_set: Any, device: torch.device, paths: RunPaths
) -> None:
    """Steps 1-4 of the module docstring for ``config.train.init_from`` (on every rank: k-means gathers)."""
    source = config.train.init_from
    assert source is not None
    backbone = load_backbone(source)
    copied = init_from_backbone(net, backbone)
    net.to(device)
    fitted = kmeans_from_encoder(net, train_set, config, device)
    if distributed.rank() == 0:
        vectors = config.train.kmeans_vectors if fitted else 0  # 0: no codebook to fit (FSQ, LFQ)
        record = {"backbone": source, "copied_tensors": copied, "kmeans_vectors": vectors}
        paths.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(paths.root / RECORD, json.dumps(record, indent=2) + "\n")
