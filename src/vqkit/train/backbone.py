"""Continuous backbones: a tokenizer's encoder and decoder trained with the quantizer skipped, then shipped.

``python -m vqkit.train.backbone CONFIG --out DIR [--threads N] [--final-items N] [key=value ...]``

A backbone is the first stage of pretrain-then-finetune, run on its own: ``forward_unquantized`` (encoder ->
decoder) for ``train.steps`` steps, then ``vqkit.pretrained.publish`` as a ``"backbone"`` entry called
``DIR``'s name (``save_pretrained``'s ``config.json``, ``model.safetensors`` and a card with the command, the
steps, the wall time, the data and the held-out metrics, plus ``entry.json``; an earlier entry there is
replaced) and ``DIR/training_curve.json``. A quantized tokenizer is later fine-tuned from it (``from_pretrained``, then
k-means from the encoder as ``vqkit.train.pretrain.kmeans_from_encoder`` does).

Why not ``vqkit train`` with ``train.pretrain_epochs``: that stage always ends in ``train.steps >= 1`` quantized
steps (they change the backbone's weights), counts its length in epochs and keeps the learning rate constant.
Here the schedule is Adam (``train.lr``, ``train.betas``, ``train.weight_decay``, ``train.grad_clip``) with a
linear warm-up over ``WARMUP_STEPS`` and a cosine decay to ``FINAL_LR_FRACTION * train.lr``; batches are
``vqkit.train.batches.step_batch``'s (a function of the step and the seed). Every ``train.eval_every`` steps
and at the end the backbone is evaluated (``vqkit.metrics.eval.AudioMetrics`` for audio) on ``eval.max_items``
items spread evenly over the ``eval.split`` split; the final metrics use ``--final-items`` items. One process,
no checkpoints, no resume: a backbone run is minutes to an hour on a CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vqkit.models import build_model
from vqkit.models.base import Tokenizer
from vqkit.pretrained import publish
from vqkit.train.batches import collate, step_batch
from vqkit.train.config import RunConfig, load_config
from vqkit.train.run import load_split
from vqkit.utils.atomic import atomic_write_text

WARMUP_STEPS = 100
FINAL_LR_FRACTION = 0.1
CURVE_FILE = "training_curve.json"
CURVE_METRICS = ("stoi", "pesq", "lsd", "mel_distance", "stft_distance", "si_sdr", "chroma_similarity")


def learning_rate_factor(step: int, total: int, warmup: int = WARMUP_STEPS) -> float:
    """The multiplier of ``train.lr`` at 0-based ``step`` of ``total``: linear warm-up, then cosine decay."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))


def spread(num_items: int, count: int | None) -> torch.Tensor:
    """``count`` indices spread evenly over ``range(num_items)`` (all of them for ``None``)."""
    if count is None or count >= num_items:
        return torch.arange(num_items)
    return torch.linspace(0, num_items - 1, count).round().long()


@torch.no_grad()
def evaluate_backbone(
    net: Tokenizer, dataset: Any, indices: torch.Tensor, config: RunConfig
) -> dict[str, float]:
    """Held-out metrics of ``forward_unquantized`` on ``dataset[indices]`` (eval mode; audio clamped to [-1, 1];
    batches of ``config.eval.batch_size``; STOI and PESQ as ``config.eval.stoi`` / ``pesq`` say: music has no
    speech for them to score)."""
    from vqkit.metrics.eval.audio import AudioMetrics

    if net.modality != "audio":
        raise ValueError(f"model: backbone evaluation covers audio models, got a {net.modality} model")
    was_training = net.training
    net.eval()
    metrics = AudioMetrics(int(dataset.sample_rate), stoi=config.eval.stoi, pesq=config.eval.pesq)
    size = config.eval.batch_size
    for start in range(0, len(indices), size):
        x = collate(dataset, indices[start : start + size])
        metrics.update(x, net.forward_unquantized(x).reconstruction.clamp(-1.0, 1.0))
    net.train(was_training)
    return metrics.compute()


def train_backbone(config: RunConfig, *, log: Any = None) -> tuple[Tokenizer, list[dict[str, float]], float]:
    """Train ``config``'s model unquantized; returns it (eval mode), the curve (one row per evaluation: ``step``,
    ``train_seconds`` of the steps alone, ``wall_seconds`` with the evaluations, the metrics) and the seconds the
    training steps took."""
    torch.manual_seed(config.seed)
    train_set, held_out = load_split(config, "train"), load_split(config, config.eval.split)
    indices = spread(len(held_out), config.eval.max_items)
    net = build_model(dict(config.model))
    opt = config.train
    optimizer = torch.optim.Adam(net.parameters(), lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(s, opt.steps))
    curve: list[dict[str, float]] = []
    seconds, began = 0.0, time.perf_counter()  # training steps alone; everything, evaluations included
    net.train()
    for step in range(opt.steps):
        started = time.perf_counter()
        x = step_batch(train_set, step, opt.batch_size, config.seed, 0, 1)
        out = net.forward_unquantized(x)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if opt.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), opt.grad_clip)
        optimizer.step()
        schedule.step()
        seconds += time.perf_counter() - started
        finished = step + 1
        if log is not None and (finished % opt.log_every == 0 or finished == opt.steps):
            terms = " ".join(f"{k}={float(v.detach()):.4f}" for k, v in out.losses.items())
            print(
                f"step {finished}/{opt.steps} {seconds:.0f}s loss={float(out.loss.detach()):.4f} {terms}",
                file=log,
                flush=True,
            )
        if finished % opt.eval_every == 0 or finished == opt.steps:
            scores = evaluate_backbone(net, held_out, indices, config)
            row = {"step": finished, "train_seconds": round(seconds, 1)}
            row["wall_seconds"] = round(time.perf_counter() - began, 1)
            row.update({k: round(scores[k], 4) for k in CURVE_METRICS if k in scores})
            curve.append(row)
            if log is not None:
                print(json.dumps(row), file=log, flush=True)
    return net.eval(), curve, seconds


def _data_text(config: RunConfig) -> str:
    options = ", ".join(f"{k}={v!r}" for k, v in config.data.items() if k not in ("name", "data_dir"))
    return f"{config.data.get('name', '')}({options})"


def _threads(n: int) -> str:
    return f"{n} thread" if n == 1 else f"{n} threads"


def _description(config: RunConfig, command: str, seconds: float, items: int) -> str:
    return (
        f"Continuous (unquantized) backbone: encoder and decoder trained with the quantizer skipped, the start of "
        f"a quantized tokenizer's fine-tuning (its quantizer is untrained: use `forward_unquantized`). "
        f"Made by `{command}`: {config.train.steps} steps of batch "
        f"{config.train.batch_size} on the `train` split of {_data_text(config)}, seed {config.seed}, "
        f"{seconds / 60:.1f} min of training wall time on CPU ({_threads(torch.get_num_threads())}). The metrics "
        f"are those of the unquantized forward (`model.forward_unquantized(x).reconstruction`) on {items} items "
        f"of the `{config.eval.split}` split, spread evenly; `{CURVE_FILE}` has them against the training steps."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vqkit.train.backbone", description=__doc__.splitlines()[0]
    )
    parser.add_argument("config", type=Path)
    parser.add_argument("overrides", nargs="*", help="section.key=value, as for vqkit train")
    parser.add_argument(
        "--out", type=Path, required=True, help="the entry's folder (vqkit.pretrained.publish)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--final-items", type=int, default=256, help="held-out items of the final metrics")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.final_items < 1:
        parser.error("--threads and --final-items take positive integers")
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    config = load_config(args.config, args.overrides)
    net, curve, seconds = train_backbone(config, log=sys.stderr)
    held_out = load_split(config, config.eval.split)
    indices = spread(len(held_out), args.final_items)
    final = evaluate_backbone(net, held_out, indices, config)
    metrics = {k: round(final[k], 4) for k in CURVE_METRICS if k in final}
    command = "python -m vqkit.train.backbone " + shlex.join([str(a) for a in (argv or sys.argv[1:])])
    publish(
        net,
        args.out.name,
        kind="backbone",
        data=_data_text(config),
        metrics=metrics,
        command=command,
        description=_description(config, command, seconds, len(indices)),
        sample_rate=int(held_out.sample_rate) if net.modality == "audio" else None,
        root=args.out.parent,
        split=config.eval.split,
    )
    record = {
        "command": command,
        "threads": args.threads,
        "train_seconds": round(seconds, 1),
        "wall_seconds": round(time.perf_counter() - began, 1),
        "final_items": len(indices),
        "final": metrics,
        "curve": curve,
    }
    atomic_write_text(args.out / CURVE_FILE, json.dumps(record, indent=2) + "\n")
    print(json.dumps({"out": str(args.out), "train_seconds": round(seconds, 1), **metrics}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
