"""The one place where codebook statistics cross process boundaries.

Every statistic that must agree across ranks (EMA sums and counts, k-means init, dead-code restart candidates,
CVQ anchors, usage trackers) goes through these functions. Two rules keep them deadlock-free:

* the process group is looked up **at call time** (``group=None`` means the default group), never cached at
  construction, so a quantizer built before ``init_process_group`` still syncs afterwards;
* callers issue collectives unconditionally on the training path (never inside a branch that depends on the
  local batch), so every rank issues the same sequence of collectives.

Without an initialized process group (or with one rank) each function is the identity, so single-process code
pays nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup
else:  # torch builds without distributed support have no ProcessGroup
    ProcessGroup = getattr(dist, "ProcessGroup", object)


def is_distributed(group: ProcessGroup | None = None) -> bool:
    """True when a process group with more than one rank is active."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    return dist.get_world_size(group) > 1


def world_size(group: ProcessGroup | None = None) -> int:
    return dist.get_world_size(group) if is_distributed(group) else 1


def rank(group: ProcessGroup | None = None) -> int:
    return dist.get_rank(group) if is_distributed(group) else 0


def all_reduce_sum_(tensor: torch.Tensor, group: ProcessGroup | None = None) -> torch.Tensor:
    """Sum ``tensor`` over ranks, in place; returns it."""
    if is_distributed(group):
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0, group: ProcessGroup | None = None) -> torch.Tensor:
    """Overwrite ``tensor`` with the copy held by group rank ``src``, in place; returns it."""
    if is_distributed(group):
        global_src = dist.get_global_rank(group, src) if group is not None else src
        dist.broadcast(tensor, src=global_src, group=group)
    return tensor


def all_gather_cat(tensor: torch.Tensor, group: ProcessGroup | None = None) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, in rank order; first dims may differ per rank.

    Equal to ``torch.cat([t_rank0, t_rank1, ...])``, so statistics computed on the result match a single
    process that saw the concatenated batch.
    """
    if not is_distributed(group):
        return tensor
    tensor = tensor.contiguous()
    n = world_size(group)
    sizes = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    all_sizes = [torch.zeros_like(sizes) for _ in range(n)]
    dist.all_gather(all_sizes, sizes, group=group)
    counts = [int(s.item()) for s in all_sizes]
    longest = max(counts)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in range(n)]
    dist.all_gather(gathered, padded, group=group)
    return torch.cat([g[:c] for g, c in zip(gathered, counts, strict=True)], dim=0)
