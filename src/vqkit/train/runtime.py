"""Where a training process runs: its device, the process group ``torchrun`` describes, and DDP wrapping.

Rank and world size come from ``vqkit.distributed`` (the one module that talks to ``torch.distributed`` about
who is where); this module only joins the group and wraps modules. Every function is a no-op for a single
process, so the training loop reads the same with one rank or many.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from vqkit import distributed


def resolve_device(name: str) -> torch.device:
    """``train.device`` (``auto``, ``cpu``, ``cuda``) as a device; under DDP, this rank's GPU (``LOCAL_RANK``)."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("train.device: 'cuda' was asked for but CUDA is not available")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return torch.device("cuda", local)


def init_distributed_from_env(device: torch.device) -> bool:
    """Join the process group ``torchrun`` (or ``vqkit train --nproc``) describes in the environment."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def wrap_ddp(module: nn.Module, device: torch.device, *, find_unused_parameters: bool = False) -> nn.Module:
    """``module`` in ``DistributedDataParallel`` when there are several ranks, else ``module`` itself.

    DDP syncs the gradients of what ``forward`` runs; a forward that skips parameters (the pretrain stage runs
    no quantizer) needs ``find_unused_parameters=True``. Wrapping broadcasts rank 0's weights: every rank must
    wrap the same modules in the same order.
    """
    if distributed.world_size() == 1:
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        module, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def barrier() -> None:
    """Wait for every rank (nothing to wait for alone)."""
    if distributed.world_size() > 1:
        dist.barrier()
