"""Checkpoints: safetensors + JSON, atomic, exact optimizer and generator state; the step-indexed batch stream."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vqkit.train import checkpoint as ckpt
from vqkit.train.batches import rank_share, stream_indices


def _model_and_optimizer() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.5, 0.9))
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(16, 4)).square().mean().backward()
        optimizer.step()
    return model, optimizer


def test_round_trip_restores_model_optimizer_and_generators(tmp_path: Path) -> None:
    model, optimizer = _model_and_optimizer()
    random.seed(3)
    np.random.seed(4)
    path = ckpt.save_checkpoint(tmp_path, 3, model, optimizer, {"note": "x"})
    assert sorted(p.name for p in path.iterdir()) == [
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
    ]
    expected = (torch.rand(3), random.random(), np.random.rand())
    # Continue the original for one step, then restore a fresh copy and do the same step: identical.
    x = torch.randn(16, 4)
    optimizer.zero_grad()
    model(x).square().mean().backward()
    optimizer.step()
    fresh, fresh_opt = _model_and_optimizer()
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)  # make sure the load really overwrites
    state = ckpt.load_checkpoint(path, fresh, fresh_opt)
    assert state.step == 3 and state.extra["note"] == "x"
    restored = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(restored[0], expected[0]) and restored[1:] == expected[1:]  # torch, python, numpy
    fresh_opt.zero_grad()
    fresh(x).square().mean().backward()
    fresh_opt.step()
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_latest_ignores_staging_and_prune_keeps_the_newest(tmp_path: Path) -> None:
    model, optimizer = _model_and_optimizer()
    for step in (5, 10, 15):
        ckpt.save_checkpoint(tmp_path, step, model, optimizer, {})
    (tmp_path / ".step_0000020.abc.tmp").mkdir()  # a crashed write
    latest = ckpt.latest_checkpoint(tmp_path)
    assert latest is not None and latest.name == "step_0000015"
    ckpt.prune_checkpoints(tmp_path, 2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_0000010", "step_0000015"]


def test_corrupt_checkpoint_is_named(tmp_path: Path) -> None:
    model, optimizer = _model_and_optimizer()
    path = ckpt.save_checkpoint(tmp_path, 1, model, optimizer, {})
    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="step_0000001"):
        ckpt.load_checkpoint(path, model)


def test_stream_is_a_function_of_the_step() -> None:
    whole = stream_indices(0, 25, 10, seed=7)
    assert sorted(whole[:10].tolist()) == list(range(10))  # one permutation per epoch
    assert sorted(whole[10:20].tolist()) == list(range(10))
    assert torch.equal(stream_indices(13, 7, 10, seed=7), whole[13:20])  # resumable anywhere
    assert not torch.equal(stream_indices(0, 10, 10, seed=8), whole[:10])
    shares = [rank_share(whole[:8], r, 2) for r in range(2)]
    assert sorted(torch.cat(shares).tolist()) == sorted(whole[:8].tolist())
