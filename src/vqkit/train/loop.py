"""The training loop: plain ``torch.distributed`` + DDP, deterministic batches, safetensors checkpoints, resume.

Why not Lightning: resuming a killed run must reach the same weights as an uninterrupted one, and checkpoints
must not be pickles. Both need the loop to own the sample order and the checkpoint format, so the loop is a
short plain-torch one (DDP from ``torch.nn.parallel``, collectives from ``torch.distributed``; nothing of a
distributed engine is re-implemented).

* **Batches are a function of the step.** The sample stream is the concatenation of per-epoch permutations
  drawn from ``(seed, epoch)``; global step ``s`` takes items ``[s * B, (s + 1) * B)`` of it and rank ``r`` of
  ``W`` takes every ``W``-th of those. A resumed run therefore sees exactly the batches it would have seen.
* **Checkpoints** every ``checkpoint_every`` steps and at the end hold the model (codebook statistics included),
  the optimizer, the step and every generator state (``vqkit.train.checkpoint``); ``resume=True`` continues
  from the latest complete one.
* **Pretrain-then-finetune** (``pretrain_epochs > 0``): the first ``pretrain_epochs`` epochs train encoder and
  decoder without the quantizer; then the codebook is k-means-initialized from the pretrained encoder's outputs
  (``vqkit.recipes.kmeans_init_from_encoder``) and training goes on with the quantizer.
* **Logs**: ``metrics.csv`` (one row per ``log_every`` steps; evaluation rows have ``phase=val``), TensorBoard
  under ``tb/`` when installed, a progress bar on rank 0.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vqkit.models.base import Tokenizer
from vqkit.recipes import kmeans_init_from_encoder
from vqkit.train import checkpoint as ckpt
from vqkit.train.config import RunConfig, dump_config
from vqkit.train.evaluate import evaluate
from vqkit.utils.atomic import atomic_write_text

FAIL_AT_STEP_ENV = "VQKIT_FAIL_AT_STEP"
"""Test hook: the rank-0 process kills itself (SIGKILL, no cleanup) right after finishing this step."""


@dataclass
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def eval(self) -> Path:
        return self.root / "eval.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def plots(self) -> Path:
        return self.root / "plots"


# ---------------------------------------------------------------------------------------------- distributed
def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed_from_env(device: torch.device) -> bool:
    """Join the process group ``torchrun`` (or ``vqkit train --nproc``) describes in the environment."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def resolve_device(name: str) -> torch.device:
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("train.device: 'cuda' was asked for but CUDA is not available")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return torch.device("cuda", local)


# ---------------------------------------------------------------------------------------------- batches
# A batch reads one epoch's permutation, or the end of one and the start of the next: two are enough.
@functools.lru_cache(maxsize=2)
def _epoch_permutation(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def stream_indices(start: int, count: int, num_items: int, seed: int) -> torch.Tensor:
    """Items ``[start, start + count)`` of the endless stream of per-epoch permutations of ``num_items``."""
    out: list[int] = []
    position = start
    while len(out) < count:
        epoch, offset = divmod(position, num_items)
        perm = _epoch_permutation(num_items, seed, epoch)
        take = perm[offset : offset + count - len(out)]
        out.extend(take.tolist())
        position += len(take)
    return torch.tensor(out, dtype=torch.long)


def collate(dataset: Any, indices: torch.Tensor) -> torch.Tensor:
    return torch.stack([dataset[int(i)] for i in indices])


def batches(dataset: Any, batch_size: int, limit: int | None = None) -> Iterator[torch.Tensor]:
    """The dataset in order, in batches (evaluation)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for start in range(0, n, batch_size):
        yield collate(dataset, torch.arange(start, min(start + batch_size, n)))


def rank_share(indices: torch.Tensor, rank: int, size: int) -> torch.Tensor:
    return indices[rank::size]


# ---------------------------------------------------------------------------------------------- the loop
def _scalar_metrics(out: Any) -> dict[str, float]:
    row = {"loss": float(out.loss.detach())}
    for name, value in out.losses.items():
        row[f"loss/{name}"] = float(value.detach())
    for name, value in out.quantizer.losses.items():
        row[f"loss/{name}"] = float(value.detach())
    for name, value in out.quantizer.metrics.items():
        # Whole-quantizer scalars only (per-position "name/j" entries would swamp the log): utilization and
        # perplexity of the batch, and each quantizer's own diagnostics (SimVQ's w_rank and w_frobenius for
        # its Fig. 4, LooC's code_sharing, ...).
        if "/" not in name and value.numel() == 1:
            key = f"batch_{name}" if name in ("utilization", "perplexity") else f"quantizer/{name}"
            row[key] = float(value)
    return row


class _Log:
    """metrics.csv (append; rows from a resumed run continue it) and TensorBoard, rank 0 only."""

    def __init__(self, paths: RunPaths, tensorboard: bool, enabled: bool) -> None:
        self.enabled = enabled
        self.path = paths.metrics
        self.writer: Any = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(paths.root / "tb"))
            except ImportError:
                self.writer = None

    def write(self, step: int, phase: str, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        record: dict[str, Any] = {"step": step, "phase": phase, **row}
        new = not self.path.exists()
        with self.path.open("a", newline="") as handle:
            # Columns vary by phase and quantizer: one long-format line per value keeps the file rectangular.
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", "phase", "name", "value"])
            for name, value in row.items():
                writer.writerow([step, phase, name, f"{value:.8g}"])
        if self.writer is not None:
            for name, value in record.items():
                if name not in ("step", "phase"):
                    self.writer.add_scalar(f"{phase}/{name}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows after ``step`` (a resumed run redoes those steps)."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
    atomic_write_text(path, "".join(",".join(r) + "\n" for r in kept))


def train(
    config: RunConfig,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    model: Tokenizer | None = None,
    datasets: dict[str, Any] | None = None,
) -> Path:
    """Train ``config`` into ``run_dir``; returns the final checkpoint. Call on every rank under DDP."""
    from vqkit.models import build_model
    from vqkit.train.run import load_split

    paths = RunPaths(Path(run_dir))
    device = resolve_device(config.train.device)
    init_distributed_from_env(device)
    rank, size = world()
    if config.train.batch_size % size:
        raise ValueError(
            f"train.batch_size: expected a multiple of the {size} ranks, got {config.train.batch_size}"
        )
    torch.manual_seed(config.seed)

    if datasets is None:
        datasets = {split: load_split(config, split) for split in ("train", "val")}
    train_set, val_set = datasets["train"], datasets["val"]
    net = model if model is not None else build_model(dict(config.model))
    net.to(device)
    if size > 1:
        net.quantizer.set_process_group(None)  # the default group, looked up at call time
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(
        trainable, lr=config.train.lr, betas=config.train.betas, weight_decay=config.train.weight_decay
    )

    adversary = _Adversary(net, config, device, size) if config.train.adversarial else None
    others = adversary.parts() if adversary is not None else None

    steps_per_epoch = math.ceil(len(train_set) / config.train.batch_size)
    pretrain_steps = config.train.pretrain_epochs * steps_per_epoch
    total = pretrain_steps + config.train.steps
    step = 0
    if resume:
        latest = ckpt.latest_checkpoint(paths.checkpoints)
        if latest is None:
            raise FileNotFoundError(f"--resume: no complete checkpoint under {str(paths.checkpoints)!r}")
        step = ckpt.load_checkpoint(latest, net, optimizer, others=others).step
    elif rank == 0 and paths.checkpoints.exists() and ckpt.list_checkpoints(paths.checkpoints):
        raise FileExistsError(
            f"run_dir: {str(paths.root)!r} already holds checkpoints; pass --resume to continue it or choose "
            "another run directory"
        )
    if rank == 0:
        paths.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(paths.config, dump_config(config))
        import json

        info = {split: ds.info() for split, ds in datasets.items() if hasattr(ds, "info")}
        atomic_write_text(paths.data, json.dumps(info, indent=2, default=str))
        _truncate_log(paths.metrics, step)
    log = _Log(paths, config.train.tensorboard, enabled=rank == 0)
    ddp: nn.Module = (
        nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        if size > 1
        else net
    )
    # The pretrain stage skips the quantizer; under DDP it needs its own wrapper (DDP syncs what ``forward``
    # runs) that tolerates the quantizer's unused parameters.
    pretrain: nn.Module = _Unquantized(net)
    if size > 1 and pretrain_steps > step:
        pretrain = nn.parallel.DistributedDataParallel(
            pretrain,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    progress = _progress(total, step, enabled=rank == 0 and config.train.progress)
    fail_at = int(os.environ.get(FAIL_AT_STEP_ENV, "-1"))
    started = time.perf_counter()
    try:
        while step < total:
            if step == pretrain_steps and pretrain_steps > 0:
                _kmeans_from_encoder(net, train_set, config, device)
            indices = stream_indices(
                step * config.train.batch_size, config.train.batch_size, len(train_set), config.seed
            )
            x = collate(train_set, rank_share(indices, rank, size)).to(device)
            net.train()
            if step < pretrain_steps:
                loss = pretrain(x).loss
                row = {"loss": float(loss.detach())}
            else:
                out = ddp(x)
                row = _scalar_metrics(out)
                loss = out.loss
                if adversary is not None:
                    loss = loss + adversary.generator_loss(x, out.reconstruction, row)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.train.grad_clip:
                torch.nn.utils.clip_grad_norm_(trainable, config.train.grad_clip)
            optimizer.step()
            if adversary is not None and step >= pretrain_steps:
                adversary.step(x, out.reconstruction.detach(), row)
            step += 1
            progress.update(1)
            if step % config.train.log_every == 0 or step == total:
                row["seconds"] = time.perf_counter() - started
                log.write(step, "pretrain" if step <= pretrain_steps else "train", row)
            if rank == 0 and step > pretrain_steps and (step % config.train.eval_every == 0 or step == total):
                # Rank 0 alone: evaluation runs no collective (the others wait at the barrier below).
                log.write(step, "val", evaluate(net, val_set, config, device=device, quick=True))
            if rank == 0 and (step % config.train.checkpoint_every == 0 or step == total):
                ckpt.save_checkpoint(
                    paths.checkpoints,
                    step,
                    net,
                    optimizer,
                    {"config": config.to_dict(), "total_steps": total},
                    others=others,
                )
                ckpt.prune_checkpoints(paths.checkpoints, config.train.keep_checkpoints)
            if size > 1:
                dist.barrier()
            if step == fail_at and rank == 0:
                os.kill(os.getpid(), signal.SIGKILL)
    finally:
        progress.close()
        log.close()
    final = ckpt.latest_checkpoint(paths.checkpoints)
    assert final is not None or rank != 0
    return final if final is not None else paths.checkpoints


class _Adversary:
    """Optional adversarial training of audio models: Encodec's multi-scale STFT discriminator with hinge
    losses; the generator gets ``adversarial_weight * hinge + feature_matching_weight * feature matching``
    (no loss balancer: the weights are plain multipliers). The discriminator steps after the generator, on the
    detached reconstruction, with its own Adam (same learning rate and betas); under DDP it is wrapped too."""

    def __init__(self, net: Tokenizer, config: RunConfig, device: torch.device, size: int) -> None:
        from vqkit.models.discriminator import MultiScaleSTFTDiscriminator

        if net.modality != "audio":
            raise ValueError(
                f"train.adversarial: only audio models have a discriminator, got a {net.modality} model"
            )
        self.config = config.train
        channels = int(getattr(net, "channels", 1))
        self.module = MultiScaleSTFTDiscriminator(
            filters=config.train.discriminator_filters, in_channels=channels
        )
        self.module.to(device)
        self.optimizer = torch.optim.Adam(
            self.module.parameters(), lr=config.train.lr, betas=config.train.betas
        )
        self.wrapped: nn.Module = (
            nn.parallel.DistributedDataParallel(
                self.module, device_ids=[device.index] if device.type == "cuda" else None
            )
            if size > 1
            else self.module
        )

    def parts(self) -> dict[str, tuple[nn.Module, torch.optim.Optimizer | None]]:
        return {"discriminator": (self.module, self.optimizer)}

    def generator_loss(self, x: torch.Tensor, recon: torch.Tensor, row: dict[str, float]) -> torch.Tensor:
        from vqkit.models.discriminator import feature_matching_loss, generator_hinge_loss

        # The unwrapped discriminator: only the generator's gradients matter here (they flow back into the
        # DDP-wrapped model); the discriminator's own gradients from this pass are cleared before its step.
        with torch.no_grad():
            real = self.module(x)
        fake = self.module(recon)
        adversarial = generator_hinge_loss(fake.logits)
        matching = feature_matching_loss(real.features, fake.features)
        row["loss/adversarial"] = float(adversarial.detach())
        row["loss/feature_matching"] = float(matching.detach())
        return self.config.adversarial_weight * adversarial + self.config.feature_matching_weight * matching

    def step(self, x: torch.Tensor, recon: torch.Tensor, row: dict[str, float]) -> None:
        from vqkit.models.discriminator import discriminator_hinge_loss

        self.optimizer.zero_grad(set_to_none=True)
        real, fake = self.wrapped(x), self.wrapped(recon)
        loss = discriminator_hinge_loss(real.logits, fake.logits)
        loss.backward()
        self.optimizer.step()
        row["loss/discriminator"] = float(loss.detach())


class _Unquantized(nn.Module):
    """``forward`` = the model's ``forward_unquantized`` (encoder -> decoder), for the pretrain stage."""

    def __init__(self, net: Tokenizer) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> Any:
        return self.net.forward_unquantized(x)


def train_worker(config: RunConfig, run_dir: str | os.PathLike[str], resume: bool) -> None:
    """``train`` with positional arguments, for ``vqkit.train.run.spawn`` (DDP workers)."""
    train(config, run_dir, resume=resume)


def _kmeans_from_encoder(net: Tokenizer, train_set: Any, config: RunConfig, device: torch.device) -> None:
    """The pretrain-then-finetune recipe's second stage (same result on every rank: k-means gathers)."""
    was_training = net.training
    net.eval()
    limit = max(1, config.train.kmeans_vectors)
    kmeans_init_from_encoder(
        net.quantizer,
        lambda x: net.embed(x.to(device)),
        batches(train_set, config.eval.batch_size),
        max_vectors=limit,
    )
    net.train(was_training)


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, start: int, enabled: bool) -> Any:
    if not enabled:
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoProgress()
    return tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
