"""The training loop: plain ``torch.distributed`` + DDP, deterministic batches, safetensors checkpoints, resume.

Why not Lightning: resuming a killed run must reach the same weights as an uninterrupted one, and checkpoints
must not be pickles. Both need the loop to own the sample order and the checkpoint format, so the loop is a
short plain-torch one (DDP from ``torch.nn.parallel``, collectives from ``torch.distributed``; nothing of a
distributed engine is re-implemented). Its pieces each live in their own module:

* **Batches are a function of the step** (``vqkit.train.batches``): a resumed run sees exactly the batches it
  would have seen.
* **One step** (``vqkit.train.step``): forward, backward, optimizer, and the discriminator of adversarial runs
  (``vqkit.train.adversary``); device and DDP in ``vqkit.train.runtime``.
* **Checkpoints** every ``checkpoint_every`` steps and at the end hold the model (codebook statistics included),
  the optimizer, the step and every generator state (``vqkit.train.checkpoint``); ``resume=True`` continues
  from the latest complete one.
* **Pretrain-then-finetune** (``pretrain_epochs > 0``, ``vqkit.train.pretrain``): the first ``pretrain_epochs``
  epochs train encoder and decoder without the quantizer; then the codebook is k-means-initialized from the
  pretrained encoder's outputs and training goes on with the quantizer. With ``init_from`` the pretrain stage
  is a backbone trained elsewhere (``vqkit.train.init_from``); ``continuous`` trains without the quantizer
  throughout (a bench's ceiling).
* **Logs** (``vqkit.train.log``): ``metrics.csv`` (one row per ``log_every`` steps; evaluation rows have
  ``phase=val``), TensorBoard under ``tb/`` when installed, a progress bar on rank 0.
* **A NaN or Inf loss** stops the run before that step's update (``train.nonfinite="stop"``; the last
  checkpoint stays the newest), or skips the step (``"skip"``: no update, a warning, ``nonfinite_skips`` in
  the log) until ``train.max_skips`` steps in a row were skipped. The error names the step and the terms.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vqkit import distributed
from vqkit.models import build_model
from vqkit.models.base import Tokenizer
from vqkit.train import checkpoint as ckpt
from vqkit.train.batches import step_batch
from vqkit.train.config import RunConfig, dump_config
from vqkit.train.evaluate import evaluate
from vqkit.train.init_from import start_from_backbone
from vqkit.train.log import RunLog, progress, truncate_log
from vqkit.train.pretrain import kmeans_from_encoder
from vqkit.train.run import RunPaths, load_split
from vqkit.train.runtime import barrier, init_distributed_from_env, resolve_device
from vqkit.train.step import NonFiniteLoss, TrainStep
from vqkit.utils.atomic import atomic_write_text


def train(
    config: RunConfig,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    model: Tokenizer | None = None,
    datasets: dict[str, Any] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> Path:
    """Train ``config`` into ``run_dir``; returns the final checkpoint. Call on every rank under DDP.

    ``model`` and ``datasets`` (``{"train": ..., "val": ...}``) replace what ``config`` would build. ``on_step``
    is called on every rank with the number of finished steps, once that step is logged, validated and
    checkpointed and the ranks have met (the tests use it to kill a run at a known point).
    """
    device = resolve_device(config.train.device)
    init_distributed_from_env(device)
    rank, size = distributed.rank(), distributed.world_size()
    if config.train.batch_size % size:
        raise ValueError(
            f"train.batch_size: expected a multiple of the {size} ranks, got {config.train.batch_size}"
        )
    torch.manual_seed(config.seed)
    datasets = datasets if datasets is not None else {s: load_split(config, s) for s in ("train", "val")}
    train_set = datasets["train"]
    stepper = TrainStep(_placed_model(config, model, device), config, device)
    schedule = Schedule.of(config, len(train_set))
    paths = RunPaths(run_dir)
    step = _starting_step(paths, stepper, resume=resume, rank=rank)
    if step == 0 and config.train.init_from is not None:  # before DDP, which broadcasts rank 0's weights
        start_from_backbone(stepper.net, config, train_set, device, paths)
    if rank == 0:
        _record_run(paths, config, datasets, step)
    stepper.distribute(device, pretraining=schedule.pretraining(step))
    bar = progress(schedule.total, step, enabled=rank == 0 and config.train.progress)
    run = _Run(config, paths, device, rank, schedule, stepper, datasets["val"])
    try:
        while step < schedule.total:
            if schedule.quantizer_starts(step):
                kmeans_from_encoder(stepper.net, train_set, config, device)
            x = step_batch(train_set, step, config.train.batch_size, config.seed, rank, size).to(device)
            row = run.step(x, step + 1)
            step += 1
            bar.update(1)
            run.after_step(step, row)
            if on_step is not None:
                on_step(step)
    finally:
        bar.close()
        run.log.close()
    final = ckpt.latest_checkpoint(paths.checkpoints)
    assert final is not None or rank != 0
    return final if final is not None else paths.checkpoints


def train_worker(config: RunConfig, run_dir: str | os.PathLike[str], resume: bool) -> None:
    """``train`` with positional arguments, for ``vqkit.train.run.spawn`` (DDP workers)."""
    train(config, run_dir, resume=resume)


@dataclass(frozen=True)
class Schedule:
    """A run's steps: ``pretrain_steps`` (whole epochs of the training split, without the quantizer), then
    ``train.steps`` with it; a continuous run (``train.continuous``) is ``train.steps`` steps all without it.
    Steps are counted from 0; "after step ``s``" means ``s`` steps have finished."""

    pretrain_steps: int
    total: int

    @classmethod
    def of(cls, config: RunConfig, num_items: int) -> Schedule:
        if config.train.continuous:
            return cls(config.train.steps, config.train.steps)
        pretrain = config.train.pretrain_epochs * math.ceil(num_items / config.train.batch_size)
        return cls(pretrain, pretrain + config.train.steps)

    def pretraining(self, step: int) -> bool:
        """Whether step ``step`` (0-based, about to run) trains without the quantizer."""
        return step < self.pretrain_steps

    def quantizer_starts(self, step: int) -> bool:
        """Whether step ``step`` is the first with the quantizer after a pretrain stage (k-means runs first)."""
        return self.pretrain_steps > 0 and step == self.pretrain_steps

    def due(self, finished: int, every: int) -> bool:
        """Whether a periodic action (log, validation, checkpoint) runs after ``finished`` steps."""
        return finished % every == 0 or finished == self.total


@dataclass
class _Run:
    """What one rank does between steps: log, validate (rank 0), checkpoint (rank 0), wait for the others."""

    config: RunConfig
    paths: RunPaths
    device: torch.device
    rank: int
    schedule: Schedule
    stepper: TrainStep
    val_set: Any
    log: RunLog = field(init=False)
    started: float = field(init=False, default_factory=time.perf_counter)  # the log's "seconds"
    skipped: int = 0  # steps skipped for a NaN or Inf loss (train.nonfinite="skip"), and how many in a row
    in_a_row: int = 0

    def __post_init__(self) -> None:
        self.log = RunLog(self.paths, self.config.train.tensorboard, enabled=self.rank == 0)

    def step(self, x: torch.Tensor, number: int) -> dict[str, float]:
        """Run step ``number`` (1-based) on ``x``; its log row. A NaN or Inf loss stops the run or skips it."""
        try:
            schedule = self.schedule
            logged = schedule.due(number, self.config.train.log_every)
            row = self.stepper(x, pretraining=schedule.pretraining(number - 1), diagnostics=logged)
        except NonFiniteLoss as err:
            return self._nonfinite(number, err)
        except ValueError as err:  # e.g. a quantizer refusing a NaN or Inf encoder output: say which step
            raise ValueError(f"train: step {number}: {err}") from err
        self.in_a_row = 0
        return row

    def _nonfinite(self, number: int, err: NonFiniteLoss) -> dict[str, float]:
        """Stop (``train.nonfinite="stop"``, an update already made, or ``max_skips`` skips in a row) or skip
        step ``number``: nothing was updated, the step is counted and warned about; returns its log row."""
        train = self.config.train
        kept = ckpt.latest_checkpoint(self.paths.checkpoints)
        where = f"train: step {number}: the loss is not finite ({err})"
        saved = (
            f"the last checkpoint, {str(kept)!r}, is kept" if kept else "no checkpoint had been written yet"
        )
        if err.updated:
            raise RuntimeError(
                f"{where} after the discriminator's update, which cannot be undone; stopped: {saved}"
            ) from err
        if train.nonfinite == "stop":
            raise RuntimeError(
                f"{where}; stopped before the update, nothing of this step was saved: {saved} "
                "(train.nonfinite=skip skips such steps)"
            ) from err
        self.skipped, self.in_a_row = self.skipped + 1, self.in_a_row + 1
        if self.in_a_row >= train.max_skips:
            raise RuntimeError(
                f"{where}; stopped after {self.in_a_row} skipped steps in a row (train.max_skips="
                f"{train.max_skips}): {saved}"
            ) from err
        if self.rank == 0:
            warnings.warn(
                f"{where}; skipped it (no update; {self.in_a_row} in a row, {self.skipped} in all)",
                stacklevel=2,
            )
        return err.row

    def after_step(self, finished: int, row: dict[str, float]) -> None:
        train, schedule = self.config.train, self.schedule
        if self.skipped:
            row["nonfinite_skips"] = float(self.skipped)
        if schedule.due(finished, train.log_every):
            row["seconds"] = time.perf_counter() - self.started
            self.log.write(finished, "pretrain" if finished <= schedule.pretrain_steps else "train", row)
        validated = finished > schedule.pretrain_steps or train.continuous  # not inside a pretrain stage
        if self.rank == 0 and validated and schedule.due(finished, train.eval_every):
            # Rank 0 alone: evaluation runs no collective (the others wait at the barrier below).
            net, device = self.stepper.net, self.device
            metrics = evaluate(
                net, self.val_set, self.config, device=device, quick=True, unquantized=train.continuous
            )
            self.log.write(finished, "val", metrics)
        if self.rank == 0 and schedule.due(finished, train.checkpoint_every):
            self._checkpoint(finished)
        barrier()

    def _checkpoint(self, finished: int) -> None:
        stepper, directory = self.stepper, self.paths.checkpoints
        extra = {"config": self.config.to_dict(), "total_steps": self.schedule.total}
        ckpt.save_checkpoint(
            directory, finished, stepper.net, stepper.optimizer, extra, others=stepper.others()
        )
        ckpt.prune_checkpoints(directory, self.config.train.keep_checkpoints)


def _placed_model(config: RunConfig, model: Tokenizer | None, device: torch.device) -> Tokenizer:
    """The model to train (``config``'s unless one is given), on ``device``, its quantizer syncing over ranks."""
    net = model if model is not None else build_model(dict(config.model))
    net.to(device)
    if distributed.world_size() > 1:
        net.quantizer.set_process_group(None)  # the default group, looked up at call time
    return net


def _starting_step(paths: RunPaths, stepper: TrainStep, *, resume: bool, rank: int) -> int:
    """0 for a new run; for ``resume``, the latest complete checkpoint's step, with the model, optimizers and
    generators restored from it. A new run refuses a directory that already holds checkpoints."""
    if resume:
        latest = ckpt.latest_checkpoint(paths.checkpoints)
        if latest is None:
            raise FileNotFoundError(f"--resume: no complete checkpoint under {str(paths.checkpoints)!r}")
        return ckpt.load_checkpoint(latest, stepper.net, stepper.optimizer, others=stepper.others()).step
    if rank == 0 and ckpt.list_checkpoints(paths.checkpoints):
        raise FileExistsError(
            f"run_dir: {str(paths.root)!r} already holds checkpoints; pass --resume to continue it or choose "
            "another run directory"
        )
    return 0


def _record_run(paths: RunPaths, config: RunConfig, datasets: dict[str, Any], step: int) -> None:
    """Rank 0, before the first step: the resolved config, the data's description, the log cut to ``step``."""
    paths.root.mkdir(parents=True, exist_ok=True)
    ckpt.remove_staging(paths.checkpoints)  # what a killed checkpoint write left behind
    atomic_write_text(paths.config, dump_config(config))
    info = {split: ds.info() for split, ds in datasets.items() if hasattr(ds, "info")}
    atomic_write_text(paths.data, json.dumps(info, indent=2, default=str))
    truncate_log(paths.metrics, step)
