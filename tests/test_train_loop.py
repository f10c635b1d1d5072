"""The training harness in pieces: the step hook, the log row, the evaluation's sections, the schedule, the
runtime of one process, and the step-indexed batch of one rank."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from vqkit.models.base import TokenizerOutput
from vqkit.train import checkpoint as ckpt
from vqkit.train.batches import rank_share, step_batch, stream_indices
from vqkit.train.config import load_config
from vqkit.train.evaluate import metric_sections
from vqkit.train.log import scalar_metrics
from vqkit.train.loop import Schedule, train
from vqkit.train.run import RunPaths, is_run_dir
from vqkit.train.runtime import barrier, wrap_ddp
from vqkit.types import QuantizerOutput

ROOT = Path(__file__).resolve().parent.parent
TINY = ["train.device=cpu", "train.tensorboard=false", "train.progress=false", "eval.max_items=64"]


def test_on_step_runs_after_each_step_once_its_checkpoint_is_written(tmp_path: Path) -> None:
    config = load_config(
        ROOT / "configs" / "synthetic.yaml",
        [*TINY, "train.steps=5", "train.batch_size=32", "train.checkpoint_every=2", "train.eval_every=2"],
    )
    seen: list[tuple[int, int | None]] = []

    def record(finished: int) -> None:
        latest = ckpt.latest_checkpoint(RunPaths(tmp_path).checkpoints)
        seen.append((finished, None if latest is None else ckpt.checkpoint_step(latest)))

    final = train(config, tmp_path, on_step=record)
    assert seen == [(1, None), (2, 2), (3, 2), (4, 4), (5, 5)]  # every 2 steps and at the end
    assert ckpt.checkpoint_step(final) == 5 and is_run_dir(tmp_path)


def _output(metrics: dict[str, torch.Tensor], positions: dict[str, torch.Tensor]) -> TokenizerOutput:
    quantizer = QuantizerOutput(
        quantized=torch.zeros(2, 4),
        codes=torch.zeros(2, 3, dtype=torch.long),
        losses={"commitment": torch.tensor(0.5)},
        metrics=metrics,
        loss_weights={"commitment": 0.25},
        position_metrics=positions,
    )
    return TokenizerOutput(torch.zeros(2, 4), quantizer, {"mse": torch.tensor(2.0)}, {"mse": 1.0})


def test_the_log_row_holds_every_whole_quantizer_scalar_and_no_position_values() -> None:
    out = _output(
        {"utilization": torch.tensor(0.5), "perplexity": torch.tensor(3.0), "w_rank": torch.tensor(7.0)},
        {"utilization": torch.tensor([0.25, 0.5, 0.75]), "perplexity": torch.tensor([2.0, 3.0, 4.0])},
    )
    row = scalar_metrics(out)
    assert row == {
        "loss": pytest.approx(float(out.loss)),
        "loss/mse": 2.0,
        "loss/commitment": 0.5,
        "batch_utilization": 0.5,
        "batch_perplexity": 3.0,
        "quantizer/w_rank": 7.0,
    }


def test_evaluation_sections_keep_per_position_values_apart() -> None:
    result = {
        "psnr": 30.0,
        "loss": 1.0,
        "loss/mse": 0.5,
        "collapse/num_modes": 10.0,
        "codebook/utilization": 0.5,
        "codebook/utilization/0": 0.25,
        "codebook/dead_codes/1": 3.0,
    }
    sections = metric_sections(result)
    assert sections == {
        "summary": {"psnr": 30.0, "loss": 1.0, "codebook/utilization": 0.5},
        "terms": {"loss/mse": 0.5, "collapse/num_modes": 10.0},
        "positions": {"codebook/utilization/0": 0.25, "codebook/dead_codes/1": 3.0},
    }


def test_schedule_counts_whole_pretrain_epochs_then_the_quantized_steps() -> None:
    config = load_config(
        ROOT / "configs" / "synthetic.yaml",
        ["train.steps=10", "train.batch_size=300", "train.pretrain_epochs=2"],
    )
    schedule = Schedule.of(config, num_items=1000)  # 4 steps an epoch (the last one short)
    assert (schedule.pretrain_steps, schedule.total) == (8, 18)
    assert schedule.pretraining(7) and not schedule.pretraining(8)
    assert [s for s in range(18) if schedule.quantizer_starts(s)] == [8]
    assert schedule.due(6, 3) and schedule.due(18, 7) and not schedule.due(5, 3)
    assert not any(Schedule.of(config, 0).quantizer_starts(s) for s in range(10))  # no data: no pretraining


def test_one_process_needs_no_wrapper_and_no_barrier() -> None:
    module = nn.Linear(2, 2)
    assert wrap_ddp(module, torch.device("cpu")) is module
    assert wrap_ddp(module, torch.device("cpu"), find_unused_parameters=True) is module
    barrier()  # returns at once


def test_a_ranks_step_batch_is_its_share_of_the_global_batch() -> None:
    dataset = torch.arange(10.0).unsqueeze(1)  # item i is [i]
    global_batch = stream_indices(3 * 4, 4, 10, seed=5)
    for rank in range(2):
        batch = step_batch(dataset, 3, 4, 5, rank, 2)
        assert batch.squeeze(1).long().tolist() == rank_share(global_batch, rank, 2).tolist()
