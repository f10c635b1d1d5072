"""The training log: what a step's row holds, ``metrics.csv`` (and TensorBoard), and the run's progress.

``metrics.csv`` is long-format (``step, phase, name, value``: columns vary by phase and quantizer, one line per
value keeps the file rectangular) and append-only, so a resumed run continues it after ``truncate_log`` has
dropped the rows of the steps it redoes. Only rank 0 writes.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch

from vqkit.models.base import TokenizerOutput
from vqkit.train.progress import Progress
from vqkit.train.progress import progress as make_progress
from vqkit.train.run import RunPaths
from vqkit.utils.atomic import atomic_write_text

# Batch usage is logged under its own names: the report plots ``batch_utilization`` against the validation
# split's ``codebook/utilization``.
_BATCH_USAGE = ("utilization", "perplexity")


def loss_terms(out: TokenizerOutput) -> dict[str, torch.Tensor]:
    """``loss`` (the weighted objective) and ``loss/<term>`` for each unweighted term, model's and quantizer's
    (the training log and the evaluation report the same names)."""
    terms = {"loss": out.loss}
    for name, value in {**out.losses, **out.quantizer.losses}.items():
        terms[f"loss/{name}"] = value
    return terms


def scalar_metrics(out: TokenizerOutput, *, diagnostics: bool = True) -> dict[str, float]:
    """A training step's log row: the loss terms and (``diagnostics``) every whole-quantizer scalar of
    ``out.quantizer.metrics``. Steps that write no row skip the diagnostics: the metrics are computed when
    first read (``vqkit.types.LazyScalars``), so those steps never count their codes.

    ``batch_utilization`` and ``batch_perplexity`` are this batch's usage; the rest are the quantizer's own
    diagnostics as ``quantizer/<name>`` (SimVQ's ``w_rank`` and ``w_frobenius`` for its Fig. 4, LooC's
    ``code_sharing``, ...). Per-position values (``out.quantizer.position_metrics``) are not logged: one row per
    code position would swamp the log.
    """
    row = {name: float(value.detach()) for name, value in loss_terms(out).items()}
    for name, value in out.quantizer.metrics.items() if diagnostics else ():  # 0-dim scalars by the contract
        row[f"batch_{name}" if name in _BATCH_USAGE else f"quantizer/{name}"] = float(value)
    return row


class RunLog:
    """``metrics.csv`` (append; rows from a resumed run continue it) and TensorBoard, rank 0 only."""

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
        new = not self.path.exists()
        with self.path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", "phase", "name", "value"])
            for name, value in row.items():
                writer.writerow([step, phase, name, f"{value:.8g}"])
        if self.writer is not None:
            for name, value in row.items():
                self.writer.add_scalar(f"{phase}/{name}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def truncate_log(path: Path, step: int) -> None:
    """Drop log rows after ``step`` (a resumed run redoes those steps)."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
    atomic_write_text(path, "".join(",".join(r) + "\n" for r in kept))


def progress(total: int, start: int, enabled: bool) -> Progress:
    """The run's progress over its ``total`` steps from ``start`` (a resumed run): a tqdm bar on a terminal,
    else a line every tenth of the run or minute (``vqkit.train.progress``); silent inside a bench's bar."""
    return make_progress(total, desc="train", unit="step", initial=start, enabled=enabled)
